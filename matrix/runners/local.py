"""The local runner: cells on this machine, in simulated worlds (or on its real devices).

One world per (world size, hardware profile, backend), reused for every cell of that group and
closed after it; groups run side by side only as far as the cores allow (scheduling.py). Each cell
is one `world.run(run_cell, ...)`: every rank sets up the cell, checks its preconditions and its
property, and returns the agreed outcome; the controller turns it into a CellResult.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

from .. import exclusions, results
from ..cells import Cell
from ..results import CellResult, Failure
from .scheduling import CoreBudget, group_cells, next_startable


@dataclass(frozen=True)
class RunSettings:
    """How hard and where each cell is tried.

    Args:
        examples: hypothesis examples per cell.
        seed: the run's seed (each cell mixes in its id).
        world_timeout: seconds one cell may take on its world before it is declared hung.
        real: run on this machine's real devices (no profile simulation), e.g. backend nccl on GPUs.
        cores: cores the scheduler may fill (default: os.cpu_count()).
        rank_setup: a module-level function every rank runs at the start of every cell (fault
            injection, extra patches); None for nothing.
    """

    examples: int = 8
    seed: int = 0
    world_timeout: float = 60.0
    real: bool = False
    cores: int | None = None
    rank_setup: Callable | None = None


def default_world_factory(settings: RunSettings):
    """Open a world for a group: a simulators.World with the hardware profile simulated, or with
    settings.real a RealWorld of processes on this machine's devices."""

    def open_world(size: int, hardware: str, backend: str):
        if settings.real:  # this machine's own devices, on the cell's backend (NCCL needs real GPUs)
            from .real_world import RealWorld

            return RealWorld(size, backend=backend, timeout=settings.world_timeout)
        import simulators

        return simulators.World(size, profile=hardware, backend=backend, timeout=settings.world_timeout)

    return open_world


def reproduce_command(cell_id: str, settings: RunSettings) -> str:
    return (f"python -m matrix run --cell {cell_id} --seed {settings.seed} --examples {settings.examples}"
            + (" --real" if settings.real else ""))


def _failure_from_outcome(outcome: dict, cell_id: str, settings: RunSettings) -> Failure:
    stage = outcome.get("stage", "property")
    per_rank = outcome.get("per_rank") or {}
    others = "".join(f"\n  rank {r}: {m}" for r, m in sorted(per_rank.items(), key=lambda kv: int(kv[0])))
    return Failure(
        message=f"[{stage}] {outcome.get('error_type')}: {outcome.get('message')}" + (f"\nfailing ranks:{others}" if len(per_rank) > 1 else ""),
        rank=outcome.get("rank"), ranks=tuple(outcome.get("ranks") or ()), error_type=outcome.get("error_type", ""),
        example=outcome.get("example"), traceback=outcome.get("traceback", ""),
        reproduce=reproduce_command(cell_id, settings),
    )


def _failure_from_world_error(exc: Exception, cell_id: str, settings: RunSettings) -> Failure:
    """A world-level error (a rank raised outside the suite, hung, or died) as a Failure."""
    name = type(exc).__name__
    rank, ranks, text = None, (), traceback.format_exception_only(type(exc), exc)[-1].strip()
    if hasattr(exc, "failures"):  # RankError
        ranks = tuple(sorted(exc.failures))
        rank = ranks[0] if ranks else None
        text = "\n".join(f"--- rank {r} ---\n{tb}" for r, tb in sorted(exc.failures.items()))
    elif hasattr(exc, "missing"):  # WorldTimeout
        ranks = tuple(sorted(exc.missing or ()))
        rank = ranks[0] if ranks else None
        blocked = getattr(exc, "collectives", {}) or {}
        stacks = getattr(exc, "stacks", {}) or {}
        text = f"hung after {settings.world_timeout}s; missing ranks {list(ranks)}; blocked in {blocked}\n" + \
            "\n".join(f"--- rank {r} stack ---\n{s}" for r, s in sorted(stacks.items()))
    elif hasattr(exc, "exitcode"):  # RankCrashed
        rank = getattr(exc, "rank", None)
        ranks = (rank,) if rank is not None else ()
    return Failure(message=f"{name}: {str(exc).splitlines()[0] if str(exc) else name}", rank=rank, ranks=ranks,
                   error_type=name, traceback=text, reproduce=reproduce_command(cell_id, settings))


def judge(cell: Cell, verdict, outcome: dict | None, error: Exception | None, duration: float,
          settings: RunSettings) -> CellResult:
    """Turn a cell's outcome (or world error) and its exclusion verdict into a CellResult."""
    if error is not None:
        failure = _failure_from_world_error(error, cell.id, settings)
        examples = 0
    else:
        failure = None if outcome.get("ok") else _failure_from_outcome(outcome, cell.id, settings)
        examples = outcome.get("examples", 0)
    passed = failure is None
    if verdict.action == exclusions.XFAIL:
        status = results.XPASSED if passed else results.XFAILED
        if not passed and verdict.expects and not any(text in failure.message for text in verdict.expects):
            status = results.FAILED  # it failed, but not the way the exclusion rule says it must
            failure.message = (f"expected a failure mentioning {' or '.join(map(repr, verdict.expects))} "
                               f"(rule {', '.join(verdict.rules)}), got another: {failure.message}")
        elif passed:
            failure = Failure(message=f"strict xfail: expected to fail ({verdict.reason}) but passed; "
                              f"update matrix/exclusions.py rule(s) {', '.join(verdict.rules)}",
                              reproduce=reproduce_command(cell.id, settings))
    else:
        status = results.PASSED if passed else results.FAILED
    return CellResult(cell.id, status, duration=duration, examples=examples, reason=verdict.reason,
                      rules=verdict.rules, failure=failure)


def _add_rank_notes(failure: Failure, notes: str) -> None:
    """After a hang or crash, add the first error each rank noted before it (the likely cause)."""
    noted = {}
    for name in sorted(os.listdir(notes)):
        try:
            with open(os.path.join(notes, name)) as handle:
                noted[int(name[4:-5])] = json.load(handle)
        except (OSError, ValueError):
            continue
    if not noted:
        return
    first = min(noted)
    failure.message += f"\nbefore that, rank {first} failed: {noted[first]['type']}: {noted[first]['message']}"
    failure.rank, failure.ranks = first, tuple(sorted(noted))
    failure.example = failure.example or noted[first].get("example")
    failure.traceback = "".join(f"--- rank {r} first error ---\n{e['traceback']}\n" for r, e in sorted(noted.items())) \
        + failure.traceback


class LocalRunner:
    """Runs cells on this machine and reports each result as it completes.

    Example:
        >>> runner = LocalRunner(RunSettings(examples=3))
        >>> done = runner.run([Cell.parse("gather/no/none/w2/gloo/cpu")], on_result=print)
    """

    name = "local"

    def __init__(self, settings: RunSettings, world_factory=None):
        self.settings = settings
        self.world_factory = world_factory or default_world_factory(settings)

    def run(self, cells: list[Cell], on_result: Callable[[CellResult], None] = lambda result: None) -> list[CellResult]:
        lock = threading.Lock()
        done: dict[str, CellResult] = {}

        def report(result: CellResult):
            with lock:
                done[result.cell_id] = result
                on_result(result)

        verdicts = {cell: exclusions.classify(cell) for cell in cells}
        runnable = []
        for cell in cells:
            if verdicts[cell].action == exclusions.NOT_APPLICABLE:
                report(CellResult(cell.id, results.NOT_APPLICABLE, reason=verdicts[cell].reason, rules=verdicts[cell].rules))
            else:
                runnable.append(cell)
        self._run_groups(group_cells(runnable), verdicts, report)
        return [done[cell.id] for cell in cells]

    def _run_groups(self, pending, verdicts, report):
        budget = CoreBudget(self.settings.cores or os.cpu_count() or 1)
        running: dict[futures.Future, int] = {}
        with futures.ThreadPoolExecutor(max_workers=budget.cores) as pool:
            while pending or running:
                while (group := next_startable(pending, budget)) is not None:
                    running[pool.submit(self._run_group, group, verdicts, report)] = group.weight(budget.cores)
                finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                for future in finished:
                    budget.finish(running.pop(future))
                    future.result()  # a bug in the runner itself must not pass silently

    def _run_cell(self, world, cell, verdict) -> CellResult:
        from ..suite.entry import function_reference, run_cell

        setup = None if self.settings.rank_setup is None else function_reference(self.settings.rank_setup)
        started = time.perf_counter()
        outcome, error = None, None
        with tempfile.TemporaryDirectory(prefix="matrix-notes-") as notes:
            try:
                ranks = world.run(run_cell, cell.id, self.settings.examples, self.settings.seed, notes, setup,
                                  self.settings.real, timeout=self.settings.world_timeout)
                outcome = ranks[0]
            except Exception as exc:  # noqa: BLE001 - WorldError subclasses: hang, crash, rank error
                error = exc
            result = judge(cell, verdict, outcome, error, time.perf_counter() - started, self.settings)
            if error is not None and result.failure is not None:
                _add_rank_notes(result.failure, notes)
        return result

    def _run_group(self, group, verdicts, report):
        size, hardware, backend = group.key
        try:
            world = self.world_factory(size, hardware, backend)
            from ..suite.entry import warm_up

            # First imports in 8 ranks on a busy 2-core box take long: give them their own deadline.
            world.run(warm_up, timeout=max(300.0, self.settings.world_timeout))
        except Exception as exc:  # noqa: BLE001 - the world never started: every cell of the group is an error
            for cell in group.cells:
                failure = _failure_from_world_error(exc, cell.id, self.settings)
                report(CellResult(cell.id, results.ERROR, reason=verdicts[cell].reason, failure=failure))
            return
        try:
            for cell in group.cells:
                report(self._run_cell(world, cell, verdicts[cell]))
        finally:
            world.close()
