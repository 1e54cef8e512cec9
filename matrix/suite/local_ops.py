"""Properties of the data operations that work on one rank's structures (no communication).

They still run on every rank of the cell's world: the profile and plugin environment are in
force, and a rank-dependent bug (e.g. in what `PartialState().device` says) shows per rank.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from . import inputs
from .collectives import op
from .compare import assert_tree_equal, fail, leaves, tree_map, tree_zip
from .spmd import Property

HALF = (torch.float16, torch.bfloat16)


def _structures(ctx, count_min=1, count_max=1, min_dims=0):
    """`count` same-layout structures (a list), different values each."""
    return st.integers(count_min, count_max).flatmap(
        lambda n: inputs.world_structures(n, ctx.dtype, min_dims=min_dims))


def concatenate_check(ctx, structures):
    result = op("concatenate")(structures, dim=0)
    expected = tree_zip(lambda ts: torch.cat(ts, dim=0), structures)
    assert_tree_equal(result, expected, path="concatenate(xs)")


class _Movable:
    """A non-tensor leaf with a .to(); send_to_device must call it."""

    def __init__(self):
        self.moved_to = None

    def to(self, device, non_blocking=False):
        self.moved_to = torch.device(device)
        return self


def send_to_device_strategy(ctx):
    return st.tuples(_structures(ctx), st.booleans())


def send_to_device_check(ctx, example):
    (structure,), skip = example
    data = {"x": structure, "skipped": torch.ones(2, dtype=ctx.dtype), "movable": _Movable()}
    skip_keys = ["skipped"] if skip else None
    meta = torch.device("meta")  # a device every build has; the profile's device is simulated on CPU
    result = op("send_to_device")(data, meta, skip_keys=skip_keys)
    for index, leaf in enumerate(leaves(result["x"])):
        if leaf.device != meta:
            fail(f"send_to_device(x, 'meta'): leaf {index} is on {leaf.device}, expected meta")
    for got, sent in zip(leaves(result["x"]), leaves(structure)):
        if got.dtype != sent.dtype or got.shape != sent.shape:
            fail(f"send_to_device changed a leaf: {sent.dtype}{list(sent.shape)} -> {got.dtype}{list(got.shape)}")
    expected_skipped = torch.device("cpu") if skip else meta
    if result["skipped"].device != expected_skipped:
        fail(f"send_to_device(skip_keys={skip_keys}): 'skipped' is on {result['skipped'].device}, expected {expected_skipped}")
    if result["movable"].moved_to != meta:
        fail(f"send_to_device did not call .to() on an object that has one (moved_to={result['movable'].moved_to})")


def convert_to_fp32_check(ctx, structures):
    (structure,) = structures
    result = op("convert_to_fp32")(structure)
    expected = tree_map(lambda t: t.float() if t.dtype in HALF else t, structure)
    assert_tree_equal(result, expected, path="convert_to_fp32(x)")


def convert_outputs_check(ctx, structures):
    (structure,) = structures

    def forward(scale):
        return tree_map(lambda t: t * scale if t.is_floating_point() else t, structure)

    wrapped = op("convert_outputs_to_fp32")(forward)
    result = wrapped(2)
    expected = tree_map(lambda t: t.float() if t.dtype in HALF else t, forward(2))
    assert_tree_equal(result, expected, path="convert_outputs_to_fp32(forward)(2)")


def slice_tensors_strategy(ctx):
    return st.tuples(_structures(ctx, min_dims=1), st.integers(0, 3), st.integers(0, 4))


def slice_tensors_check(ctx, example):
    (structure,), start, stop = example
    chosen = slice(start, stop)
    result = op("slice_tensors")(structure, chosen)
    assert_tree_equal(result, tree_map(lambda t: t[chosen], structure), path=f"slice_tensors(x, slice({start}, {stop}))")


def listify_check(ctx, structures):
    (structure,) = structures
    result = op("listify")(structure)
    expected = tree_map(lambda t: t.tolist(), structure)
    assert_tree_equal(result, expected, path="listify(x)")


PROPERTIES = {
    "concatenate": Property(lambda ctx: _structures(ctx, 1, 3, min_dims=1), concatenate_check),
    "send_to_device": Property(send_to_device_strategy, send_to_device_check),
    "convert_to_fp32": Property(lambda ctx: _structures(ctx), convert_to_fp32_check),
    "convert_outputs_to_fp32": Property(lambda ctx: _structures(ctx), convert_outputs_check),
    "slice_tensors": Property(slice_tensors_strategy, slice_tensors_check),
    "listify": Property(lambda ctx: _structures(ctx), listify_check),
}
