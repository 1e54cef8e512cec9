"""Hypothesis strategies for the suite's inputs: one input per rank, drawn identically on every rank.

Every rank draws the same *world input* (the list of all ranks' inputs) from the same seed, takes
its own entry, and can compute the oracle from all of them. Tensors are built from drawn seeds,
not element by element, so drawing stays cheap and shrinks towards small, simple shapes.
"""

from __future__ import annotations

from collections import namedtuple

import torch
from hypothesis import strategies as st

Pair = namedtuple("Pair", ["first", "second"])

EXTRA_DTYPES = (torch.float32, torch.int64)


def make_tensor(shape, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A deterministic tensor of `shape` and `dtype` from `seed` (small integers, exact in every float dtype)."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randint(-8, 9, tuple(shape), generator=generator)
    return values.to(dtype)


@st.composite
def shapes(draw, min_dims=0, max_dims=3, max_side=4, first_min=1):
    """Tensor shapes of 0-3 dims; the first dim (if any) is at least `first_min`."""
    ndim = draw(st.integers(min_dims, max_dims))
    dims = [draw(st.integers(first_min if i == 0 else 1, max_side)) for i in range(ndim)]
    return tuple(dims)


@st.composite
def layouts(draw, dtype: torch.dtype, max_leaves=4, min_dims=0):
    """A nested structure of leaf specs (shape, dtype): dict / list / tuple / namedtuple, depth <= 2."""
    leaf = st.builds(
        lambda shape, d: (shape, d),
        shapes(min_dims=min_dims),
        st.sampled_from((dtype, dtype) + EXTRA_DTYPES),
    )

    def extend(children):
        return st.one_of(
            st.lists(children, min_size=1, max_size=3),
            st.lists(children, min_size=1, max_size=3).map(tuple),
            st.dictionaries(st.sampled_from("abcdef"), children, min_size=1, max_size=3),
            st.tuples(children, children).map(lambda t: Pair(*t)),
        )

    return draw(st.recursive(leaf, extend, max_leaves=max_leaves))


def is_leaf(node) -> bool:
    return isinstance(node, tuple) and len(node) == 2 and isinstance(node[1], torch.dtype) and not isinstance(node, Pair)


def build(layout, seed: int, shape_fn=None):
    """Materialise a layout into tensors; `shape_fn(shape, index)` may change each leaf's shape."""
    counter = [0]

    def visit(node):
        if is_leaf(node):
            shape, dtype = node
            index = counter[0]
            counter[0] += 1
            if shape_fn is not None:
                shape = shape_fn(shape, index)
            return make_tensor(shape, dtype, seed * 1000 + index)
        if isinstance(node, Pair):
            return Pair(*(visit(child) for child in node))
        if isinstance(node, dict):
            return {key: visit(value) for key, value in node.items()}
        if isinstance(node, list):
            return [visit(child) for child in node]
        return tuple(visit(child) for child in node)

    return visit(layout)


@st.composite
def world_structures(draw, world: int, dtype: torch.dtype, min_dims=0):
    """One same-layout structure of tensors per rank, different values on each rank."""
    layout = draw(layouts(dtype, min_dims=min_dims))
    base = draw(st.integers(0, 10_000))
    return [build(layout, base + rank) for rank in range(world)]


@st.composite
def ragged_world_tensors(draw, world: int, dtype: torch.dtype):
    """One tensor per rank, same rank count of dims, sizes differing on one dim; plus that dim."""
    ndim = draw(st.integers(1, 3))
    dim = draw(st.integers(0, ndim - 1))  # upstream mis-pads negative dims
    base = list(draw(shapes(min_dims=ndim, max_dims=ndim)))
    sizes = draw(st.lists(st.integers(0, 5), min_size=world, max_size=world))
    seed = draw(st.integers(0, 10_000))
    tensors = []
    for rank, size in enumerate(sizes):
        shape = list(base)
        shape[dim] = size
        tensors.append(make_tensor(shape, dtype, seed + rank))
    return tensors, dim


def picklable_objects():
    """Small picklable Python objects: numbers, strings, lists, dicts."""
    scalars = st.one_of(st.integers(-100, 100), st.text(max_size=5), st.booleans(), st.none())
    return st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=3), c, max_size=3)),
                        max_leaves=5)


def describe(value, limit: int = 1500) -> str:
    """A readable repr of an example (tensors shown with dtype and values), cut at `limit` chars."""

    def visit(node):
        if isinstance(node, torch.Tensor):
            return f"tensor({node.tolist()}, dtype={node.dtype})" if node.numel() <= 16 else \
                f"tensor(shape={list(node.shape)}, dtype={node.dtype})"
        if isinstance(node, Pair):
            return f"Pair({visit(node.first)}, {visit(node.second)})"
        if isinstance(node, dict):
            return "{" + ", ".join(f"{k!r}: {visit(v)}" for k, v in node.items()) + "}"
        if isinstance(node, list):
            return "[" + ", ".join(visit(v) for v in node) + "]"
        if isinstance(node, tuple):
            return "(" + ", ".join(visit(v) for v in node) + ("," if len(node) == 1 else "") + ")"
        return repr(node)

    text = visit(value)
    return text if len(text) <= limit else text[:limit] + " ..."
