"""Walking nested list/tuple/dict/namedtuple structures of tensors: the one traversal under every data op.

Everything here is local to one process (no communication). Containers are rebuilt through
`honor_type` (sequences) and `rebuild_mapping` (mappings), the only two places that know how
namedtuples, Mapping subclasses and defaultdicts are constructed.
"""

from __future__ import annotations

import pickle
from collections import defaultdict
from functools import update_wrapper
from typing import Any, Callable, Mapping

import torch

from ..configurations import TensorInformation


def is_torch_tensor(tensor: Any) -> bool:
    """Return whether `tensor` is a `torch.Tensor`."""
    return isinstance(tensor, torch.Tensor)


def is_tensor_information(tensor_info: Any) -> bool:
    """Return whether `tensor_info` is a `TensorInformation`."""
    return isinstance(tensor_info, TensorInformation)


def is_namedtuple(data: Any) -> bool:
    """Return whether `data` is an instance of a `namedtuple` class (a direct tuple subclass with `_fields`)."""
    data_type = type(data)
    if data_type.__bases__ != (tuple,):
        return False
    fields = getattr(data_type, "_fields", None)
    return isinstance(fields, tuple) and all(isinstance(field, str) for field in fields)


def honor_type(obj: Any, generator) -> Any:
    """Build a container of `obj`'s type (list, tuple or namedtuple) from the items of `generator`.

    Example:
        >>> honor_type((1, 2), (x * 2 for x in (1, 2)))
        (2, 4)
    """
    if is_namedtuple(obj):
        return type(obj)(*list(generator))
    return type(obj)(generator)


def rebuild_mapping(obj: Mapping, items: dict) -> Mapping:
    """Build a mapping of `obj`'s type holding `items` (a defaultdict keeps its default factory)."""
    if isinstance(obj, defaultdict):
        return type(obj)(obj.default_factory, items)
    return type(obj)(items)


def recursively_apply(func, data, *args, test_type=is_torch_tensor, error_on_other_type=False, **kwargs):
    """Apply `func` to every leaf of a nested list/tuple/dict structure that passes `test_type`.

    Args:
        func: called as `func(leaf, *args, **kwargs)` on each matching leaf.
        data: a leaf, or a nested list/tuple/namedtuple/Mapping of leaves.
        *args: extra positional arguments for `func`.
        test_type: predicate selecting the leaves `func` applies to (default: torch tensors).
        error_on_other_type: raise on a leaf that fails `test_type` instead of returning it unchanged.
        **kwargs: extra keyword arguments for `func`.

    Returns:
        A structure of the same container types with `func` applied to the matching leaves.

    Raises:
        TypeError: a leaf failed `test_type` and `error_on_other_type` is set.

    Example:
        >>> recursively_apply(lambda t: t + 1, {"a": [torch.zeros(1)], "b": "text"})
        {'a': [tensor([1.])], 'b': 'text'}
    """
    if isinstance(data, (tuple, list)):
        return honor_type(
            data,
            (
                recursively_apply(func, o, *args, test_type=test_type, error_on_other_type=error_on_other_type, **kwargs)
                for o in data
            ),
        )
    if isinstance(data, Mapping):
        return rebuild_mapping(
            data,
            {
                k: recursively_apply(func, v, *args, test_type=test_type, error_on_other_type=error_on_other_type, **kwargs)
                for k, v in data.items()
            },
        )
    if test_type(data):
        return func(data, *args, **kwargs)
    if error_on_other_type:
        name = getattr(func, "__name__", repr(func))
        raise TypeError(
            f"Unsupported types ({type(data)}) passed to `{name}`. Only nested list/tuple/dicts of "
            f"objects that are valid for `{test_type.__name__}` should be passed."
        )
    return data


def flatten_tensors(data, op_name: str = "operation") -> tuple[list[torch.Tensor], Callable[[list], Any]]:
    """Split a nested structure into its tensor leaves and a function that rebuilds it from new leaves.

    Args:
        data: a tensor or nested list/tuple/dict of tensors.
        op_name: the operation named in the error for a non-tensor leaf.

    Returns:
        `(leaves, rebuild)`: the tensors in traversal order, and `rebuild(new_leaves)` returning the
        same container structure holding `new_leaves` in that order.

    Raises:
        TypeError: a leaf is not a tensor (as upstream's ops with `error_on_other_type=True`).
    """
    if isinstance(data, torch.Tensor):  # the common case, kept cheap
        return [data], _first
    leaves: list[torch.Tensor] = []

    def collect(tensor):
        leaves.append(tensor)
        return tensor

    collect.__name__ = op_name
    recursively_apply(collect, data, error_on_other_type=True)

    def rebuild(new_leaves):
        items = iter(new_leaves)
        return recursively_apply(lambda _: next(items), data)

    return leaves, rebuild


def _first(items):
    return items[0]


def _device_for_vendor(device):
    """Spell an int or bare vendor device the way vendor extensions accept (torch_npu rejects `.to(0)`)."""
    from ..imports import is_npu_available, is_xpu_available  # noqa: PLC0415 (imports reads the hardware)

    for kind, is_available in (("npu", is_npu_available), ("xpu", is_xpu_available)):
        if is_available():
            if isinstance(device, int):
                return f"{kind}:{device}"
            if isinstance(device, (str, torch.device)) and torch.device(device) == torch.device(kind):
                return f"{kind}:0"
            return device
    return device


def send_to_device(tensor, device, non_blocking=False, skip_keys=None):
    """Move every tensor (and anything with a `.to` method) in a nested structure to `device`.

    Args:
        tensor: a tensor or nested list/tuple/dict of them.
        device: a `torch.device`, a string or a device index.
        non_blocking: passed on to `.to` where it accepts it.
        skip_keys: a key or list of keys of mappings whose values are left where they are.

    Returns:
        The same structure with the tensors on `device`.

    Example:
        >>> send_to_device({"x": torch.ones(2), "meta": "id"}, "cpu")
        {'x': tensor([1., 1.]), 'meta': 'id'}
    """
    if isinstance(skip_keys, str):
        skip_keys = [skip_keys]
    elif skip_keys is None:
        skip_keys = []
    return _send(tensor, _device_for_vendor(device), non_blocking, skip_keys)


def _send(data, device, non_blocking, skip_keys):
    if isinstance(data, (tuple, list)):
        return honor_type(data, (_send(t, device, non_blocking, skip_keys) for t in data))
    if isinstance(data, Mapping):
        return rebuild_mapping(
            data, {k: t if k in skip_keys else _send(t, device, non_blocking, skip_keys) for k, t in data.items()}
        )
    if not hasattr(data, "to"):
        return data
    try:
        return data.to(device, non_blocking=non_blocking)
    except TypeError:  # a `.to` that takes no non_blocking
        return data.to(device)


def get_data_structure(data):
    """Return the structure of `data` with a `TensorInformation` (shape, dtype) in place of each tensor."""
    return recursively_apply(lambda t: TensorInformation(shape=t.shape, dtype=t.dtype), data)


def get_shape(data):
    """Return the structure of `data` with each tensor's shape as a list of ints."""
    return recursively_apply(lambda t: list(t.shape), data)


def initialize_tensors(data_structure):
    """Allocate an (uninitialised) tensor for every `TensorInformation` in a nested structure.

    Example:
        >>> initialize_tensors({"x": TensorInformation(torch.Size([2]), torch.int64)})["x"].shape
        torch.Size([2])
    """

    def _allocate(info):
        return torch.empty(tuple(info.shape), dtype=info.dtype)  # a tuple: 0-d shapes work too

    return recursively_apply(_allocate, data_structure, test_type=is_tensor_information)


def find_batch_size(data) -> int:
    """Return the first dimension of the first tensor found in a nested structure.

    Raises:
        ValueError: an empty container is on the way to the first tensor.
        TypeError: the first leaf is not a tensor.
    """
    if isinstance(data, (tuple, list, Mapping)) and len(data) == 0:
        raise ValueError(f"Cannot find the batch size from empty {type(data)}.")
    if isinstance(data, (tuple, list)):
        return find_batch_size(data[0])
    if isinstance(data, Mapping):
        return find_batch_size(next(iter(data.values())))
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"Can only find the batch size of tensors but got {type(data)}.")
    return data.shape[0]


def ignorant_find_batch_size(data):
    """Like `find_batch_size`, but return None where that raises ValueError or TypeError."""
    try:
        return find_batch_size(data)
    except (ValueError, TypeError):
        return None


# dtypes Tensor.tolist cannot convert directly: go through float32 (exact for these)
_TOLIST_VIA_FLOAT32 = {torch.bfloat16} | {
    getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz") if hasattr(torch, name)
}


def listify(data):
    """Replace every tensor in a nested structure by its value as (nested) Python lists and numbers.

    Example:
        >>> listify({"x": torch.tensor([1, 2])})
        {'x': [1, 2]}
    """

    def _to_list(tensor):
        tensor = tensor.detach().cpu()
        if tensor.dtype in _TOLIST_VIA_FLOAT32:
            tensor = tensor.to(torch.float32)
        return tensor.tolist()

    return recursively_apply(_to_list, data)


def slice_tensors(data, tensor_slice, process_index=None, num_processes=None):
    """Index every tensor of a nested structure with `tensor_slice` (process_index/num_processes are unused, as upstream).

    Example:
        >>> slice_tensors({"x": torch.arange(4)}, slice(1, 3))
        {'x': tensor([1, 2])}
    """
    return recursively_apply(lambda t: t[tensor_slice], data)


def concatenate(data, dim=0):
    """Concatenate a list of same-structured nested structures into one structure of concatenated tensors.

    Raises:
        TypeError: the leaves are not tensors.

    Example:
        >>> concatenate([{"x": torch.zeros(1)}, {"x": torch.ones(1)}])
        {'x': tensor([0., 1.])}
    """
    first = data[0]
    if isinstance(first, (tuple, list)):
        return honor_type(first, (concatenate([d[i] for d in data], dim=dim) for i in range(len(first))))
    if isinstance(first, Mapping):
        return rebuild_mapping(first, {k: concatenate([d[k] for d in data], dim=dim) for k in first.keys()})
    if not isinstance(first, torch.Tensor):
        raise TypeError(f"Can only concatenate tensors but got {type(first)}")
    return torch.cat(data, dim=dim)


def find_device(data):
    """Return the device of the first tensor in a nested structure, or None when it holds no tensor."""
    if isinstance(data, Mapping):
        data = list(data.values())
    if isinstance(data, (tuple, list)):
        for obj in data:
            device = find_device(obj)
            if device is not None:
                return device
        return None
    if isinstance(data, torch.Tensor):
        return data.device
    return None


def _is_fp16_bf16_tensor(tensor) -> bool:
    return hasattr(tensor, "dtype") and tensor.dtype in (torch.float16, torch.bfloat16)


def convert_to_fp32(tensor):
    """Convert every float16/bfloat16 tensor of a nested structure to float32; leave the rest as it is.

    Example:
        >>> convert_to_fp32([torch.ones(1, dtype=torch.half), torch.ones(1, dtype=torch.int8)])[0].dtype
        torch.float32
    """
    return recursively_apply(lambda t: t.float(), tensor, test_type=_is_fp16_bf16_tensor)


class ConvertOutputsToFp32:
    """Callable wrapper whose outputs come back with their fp16/bf16 tensors in fp32 (refuses to be pickled)."""

    def __init__(self, model_forward):
        self.model_forward = model_forward
        update_wrapper(self, model_forward)

    def __call__(self, *args, **kwargs):
        return convert_to_fp32(self.model_forward(*args, **kwargs))

    def __getstate__(self):
        raise pickle.PicklingError(
            "Cannot pickle a prepared model with automatic mixed precision: unwrap it with "
            "`Accelerator.unwrap_model(model)` (or `extract_model_from_parallel`) before pickling it."
        )


def convert_outputs_to_fp32(model_forward):
    """Wrap a forward function so its fp16/bf16 outputs come back in fp32.

    The wrapper exposes the `ConvertOutputsToFp32` object as `__wrapped__`, so that
    `extract_model_from_parallel(keep_fp32_wrapper=False)` can take it off again.

    Example:
        >>> forward = convert_outputs_to_fp32(lambda x: x.half())
        >>> forward(torch.ones(1)).dtype
        torch.float32
    """
    wrapped = ConvertOutputsToFp32(model_forward)

    def forward(*args, **kwargs):
        return wrapped(*args, **kwargs)

    forward.__wrapped__ = wrapped
    return forward
