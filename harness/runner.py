"""Run one world test on a world and turn whatever happened into a ``Verdict`` (controller side).

``run_on_world`` calls ``world.run(run_body, spec)`` and reads the three ways a world call ends
badly (``RankError``, ``WorldTimeout``, ``RankCrashed``) together with the outcomes the ranks left
in the outbox, so every rank's state is known: passed, failed, skipped, stuck (with its stack and
collective) or crashed.
"""

from __future__ import annotations

import dataclasses
import os
import pickle

from harness.outcomes import RankOutcome, Verdict, merge
from harness.rankside import BodySpec, outbox_file, run_body


def trim_stack(stack: str) -> str:
    """Keep the frames of a rank's stack from the test body up (drop the world's serving loop)."""
    lines = stack.rstrip().splitlines()
    for i, line in enumerate(lines):
        if f"harness{os.sep}rankside.py" in line and i > 1:
            return "\n".join(lines[:i])
    return "\n".join(lines)


def _left_outcomes(spec: BodySpec, size: int) -> dict:
    """Read (and remove) the outcomes ranks wrote before leaving the test early."""
    found = {}
    for rank in range(size):
        path = outbox_file(spec.outbox, spec.token, rank)
        try:
            with open(path, "rb") as fh:
                found[rank] = RankOutcome.from_dict(pickle.load(fh))
        except FileNotFoundError:
            continue
        os.unlink(path)
    return found


def _from_rank_error(err, spec: BodySpec, size: int) -> list:
    left = _left_outcomes(spec, size)
    stopped = set(getattr(err, "stopped", ()))
    stacks = getattr(err, "stacks", {}) or {}
    collectives = getattr(err, "collectives", {}) or {}
    outcomes = []
    for rank in range(size):
        if rank in left:
            outcomes.append(left[rank])
        elif rank in err.failures:  # raised outside the body (e.g. while loading the test module)
            message = f"{err.exc_types.get(rank, 'error')}: {err.messages.get(rank, '')}"
            outcomes.append(RankOutcome(rank, "failed", message, err.failures[rank], finished_at=0.0))
        elif rank in stopped:
            outcomes.append(RankOutcome(
                rank, "stuck", "still running when another rank left the test; stopped",
                trim_stack(stacks.get(rank, "")), collective=collectives.get(rank),
            ))
        else:
            outcomes.append(RankOutcome(rank, "passed"))
    return outcomes


def _from_timeout(err, spec: BodySpec, size: int) -> list:
    left = _left_outcomes(spec, size)
    outcomes = []
    for rank in range(size):
        if rank in left:
            outcomes.append(left[rank])
        elif rank in err.missing:
            where = err.collectives.get(rank)
            message = f"did not finish within {err.timeout:g} s" + (f", blocked in {where}" if where else "")
            stack = trim_stack(err.stacks.get(rank, "")) or "<no stack dumped>"
            outcomes.append(RankOutcome(rank, "stuck", message, f"stack (most recent call first):\n{stack}",
                                        collective=where))
        else:
            outcomes.append(RankOutcome(rank, "passed"))
    return outcomes


def _from_crash(err, spec: BodySpec, size: int) -> list:
    from simulators.errors import _describe_exit

    left = _left_outcomes(spec, size)
    crashed = getattr(err, "crashed", None) or {err.rank: (err.exitcode, err.signal)}
    outcomes = []
    for rank in range(size):
        if rank in crashed:
            code, sig = crashed[rank]
            output = err.output if rank == err.rank else ""
            text = f"the rank's process {_describe_exit(code, sig)} while running the test body"
            if output.strip():
                text += f"\n\noutput of the rank (tail):\n{output.rstrip()}"
            outcomes.append(RankOutcome(rank, "crashed", _describe_exit(code, sig), text, finished_at=0.0))
        elif rank in left:
            outcomes.append(left[rank])
        else:
            outcomes.append(RankOutcome(rank, "stuck", f"stopped when rank {err.rank} crashed"))
    return outcomes


def run_on_world(world, spec: BodySpec, size: int, timeout: float) -> Verdict:
    """Run one test body on every rank of ``world`` and merge the outcomes.

    Args:
        world: a ``simulators.World`` of ``size`` ranks (anything with ``run``).
        spec: the body to run.
        size: the world's size.
        timeout: the deadline of this test, in seconds.

    Returns:
        The verdict for pytest (passed, failed, skipped or xfailed).
    """
    from simulators.errors import RankCrashed, RankError, WorldTimeout

    headline_prefix = ""
    try:
        results = world.run(run_body, spec, timeout=timeout)
        outcomes = [RankOutcome.from_dict(r) for r in results]
    except RankError as err:
        outcomes = _from_rank_error(err, spec, size)
    except WorldTimeout as err:
        outcomes = _from_timeout(err, spec, size)
        headline_prefix = (
            f"world test timed out after {err.timeout:g} s (--world-timeout / @pytest.mark.world_timeout); "
            f"ranks {list(err.missing)} did not finish; the world was rebuilt\n"
        )
    except RankCrashed as err:
        outcomes = _from_crash(err, spec, size)
    verdict = merge(outcomes, size)
    if headline_prefix and verdict.status == "failed":
        verdict = dataclasses.replace(verdict, reason=headline_prefix.strip(), longrepr=headline_prefix + verdict.longrepr)
    return verdict


def failure_exception(verdict: Verdict) -> BaseException:
    """Return the exception the pytest process raises for a failed verdict.

    It is the deciding rank's own exception when it pickled (so ``xfail(raises=...)`` matches),
    else a ``WorldTestFailed``; either way it carries the merged report for the terminal.
    """
    from harness.errors import WorldTestFailed

    exc = None
    if verdict.exc_blob:
        try:
            exc = pickle.loads(verdict.exc_blob)
        except Exception:  # noqa: BLE001 - e.g. the class is gone here; the text report remains
            exc = None
    if not isinstance(exc, BaseException):
        exc = WorldTestFailed(verdict.reason)
    exc.__harness_longrepr__ = verdict.longrepr
    return exc
