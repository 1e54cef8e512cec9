"""Expected results of the collective operations, computed in one process from every rank's input.

`identity` is True where the state runs a single process without a distributed backend
(DistributedType.NO): there the library's collectives return their input unchanged.
"""

from __future__ import annotations

import torch

from .compare import tree_zip


def is_identity(state) -> bool:
    """True when PartialState says no distributed backend is in use (collectives are identities)."""
    return str(state.distributed_type) in ("NO", "DistributedType.NO")


def expected_gather(world_input: list, identity: bool = False, rank: int = 0):
    """Every rank's tensors concatenated on dim 0 in rank order (0-d tensors become 1-d)."""
    if identity:
        return world_input[rank]
    return tree_zip(lambda ts: torch.cat([t.reshape(1) if t.dim() == 0 else t for t in ts]), world_input)


def expected_gather_object(world_input: list, identity: bool = False, rank: int = 0) -> list:
    """Every rank's list, concatenated in rank order (upstream flattens one level)."""
    if identity:
        return world_input[rank]
    return [item for objects in world_input for item in objects]


def expected_reduce(world_input: list, reduction: str, identity: bool = False, rank: int = 0):
    """The sum (or mean) over ranks of each leaf, computed in float64 and cast back."""
    if identity:
        return world_input[rank]

    def combine(tensors):
        total = torch.stack([t.double() for t in tensors]).sum(0)
        if reduction == "mean":
            total = total / len(tensors)
        return total.to(tensors[0].dtype)

    return tree_zip(combine, world_input)


def expected_pad(tensors: list, rank: int, dim: int, pad_index: int, pad_first: bool, identity: bool = False):
    """This rank's tensor padded with pad_index on `dim` to the largest size any rank has."""
    mine = tensors[rank]
    if identity or dim >= mine.dim():
        return mine
    largest = max(t.shape[dim] for t in tensors)
    if largest == mine.shape[dim]:
        return mine
    shape = list(mine.shape)
    shape[dim] = largest
    out = torch.full(shape, pad_index, dtype=mine.dtype)
    start = largest - mine.shape[dim] if pad_first else 0
    out.narrow(dim, start, mine.shape[dim]).copy_(mine)
    return out
