"""Coalescing: pack the tensors of a structure into one flat buffer per group, and unpack results.

A collective over a nested structure of k tensors costs k launches and k latencies when done one
tensor at a time. Packing copies the tensors of one group (one device, and one dtype where the
collective does arithmetic) into a single 1-D buffer, so the structure needs one collective per
group. Where no arithmetic happens (gather, broadcast) a group holds every dtype: the buffer is
raw bytes and each tensor's segment starts on a 16-byte boundary so it can be viewed back as its
own dtype without a copy. A group of one tensor is not copied at all: its own flat view is the buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

ALIGN_BYTES = 16  # the largest element size (complex128), so every segment can be viewed as its dtype


@dataclass(frozen=True)
class Slot:
    """Where one tensor lives in a pack's buffer (elements of the buffer's dtype)."""

    index: int  # position of the tensor in the list that was packed
    start: int
    stop: int
    shape: torch.Size  # the tensor's own shape (0-d kept)
    dtype: torch.dtype


@dataclass
class Pack:
    """One group's flat buffer and the slots of the tensors in it."""

    buffer: torch.Tensor  # 1-D; torch.uint8 when `as_bytes`
    slots: tuple[Slot, ...]
    as_bytes: bool
    shares_input: bool  # the buffer is a view of the (single) input tensor itself


def pack_groups(tensors: Sequence[torch.Tensor], *, as_bytes: bool, fresh: bool, fill: bool = True) -> list[Pack]:
    """Group `tensors` by device (and by dtype unless `as_bytes`) and pack each group into one buffer.

    Args:
        tensors: the tensors to pack, in any layout (non-contiguous and 0-d included).
        as_bytes: mix dtypes in one raw-byte buffer (for collectives that only move data).
        fresh: the buffer must not share memory with an input (it will be written in place).
        fill: copy the tensors' values into a new buffer (False where a collective overwrites it anyway).

    Returns:
        One `Pack` per group, in order of first appearance.
    """
    groups: dict[tuple, list[int]] = {}
    for index, tensor in enumerate(tensors):
        key = (tensor.device,) if as_bytes else (tensor.device, tensor.dtype)
        groups.setdefault(key, []).append(index)
    return [
        _pack_one(tensors[indices[0]], indices[0], fresh, as_bytes) if len(indices) == 1 else _pack_many(tensors, indices, as_bytes, fill)
        for indices in groups.values()
    ]


def _pack_one(tensor: torch.Tensor, index: int, fresh: bool, as_bytes: bool) -> Pack:
    source = tensor.resolve_conj().resolve_neg()
    buffer = source.reshape(-1)  # a view when the layout allows, else one copy
    if fresh or (as_bytes and buffer.stride(0) != 1):  # a 1-element view may keep an odd stride
        buffer = buffer.clone(memory_format=torch.contiguous_format)
    if as_bytes:  # every dtype travels, also those a backend has no type for (float8, uint16 on gloo)
        buffer = buffer.view(torch.uint8)
    shares = not fresh and buffer.numel() > 0 and _same_storage(buffer, tensor)
    slot = Slot(index, 0, buffer.numel(), tensor.shape, tensor.dtype)
    return Pack(buffer, (slot,), as_bytes=as_bytes, shares_input=shares)


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors share memory; False where storage is not reachable (XLA, wrapper subclasses),
    which costs one copy at most."""
    if a.device.type == "xla":
        return False
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return False


def _pack_many(tensors: Sequence[torch.Tensor], indices: list[int], as_bytes: bool, fill: bool) -> Pack:
    slots = []
    offset = 0
    for index in indices:
        tensor = tensors[index]
        size = tensor.numel() * (tensor.element_size() if as_bytes else 1)
        if as_bytes:
            offset = -(-offset // ALIGN_BYTES) * ALIGN_BYTES
        slots.append(Slot(index, offset, offset + size, tensor.shape, tensor.dtype))
        offset += size
    if as_bytes:
        offset = -(-offset // ALIGN_BYTES) * ALIGN_BYTES  # rows of a gathered buffer stay aligned too
    first = tensors[indices[0]]
    buffer = torch.empty(offset, dtype=torch.uint8 if as_bytes else first.dtype, device=first.device)
    pack = Pack(buffer, tuple(slots), as_bytes=as_bytes, shares_input=False)
    if fill:
        _fill(pack, tensors)
    return pack


@torch.no_grad()  # the buffer is communication scratch space, not part of any autograd graph
def _fill(pack: Pack, tensors: Sequence[torch.Tensor]) -> None:
    sources = [tensors[slot.index] for slot in pack.slots]
    gapless = all(a.stop == b.start for a, b in zip(pack.slots, pack.slots[1:])) and pack.slots[0].start == 0
    if gapless and all(t.is_contiguous() and not t.is_conj() and not t.is_neg() for t in sources):
        # one concatenation kernel instead of one copy per tensor (the usual case: aligned, contiguous)
        flat = []
        for tensor in sources:
            if tensor.numel():  # empty ones take no room (and their strides may be anything)
                view = tensor.view(-1)
                view = view if view.stride(0) == 1 else view.clone()  # a 1-element view may keep an odd stride
                flat.append(view.view(torch.uint8) if pack.as_bytes else view)
        if flat:
            torch.cat(flat, out=pack.buffer[: pack.slots[-1].stop])
        return
    for slot, tensor in zip(pack.slots, sources):
        segment_view(pack, pack.buffer, slot).copy_(tensor.resolve_conj().resolve_neg())


def segment_view(pack: Pack, row: torch.Tensor, slot: Slot) -> torch.Tensor:
    """View `slot`'s segment of a 1-D buffer laid out like `pack.buffer` as the tensor's dtype and shape."""
    segment = row[slot.start : slot.stop]
    if pack.as_bytes:
        segment = segment.view(slot.dtype)
    return segment.view(slot.shape)


def unpack_gathered(pack: Pack, gathered, world_size: int) -> list[tuple[int, torch.Tensor]]:
    """Split the result of all-gathering `pack.buffer` into each tensor's rank-ordered concatenation.

    Args:
        pack: the pack whose buffer every rank contributed.
        gathered: one 1-D tensor holding all ranks' buffers back to back, or a list of them, one per rank.
        world_size: the number of ranks.

    Returns:
        `(index, tensor)` pairs: each tensor concatenated over ranks on dim 0 (0-d tensors become 1-d).
    """
    results = []
    if isinstance(gathered, torch.Tensor):
        table = gathered.view(world_size, gathered.numel() // world_size)  # one row per rank
    for slot in pack.slots:
        row_shape = slot.shape if len(slot.shape) else (1,)
        if slot.start == slot.stop:  # empty: nothing to view (and strides of empty views cannot be re-typed)
            device = gathered.device if isinstance(gathered, torch.Tensor) else gathered[0].device
            merged = torch.empty((world_size * row_shape[0], *row_shape[1:]), dtype=slot.dtype, device=device)
        elif isinstance(gathered, torch.Tensor):
            rows = table[:, slot.start : slot.stop]
            if pack.as_bytes:
                rows = rows.view(slot.dtype)
            # a view when the buffer held only this tensor, else one copy
            merged = rows.reshape(world_size * row_shape[0], *row_shape[1:])
        else:
            pieces = [segment_view(pack, row, slot).reshape(row_shape) for row in gathered]
            merged = torch.cat(pieces, dim=0)
        results.append((slot.index, merged))
    return results


def unpack_into(pack: Pack, tensors: Sequence[torch.Tensor]) -> None:
    """Copy each segment of `pack.buffer` back into its original tensor (after an in-place collective)."""
    if pack.shares_input:
        return
    for slot in pack.slots:
        tensors[slot.index].copy_(segment_view(pack, pack.buffer, slot))


def unpack_views(pack: Pack) -> list[tuple[int, torch.Tensor]]:
    """Return `(index, tensor)` views of each segment of `pack.buffer` with the original shapes."""
    return [(slot.index, segment_view(pack, pack.buffer, slot)) for slot in pack.slots]
