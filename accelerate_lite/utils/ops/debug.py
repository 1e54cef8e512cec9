"""Debug mode (ACCELERATE_DEBUG_MODE=1): check that the ranks agree before a collective runs.

Every collective op first exchanges each rank's `Signature` (operation name, arguments that must
agree, container structure, and each tensor's shape, dtype and device) in ONE all-gather of objects.
Every rank then runs the same comparison on the same list, so when the ranks disagree they all raise
the same `DistributedOperationException`, naming each rank's shapes, instead of some of them hanging
in a collective the others never join. A rank that calls a different op also meets the others in
that exchange, which is how op-order desyncs are caught.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ...errors import DistributedOperationException


@dataclass(frozen=True)
class LeafSignature:
    """What a collective needs to know about one tensor of the structure."""

    path: str  # e.g. "['inputs'][0]"; "" for a bare tensor
    shape: tuple[int, ...]
    dtype: str
    device: str  # the device type


@dataclass(frozen=True)
class Signature:
    """One rank's description of a collective call, exchanged in debug mode."""

    op: str
    params: tuple[tuple[str, Any], ...]  # arguments every rank must pass the same value for
    tree: str  # the container structure, tensors written as T
    leaves: tuple[LeafSignature, ...]
    shapes: str  # the structure with each tensor's shape, for messages


@dataclass(frozen=True)
class Agreement:
    """What the ranks' inputs must share for one op."""

    structure: bool = True
    dtypes: bool = True
    shapes: str | None = "equal"  # "equal", "ndim" (same number of dims), or None
    hint: str = ""  # what to do about a shape mismatch


GATHER = Agreement(hint="; pad first with pad_across_processes()")
SAME_SHAPES = Agreement()
NDIM_ONLY = Agreement(dtypes=False, shapes="ndim")
NAME_ONLY = Agreement(structure=False, dtypes=False, shapes=None)


def describe(op: str, data: Any, params: Mapping[str, Any] = None, summary: str = None) -> Signature:
    """Build this rank's `Signature` of a call of `op` on `data` (non-tensor leaves are named by type).

    `summary` replaces the walk of `data` for ops on arbitrary objects (no structure to compare).
    """
    leaves: list[LeafSignature] = []
    tree, shapes = ("", summary) if summary is not None else _describe(data, "", leaves)
    return Signature(op, tuple((params or {}).items()), tree, tuple(leaves), shapes)


def summarize_object(obj: Any) -> str:
    """A short description of a picklable object for debug messages, e.g. "list of 3 items"."""
    if isinstance(obj, torch.Tensor):
        return f"tensor {list(obj.shape)} {obj.dtype}"
    try:
        return f"{type(obj).__name__} of {len(obj)} items"
    except TypeError:
        return type(obj).__name__


def _describe(data, path: str, leaves: list) -> tuple[str, str]:
    if isinstance(data, torch.Tensor):
        leaves.append(LeafSignature(path, tuple(data.shape), str(data.dtype), data.device.type))
        return "T", str(list(data.shape))
    if isinstance(data, (list, tuple)):
        parts = [_describe(item, f"{path}[{i}]", leaves) for i, item in enumerate(data)]
        name = type(data).__name__
        return f"{name}[{', '.join(p[0] for p in parts)}]", _bracket(data, [p[1] for p in parts])
    if isinstance(data, Mapping):
        parts = {key: _describe(value, f"{path}[{key!r}]", leaves) for key, value in data.items()}
        tree = ", ".join(f"{key!r}: {p[0]}" for key, p in parts.items())
        shapes = ", ".join(f"{key!r}: {p[1]}" for key, p in parts.items())
        return f"{type(data).__name__}{{{tree}}}", f"{{{shapes}}}"
    return f"<{type(data).__name__}>", f"<{type(data).__name__}>"


def _bracket(data, items: list[str]) -> str:
    if isinstance(data, list):
        return f"[{', '.join(items)}]"
    return f"({', '.join(items)}{',' if len(items) == 1 else ''})"


def verify(backend, op: str, data: Any, agreement: Agreement, params: Mapping[str, Any] = None, summary: str = None) -> None:
    """Exchange signatures with the other ranks and raise on every rank if they disagree.

    Args:
        backend: the communication backend (its `gather_objects` carries the signatures).
        op: the public name of the operation, e.g. "gather".
        data: this rank's input.
        agreement: what the ranks must share for this op.
        params: arguments every rank must pass the same value for.
        summary: what to show for `data` in messages instead of its structure (object ops).

    Raises:
        DistributedOperationException: on every rank, when any rank's signature disagrees.
    """
    signatures = backend.gather_objects(describe(op, data, params, summary))
    problem = find_disagreement(signatures, agreement, backend.device_type)
    if problem:
        raise DistributedOperationException(problem + "\n" + _listing(signatures))


def find_disagreement(signatures: list[Signature], agreement: Agreement, device_type: str | None = None) -> str:
    """Return a message describing the first way the ranks' signatures disagree, or "" when they agree."""
    first = signatures[0]
    ops = [s.op for s in signatures]
    if len(set(ops)) > 1:
        calls = ", ".join(f"rank {r} {name}()" for r, name in enumerate(ops))
        return (
            f"Ranks called different collective operations at the same point: {calls}. Every rank must "
            "call the same data operations in the same order."
        )
    op = first.op
    if any(s.params != first.params for s in signatures):
        args = ", ".join(f"rank {r} {_args(s.params)}" for r, s in enumerate(signatures))
        return f"{op}(): ranks passed different arguments: {args}. Pass the same values on every rank."
    if agreement.structure and any(s.tree != first.tree for s in signatures):
        trees = ", ".join(f"rank {r} {s.tree}" for r, s in enumerate(signatures))
        return f"{op}(): ranks passed different structures: {trees}. Every rank must pass the same containers and keys."
    if agreement.structure:
        return _leaf_disagreement(op, signatures, agreement, device_type)
    return ""


def _leaf_disagreement(op, signatures, agreement, device_type) -> str:
    for position, leaf in enumerate(signatures[0].leaves):
        column = [s.leaves[position] for s in signatures]
        where = f" at {leaf.path}" if leaf.path else ""
        devices = [c.device for c in column]
        if len(set(devices)) > 1 or (device_type is not None and devices[0] != device_type):
            expected = f"; the backend needs {device_type} tensors" if device_type else ""
            return f"{op}(): device mismatch{where}: {_per_rank(devices)}{expected}. Move the tensors first (send_to_device)."
        if agreement.dtypes and len({c.dtype for c in column}) > 1:
            return f"{op}(): dtype mismatch across ranks{where}: {_per_rank([c.dtype for c in column])}. Cast to one dtype first."
        if agreement.shapes == "equal" and len({c.shape for c in column}) > 1:
            shapes = _per_rank([list(c.shape) for c in column])
            return (
                "Cannot apply desired operation due to shape mismatches. "
                f"{op}(): shape mismatch across ranks{where}: {shapes}{agreement.hint}."
            )
        if agreement.shapes == "ndim" and len({len(c.shape) for c in column}) > 1:
            shapes = _per_rank([list(c.shape) for c in column])
            return (
                "Cannot apply desired operation due to shape mismatches. "
                f"{op}(): number of dimensions differs across ranks{where}: {shapes}. Every rank needs the same number of dims."
            )
    return ""


def _per_rank(values: list) -> str:
    return ", ".join(f"rank {r} {value}" for r, value in enumerate(values))


def _args(params) -> str:
    return "(" + ", ".join(f"{k}={v!r}" for k, v in params) + ")"


def _listing(signatures: list[Signature]) -> str:
    lines = [f"Operation: `{signatures[0].op}`"] if len({s.op for s in signatures}) == 1 else []
    lines.append("Input shapes:")
    lines += [f"  - rank {r} {s.op}{_args(s.params)}: {s.shapes}" for r, s in enumerate(signatures)]
    return "\n".join(lines)
