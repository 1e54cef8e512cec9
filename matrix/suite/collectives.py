"""Properties of the operations that talk to other ranks.

Each check looks the operation up on `accelerate_lite.utils` at call time (so a patched op is the
one tested), runs it on this rank's input, and compares with the expected value computed from all
ranks' inputs (every rank drew all of them).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from hypothesis import strategies as st

from harness import oracles
from harness.strategies import float_dtypes, world_inputs

from . import inputs
from .compare import assert_tree_equal, fail, tree_map
from .spmd import Property


def is_distributed(state) -> bool:
    """False where PartialState says no distributed backend is in use (collectives are identities there)."""
    return str(state.distributed_type) not in ("NO", "DistributedType.NO")


def op(name: str):
    """The library's function `name`, looked up now (not at import) so patches in the rank apply."""
    import accelerate_lite
    from accelerate_lite import utils

    function = getattr(utils, name, None) or getattr(accelerate_lite, name, None)
    if function is None:
        fail(f"accelerate_lite.utils.{name} is missing")
    return function


def _check_fp32_conversion(ctx, result):
    """Where the precision is half, convert_to_fp32 of the result is fp32 with equal values."""
    if not ctx.is_half:
        return
    converted = op("convert_to_fp32")(result)
    expected = tree_map(lambda t: t.float() if t.dtype in (torch.float16, torch.bfloat16) else t, result)
    assert_tree_equal(converted, expected, path="convert_to_fp32(result)")


# --- gather --------------------------------------------------------------------------------------

def gather_strategy(ctx):
    return world_inputs(ctx.world, ctx.cell.precision)


def gather_check(ctx, world_input):
    result = op("gather")(ctx.local(world_input[ctx.rank]))
    expected = oracles.expected_gather(world_input, distributed=is_distributed(ctx.state))[ctx.rank]
    assert_tree_equal(result, expected, path="gather(x)")
    _check_fp32_conversion(ctx, result)


# --- gather_object -------------------------------------------------------------------------------

def gather_object_strategy(ctx):
    each = st.lists(inputs.picklable_objects(), max_size=3)
    return st.lists(each, min_size=ctx.world, max_size=ctx.world)


def gather_object_check(ctx, world_input):
    result = op("gather_object")(world_input[ctx.rank])
    expected = oracles.expected_gather_object(world_input, distributed=is_distributed(ctx.state))[ctx.rank]
    if result != expected:
        fail(f"gather_object(x) is {result!r}, expected {expected!r}")


# --- reduce ----------------------------------------------------------------------------------------

def reduce_strategy(ctx):
    floats = float_dtypes(ctx.cell.precision)  # "mean" of integers is refused, as upstream
    return st.tuples(world_inputs(ctx.world, ctx.cell.precision, dtype_strategy=floats), st.sampled_from(["sum", "mean"]))


def reduce_check(ctx, example):
    world_input, reduction = example
    mine = ctx.local(world_input[ctx.rank])
    before = tree_map(torch.clone, mine)
    result = op("reduce")(mine, reduction=reduction)
    expected = oracles.expected_reduce(world_input, reduction, distributed=is_distributed(ctx.state))[ctx.rank]
    assert_tree_equal(result, expected, exact=False, path=f"reduce(x, {reduction!r})")
    assert_tree_equal(mine, before, path="x after reduce (the input must not change)")


# --- broadcast ----------------------------------------------------------------------------------

def broadcast_strategy(ctx):
    return st.tuples(world_inputs(ctx.world, ctx.cell.precision), st.integers(0, ctx.world - 1))


def broadcast_check(ctx, example):
    world_input, source = example
    result = op("broadcast")(ctx.local(world_input[ctx.rank]), from_process=source)
    expected = oracles.expected_broadcast(world_input, source, distributed=is_distributed(ctx.state))[ctx.rank]
    assert_tree_equal(result, expected, path=f"broadcast(x, from_process={source})")


def broadcast_object_list_strategy(ctx):
    return st.integers(1, 4).flatmap(lambda n: st.tuples(
        st.lists(st.lists(inputs.picklable_objects(), min_size=n, max_size=n), min_size=ctx.world, max_size=ctx.world),
        st.integers(0, ctx.world - 1)))


def broadcast_object_list_check(ctx, example):
    world_input, source = example
    mine = list(world_input[ctx.rank])
    returned = op("broadcast_object_list")(mine, from_process=source)
    expected = oracles.expected_broadcast_object_list(world_input, source, distributed=is_distributed(ctx.state))[ctx.rank]
    if mine != expected:
        fail(f"after broadcast_object_list(x, from_process={source}) x is {mine!r}, expected {expected!r}")
    if returned is not None and returned is not mine:
        fail("broadcast_object_list must fill the list it was given in place and return that list")


# --- pad_across_processes ----------------------------------------------------------------------

def pad_strategy(ctx):
    ragged = st.integers(0, 2).flatmap(
        lambda dim: st.tuples(st.just(dim), world_inputs(ctx.world, ctx.cell.precision, ragged=True, dim=dim)))
    return st.tuples(ragged, st.integers(0, 3), st.booleans())


def pad_check(ctx, example):
    (dim, world_input), pad_index, pad_first = example
    result = op("pad_across_processes")(ctx.local(world_input[ctx.rank]), dim=dim, pad_index=pad_index, pad_first=pad_first)
    expected = oracles.expected_pad_across_processes(world_input, dim, pad_index, pad_first,
                                                     distributed=is_distributed(ctx.state))[ctx.rank]
    assert_tree_equal(result, expected, path=f"pad_across_processes(x, dim={dim}, pad_index={pad_index}, pad_first={pad_first})")


# --- synchronize_rng_states / wait_for_everyone -----------------------------------------------

def rng_strategy(ctx):
    return st.lists(st.integers(0, 2**31 - 1), min_size=ctx.world, max_size=ctx.world)


def _all_gather_values(value):
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [value]
    box = [None] * dist.get_world_size()
    dist.all_gather_object(box, value)
    return box


def rng_check(ctx, seeds):
    torch.manual_seed(seeds[ctx.rank])
    op("synchronize_rng_states")(["torch"])
    drawn = torch.rand(4).tolist()
    everyone = _all_gather_values(drawn)
    differing = [rank for rank, values in enumerate(everyone) if values != everyone[0]]
    if differing:
        fail(f"after synchronize_rng_states(['torch']) rank(s) {differing} draw {[everyone[r] for r in differing]}, "
             f"rank 0 draws {everyone[0]}")


def barrier_strategy(ctx):
    return st.integers(0, ctx.world - 1)


def barrier_check(ctx, late_rank):
    """The late rank arrives last; no rank may leave before its arrival mark exists."""
    import time

    mark = os.path.join(ctx.shared_dir, f"arrived-{late_rank}-{ctx.rank}")
    if ctx.rank == late_rank:
        time.sleep(0.01)
    open(mark, "w").close()
    try:
        op("wait_for_everyone")()
        missing = [r for r in range(ctx.world)
                   if not os.path.exists(os.path.join(ctx.shared_dir, f"arrived-{late_rank}-{r}"))]
    finally:
        _all_gather_values(None)  # nobody removes marks while others still look
        os.remove(mark)
    if missing:
        fail(f"rank {ctx.rank} left wait_for_everyone() before rank(s) {missing} arrived")


PROPERTIES = {
    "gather": Property(gather_strategy, gather_check),
    "gather_object": Property(gather_object_strategy, gather_object_check),
    "reduce": Property(reduce_strategy, reduce_check),
    "broadcast": Property(broadcast_strategy, broadcast_check),
    "broadcast_object_list": Property(broadcast_object_list_strategy, broadcast_object_list_check),
    "pad_across_processes": Property(pad_strategy, pad_check),
    "synchronize_rng_states": Property(rng_strategy, rng_check),
    "wait_for_everyone": Property(barrier_strategy, barrier_check),
}

__all__ = ["PROPERTIES", "is_distributed", "op"]
