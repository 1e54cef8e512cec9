"""Memory budgets: the max_memory dict (asked of the devices or cleaned from the caller's) and balanced budgets."""

from __future__ import annotations

import logging

from torch import nn

from . import memory_query
from .sizes import compute_module_sizes, convert_file_size_to_int

logger = logging.getLogger(__name__)

_NAMED_DEVICES = ("mps", "cpu", "disk")


def get_max_memory(max_memory=None) -> dict:
    """Return a max_memory dict in placement order: accelerators by index, then "mps", "cpu", "disk".

    With None, every accelerator torch sees is asked for its free memory (through
    `memory_query.get_device_free_memory`, so a simulated profile answers) and the CPU (or MPS, which shares
    it) for the RAM available. Otherwise sizes given as strings are converted to bytes.

    Args:
        max_memory: device -> bytes or size string, or None.

    Returns:
        A new dict, accelerators first.

    Raises:
        ValueError: a key is not an accelerator index, "mps", "cpu" or "disk".

    Example:
        >>> get_max_memory({"cpu": "1GB", 0: 100})
        {0: 100, 'cpu': 1000000000}
    """
    if max_memory is None:
        return _ask_devices()
    memory = {
        key: convert_file_size_to_int(value) if isinstance(value, str) else value for key, value in max_memory.items()
    }
    accelerators = sorted(k for k in memory if isinstance(k, int) and not isinstance(k, bool))
    available = memory_query.get_accelerator_count()
    for index in accelerators:
        if index >= available or index < 0:
            logger.warning(f"Device {index} is not available, available devices are {list(range(available))}")
    ordered = accelerators + [k for k in _NAMED_DEVICES if k in memory]
    unknown = [k for k in memory if k not in ordered]
    if unknown:
        raise ValueError(
            f"max_memory has device(s) {unknown!r} that are not recognized; use integers for accelerators "
            "(GPU/NPU/XPU), 'mps', 'cpu' and 'disk'"
        )
    return {k: memory[k] for k in ordered}


def _ask_devices() -> dict:
    count = memory_query.get_accelerator_count()
    memory = {index: memory_query.get_device_free_memory(index) for index in range(count)}
    if memory_query.is_mps_device_available():
        memory["mps"] = memory_query.get_device_free_memory("mps")
    else:
        memory["cpu"] = memory_query.get_device_free_memory("cpu")
    return memory


def _leaf_names(names) -> list:
    """Names that are no other name's dotted prefix (and not "")."""
    inner = {""}
    for name in names:
        parts = name.split(".")
        inner.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return [n for n in names if n not in inner]


def _no_split_block_size(model: nn.Module, module_sizes, no_split_module_classes) -> int:
    """Size of the first module found of each no-split class, the largest of them (0 when none)."""
    if not no_split_module_classes:
        return 0
    wanted = set(no_split_module_classes)
    found: dict[str, int] = {}
    for name, size in module_sizes.items():
        if name == "":
            continue
        submodule = model
        for part in name.split("."):
            submodule = getattr(submodule, part)
        class_name = submodule.__class__.__name__
        if class_name in wanted and class_name not in found:
            found[class_name] = size
        if set(found) == wanted:
            break
    return max(found.values()) if found else 0


def get_balanced_memory(
    model: nn.Module,
    max_memory=None,
    no_split_module_classes=None,
    dtype=None,
    special_dtypes=None,
    low_zero: bool = False,
) -> dict:
    """Return a max_memory dict that spreads the model evenly over the accelerators, for infer_auto_device_map.

    Each accelerator but the last gets the model size divided by their number plus a margin (1.25 x the
    larger of the first no-split block and the mean final module); the last keeps its whole memory. With
    one accelerator and no max_memory given, 90% of it is used. `low_zero` keeps the first accelerator as
    empty as the others allow.

    Args:
        model: the model to place (a meta model is fine).
        max_memory: as for get_max_memory.
        no_split_module_classes: class names of modules that must stay on one device.
        dtype: size floating weights as if loaded in this (smaller) dtype.
        special_dtypes: tensor name -> dtype overrides.
        low_zero: put as little as possible on accelerator 0 (useful when it also runs `generate`).

    Returns:
        The budget dict (accelerators first).

    Example:
        >>> model = nn.Sequential(*[nn.Linear(10, 10) for _ in range(4)])
        >>> get_balanced_memory(model, max_memory={0: 10_000, 1: 10_000, "cpu": 10_000})
        {0: 1430, 1: 10000, 'cpu': 10000}
    """
    user_did_not_set = max_memory is None
    max_memory = get_max_memory(max_memory)
    accelerators = [d for d in max_memory if isinstance(d, int) and max_memory[d] > 0]
    num_devices = len(accelerators)
    if num_devices == 0:
        return max_memory
    if num_devices == 1:
        low_zero = False
        if user_did_not_set:
            first = next(k for k in max_memory if isinstance(k, int))
            max_memory[first] *= 0.9  # keep 10% for activations, as upstream does
            logger.info(f"Using 90% of the memory of device {first} for the model and keeping 10% as a buffer.")

    module_sizes = compute_module_sizes(model, dtype=dtype, special_dtypes=special_dtypes)
    per_gpu = module_sizes[""] // (num_devices - 1 if low_zero else num_devices)
    if no_split_module_classes is None:
        no_split_module_classes = []
    elif not isinstance(no_split_module_classes, (list, tuple)):
        no_split_module_classes = [no_split_module_classes]
    buffer = _no_split_block_size(model, module_sizes, no_split_module_classes)

    # Final modules: drop the tensors (the first leaves), then the leaves left are modules.
    tensor_names = set(_leaf_names(list(module_sizes)))
    module_only = {n: v for n, v in module_sizes.items() if n not in tensor_names}
    leaves = _leaf_names(list(module_only))
    mean_leaves = int(sum(module_only[n] for n in leaves) / max(len(leaves), 1))
    per_gpu += int(1.25 * max(buffer, mean_leaves))

    for index in sorted(accelerators)[:-1]:
        max_memory[index] = min(max_memory[0] if low_zero and index == 0 else per_gpu, max_memory[index])
    if low_zero:
        min_zero = max(0, module_sizes[""] - sum(max_memory[i] for i in range(1, num_devices)))
        max_memory[0] = min(min_zero, max_memory[0])
    return max_memory
