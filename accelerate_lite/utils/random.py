"""Seeding every random number generator, and giving all processes rank 0's generator states."""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, List, Optional, Union

import numpy as np
import torch
import torch.distributed as dist

from .enums import TORCH_DISTRIBUTED_TYPES, DistributedType, RNGType
from .imports import is_npu_available, is_tpu_available, is_xpu_available

# Backends whose collectives take CPU tensors; the others (nccl, hccl, ccl) need them on the device.
_CPU_TENSOR_BACKENDS = ("gloo", "mpi")


def _xm():
    import torch_xla.core.xla_model as xm

    return xm


@dataclasses.dataclass(frozen=True)
class _Generator:
    """How to read and write one kind of RNG state (as a uint8 tensor) and when it exists."""

    is_available: Callable[[], bool]
    get_state: Callable
    set_state: Callable
    missing: str  # what to say when it is not available


_GENERATORS = {
    RNGType.TORCH: _Generator(lambda: True, lambda g: torch.get_rng_state(), lambda s, g: torch.set_rng_state(s), ""),
    RNGType.CUDA: _Generator(
        lambda: torch.cuda.is_available(),
        lambda g: torch.cuda.get_rng_state(),
        lambda s, g: torch.cuda.set_rng_state(s),
        "CUDA is not available here",
    ),
    RNGType.NPU: _Generator(
        lambda: is_npu_available(),
        lambda g: torch.npu.get_rng_state(),
        lambda s, g: torch.npu.set_rng_state(s),
        "no NPU is available here",
    ),
    RNGType.XPU: _Generator(
        lambda: is_xpu_available(),
        lambda g: torch.xpu.get_rng_state(),
        lambda s, g: torch.xpu.set_rng_state(s),
        "no XPU is available here",
    ),
    RNGType.XLA: _Generator(
        lambda: is_tpu_available(),
        lambda g: torch.tensor(_xm().get_rng_state()),
        lambda s, g: _xm().set_rng_state(s.item()),
        "no TPU/XLA device is available here",
    ),
    RNGType.GENERATOR: _Generator(
        lambda: True, lambda g: g.get_state(), lambda s, g: g.set_state(s), "pass generator= to synchronize it"
    ),
}

# Seeders of the device generators, each used where its device answers.
_DEVICE_SEEDERS = (
    (lambda: is_xpu_available(), lambda seed: torch.xpu.manual_seed_all(seed)),
    (lambda: is_npu_available(), lambda seed: torch.npu.manual_seed_all(seed)),
    (lambda: True, lambda seed: torch.cuda.manual_seed_all(seed)),  # deferred until CUDA starts: always safe
    (lambda: is_tpu_available(), lambda seed: _xm().set_rng_state(seed)),
)


def set_seed(seed: int, device_specific: bool = False) -> None:
    """Seed `random`, numpy, torch and every accelerator generator present.

    Args:
        seed: the seed, 0 <= seed < 2**32 (numpy's range).
        device_specific: add this process's index to the seed, so ranks draw different streams.

    Raises:
        TypeError: when seed is not an int.
        ValueError: when the seed (after adding the process index) is outside numpy's range.

    Example:
        >>> set_seed(42)
        >>> a = torch.rand(2); set_seed(42)
        >>> torch.equal(a, torch.rand(2))
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"set_seed(): seed must be an int, got {type(seed).__name__} {seed!r}")
    seed = int(seed)
    if device_specific:
        from ..state import PartialState

        seed += PartialState().process_index
    if not 0 <= seed < 2**32:
        raise ValueError(f"set_seed(): seed {seed} is outside 0 <= seed < 2**32 (what numpy accepts)")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    for is_present, seeder in _DEVICE_SEEDERS:
        if is_present():
            seeder(seed)


def synchronize_rng_state(rng_type: Optional[Union[str, RNGType]] = None, generator: Optional[torch.Generator] = None):
    """Give every process rank 0's state of one random number generator.

    Args:
        rng_type: which generator ("torch", "cuda", "npu", "xpu", "xla", "generator"); None does nothing.
        generator: the torch.Generator to synchronize when rng_type is "generator".

    Raises:
        ValueError: for an unknown rng_type, or "generator" without a generator.
        RuntimeError: when the device of rng_type is not available here.

    Example:
        >>> synchronize_rng_state("torch")  # on one process: nothing changes
    """
    if rng_type is None:
        return
    rng_type = _as_rng_type(rng_type)
    if rng_type == RNGType.GENERATOR and generator is None:
        raise ValueError('synchronize_rng_state("generator") needs generator=<the torch.Generator to synchronize>')
    source = _GENERATORS[rng_type]
    if not source.is_available():
        raise RuntimeError(f"synchronize_rng_state({rng_type.value!r}): {source.missing}")
    state = source.get_state(generator)
    source.set_state(_broadcast_from_rank_zero(state), generator)


def synchronize_rng_states(rng_types: List[Union[str, RNGType]], generator: Optional[torch.Generator] = None):
    """Synchronize each generator of rng_types (see `synchronize_rng_state`).

    Example:
        >>> synchronize_rng_states(["torch", "generator"], generator=torch.Generator())
    """
    for rng_type in rng_types:
        synchronize_rng_state(rng_type, generator=generator)


def _as_rng_type(rng_type) -> RNGType:
    try:
        return RNGType(rng_type)
    except ValueError:
        raise ValueError(
            f"synchronize_rng_state(): unknown rng_type {rng_type!r}; expected one of {RNGType.list()}"
        ) from None


def _broadcast_from_rank_zero(state: torch.Tensor) -> torch.Tensor:
    from ..state import PartialState

    process = PartialState()
    if process.distributed_type == DistributedType.TPU:
        # Every replica's state gathered, rank 0's kept, through the unpinned, one-compile-at-a-time
        # all_gather of ops/xla_replicas.py: plain xm collectives can hang replicas that are threads.
        from .ops.xla_replicas import all_gather

        # uint8 collectives hung on PJRT CPU: the bytes travel as int32
        wide = state.to(torch.int32) if state.dtype == torch.uint8 else state
        return all_gather(wide.reshape(1, -1)).cpu()[0].reshape(state.shape).to(state.dtype)
    if process.distributed_type in TORCH_DISTRIBUTED_TYPES and process.num_processes > 1:
        on_device = dist.get_backend() not in _CPU_TENSOR_BACKENDS
        shared = state.to(process.device) if on_device else state.clone()
        dist.broadcast(shared, 0)
        return shared.cpu()
    return state
