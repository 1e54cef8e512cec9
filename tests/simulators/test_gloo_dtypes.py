"""The simulated torch_xla's collectives move and reduce the dtypes gloo lacks, on a real 2-rank gloo world.

Regression (quick matrix, gather/*/tpu-v4-8): xm.all_gather of an int16 tensor raised gloo's "Invalid
scalar type". Expected values are computed here in Python integers or float32, not with simulators code.
"""

import pytest
import torch
import torch.distributed as dist

from simulators import gloo_dtypes

pytestmark = pytest.mark.owns_worlds

LACKING = [torch.int16, torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2,
           torch.float8_e4m3fnuz, torch.float8_e5m2fnuz]
CARRIED = [torch.bool, torch.int8, torch.int32, torch.bfloat16, torch.complex32]  # the direct path still works
INTEGERS = [torch.int16, torch.uint16, torch.uint32, torch.uint64]


def _values(dtype, rank):
    """Rank-dependent values that hit each dtype's edges (wrap-around, the uint64 sign bit, float8 range)."""
    if dtype in INTEGERS:
        info = torch.iinfo(dtype)
        return [info.max - rank, info.min + rank, 3 * (rank + 1), (info.max // 2) + 7 * rank]
    if dtype == torch.bool:
        return [bool(rank), True, False, not rank]
    if dtype.is_complex:
        return [complex(1.5, -rank), complex(-2, 0.5), complex(rank, rank), 0j]
    if not dtype.is_floating_point:
        return [rank, -3, 7 * rank, 100]
    return [1.5 + rank, -2.0, 448.0 / (rank + 1), 0.25 * rank]


def _tensor(dtype, rank):
    values = _values(dtype, rank)
    if dtype.is_floating_point and dtype.itemsize == 1 or dtype == torch.complex32:
        wide = torch.complex64 if dtype.is_complex else torch.float32
        return torch.tensor(values, dtype=wide).to(dtype).reshape(2, 2)
    return torch.tensor(values, dtype=dtype).reshape(2, 2)


def _bits(tensor):
    return tensor.contiguous().unsqueeze(-1).view(torch.uint8)


def _same(actual, expected):
    return actual.dtype == expected.dtype and actual.shape == expected.shape and torch.equal(
        _bits(actual), _bits(expected))


def _expected_reduction(dtype, op):
    """all_reduce of ranks 0 and 1 computed in Python integers (wrapping at the width) or float32."""
    if dtype in INTEGERS:
        info, pairs = torch.iinfo(dtype), zip(_values(dtype, 0), _values(dtype, 1))
        combine = {"sum": lambda a, b: a + b, "min": min, "max": max}[op]
        wrapped = [(combine(a, b) - info.min) % (1 << info.bits) + info.min for a, b in pairs]
        return torch.tensor(wrapped, dtype=dtype).reshape(2, 2)
    return (_tensor(dtype, 0).float() + _tensor(dtype, 1).float()).to(dtype)


def _rank_checks():
    """Run on each rank: xm collectives on every dtype; returns the names of the checks that failed."""
    import torch_xla.core.xla_model as xm

    rank, failed = dist.get_rank(), []
    for dtype in LACKING + CARRIED:
        mine = _tensor(dtype, rank)
        both = [_tensor(dtype, 0), _tensor(dtype, 1)]
        for dim in (0, 1, -1):
            if not _same(xm.all_gather(mine, dim=dim), torch.cat(both, dim=dim)):
                failed.append(f"all_gather({dtype}, dim={dim})")
        strided = mine.clone().t()  # not contiguous: the bytes travel from a copy and land back in place
        xm.collective_broadcast([strided], root_ordinal=1)
        if not _same(strided, both[1].t()):
            failed.append(f"collective_broadcast({dtype}, strided)")
        if dtype not in LACKING:
            continue
        ops = ("sum", "min", "max") if dtype in INTEGERS else ("sum",)
        for op in ops:
            reduced = xm.all_reduce(op, mine)
            if not _same(reduced, _expected_reduction(dtype, op)):
                failed.append(f"all_reduce({op!r}, {dtype}): {reduced.tolist()}")
    return failed


def test_xla_collectives_carry_every_dtype_gloo_lacks(worlds):
    assert worlds(2, profile="tpu-v4-8").run(_rank_checks) == [[], []]


def test_the_lacking_dtypes_are_the_ones_the_stand_in_reroutes():
    assert not any(gloo_dtypes.gloo_carries(dtype) for dtype in LACKING)
    assert all(gloo_dtypes.gloo_carries(dtype) for dtype in CARRIED)
    gathered = gloo_dtypes.all_gather_cat(_tensor(torch.uint64, 0), -1, 1)  # one process: no collective
    assert _same(gathered, _tensor(torch.uint64, 0))
