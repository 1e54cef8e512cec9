"""Sizes: parse "5GB"-style sizes, bytes per dtype, bytes per submodule, and the largest layer of a model."""

from __future__ import annotations

import gc
import re
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch import nn

from ..enums import CustomDtype

# Dtypes whose values set_module_tensor_to_device never converts (so a `dtype=` argument cannot shrink them).
_NON_FLOAT_PREFIXES = ("torch.uint", "torch.int", "torch.bool")

_DECIMAL_UNITS = {"GB": 10**9, "MB": 10**6, "KB": 10**3}
_BINARY_UNITS = {"GIB": 2**30, "MIB": 2**20, "KIB": 2**10}


def convert_file_size_to_int(size: int | str) -> int:
    """Convert a size such as "5GB", "2.5MiB" or 1024 to a number of bytes.

    Decimal units (KB, MB, GB) are powers of 10, binary ones (KiB, MiB, GiB) powers of 2; a lower-case
    final "b" ("5Mb") means bits, as upstream accelerate reads it.

    Args:
        size: bytes as an int, or digits followed by a unit.

    Returns:
        The size in bytes (a positive int).

    Raises:
        ValueError: the size has no known unit, cannot be parsed, or is not positive.

    Example:
        >>> convert_file_size_to_int("1MiB")
        1048576
    """
    problem = (
        f"size {size!r} is not in a valid format; use an integer number of bytes or digits with a unit "
        "such as '5GB', '500MB' or '2GiB'"
    )
    if isinstance(size, int) and not isinstance(size, bool):
        mem_size = size
    elif isinstance(size, str):
        mem_size = _parse_size_string(size, problem)
    else:
        raise ValueError(f"{problem} (got type {type(size).__name__})")
    if mem_size <= 0:
        raise ValueError(f"{problem}: it must be more than 0 bytes")
    return mem_size


def _parse_size_string(size: str, problem: str) -> int:
    upper = size.upper()
    try:
        for unit, factor in _BINARY_UNITS.items():
            if upper.endswith(unit):
                return int(float(size[:-3]) * factor)
        for unit, factor in _DECIMAL_UNITS.items():
            if upper.endswith(unit):
                value = int(float(size[:-2]) * factor)
                return value // 8 if size.endswith("b") else value
    except ValueError:
        raise ValueError(problem) from None
    raise ValueError(problem)


def dtype_byte_size(dtype) -> float:
    """Return the bytes one element of `dtype` takes (1/8 for bool, 1/2 for CustomDtype.INT4).

    Example:
        >>> dtype_byte_size(torch.float16)
        2
    """
    if dtype == torch.bool:
        return 1 / 8
    if dtype == CustomDtype.INT4:
        return 1 / 2
    if dtype == CustomDtype.INT2:
        return 1 / 4
    if dtype == CustomDtype.FP8:
        return 1
    if isinstance(dtype, torch.dtype):
        return dtype.itemsize
    found = re.search(r"[^\d](\d+)$", str(dtype))
    if found is None:
        raise ValueError(f"dtype_byte_size(): {dtype!r} is not a dtype with a bit width in its name")
    return int(found.group(1)) // 8


def to_torch_dtype(dtype):
    """Return a torch.dtype for "float16", "torch.float16" or a dtype (None and CustomDtype pass through)."""
    if isinstance(dtype, str):
        name = dtype.replace("torch.", "")
        found = getattr(torch, name, None)
        if not isinstance(found, torch.dtype):
            raise ValueError(f"{dtype!r} is not a torch dtype name; expected e.g. 'float16' or 'torch.bfloat16'")
        return found
    return dtype


def is_floating_dtype_name(dtype) -> bool:
    """Return whether a dtype is one a `dtype=` argument may convert (not an int, uint or bool type)."""
    return not str(dtype).startswith(_NON_FLOAT_PREFIXES)


def id_tensor_storage(tensor: torch.Tensor) -> tuple[torch.device, int, int]:
    """Return (device, storage pointer, storage bytes): equal for tensors sharing one storage.

    Meta tensors have no storage pointer, so every meta tensor of the same byte size compares equal.
    """
    try:
        storage = tensor.untyped_storage()
        return tensor.device, storage.data_ptr(), storage.nbytes()
    except (NotImplementedError, RuntimeError):
        return tensor.device, 0, tensor.nelement() * tensor.element_size()


def get_non_persistent_buffers(module: nn.Module, recurse: bool = False) -> set[str]:
    """Return the names of a module's non-persistent buffers (its own, or every submodule's with recurse).

    Names are as each submodule registers them (not dotted), as upstream returns them.
    """
    names = set(module._non_persistent_buffers_set)
    if recurse:
        for _, submodule in module.named_modules():
            names |= submodule._non_persistent_buffers_set
    return names


def named_module_tensors(
    module: nn.Module, include_buffers: bool = True, recurse: bool = False, remove_non_persistent: bool = False
):
    """Yield (name, tensor) for a module's parameters, then its buffers.

    Args:
        module: the module to look into.
        include_buffers: also yield buffers.
        recurse: look into every submodule (dotted names) instead of the module's own tensors only.
        remove_non_persistent: skip non-persistent buffers.

    Example:
        >>> [n for n, _ in named_module_tensors(nn.Linear(2, 2))]
        ['weight', 'bias']
    """
    yield from module.named_parameters(recurse=recurse)
    if include_buffers:
        skipped = get_non_persistent_buffers(module, recurse=recurse) if remove_non_persistent else set()
        for name, buffer in module.named_buffers(recurse=recurse):
            if name not in skipped:
                yield name, buffer


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector for a bookkeeping pass over a big model.

    Walking 60k modules allocates hundreds of thousands of small lists and strings, which triggers full
    collections over every module and tensor object of the heap: a third or more of the time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def walk_modules(model: nn.Module, remove_duplicate: bool = True):
    """Yield (name, module, names of it and its ancestors) in `named_modules()` order, without recursion.

    torch's named_modules() nests one generator per level, so a deep model of 60k modules pays for every
    level at every module; this walk is one loop. A module reachable twice is yielded once unless
    remove_duplicate is False, as in torch.
    """
    seen: set[int] = set()
    stack = [("", model, [""])]
    while stack:
        name, module, chain = stack.pop()
        if remove_duplicate:
            if id(module) in seen:
                continue
            seen.add(id(module))
        yield name, module, chain
        children = [(child_name, child) for child_name, child in module._modules.items() if child is not None]
        for child_name, child in reversed(children):
            child_path = f"{name}.{child_name}" if name else child_name
            stack.append((child_path, child, chain + [child_path]))


def _named_tensors_with_chains(model: nn.Module):
    """(name, tensor, owner chain) for parameters then buffers, as named_module_tensors(recurse=True) orders them."""
    modules = list(walk_modules(model))
    for attribute in ("_parameters", "_buffers"):
        memo: set[int] = set()
        for prefix, module, chain in modules:
            for leaf, tensor in getattr(module, attribute).items():
                if tensor is None or id(tensor) in memo:
                    continue
                memo.add(id(tensor))
                yield (f"{prefix}.{leaf}" if prefix else leaf), tensor, chain


def compute_module_sizes(model: nn.Module, dtype=None, special_dtypes=None) -> defaultdict:
    """Return the size in bytes of every submodule and tensor of a model ("" is the whole model).

    Args:
        model: the model (meta tensors are fine: only shapes and dtypes are read).
        dtype: size floating tensors as if converted to this dtype, when it is smaller than theirs.
        special_dtypes: tensor name -> dtype overrides, used as given.

    Returns:
        A defaultdict(int) from dotted name to bytes.

    Example:
        >>> compute_module_sizes(nn.Linear(2, 2))[""]
        24
    """
    target_size = None if dtype is None else dtype_byte_size(to_torch_dtype(dtype))
    special_sizes = {k: dtype_byte_size(to_torch_dtype(v)) for k, v in (special_dtypes or {}).items()}
    per_dtype: dict = {}
    module_sizes: defaultdict = defaultdict(int)
    with gc_paused():
        _add_tensor_sizes(model, module_sizes, special_sizes, target_size, per_dtype)
    return module_sizes


def _add_tensor_sizes(model, module_sizes, special_sizes, target_size, per_dtype) -> None:
    for name, tensor, chain in _named_tensors_with_chains(model):
        if name in special_sizes:
            element = special_sizes[name]
        else:
            element = per_dtype.get(tensor.dtype)
            if element is None:
                element = dtype_byte_size(tensor.dtype)
                if target_size is not None and is_floating_dtype_name(tensor.dtype):
                    element = min(target_size, element)
                per_dtype[tensor.dtype] = element
        size = tensor.numel() * element
        for prefix in chain:
            module_sizes[prefix] += size
        module_sizes[name] += size


def get_max_layer_size(modules, module_sizes, no_split_module_classes):
    """Return the size of the largest layer among named modules, and the names of the layers that size.

    A layer is a module with no children, or one whose class name is in `no_split_module_classes`;
    other modules are looked into, depth first in the order given.

    Args:
        modules: a list of (name, module) pairs (parameters may appear too: they count as layers).
        module_sizes: sizes as returned by `compute_module_sizes`.
        no_split_module_classes: class names of modules that are never split.

    Returns:
        (max_size, layer_names).

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.Linear(4, 4))
        >>> get_max_layer_size(list(model.named_children()), compute_module_sizes(model), [])
        (80, ['1'])
    """
    max_size = 0
    layer_names: list[str] = []
    stack = list(reversed(modules))
    while stack:
        name, module = stack.pop()
        children = list(module.named_children()) if isinstance(module, nn.Module) else []
        if not children or module.__class__.__name__ in no_split_module_classes:
            size = module_sizes[name]
            if size > max_size:
                max_size, layer_names = size, [name]
            elif size == max_size:
                layer_names.append(name)
        else:
            stack.extend((f"{name}.{child}", sub) for child, sub in reversed(children))
    return max_size, layer_names


def calculate_maximum_sizes(model: nn.Module):
    """Return (total size, (largest layer size, its names)) of a model, in bytes.

    The model's `_no_split_modules` attribute (as transformers models carry) names classes never split.

    Example:
        >>> calculate_maximum_sizes(nn.Sequential(nn.Linear(2, 2), nn.Linear(4, 4)))
        (104, (80, ['1']))
    """
    sizes = compute_module_sizes(model)
    no_split = getattr(model, "_no_split_modules", None) or []
    top_level = (
        list(model.named_parameters(recurse=False))
        + list(model.named_children())
        + list(model.named_buffers(recurse=False))
    )
    return sizes[""], get_max_layer_size(top_level, sizes, no_split)
