"""The three ways a data op reaches the other processes, behind one small interface.

- `TorchDistributedBackend`: torch.distributed, all_gather_into_tensor into one buffer (gloo builds
  without it: all_gather of a list), with the structure coalesced (see packing.py) and a lone tensor
  sent as it is;
- `XlaBackend`: torch_xla (`xm.all_gather`, `xm.all_reduce` with a scale; objects through the host, see xla_replicas);
- `OneProcessBackend`: nothing to exchange; the ops hand their inputs back as upstream does.

`current_backend()` is the one place that picks among them, from the `PartialState`'s distributed type.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch
import torch.distributed as dist

from ..enums import TORCH_DISTRIBUTED_TYPES, DistributedType
from . import xla_replicas
from .packing import pack_groups, unpack_gathered, unpack_into, unpack_views



# Integer dtypes gloo and NCCL cannot sum: summed in a wider type (two's-complement wrap-around is kept).
_REDUCE_AS = {
    dtype: wider
    for name, wider in (("int16", torch.int32), ("uint16", torch.int32), ("uint32", torch.int64), ("uint64", torch.int64))
    if isinstance(dtype := getattr(torch, name, None), torch.dtype)
}


# dtypes every torch.distributed backend moves and sums natively; others travel as bytes or widened
_NATIVE = frozenset(
    {torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool}
)


class Backend(Protocol):
    """What the data ops need from a communication library (lists of tensors in, lists out)."""

    name: str
    passthrough: bool  # one process: the ops return their inputs as upstream does
    num_processes: int
    process_index: int
    device_type: str | None  # the device type the tensors must be on, or None where any will do

    def gather(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each tensor concatenated over ranks on dim 0, in rank order (0-d tensors become 1-d)."""

    def broadcast(self, tensors: Sequence[torch.Tensor], src: int) -> list[torch.Tensor]:
        """Each tensor overwritten in place with rank `src`'s values; returns the tensors."""

    def all_reduce(self, tensors: Sequence[torch.Tensor], *, scale: float, divisor: int) -> list[torch.Tensor]:
        """New tensors: the element-wise sum over ranks (times `scale` where the backend applies one) / divisor."""

    def gather_objects(self, obj: Any) -> list:
        """Every rank's picklable `obj`, in rank order."""

    def broadcast_objects(self, objects: list, src: int) -> None:
        """Replace the items of `objects` in place by rank `src`'s."""


class OneProcessBackend:
    """A world of one process: every collective is the identity."""

    name = "none"
    passthrough = True
    num_processes = 1
    process_index = 0
    device_type = None

    def gather(self, tensors):
        return list(tensors)

    def broadcast(self, tensors, src):
        return list(tensors)

    def all_reduce(self, tensors, *, scale, divisor):
        return [tensor.clone() for tensor in tensors]

    def gather_objects(self, obj):
        return [obj]

    def broadcast_objects(self, objects, src):
        return None


def _groupable(tensors) -> bool:
    """True when NCCL can gather these as one group: native dtypes, non-empty, all on one CUDA device."""
    if not tensors:
        return False
    device = tensors[0].device
    return device.type == "cuda" and all(
        t.dtype in _NATIVE and t.device == device and t.numel() > 0 for t in tensors
    )


class TorchDistributedBackend:
    """torch.distributed collectives on the default group, one collective per packed group of tensors."""

    passthrough = False

    def __init__(self, name: str, num_processes: int, process_index: int, device: torch.device):
        self.name = name
        self.num_processes = num_processes
        self.process_index = process_index
        # gloo takes CPU (and some CUDA) tensors; the device backends need tensors on their device
        self.device_type = None if name == "gloo" else device.type
        # One output buffer (no concatenation copy afterwards); gloo builds without it fall back to a list.
        self._gather_into_one_buffer = True
        self._gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

    @torch.no_grad()  # like c10d itself: packing copies must not join (or trip over) autograd
    def gather(self, tensors):
        if len(tensors) == 1 and tensors[0].dtype in _NATIVE:
            return [self._gather_one(tensors[0])]
        if self.name == "nccl" and _groupable(tensors):
            return self._gather_grouped(tensors)
        results: list = [None] * len(tensors)
        for pack in pack_groups(tensors, as_bytes=True, fresh=False):
            for index, tensor in unpack_gathered(pack, self._all_gather(pack.buffer), self.num_processes):
                results[index] = tensor
        return results

    def _gather_grouped(self, tensors):
        # NCCL runs a group of all_gathers as one launch straight into their outputs: no packing copies
        # (measured on 2 GPUs: packing a dict of 8 tensors cost more than the eight calls it saved).
        inputs = [t.reshape(1) if t.ndim == 0 else t.contiguous() for t in tensors]
        world = self.num_processes
        outputs = [torch.empty((world * t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device) for t in inputs]
        with dist.distributed_c10d._coalescing_manager(device=inputs[0].device, async_ops=True) as group:
            for out, tensor in zip(outputs, inputs):
                dist.all_gather_into_tensor(out, tensor)
        group.wait()
        return outputs

    def _gather_one(self, tensor: torch.Tensor) -> torch.Tensor:
        # a lone tensor goes as it is (upstream's path): packing would only add Python overhead
        if tensor.ndim == 0:
            tensor = tensor.reshape(1)
        elif not tensor.is_contiguous():
            tensor = tensor.contiguous()
        world = self.num_processes
        if self._gather_into_one_buffer:
            out = torch.empty((world * tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
            if self._gather_into(out, tensor):
                return out
        rows = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(rows, tensor)
        return torch.cat(rows)

    def _gather_into(self, out: torch.Tensor, tensor: torch.Tensor) -> bool:
        """all_gather into one buffer; False where this gloo build lacks it (then use a list from now on)."""
        try:
            self._gather_single(out, tensor)
            return True
        except RuntimeError:
            # raised locally on every rank before any data moved (the same torch build everywhere)
            if self.name != "gloo":
                raise
            self._gather_into_one_buffer = False
            return False

    def _all_gather(self, buffer: torch.Tensor):
        if self._gather_into_one_buffer:
            out = torch.empty(self.num_processes * buffer.numel(), dtype=buffer.dtype, device=buffer.device)
            if self._gather_into(out, buffer):
                return out
        rows = [torch.empty_like(buffer) for _ in range(self.num_processes)]
        dist.all_gather(rows, buffer)
        return rows

    @torch.no_grad()  # writing back into parameters that require grad is what broadcast is for
    def broadcast(self, tensors, src):
        if len(tensors) == 1 and tensors[0].dtype in _NATIVE and tensors[0].is_contiguous():
            dist.broadcast(tensors[0], src=src)  # in place, as upstream
            return list(tensors)
        is_source = self.process_index == src
        for pack in pack_groups(tensors, as_bytes=True, fresh=False, fill=is_source):
            dist.broadcast(pack.buffer, src=src)
            if not is_source:
                unpack_into(pack, tensors)
        return list(tensors)

    def all_reduce(self, tensors, *, scale, divisor):
        if len(tensors) == 1 and tensors[0].dtype in _NATIVE:
            total = tensors[0].clone(memory_format=torch.contiguous_format)
            dist.all_reduce(total, dist.ReduceOp.SUM)
            if divisor != 1:
                total /= divisor
            return [total]
        results: list = [None] * len(tensors)
        widened = [t.to(_REDUCE_AS[t.dtype]) if t.dtype in _REDUCE_AS else t for t in tensors]
        for pack in pack_groups(widened, as_bytes=False, fresh=True):
            dist.all_reduce(pack.buffer, dist.ReduceOp.SUM)
            if divisor != 1:
                pack.buffer /= divisor
            for index, tensor in unpack_views(pack):
                results[index] = tensor if tensor.dtype == tensors[index].dtype else tensor.to(tensors[index].dtype)
        return results

    def gather_objects(self, obj):
        out = [None] * self.num_processes
        dist.all_gather_object(out, obj)
        return out

    def broadcast_objects(self, objects, src):
        dist.broadcast_object_list(objects, src=src)


class XlaBackend:
    """torch_xla collectives over the replicas; tensors are coalesced per dtype (XLA cannot view bytes)."""

    name = "xla"
    passthrough = False
    device_type = "xla"

    def __init__(self, num_processes: int, process_index: int):
        import torch_xla.core.xla_model as xm  # noqa: PLC0415 (only present on XLA machines)

        self.xm = xm
        self.num_processes = num_processes
        self.process_index = process_index

    # Syncs go through xla_replicas.sync (one compile at a time), no layout is pinned and objects do not
    # use xm.mesh_reduce: replicas that are threads of one process (PJRT CPU, TPU v2/v3) otherwise never
    # meet in a collective and XLA aborts the process (see xla_replicas.py; ci/xla/ runs them for real).

    def gather(self, tensors):
        results: list = [None] * len(tensors)
        # replicas may hold different pending graphs; cut them so the gather graph is the same everywhere
        xla_replicas.sync()
        for pack in pack_groups(tensors, as_bytes=False, fresh=False):
            gathered = self.xm.all_gather(pack.buffer, pin_layout=False)
            for index, tensor in unpack_gathered(pack, gathered, self.num_processes):
                results[index] = tensor
        xla_replicas.sync()
        return results

    def broadcast(self, tensors, src):
        # XLA has no broadcast: rank src's values travel through the host, one exchange for all
        values = xla_replicas.broadcast_object([t.cpu() for t in tensors], src, self.process_index)
        for tensor, value in zip(tensors, values):
            tensor.copy_(value.to(tensor.device))
        return list(tensors)

    def all_reduce(self, tensors, *, scale, divisor):
        clones = [tensor.clone() for tensor in tensors]
        xla_replicas.all_reduce_sum(clones, scale=scale)
        if divisor != 1:
            for clone in clones:
                clone /= divisor
        return clones

    def gather_objects(self, obj):
        return xla_replicas.all_gather_objects(obj)

    def broadcast_objects(self, objects, src):
        objects[:] = xla_replicas.broadcast_object(list(objects), src, self.process_index)


_PARTIAL_STATE = None  # the class, imported late (state imports utils)
_state = None  # one instance: a Borg, so it always shows the shared state
_cache: tuple = (None, None)  # (state key, backend)


def _partial_state():
    """The current PartialState, built (detecting the world) only where none is set up or it was reset."""
    global _PARTIAL_STATE, _state
    if _PARTIAL_STATE is None:
        from ...state import PartialState  # noqa: PLC0415

        _PARTIAL_STATE = PartialState
    state = _state
    if state is None or not state.__dict__ or state.__dict__ is not _PARTIAL_STATE._shared_state:
        state = _state = _PARTIAL_STATE()
    return state


def current_state_and_backend():
    """Return the `PartialState` and the backend its distributed type calls for (cached per state).

    Returns:
        `(state, backend)`; the backend is rebuilt whenever the state changes (e.g. after a reset).
    """
    global _cache
    state = _partial_state()
    key = (state.distributed_type, state.num_processes, state.process_index, state.backend, state.device)
    cached = _cache  # read once: XLA replicas that are threads of one process replace it concurrently
    if cached[0] != key:
        cached = _cache = (key, _make_backend(state))
    return state, cached[1]


def current_backend() -> Backend:
    """Return the backend for the current `PartialState` (see `current_state_and_backend`)."""
    return current_state_and_backend()[1]


def _make_backend(state) -> Backend:
    if state.distributed_type == DistributedType.TPU:
        return XlaBackend(state.num_processes, state.process_index)
    if state.distributed_type in TORCH_DISTRIBUTED_TYPES:
        return TorchDistributedBackend(state.backend or dist.get_backend(), state.num_processes, state.process_index, state.device)
    return OneProcessBackend()
