"""What cannot work, as a table with reasons: every cell is run, run as strict xfail, or reported N/A.

Two kinds of rule:
- "n/a": the combination cannot even be set up (8 processes on a 2-device profile, NCCL on an
  NPU). The cell is not run; the report shows "not applicable" and the reason.
- "xfail": the combination can be set up but must be refused (bf16 on a T4). The cell runs and
  must fail its precondition check; if it passes, the cell is reported failed (strict xfail), so
  the table can never go stale silently.

A rule marked `environmental` depends on what this runner has installed (fp8 engines, NCCL);
its verdict is recomputed on every machine, while the cell id stays the same.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from . import axes
from .cells import Cell

NOT_APPLICABLE = "n/a"
XFAIL = "xfail"
RUN = "run"


@dataclass(frozen=True)
class Rule:
    """One row of the exclusion table.

    Args:
        id: short stable name, shown in reports.
        kind: NOT_APPLICABLE or XFAIL.
        reason: why, as a format string over `cell` and `profile`.
        applies: predicate (cell, profile) -> bool.
        environmental: the verdict depends on the runner, not only on the cell.
        expect: for XFAIL, a text the failure message must contain: a cell that fails for
            another reason is a real failure, not the expected one.
    """

    id: str
    kind: str
    reason: str
    applies: Callable
    environmental: bool = False
    expect: str = ""

    def explain(self, cell: Cell, profile) -> str:
        return self.reason.format(cell=cell, profile=profile)


@dataclass(frozen=True)
class Verdict:
    """What to do with a cell: RUN, XFAIL (strict) or NOT_APPLICABLE, with the rules that decided."""

    action: str
    rules: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    expects: tuple[str, ...] = ()  # XFAIL: the failure must mention one of these

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def fp8_engine_installed() -> bool:
    """True when Transformer Engine or MS-AMP can be imported here."""
    return _has_module("transformer_engine") or _has_module("msamp")


def backend_runs_here(backend: str) -> bool:
    """True when this runner can start a process group on `backend` with real devices (gloo always)."""
    if backend == "gloo":
        return True
    import torch
    import torch.distributed as dist

    if backend == "nccl":
        return dist.is_nccl_available() and torch.cuda.is_available()
    if backend == "xla":
        return _has_module("torch_xla") and _has_module("libtpu")
    if backend == "hccl":
        return _has_module("torch_npu")
    if backend == "ccl":
        return _has_module("oneccl_bindings_for_pytorch")
    return False


def _capability(profile) -> tuple:
    return tuple(getattr(profile, "capability", None) or ())


RULES: tuple[Rule, ...] = (
    Rule(
        "world-exceeds-devices", NOT_APPLICABLE,
        "{profile.name} has {profile.count} device(s); a world of {cell.world} processes needs one device each",
        lambda cell, p: p.kind != "cpu" and cell.world > p.count,
    ),
    Rule(
        "mps-single-process", NOT_APPLICABLE,
        "MPS (Apple silicon) has no distributed backend: it runs a single process",
        lambda cell, p: p.kind == "mps" and cell.world > 1,
    ),
    Rule(
        "backend-device-kind", NOT_APPLICABLE,
        "the {cell.backend} backend drives {backend_kinds} devices; {profile.name} is {profile.kind}",
        lambda cell, p: bool(axes.BACKEND_BY_NAME[cell.backend].device_kinds)
        and p.kind not in axes.BACKEND_BY_NAME[cell.backend].device_kinds,
    ),
    Rule(
        "backend-not-on-runner", NOT_APPLICABLE,
        "the {cell.backend} backend needs real devices and its library; this runner has neither "
        "(run this cell on a {profile.name} runner: python -m matrix ci-matrix)",
        lambda cell, p: cell.backend != "gloo" and not backend_runs_here(cell.backend),
        environmental=True,
    ),
    Rule(
        "megatron-needs-cuda", NOT_APPLICABLE,
        "Megatron-LM runs on CUDA GPUs only (accelerate enables it only for multi-GPU); {profile.name} is {profile.kind}",
        lambda cell, p: cell.plugin == "megatron" and p.kind != "cuda",
    ),
    Rule(
        "deepspeed-no-device", NOT_APPLICABLE,
        "DeepSpeed has no accelerator for {profile.kind} ({profile.name})",
        lambda cell, p: cell.plugin == "deepspeed" and p.kind in ("xla", "mps"),
    ),
    Rule(
        "fsdp-no-device", NOT_APPLICABLE,
        "torch FSDP needs a torch.distributed device; accelerate 0.27 has no FSDP for {profile.kind} ({profile.name})",
        lambda cell, p: cell.plugin == "fsdp" and p.kind in ("xla", "mps"),
    ),
    Rule(
        "fp8-needs-engine", XFAIL,
        "fp8 needs Transformer Engine or MS-AMP, and neither is installed on this runner",
        lambda cell, p: cell.precision == "fp8" and not fp8_engine_installed(),
        environmental=True, expect="fp8 requested",
    ),
    Rule(
        "fp8-needs-hopper", XFAIL,
        "fp8 needs a CUDA device of compute capability >= 8.9 (Ada/Hopper); {profile.name} is not one",
        lambda cell, p: cell.precision == "fp8" and not (p.kind == "cuda" and _capability(p) >= (8, 9)),
        expect="fp8 requested",
    ),
    Rule(
        "bf16-unsupported-gpu", XFAIL,
        "bf16 mixed precision needs a GPU with bf16 support; {profile.name} ({profile.device_name}) has none",
        lambda cell, p: cell.precision == "bf16" and p.kind == "cuda" and not p.bf16,
        expect="bf16 requested",
    ),
)

RULE_BY_ID = {rule.id: rule for rule in RULES}


def get_profile(name: str):
    """The simulators' hardware profile for a catalog id (imported lazily: simulators imports torch)."""
    import simulators

    if hasattr(simulators, "get_profile"):
        return simulators.get_profile(name)
    from simulators.profiles import (
        get_profile as lookup,  # until simulators re-exports it
    )

    return lookup(name)


def classify(cell: Cell, rules: tuple[Rule, ...] = RULES) -> Verdict:
    """Decide whether `cell` runs, runs as strict xfail, or is not applicable, and why.

    Args:
        cell: the cell.
        rules: the table to consult (tests pass a smaller one).

    Returns:
        A Verdict; NOT_APPLICABLE wins over XFAIL, and every matching rule's reason is kept.

    Example:
        >>> classify(Cell.parse("gather/bf16/none/w2/gloo/2xT4")).action
        'xfail'
    """
    profile = get_profile(cell.hardware)
    matched = [rule for rule in rules if rule.applies(cell, profile)]
    if not matched:
        return Verdict(RUN)
    action = NOT_APPLICABLE if any(rule.kind == NOT_APPLICABLE for rule in matched) else XFAIL
    kept = [rule for rule in matched if rule.kind == action]
    kinds = "/".join(axes.BACKEND_BY_NAME[cell.backend].device_kinds) or "any"
    reasons = tuple(rule.reason.format(cell=cell, profile=profile, backend_kinds=kinds) for rule in kept)
    expects = tuple(rule.expect for rule in kept if rule.expect)
    return Verdict(action, tuple(rule.id for rule in kept), reasons, expects)


def table_rows(cells=None) -> list[dict]:
    """The exclusion table as rows (id, kind, reason, environmental, how many of `cells` it hits)."""
    rows = []
    for rule in RULES:
        hits = None
        if cells is not None:
            hits = sum(1 for cell in cells if rule.applies(cell, get_profile(cell.hardware)))
        rows.append({"id": rule.id, "kind": rule.kind, "reason": rule.reason,
                     "environmental": rule.environmental, "hits": hits})
    return rows
