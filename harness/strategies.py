"""Hypothesis strategies for distributed data-op tests: dtypes, shapes, tensors, nested structures, world inputs.

Values are small integers (as floats, ints, bools or complex numbers), so sums over up to 16 ranks
and their means over a power-of-two world are exact in every dtype down to float16/bfloat16: a
property can compare results exactly, whatever order a backend adds in.

A world input is one structure per rank with the same containers, keys and dtypes; shapes are equal
across ranks or, with `ragged=True`, differ on one dimension (what `pad_across_processes` is for).

Example:
    >>> from hypothesis import given
    >>> @given(world_inputs(world_size=4, precision="bf16"))
    ... def test_something(inputs):
    ...     assert len(inputs) == 4
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

PRECISIONS = ("no", "fp16", "bf16", "fp8")

# The floating dtype a precision computes and exchanges in. fp8 training (Transformer Engine, MS-AMP)
# keeps fp8 inside its kernels: the tensors that reach data ops are bf16, so fp8 maps to bf16 here.
PRECISION_FLOAT_DTYPES = {
    "no": (torch.float32, torch.float64),
    "fp16": (torch.float16,),
    "bf16": (torch.bfloat16,),
    "fp8": (torch.bfloat16,),
}
INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)
COMPLEX_DTYPES = (torch.complex64, torch.complex128)
LAYOUTS = ("contiguous", "transposed", "strided")

Pair = namedtuple("Pair", "first second")


class BatchLike(dict):
    """A dict subclass built from a dict, like transformers' BatchEncoding (a Mapping subclass to test with)."""


@dataclass(frozen=True)
class LeafSpec:
    """How to build one tensor leaf: dtype, shape, memory layout and a seed for its values."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    layout: str = "contiguous"
    seed: int = 0


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"Expected precision in {PRECISIONS} but got precision={precision!r} (type={type(precision).__name__})")


def float_dtypes(precision: str = "no"):
    """Strategy: a floating dtype of `precision` ("no", "fp16", "bf16", "fp8")."""
    _check_precision(precision)
    return st.sampled_from(PRECISION_FLOAT_DTYPES[precision])


def dtypes(precision: str = "no", *, ints: bool = True, bools: bool = True, complex: bool = True):
    """Strategy: a dtype a structure of `precision` may hold (its floats, plus ints/bool/complex unless excluded)."""
    _check_precision(precision)
    choices = list(PRECISION_FLOAT_DTYPES[precision])
    choices += list(INT_DTYPES) if ints else []
    choices += [torch.bool] if bools else []
    choices += list(COMPLEX_DTYPES) if complex and precision == "no" else []
    return st.sampled_from(choices)


def shapes(*, min_dims: int = 0, max_dims: int = 3, min_side: int = 0, max_side: int = 4):
    """Strategy: a shape tuple (0-d, empty sides included unless min_side > 0)."""
    if not 0 <= min_dims <= max_dims:
        raise ValueError(f"Expected 0 <= min_dims <= max_dims but got min_dims={min_dims!r}, max_dims={max_dims!r}")
    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


def ragged_shapes(world_size: int, *, dim: int = 0, min_dims: int = 1, max_dims: int = 3, max_side: int = 4):
    """Strategy: one shape per rank, equal except on `dim` (negative counts from the end).

    Example:
        >>> ragged_shapes(2).example()  # e.g. [(3, 2), (1, 2)]
    """
    _check_world_size(world_size)

    @st.composite
    def build(draw):
        base = list(draw(shapes(min_dims=max(min_dims, 1), max_dims=max_dims, max_side=max_side)))
        axis = dim % len(base) if -len(base) <= dim < len(base) else None
        sizes = draw(st.lists(st.integers(0, max_side), min_size=world_size, max_size=world_size))
        return [tuple(size if i == axis else side for i, side in enumerate(base)) for size in sizes]

    return build()


def _check_world_size(world_size) -> None:
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"Expected a positive int world_size but got world_size={world_size!r} (type={type(world_size).__name__})")


def leaf_specs(dtype_strategy=None, shape_strategy=None):
    """Strategy: a `LeafSpec` (dtype, shape, contiguous/transposed/strided layout, value seed)."""
    return st.builds(
        LeafSpec,
        dtype=dtype_strategy if dtype_strategy is not None else dtypes(),
        shape=shape_strategy if shape_strategy is not None else shapes(),
        layout=st.sampled_from(LAYOUTS),
        seed=st.integers(0, 2**31 - 1),
    )


def make_tensor(spec: LeafSpec, *, rank: int = 0, shape: tuple[int, ...] = None) -> torch.Tensor:
    """Build the tensor `spec` describes for `rank` (values differ per rank), in the spec's memory layout."""
    shape = tuple(spec.shape if shape is None else shape)
    generator = torch.Generator().manual_seed(spec.seed * 1009 + rank)
    if spec.layout == "transposed" and len(shape) >= 2:
        storage_shape = shape[:-2] + (shape[-1], shape[-2])
    elif spec.layout == "strided" and len(shape) >= 1:
        storage_shape = (shape[0] * 2,) + shape[1:]
    else:
        storage_shape = shape
    values = torch.randint(-8, 9, storage_shape, generator=generator)
    if spec.dtype == torch.bool:
        tensor = values > 0
    elif spec.dtype == torch.uint8:
        tensor = (values + 8).to(torch.uint8)
    elif spec.dtype.is_complex:
        imaginary = torch.randint(-8, 9, storage_shape, generator=generator)
        tensor = torch.complex(values.double(), imaginary.double()).to(spec.dtype)
    else:
        tensor = values.to(spec.dtype)
    if spec.layout == "transposed" and len(shape) >= 2:
        return tensor.transpose(-1, -2)
    if spec.layout == "strided" and len(shape) >= 1:
        return tensor[::2]
    return tensor


_KEYS = st.sampled_from(["input_ids", "labels", "logits", "mask", "a", "b"])


def trees(leaves, *, max_leaves: int = 6, namedtuples: bool = True, mappings: bool = True):
    """Strategy: a nested dict/BatchLike/list/tuple/Pair structure whose leaves come from `leaves`."""

    def extend(children):
        options = [st.lists(children, min_size=0, max_size=3), st.lists(children, min_size=0, max_size=3).map(tuple)]
        if namedtuples:
            options.append(st.builds(Pair, children, children))
        if mappings:
            options.append(st.dictionaries(_KEYS, children, max_size=3))
            options.append(st.dictionaries(_KEYS, children, max_size=3).map(BatchLike))
        return st.one_of(options)

    return st.recursive(leaves, extend, max_leaves=max_leaves)


def map_tree(function, tree):
    """Apply `function` to every non-container leaf of a nested dict/list/tuple/namedtuple structure."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(map_tree(function, item) for item in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(map_tree(function, item) for item in tree)
    if isinstance(tree, dict):
        return type(tree)({key: map_tree(function, value) for key, value in tree.items()})
    return function(tree)


def tensor_structures(precision: str = "no", *, rank: int = 0, max_leaves: int = 6):
    """Strategy: one nested structure of tensors (for single-process tests)."""
    return trees(leaf_specs(dtypes(precision)), max_leaves=max_leaves).map(
        lambda tree: map_tree(lambda spec: make_tensor(spec, rank=rank), tree)
    )


def world_inputs(
    world_size: int,
    precision: str = "no",
    *,
    ragged: bool = False,
    dim: int = 0,
    dtype_strategy=None,
    max_leaves: int = 6,
    max_dims: int = 3,
):
    """Strategy: a list of `world_size` structures of tensors, one per rank, with the same containers and dtypes.

    Args:
        world_size: the number of ranks.
        precision: "no", "fp16", "bf16" or "fp8" (which float dtypes appear).
        ragged: let each tensor's size on `dim` differ per rank (other dims stay equal).
        dim: the ragged dimension (negative counts from the end).
        dtype_strategy: override the dtypes drawn (e.g. `float_dtypes("bf16")`).
        max_leaves: most tensors per structure.
        max_dims: most dimensions per tensor.

    Example:
        >>> inputs = world_inputs(2, ragged=True).example()
        >>> len(inputs)
        2
    """
    _check_world_size(world_size)
    _check_precision(precision)
    leaf_dtypes = dtype_strategy if dtype_strategy is not None else dtypes(precision)

    @st.composite
    def leaves(draw):
        spec = draw(leaf_specs(leaf_dtypes, shapes(max_dims=max_dims)))
        if ragged and spec.shape and -len(spec.shape) <= dim < len(spec.shape):
            axis = dim % len(spec.shape)
            sizes = draw(st.lists(st.integers(0, 4), min_size=world_size, max_size=world_size))
            return _RankedLeaf(spec, tuple(spec.shape[:axis] + (size,) + spec.shape[axis + 1 :] for size in sizes))
        return _RankedLeaf(spec, (spec.shape,) * world_size)

    return trees(leaves(), max_leaves=max_leaves).map(
        lambda tree: [map_tree(lambda leaf: make_tensor(leaf.spec, rank=rank, shape=leaf.shapes[rank]), tree) for rank in range(world_size)]
    )


@dataclass(frozen=True)
class _RankedLeaf:
    spec: LeafSpec
    shapes: tuple  # one shape per rank
