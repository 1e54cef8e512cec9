"""Collectives for the dtypes gloo cannot carry, used by the simulated torch_xla (one replica per gloo rank).

gloo answers "Invalid scalar type" for int16, uint16/32/64 and the float8 types (checked on torch 2.13 with
all_gather, broadcast and all_reduce: bool, uint8, int8, int32, int64, float16, bfloat16, float32, float64
and complex32/64/128 work). A real TPU moves those dtypes, so the stand-in must too: data that is only moved
(all_gather, broadcast) travels bit for bit as bytes; reductions run in a wider dtype that holds every value
and are narrowed once at the end (integers exactly, modulo their width as on the device; float8 is rounded
once from float32).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

GLOO_DTYPES = frozenset({
    torch.bool, torch.uint8, torch.int8, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex32, torch.complex64, torch.complex128,
})

# Reductions: integers widen to int64 (uint64 is reinterpreted, below); float8 to float32.
_INT64_HOLDS = frozenset({torch.int16, torch.uint16, torch.uint32})
_SIGN_BIT = torch.iinfo(torch.int64).min


def gloo_carries(dtype: torch.dtype) -> bool:
    """Whether gloo takes tensors of this dtype as they are.

    Example:
        >>> gloo_carries(torch.int16), gloo_carries(torch.int32)
        (False, True)
    """
    return dtype in GLOO_DTYPES


def as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bits as uint8, shape + (itemsize,) (a view when it is contiguous)."""
    return tensor.contiguous().unsqueeze(-1).view(torch.uint8)


def from_bytes(raw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Undo `as_bytes`: shape + (itemsize,) uint8 -> shape of dtype."""
    return raw.view(dtype).squeeze(-1)


def all_gather_cat(value: torch.Tensor, dim: int, world_size: int) -> torch.Tensor:
    """Every rank's `value` concatenated along `dim` (rank order), over the default group.

    Example:
        >>> all_gather_cat(torch.ones(2, dtype=torch.int16), 0, 1)
        tensor([1, 1], dtype=torch.int16)
    """
    as_is = gloo_carries(value.dtype) or value.dim() == 0  # torch.cat refuses 0-dim tensors either way
    carried = value.contiguous() if as_is else as_bytes(value)
    if world_size > 1:
        parts = [torch.empty_like(carried) for _ in range(world_size)]
        dist.all_gather(parts, carried)
    else:
        parts = [carried]
    if as_is:
        return torch.cat(parts, dim=dim)
    # The byte axis is last: a negative dim counts from one further left.
    return from_bytes(torch.cat(parts, dim=dim - 1 if dim < 0 else dim), value.dtype)


def broadcast_(tensor: torch.Tensor, src: int) -> None:
    """dist.broadcast that also moves the dtypes gloo lacks (as bytes), in place."""
    if gloo_carries(tensor.dtype):
        dist.broadcast(tensor, src=src)
        return
    raw = as_bytes(tensor)
    dist.broadcast(raw, src=src)
    if raw.data_ptr() != tensor.data_ptr() or not tensor.is_contiguous():
        tensor.copy_(from_bytes(raw, tensor.dtype))


def all_reduce_(tensor: torch.Tensor, op) -> None:
    """dist.all_reduce that also reduces the dtypes gloo lacks (in a wider dtype), in place."""
    if gloo_carries(tensor.dtype):
        dist.all_reduce(tensor, op=op)
        return
    wide = _widen(tensor, op)
    dist.all_reduce(wide, op=op)
    tensor.copy_(_narrow(wide, tensor.dtype, op))


def _orders_unsigned(op) -> bool:
    return op in (dist.ReduceOp.MIN, dist.ReduceOp.MAX)


def _widen(tensor: torch.Tensor, op) -> torch.Tensor:
    if tensor.dtype in _INT64_HOLDS:
        return tensor.to(torch.int64)
    if tensor.dtype == torch.uint64:
        # Same bits as int64: sums, products and bitwise ops agree modulo 2**64; flipping the sign bit
        # maps unsigned order onto signed order for min/max.
        wide = tensor.contiguous().view(torch.int64).clone()
        return wide ^ _SIGN_BIT if _orders_unsigned(op) else wide
    if tensor.dtype.is_floating_point:
        return tensor.to(torch.float32)
    raise TypeError(
        f"all_reduce(): no gloo stand-in for {tensor.dtype}; gloo takes {sorted(str(d) for d in GLOO_DTYPES)}"
    )


def _narrow(wide: torch.Tensor, dtype: torch.dtype, op) -> torch.Tensor:
    if dtype == torch.uint64:
        return (wide ^ _SIGN_BIT if _orders_unsigned(op) else wide).view(torch.uint64)
    if dtype in _INT64_HOLDS:
        # Keep the low bits, as the device's own wrap-around would (a cast from int64 need not wrap).
        bits = torch.iinfo(dtype).bits
        low = wide & ((1 << bits) - 1)
        if dtype == torch.int16:
            low = torch.where(low >= 1 << 15, low - (1 << 16), low)
        return low.to(dtype)
    return wide.to(dtype)
