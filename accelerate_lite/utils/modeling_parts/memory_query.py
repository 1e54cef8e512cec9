"""The one place that asks devices how much memory they have free.

Every function here looks the torch entry points up at call time (`torch.cuda.mem_get_info`, not a copy
taken at import), so a simulated hardware profile that patches those attributes is what answers.
Simulators may also patch `get_device_free_memory` itself in this module.
"""

from __future__ import annotations

import psutil
import torch

# Accelerator families that number their devices 0, 1, ... in a max_memory dict, most specific first:
# a machine with torch_npu (or an XPU build) also has a torch.cuda module that answers "no devices".
_INDEXED_KINDS = ("npu", "xpu", "cuda")


def _device_module(kind: str):
    """Return torch.<kind> when it exists and says it is available, else None."""
    module = getattr(torch, kind, None)
    if module is None:
        return None
    try:
        return module if module.is_available() else None
    except Exception:  # a half-installed vendor extension must not break sizing on CPU
        return None


def get_accelerator_kind() -> str | None:
    """Return the kind of the integer-numbered accelerators torch sees ("npu", "xpu", "cuda") or None.

    Returns:
        The first available kind of `("npu", "xpu", "cuda")`, or None on a CPU-only machine.

    Example:
        >>> get_accelerator_kind() in (None, "npu", "xpu", "cuda")
        True
    """
    for kind in _INDEXED_KINDS:
        if _device_module(kind) is not None:
            return kind
    return None


def get_accelerator_count() -> int:
    """Return how many integer-numbered accelerators torch sees (0 on a CPU-only machine).

    Example:
        >>> get_accelerator_count() >= 0
        True
    """
    kind = get_accelerator_kind()
    return 0 if kind is None else int(getattr(torch, kind).device_count())


def is_mps_device_available() -> bool:
    """Return whether an Apple MPS device answers (asked at call time)."""
    mps = getattr(torch.backends, "mps", None)
    try:
        return bool(mps is not None and mps.is_available() and mps.is_built())
    except Exception:
        return False


def get_cpu_free_memory() -> int:
    """Return the bytes of RAM available to new allocations (psutil's `available`)."""
    return int(psutil.virtual_memory().available)


def _parse_device(device) -> tuple[str, int | None]:
    """Split int / "cuda:1" / torch.device / "cpu" / "mps" into (kind, index); ints are accelerators."""
    if isinstance(device, bool):
        raise TypeError(f"get_device_free_memory(): expected a device, got {device!r} (bool)")
    if isinstance(device, int):
        return get_accelerator_kind() or "cuda", device
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"get_device_free_memory(): {device!r} is not a device; expected an accelerator index, 'cuda:N', "
            "'npu:N', 'xpu:N', 'mps' or 'cpu'"
        ) from None
    return parsed.type, parsed.index


def get_device_free_memory(device) -> int:
    """Return the free memory of one device in bytes, asking the device at call time.

    Args:
        device: an accelerator index (int, numbered as torch numbers them), a string such as "cuda:1",
            "npu:0", "xpu:2", "mps" or "cpu", or a `torch.device`.

    Returns:
        Free bytes: `mem_get_info(index)[0]` of torch.cuda / torch.npu / torch.xpu, available RAM for
        "cpu" and "mps" (MPS shares the host's memory).

    Raises:
        ValueError: the device's kind is not one this function knows ("disk" has no memory to ask).
        RuntimeError: the accelerator kind is not available on this machine.

    Example:
        >>> get_device_free_memory("cpu") > 0
        True
    """
    kind, index = _parse_device(device)
    if kind in ("cpu", "mps"):
        return get_cpu_free_memory()
    if kind not in _INDEXED_KINDS:
        raise ValueError(
            f"get_device_free_memory(): cannot ask {device!r} for memory; expected an accelerator index, "
            "'cuda:N', 'npu:N', 'xpu:N', 'mps' or 'cpu'"
        )
    module = _device_module(kind)
    if module is None:
        raise RuntimeError(f"get_device_free_memory({device!r}): torch sees no {kind} device on this machine")
    index = 0 if index is None else index
    if kind == "xpu" and not hasattr(module, "mem_get_info"):
        # Older XPU builds have no mem_get_info: total minus what torch holds is the best estimate.
        return int(module.get_device_properties(index).total_memory - module.memory_reserved(index))
    return int(module.mem_get_info(index)[0])
