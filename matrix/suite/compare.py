"""Structure-aware comparison of results with their expected values, with messages that locate the leaf."""

from __future__ import annotations

import torch

from ..errors import PropertyFailed

# Absolute/relative tolerance per dtype for reductions (summation order differs between backends).
TOLERANCE = {
    torch.float32: (1e-5, 1e-5),
    torch.float64: (1e-9, 1e-9),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 2e-2),
}


def fail(message: str):
    raise PropertyFailed(message)


def assert_tree_equal(actual, expected, *, exact: bool = True, path: str = "result", check_dtype: bool = True):
    """Check that two nested structures have the same containers, dtypes, shapes and values.

    Args:
        actual: what the operation returned.
        expected: what the oracle says.
        exact: compare values exactly (gather, broadcast) or within TOLERANCE (reduce).
        path: where we are, for the message (e.g. "result['a'][1]").
        check_dtype: also require equal dtypes.

    Raises:
        PropertyFailed: naming the first differing leaf and how it differs.
    """
    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, torch.Tensor):
            fail(f"{path}: expected a tensor, got {type(actual).__name__}")
        if check_dtype and actual.dtype != expected.dtype:
            fail(f"{path}: dtype {actual.dtype}, expected {expected.dtype} (dtypes must be kept)")
        if tuple(actual.shape) != tuple(expected.shape):
            fail(f"{path}: shape {list(actual.shape)}, expected {list(expected.shape)}")
        a = actual.detach().cpu()
        e = expected.detach().cpu()
        if exact or not e.is_floating_point():
            same = torch.equal(a.to(e.dtype), e)
        else:
            atol, rtol = TOLERANCE.get(e.dtype, (1e-5, 1e-5))
            scale = max(1.0, float(e.abs().max()) if e.numel() else 1.0)
            same = torch.allclose(a.double(), e.double(), atol=atol * scale, rtol=rtol)
        if not same:
            fail(f"{path}: values differ\n  got      {_short(a)}\n  expected {_short(e)}")
        return
    if type(actual) is not type(expected):
        fail(f"{path}: container {type(actual).__name__}, expected {type(expected).__name__} (structure must be kept)")
    if isinstance(expected, dict):
        if list(actual) != list(expected):
            fail(f"{path}: keys {list(actual)}, expected {list(expected)}")
        for key in expected:
            assert_tree_equal(actual[key], expected[key], exact=exact, path=f"{path}[{key!r}]", check_dtype=check_dtype)
        return
    if isinstance(expected, (list, tuple)):
        if len(actual) != len(expected):
            fail(f"{path}: length {len(actual)}, expected {len(expected)}")
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_tree_equal(a, e, exact=exact, path=f"{path}[{index}]", check_dtype=check_dtype)
        return
    if actual != expected:
        fail(f"{path}: {actual!r}, expected {expected!r}")


def _short(tensor: torch.Tensor) -> str:
    if tensor.numel() <= 16:
        return str(tensor.tolist())
    return f"shape={list(tensor.shape)} first={tensor.flatten()[:8].tolist()}"


def tree_map(fn, node):
    """Apply fn to every tensor leaf, rebuilding dicts, lists, tuples and namedtuples."""
    if isinstance(node, torch.Tensor):
        return fn(node)
    if isinstance(node, dict):
        return type(node)((key, tree_map(fn, value)) for key, value in node.items())
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*(tree_map(fn, value) for value in node))
    if isinstance(node, (list, tuple)):
        return type(node)(tree_map(fn, value) for value in node)
    return node


def tree_zip(fn, nodes: list):
    """Combine the same leaf of several same-layout structures with fn(list_of_tensors)."""
    first = nodes[0]
    if isinstance(first, torch.Tensor):
        return fn(list(nodes))
    if isinstance(first, dict):
        return type(first)((key, tree_zip(fn, [n[key] for n in nodes])) for key in first)
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(tree_zip(fn, [n[i] for n in nodes]) for i in range(len(first))))
    if isinstance(first, (list, tuple)):
        return type(first)(tree_zip(fn, [n[i] for n in nodes]) for i in range(len(first)))
    return first


def leaves(node) -> list:
    """The tensor leaves of a structure, in traversal order."""
    out = []
    tree_map(lambda t: out.append(t) or t, node)
    return out
