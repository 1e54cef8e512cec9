"""Hypothesis across ranks: every rank draws the same examples, and the outcome is agreed before hypothesis sees it.

Each rank runs the same `@given` test with the same seed and no database. After checking a property
the ranks exchange their outcomes (raw torch.distributed, never the library under test) and every
rank raises if any rank failed, so hypothesis takes the same path on every rank and shrinking
never desynchronises them. The last failing call is the shrunk example (hypothesis replays it).
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch.distributed as dist
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import HypothesisException

from ..errors import PropertyFailed
from .inputs import describe


@dataclass(frozen=True)
class Property:
    """A property of one operation: inputs to draw and the check each rank runs on them.

    Args:
        strategy: ctx -> hypothesis strategy of the world input (or None: the check runs once).
        check: (ctx, example) -> None; raises (PropertyFailed, or anything) when the property fails.
    """

    strategy: Callable | None
    check: Callable


@dataclass
class Outcome:
    """The agreed outcome of one property on every rank."""

    ok: bool
    examples: int = 0
    rank: int | None = None
    ranks: tuple[int, ...] = ()
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    example: str | None = None
    per_rank: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__, ranks=list(self.ranks))


def _error_of(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}


class RanksDrewDifferently(BaseException):
    """The ranks drew different examples: continuing would desynchronise their collectives.

    A BaseException so hypothesis does not treat it as a failure to shrink: it ends the property.
    """


def digest_of(example) -> str:
    """A short fingerprint of a drawn example, taken before any operation can change it in place."""
    return hashlib.sha1(describe(example, limit=10**6).encode()).hexdigest()


def agree(error: dict | None, digest: str | None = None) -> dict[int, dict]:
    """Every rank's error (None where it passed), exchanged with raw torch.distributed; also checks
    that every rank drew the same example (its digest travels with the outcome)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return {0: error} if error else {}
    outcomes = [None] * dist.get_world_size()
    dist.all_gather_object(outcomes, (digest, error))
    digests = {rank: d for rank, (d, _) in enumerate(outcomes)}
    if len(set(digests.values())) > 1:
        raise RanksDrewDifferently(
            f"the ranks drew different examples (digests {digests}); hypothesis must draw identically on every "
            "rank: start the ranks with the same PYTHONHASHSEED")
    return {rank: outcome for rank, (_, outcome) in enumerate(outcomes) if outcome}


def _failed(failing: dict[int, dict], examples: int, example, shown: bool = False) -> Outcome:
    first = min(failing)
    error = failing[first]
    return Outcome(
        ok=False, examples=examples, rank=first, ranks=tuple(sorted(failing)), error_type=error["type"],
        message=error["message"], traceback=error["traceback"],
        example=None if example is None else (example if shown else describe(example)),
        per_rank={rank: f"{e['type']}: {e['message']}" for rank, e in failing.items()},
    )


def note_error(ctx, error: dict, example=None) -> None:
    """Write this rank's first error where the controller finds it even if the world then hangs
    (a rank that raised before a collective leaves the others blocked in it)."""
    notes = getattr(ctx, "notes_dir", None)
    path = notes and os.path.join(notes, f"rank{ctx.rank}.json")
    if not path or os.path.exists(path):
        return
    with open(path, "w") as handle:
        json.dump({**error, "example": None if example is None else describe(example)}, handle)


def run_once(ctx, check: Callable) -> Outcome:
    """Run a check with no drawn input on every rank and agree on the outcome."""
    error = None
    try:
        check(ctx)
    except Exception as exc:  # noqa: BLE001 - any failure of the code under test is a result, not a crash
        error = _error_of(exc)
        note_error(ctx, error)
    failing = agree(error)
    return _failed(failing, 1, None) if failing else Outcome(ok=True, examples=1)


def _draw_without_local_constants() -> None:
    """Stop hypothesis from mixing constants of the local modules loaded so far into its draws.

    Ranks load different modules (rank 0 alone saves, ...), so that pool differs between ranks and
    their draws from one seed would differ (seen on real NCCL ranks). A private hypothesis hook: if
    it moves, the digest check in agree() still catches the divergence.
    """
    try:
        from hypothesis.internal.conjecture import providers
        from sortedcontainers import SortedSet

        empty = providers.Constants(integers=SortedSet(), floats=SortedSet(key=providers.float_to_int),
                                    bytes=SortedSet(), strings=SortedSet())
    except (ImportError, AttributeError, TypeError):
        return
    providers._get_local_constants = lambda: empty


def run_property(ctx, prop: Property, examples: int, seed: int) -> Outcome:
    """Check `prop` on `examples` drawn world inputs, shrinking a failure identically on every rank.

    Args:
        ctx: the cell's Context.
        prop: the Property.
        examples: hypothesis max_examples.
        seed: the seed every rank draws from (reported so a failure can be replayed).

    Returns:
        The agreed Outcome; on failure it names the first failing rank, all failing ranks and the
        shrunk example.
    """
    if prop.strategy is None:
        return run_once(ctx, lambda c: prop.check(c, None))
    _draw_without_local_constants()
    record = {"calls": 0, "failing": None, "example": None}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False, print_blob=False,
              suppress_health_check=list(HealthCheck), phases=(Phase.generate, Phase.shrink), report_multiple_bugs=False)
    @hypothesis_seed(seed)
    @given(prop.strategy(ctx))
    def test(example):
        record["calls"] += 1
        digest = digest_of(example)  # now: broadcast overwrites its input in place, as upstream's does
        shown = describe(example)
        error = None
        try:
            prop.check(ctx, example)
        except Exception as exc:  # noqa: BLE001 - reported through the agreement below
            error = _error_of(exc)
            note_error(ctx, error, example)
        failing = agree(error, digest)
        if failing:
            record["failing"], record["example"] = failing, shown
            raise PropertyFailed(f"failed on rank(s) {sorted(failing)}")

    try:
        test()
    except RanksDrewDifferently as exc:
        return Outcome(ok=False, examples=record["calls"], rank=ctx.rank, ranks=(ctx.rank,),
                       error_type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc())
    except PropertyFailed:
        return _failed(record["failing"], record["calls"], record["example"], shown=True)
    except HypothesisException as exc:  # Flaky, Unsatisfiable: a failure of its own kind
        return Outcome(ok=False, examples=record["calls"], rank=ctx.rank, ranks=(ctx.rank,),
                       error_type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc())
    return Outcome(ok=True, examples=record["calls"])
