"""Collecting one call's outcome from every rank, and turning failures into one error.

A ``_Collector`` waits (blocking on the rank sockets and the zygote's, never spinning)
until every rank answered, a rank died, the deadline passed, or, after one rank raised,
the others had a short grace to finish. Any outcome that leaves ranks unfinished or the
group out of step kills the incarnation and forks the next one before raising.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time

from simulators import _collectives
from simulators._protocol import Raised, Returned, dispatch
from simulators._rank import collectives_path, rank_paths
from simulators.errors import RankCrashed, RankError, WorldTimeout

FAILURE_GRACE = 2.0  # seconds the other ranks get to finish after one rank raised
BLOCKED_CHECK_AFTER = 0.05  # after a failure, ranks all blocked in collectives this long are stuck
POLL = 0.02  # seconds between looks at the collective slots while in the grace period
STACK_WAIT = 2.0  # seconds to wait for the faulthandler dumps after SIGUSR1
CRASH_SETTLE = 0.02  # seconds to wait for other ranks' deaths after the first one


def read_outputs(tmpdir: str, ranks, limit: int) -> dict:
    """Tail of each rank's stdout and stderr files, read from outside the rank."""
    outputs = {}
    for rank in ranks:
        texts = []
        for kind in ("out", "err"):
            try:
                with open(rank_paths(tmpdir, rank)[kind], "rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - limit))
                    texts.append(f.read().decode(errors="replace"))
            except OSError:
                texts.append("")
        outputs[rank] = tuple(texts)
    return outputs


def dump_stacks(tmpdir: str, pids, only=None) -> dict:
    """Signal the ranks (all, or those in ``only``) to dump their Python stacks; return the text per rank."""
    ranks = range(len(pids)) if only is None else only
    paths = {rank: rank_paths(tmpdir, rank)["stack"] for rank in ranks}
    before = {rank: _size(path) for rank, path in paths.items()}
    for rank in ranks:
        try:
            os.kill(pids[rank], signal.SIGUSR1)
        except OSError:
            pass
    deadline = time.monotonic() + STACK_WAIT
    previous = dict(before)
    while time.monotonic() < deadline:
        time.sleep(0.01)
        sizes = {rank: _size(path) for rank, path in paths.items()}
        if all(sizes[r] > before[r] and sizes[r] == previous[r] for r in paths):
            break
        previous = sizes
    stacks = {}
    for rank, path in paths.items():
        try:
            with open(path, "rb") as f:
                f.seek(before[rank])
                stacks[rank] = f.read().decode(errors="replace")
        except OSError:
            stacks[rank] = ""
    return stacks


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class _Collector:
    """Gathers one call's events; ``collect()`` returns the results or raises one WorldError."""

    def __init__(self, world, inc, call, limit: float):
        self.world = world
        self.res = world._res
        self.inc = inc
        self.call = call
        self.limit = limit
        self.size = world.size
        self.fn_name = f"{call.fn.qualname}()"
        self.pending = set(range(self.size))
        self.returned = {}
        self.raised = {}
        self.died = set()
        self.handlers = {Returned: self._on_event, Raised: self._on_event}

    def _on_event(self, event) -> None:
        if event.call_id != self.call.call_id:
            return  # a late answer to an earlier call cannot happen: that incarnation is gone
        target = self.returned if isinstance(event, Returned) else self.raised
        target[event.rank] = event
        self.pending.discard(event.rank)

    def collect(self) -> list:
        deadline = time.monotonic() + self.limit
        failed_at = None
        while self.pending and not self.died:
            now = time.monotonic()
            if now >= deadline:
                break
            wake = deadline
            if self.raised:
                failed_at = failed_at or now
                if now >= failed_at + FAILURE_GRACE or (now >= failed_at + BLOCKED_CHECK_AFTER and self._all_blocked()):
                    break
                wake = min(deadline, now + POLL)
            self._receive(self.inc.selector().select(wake - now))
        if self.died:
            self._receive(self.inc.selector().select(CRASH_SETTLE))
        self._emit_output()
        if self.died:
            raise self._crashed()
        if self.pending:
            raise self._stopped() if self.raised else self._timed_out()
        reasons = [reason for event in (*self.returned.values(), *self.raised.values()) for reason in event.recycle]
        if reasons:
            self._rebuild()
        if self.raised:
            raise self._rank_error()
        return self._results()

    def _receive(self, ready) -> None:
        for key, _ in ready:
            rank = key.data
            if rank is None:
                if not self.inc.zygote.drain():
                    self.died |= self.pending  # the zygote died and its ranks with it
                continue
            try:
                event = key.fileobj.recv()
            except (EOFError, OSError):
                self.died.add(rank)
                self.pending.discard(rank)
                continue
            dispatch(event, self.handlers, f"rank {rank}")

    def _all_blocked(self) -> bool:
        current = _collectives.read_all(collectives_path(self.inc.tmpdir), self.size)
        return all(rank in current for rank in self.pending)

    def _rebuild(self) -> None:
        self.world._rebuild()

    def _emit_output(self) -> None:
        for rank in range(self.size):
            event = self.returned.get(rank) or self.raised.get(rank)
            if event is None:
                continue
            for text, stream in zip(event.output, (sys.stdout, sys.stderr)):
                if text:
                    stream.write("".join(f"[rank {rank}] {line}\n" for line in text.splitlines()))

    def _results(self) -> list:
        results = []
        for rank in range(self.size):
            try:
                results.append(pickle.loads(self.returned[rank].payload))
            except Exception as error:  # noqa: BLE001 - e.g. a class the controller cannot import
                message = (f"rank {rank} returned a result the caller cannot unpickle ({error!r}); return plain "
                           "data or CPU tensors (a tensor on a simulated device needs .cpu())")
                raise RankError(self.fn_name, self.size, {rank: message}, {rank: type(error).__name__},
                                {rank: str(error)}) from error
        return results

    def _rank_error(self, stopped=(), collectives=None, stacks=None) -> RankError:
        exceptions = {}
        for rank, event in self.raised.items():
            if event.exc_pickle is not None:
                try:
                    exceptions[rank] = pickle.loads(event.exc_pickle)
                except Exception:  # noqa: BLE001 - unpicklable here: text only
                    pass
        return RankError(
            self.fn_name, self.size,
            {r: e.traceback for r, e in self.raised.items()},
            {r: e.exc_type for r, e in self.raised.items()},
            {r: e.message for r, e in self.raised.items()},
            exceptions, stopped=stopped, collectives=collectives, stacks=stacks,
        )

    def _stopped(self) -> RankError:
        """Some ranks raised and the rest did not finish (usually blocked waiting for them)."""
        collectives = _collectives.read_all(collectives_path(self.inc.tmpdir), self.size)
        stopped = sorted(self.pending)
        stacks = dump_stacks(self.inc.tmpdir, self.inc.pids, only=stopped)
        self._rebuild()
        return self._rank_error(stopped, {r: c for r, c in collectives.items() if r in stopped}, stacks)

    def _timed_out(self) -> WorldTimeout:
        inc = self.inc
        stacks = dump_stacks(inc.tmpdir, inc.pids)
        collectives = _collectives.read_all(collectives_path(inc.tmpdir), self.size)
        for rank in self.pending:
            guess = collectives.get(rank) or _collectives.from_stack(stacks.get(rank, ""))
            if guess:
                collectives[rank] = guess
        arrived = set(self.returned) | set(self.raised)
        self._rebuild()
        return WorldTimeout(self.fn_name, self.limit, arrived, self.pending, stacks, collectives)

    def _crashed(self) -> RankCrashed:
        inc = self.inc
        pids = [inc.pids[r] for r in self.died]
        self.res.await_exits(inc, pids, 2.0)
        statuses = {}
        for rank in self.died:
            exited = inc.zygote.exits.get(inc.pids[rank])
            statuses[rank] = (exited.exitcode, exited.signal) if exited else (None, None)
        first = min(self.died)
        output = read_outputs(inc.tmpdir, [first], limit=3000)[first][1]
        if not inc.zygote.alive():
            output += "\nThe zygote (the parent of every rank) died, and its ranks with it; a new one was started."
        self._rebuild()
        code, sig = statuses[first]
        return RankCrashed(self.fn_name, first, code, sig, statuses, output)
