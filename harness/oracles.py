"""Oracles: what each data operation must return on every rank, computed in one process from all ranks' inputs.

Each `expected_<op>(inputs, ...)` takes one input per rank (index = rank) and returns one expected
result per rank, or raises the exception the op must raise. The code is deliberately independent of
`accelerate_lite`'s (plain torch, its own tree walk), so a property test compares two implementations.
`distributed` says whether the ranks run a distributed type (default: more than one input); a single
process that is not distributed gets upstream's identities (e.g. a 0-d tensor stays 0-d through gather).

Example:
    >>> inputs = [torch.tensor([0]), torch.tensor([1])]
    >>> expected_gather(inputs)
    [tensor([0, 1]), tensor([0, 1])]
    >>> assert_same(expected_gather(inputs)[0], torch.tensor([0, 1]))
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, Callable, Sequence

import torch


def _is_namedtuple(value) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def zip_map(function: Callable, trees: Sequence[Any]):
    """Walk same-structured trees together; call `function(list_of_leaves)` where the leaves are tensors.

    Raises:
        TypeError: a leaf is not a tensor (the data ops refuse those too).
        ValueError: the trees differ in containers, keys or lengths.
    """
    first = trees[0]
    if isinstance(first, (list, tuple)):
        _same(trees, lambda t: (type(t), len(t)))
        items = [zip_map(function, [t[i] for t in trees]) for i in range(len(first))]
        return type(first)(*items) if _is_namedtuple(first) else type(first)(items)
    if isinstance(first, Mapping):
        _same(trees, lambda t: (type(t), list(t.keys())))
        return type(first)({key: zip_map(function, [t[key] for t in trees]) for key in first})
    if not all(isinstance(t, torch.Tensor) for t in trees):
        raise TypeError(f"Expected tensor leaves but got {[type(t).__name__ for t in trees]}")
    return function(list(trees))


def _same(trees, key) -> None:
    keys = [key(t) for t in trees]
    if any(k != keys[0] for k in keys):
        raise ValueError(f"Expected one structure on every rank but got {keys}")


def _default_distributed(inputs, distributed):
    return len(inputs) > 1 if distributed is None else distributed


def expected_gather(inputs: Sequence[Any], *, distributed: bool = None) -> list:
    """gather: every rank gets each tensor concatenated over ranks on dim 0 (0-d as 1-d)."""
    if not _default_distributed(inputs, distributed):
        return [inputs[0]]
    result = zip_map(lambda leaves: torch.cat([leaf.reshape(1) if leaf.ndim == 0 else leaf for leaf in leaves]), inputs)
    return [result] * len(inputs)


def expected_gather_object(objects: Sequence[Any], *, distributed: bool = None) -> list:
    """gather_object: every rank gets all ranks' items, flattened one level (the object itself on one process)."""
    if not _default_distributed(objects, distributed):
        return [objects[0]]
    merged = [item for rank_objects in objects for item in rank_objects]
    return [merged] * len(objects)


def expected_broadcast(inputs: Sequence[Any], from_process: int = 0, *, distributed: bool = None) -> list:
    """broadcast: every rank gets `from_process`'s structure (its own containers, the source's values)."""
    if not _default_distributed(inputs, distributed):
        return [inputs[0]]
    return [zip_map(lambda leaves: leaves[from_process].clone(), inputs) for _ in inputs]


def expected_broadcast_object_list(object_lists: Sequence[list], from_process: int = 0, *, distributed: bool = None) -> list:
    """broadcast_object_list: every rank's list holds `from_process`'s items."""
    if not _default_distributed(object_lists, distributed):
        return [object_lists[0]]
    return [list(object_lists[from_process]) for _ in object_lists]


def expected_reduce(
    inputs: Sequence[Any], reduction: str = "mean", scale: float = 1.0, *, distributed: bool = None, applies_scale: bool = False
) -> list:
    """reduce: the sum (bool: any) or mean over ranks; "none" leaves each rank's values (scale only where the backend applies it).

    Raises:
        ValueError: reduction is not "mean", "sum" or "none".
        TypeError: "mean" of an integer or bool tensor across processes.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction={reduction!r}")
    if not _default_distributed(inputs, distributed) or reduction == "none":
        return [zip_map(lambda leaves, r=rank: leaves[r].clone(), inputs) for rank in range(len(inputs))]

    def combine(leaves):
        if reduction == "mean" and not (leaves[0].is_floating_point() or leaves[0].is_complex()):
            raise TypeError(f"mean of {leaves[0].dtype}")
        if leaves[0].dtype == torch.bool:
            total = functools.reduce(torch.logical_or, leaves)
        else:
            total = functools.reduce(torch.add, leaves)
            total = total * scale if applies_scale else total
        return total / len(leaves) if reduction == "mean" else total

    result = zip_map(combine, inputs)
    return [result] * len(inputs)


def expected_pad_across_processes(inputs: Sequence[Any], dim: int = 0, pad_index=0, pad_first: bool = False, *, distributed: bool = None) -> list:
    """pad_across_processes: each tensor padded on `dim` to the largest size over ranks, keeping its dtype.

    Raises:
        ValueError: pad_index does not fit the dtype of a tensor that has dimension `dim` (checked on
            every rank, padded or not, so all ranks agree).
    """
    if not _default_distributed(inputs, distributed):
        return [inputs[0]]
    zip_map(functools.partial(_check_fits, dim=dim, value=pad_index), inputs)
    return [zip_map(functools.partial(_pad_leaf, rank=rank, dim=dim, value=pad_index, first=pad_first), inputs) for rank in range(len(inputs))]


def _check_fits(leaves, *, dim, value):
    leaf = leaves[0]
    if -leaf.ndim <= dim < leaf.ndim:
        try:
            torch.full((), value, dtype=leaf.dtype)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"pad value {value!r} does not fit {leaf.dtype}") from error
    return leaf


def _pad_leaf(leaves, *, rank, dim, value, first):
    own = leaves[rank]
    if not -own.ndim <= dim < own.ndim:
        return own
    axis = dim % own.ndim
    size = max(leaf.shape[axis] for leaf in leaves)
    if size == own.shape[axis]:
        return own
    shape = list(own.shape)
    shape[axis] = size
    out = torch.empty(shape, dtype=own.dtype)
    out[...] = torch.full((), value, dtype=own.dtype)
    index = [slice(None)] * own.ndim
    index[axis] = slice(size - own.shape[axis], size) if first else slice(0, own.shape[axis])
    out[tuple(index)] = own
    return out


def expected_pad_input_tensors(tensor, batch_size: int, num_processes: int, dim: int = 0):
    """pad_input_tensors: `dim` grown to the next multiple of num_processes, new rows repeating the last one."""
    target = math.ceil(batch_size / num_processes) * num_processes

    def pad(leaves):
        leaf = leaves[0]
        if leaf.ndim == 0 or leaf.shape[dim] >= target:
            return leaf
        rows = list(leaf.unbind(dim))
        filler = rows[-1] if rows else torch.zeros_like(leaf.select(dim, 0) if leaf.shape[dim] else _row_like(leaf, dim))
        return torch.stack(rows + [filler] * (target - len(rows)), dim=dim)

    return zip_map(pad, [tensor])


def _row_like(leaf, dim):
    shape = list(leaf.shape)
    del shape[dim]
    return torch.zeros(shape, dtype=leaf.dtype)


def expected_copy_tensor_to_devices(inputs: Sequence) -> list:
    """copy_tensor_to_devices: every rank gets the one non-None input.

    Raises:
        ValueError: not exactly one input is a tensor.
    """
    sources = [t for t in inputs if t is not None]
    if len(sources) != 1:
        raise ValueError(f"expected exactly one tensor, got {len(sources)}")
    return [sources[0].clone() for _ in inputs]


def assert_same(actual, expected, path: str = "") -> None:
    """Assert two structures are equal exactly: container types, keys, and each tensor's dtype, shape and values.

    Raises:
        AssertionError: naming the path of the first difference.
    """
    where = path or "<root>"
    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, torch.Tensor):
            raise AssertionError(f"at {where}: expected a tensor, got {type(actual).__name__}")
        if actual.dtype != expected.dtype or actual.shape != expected.shape:
            raise AssertionError(f"at {where}: expected {expected.dtype} {list(expected.shape)}, got {actual.dtype} {list(actual.shape)}")
        if not torch.equal(actual.cpu(), expected.cpu()) and not _nan_equal(actual.cpu(), expected.cpu()):
            raise AssertionError(f"at {where}: values differ:\nexpected {expected}\ngot      {actual}")
        return
    if type(actual) is not type(expected):
        raise AssertionError(f"at {where}: expected {type(expected).__name__}, got {type(actual).__name__}")
    if isinstance(expected, Mapping):
        if list(actual.keys()) != list(expected.keys()):
            raise AssertionError(f"at {where}: expected keys {list(expected.keys())}, got {list(actual.keys())}")
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        if len(actual) != len(expected):
            raise AssertionError(f"at {where}: expected length {len(expected)}, got {len(actual)}")
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{path}[{i}]")
    elif actual != expected:
        raise AssertionError(f"at {where}: expected {expected!r}, got {actual!r}")


def _nan_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if not (a.is_floating_point() or a.is_complex()):
        return False
    return bool(torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all())
