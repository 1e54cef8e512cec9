"""Hypothesis across ranks: rank 0 draws, every rank runs the example, the ranks agree on the outcome.

Rank 0 runs hypothesis itself, with the test's ``inner_test`` (hypothesis's documented hook for
plugins) replaced by a step that broadcasts the drawn arguments, runs the body locally, gathers
every rank's result and raises the agreed outcome. The other ranks follow: receive an example,
run the body, report, until rank 0 says it is done. Hypothesis therefore only ever sees outcomes
that all ranks share, so shrinking replays the same example everywhere and never desynchronises.

The protocol uses its own gloo process group, so its collectives can never pair with a body's collectives
(a rank that fails before a collective its peers are in makes a clean hang, which the world's
deadline reports with every rank's stack).
"""

from __future__ import annotations

import datetime
import functools
import pickle

import torch
import torch.distributed as dist

from harness.errors import LockstepError, RankLeftExample, WorldTestFailed

# Per-example results exchanged in one all_gather of a small int tensor.
PASSED, FAILED, SKIPPED, REJECTED, CONTROL = 0, 1, 2, 3, 4

# Seconds a rank whose example did not pass waits for the others at the agreement. If they do not
# come, they are blocked in a collective this rank skipped: it leaves the world call instead, so the
# world stops them (the test reports that rank's outcome; shrinking ends there).
LEAVE_AFTER = 5.0

_abandoned = []  # channels of ranks that left: never destroyed (their gloo threads may be blocked)

def add_note(exc: BaseException, note: str) -> None:
    """Attach a note to an exception (PEP 678; also on Python 3.10, where tracebacks ignore it)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]


class _Channel:
    """Point-to-point messages between rank 0 and each other rank, over a private gloo group.

    The group is built directly on the world's store under a prefix unique to the test and never
    registered with torch.distributed, so the world's groups and collective bookkeeping stay as the
    body left them. Rank 0 sends each example to every rank and every rank sends its result back:
    one hop each way (a ring all_gather would cost 7 scheduler wake-ups on a busy 2-core box).
    A message is one fixed frame (length + pickle); longer ones continue in a second message.
    """

    FRAME = 4096

    def __init__(self, token: str):
        from torch.distributed import distributed_c10d as c10d

        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        store = dist.PrefixStore(f"harness-lockstep/{token}/", c10d._get_default_store())
        self.pg = dist.ProcessGroupGloo(store, self.rank, self.size, datetime.timedelta(seconds=3600))

    def _send(self, message, dst: int, timeout: float | None = None) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        frame = torch.zeros(self.FRAME, dtype=torch.uint8)
        frame[:8] = torch.tensor([len(data)], dtype=torch.int64).view(torch.uint8)
        head = data[: self.FRAME - 8]
        frame[8 : 8 + len(head)] = torch.frombuffer(bytearray(head), dtype=torch.uint8)
        works = [self.pg.send([frame], dst, 0)]
        if len(data) > len(head):
            works.append(self.pg.send([torch.frombuffer(bytearray(data[len(head) :]), dtype=torch.uint8)], dst, 1))
        for work in works:
            work.wait() if timeout is None else work.wait(datetime.timedelta(seconds=timeout))

    def _post_recv(self, src: int):
        frame = torch.empty(self.FRAME, dtype=torch.uint8)
        return frame, self.pg.recv([frame], src, 0)

    def _finish_recv(self, frame, work, src: int, timeout: float | None = None):
        work.wait() if timeout is None else work.wait(datetime.timedelta(seconds=timeout))
        length = int(frame[:8].view(torch.int64).item())
        data = frame[8 : 8 + min(length, self.FRAME - 8)].numpy().tobytes()
        if length > len(data):
            rest = torch.empty(length - len(data), dtype=torch.uint8)
            self.pg.recv([rest], src, 1).wait()
            data += rest.numpy().tobytes()
        return pickle.loads(data)

    def scatter_from_0(self, message=None):
        """Rank 0 sends ``message`` to every rank; every rank returns it."""
        if self.rank != 0:
            return self._finish_recv(*self._post_recv(0), 0)
        for dst in range(1, self.size):
            self._send(message, dst)
        return message

    def gather_to_0(self, message, timeout: float | None = None):
        """Every rank sends ``message`` to rank 0, which returns all of them in rank order (others: None).

        Raises:
            RuntimeError: gloo's timeout, when ``timeout`` s pass first.
        """
        if self.rank != 0:
            self._send(message, 0, timeout)
            return None
        posted = {src: self._post_recv(src) for src in range(1, self.size)}
        return [message] + [self._finish_recv(*posted[src], src, timeout) for src in range(1, self.size)]


def _run_local(inner, args, kwargs):
    """Run the body on one example; return ``(code, exception)`` without raising."""
    import unittest

    from _pytest.outcomes import Skipped
    from hypothesis.errors import UnsatisfiedAssumption

    try:
        inner(*args, **kwargs)
    except UnsatisfiedAssumption as exc:
        return REJECTED, exc
    except (Skipped, unittest.SkipTest) as exc:
        return SKIPPED, exc
    except Exception as exc:  # noqa: BLE001 - a failing example, whatever it raised
        return FAILED, exc
    except BaseException as exc:  # noqa: BLE001 - hypothesis control flow (StopTest...) or pytest.fail/xfail
        from _pytest.outcomes import Failed, XFailed

        return (FAILED if isinstance(exc, (Failed, XFailed)) else CONTROL), exc
    return PASSED, None


def _result(code: int, exc, rank: int) -> tuple:
    """What a rank reports for one example: its code, and for a failure or skip the details."""
    if code == FAILED:
        from harness.rankside import format_failure, pickled_exception

        return code, (rank, code, pickled_exception(exc), format_failure(exc))
    if code == SKIPPED:
        from harness.rankside import classify

        return code, (rank, code, None, classify(exc)[1])
    return code, None


def _agree(code: int, exc, rank: int, channel: _Channel, example: dict):
    """Send this rank's result to rank 0; on rank 0 return ``(codes, details)`` for ``_raise_agreed``.

    Details are the first failing rank's (else the first skipping rank's). A rank whose example
    did not pass gives rank 0 ``LEAVE_AFTER`` seconds to take its result; if rank 0 does not (it is
    blocked in a collective this rank skipped), it leaves the run with ``RankLeftExample``.
    """
    try:
        results = channel.gather_to_0(_result(code, exc, rank), timeout=None if code == PASSED else LEAVE_AFTER)
    except RuntimeError:
        _abandoned.append(channel)
        add_note(exc, f"example: {', '.join(f'{k}={v!r}' for k, v in example.items())}")
        raise RankLeftExample(exc) from None
    if results is None:
        return None, None
    codes = [c for c, _ in results]
    for wanted in (FAILED, SKIPPED):
        for c, details in results:
            if c == wanted:
                return codes, details
    return codes, None


def _raise_agreed(codes, details):
    """On rank 0: raise what hypothesis must see for this example (always from this one place).

    A rejection on any rank rejects the example everywhere (that rank's precondition failed, so
    the others' results on it mean nothing); then a failure, then a skip.
    """
    if REJECTED in codes:
        from hypothesis import reject

        reject()
    if details is None:
        return
    first, code, blob, text = details
    if code == SKIPPED:
        import pytest

        pytest.skip(f"{text} (skipped on rank {first})")
    exc = pickle.loads(blob) if blob else WorldTestFailed(text.strip().splitlines()[-1])
    exc.__traceback__ = None
    add_note(exc, f"rank {first} failed this example:\n{text.rstrip()}")
    exc.__harness_failing_rank__ = first  # the report names the rank, not rank 0 that ran hypothesis
    raise exc from None  # one raise site: hypothesis tells distinct failures by exception type


class _PerRank:
    """What hypothesis sees (and prints) for a per-rank argument; each rank has its own value."""

    def __repr__(self):
        return "<per rank>"


def _lead(test, kwargs, hidden: dict, seed: int, channel: _Channel):
    """Rank 0: run hypothesis with an inner test that keeps every rank in step."""
    from hypothesis import HealthCheck, Phase, settings

    inner = test.hypothesis.inner_test
    fixture_names = set(kwargs)

    @functools.wraps(inner)
    def step(*args, **all_kwargs):
        drawn = {k: v for k, v in all_kwargs.items() if k not in fixture_names}
        try:
            payload = pickle.dumps(drawn)
        except Exception as exc:
            raise LockstepError(
                f"cannot send the drawn example {sorted(drawn)} to the other ranks ({exc}); "
                "draw only picklable values (interactive st.data() draws cannot be broadcast)"
            ) from exc
        channel.scatter_from_0(("example", payload))
        code, exc = _run_local(inner, args, {**all_kwargs, **hidden})
        codes, details = _agree(code, exc, 0, channel, drawn)
        if code == CONTROL:
            raise exc
        _raise_agreed(codes, details)

    func = getattr(test, "__func__", test)  # attributes live on the function, not a bound method
    saved = func._hypothesis_internal_use_settings, func._hypothesis_internal_use_seed
    base = saved[0] or settings.default
    test.hypothesis.inner_test = step
    func._hypothesis_internal_use_settings = settings(
        base,
        deadline=None,  # the world's deadline bounds the whole run; gloo on a busy box is slow
        suppress_health_check=[*base.suppress_health_check, HealthCheck.too_slow],
        phases=[phase for phase in base.phases if phase is not Phase.explain],  # it would explain lockstep
    )
    func._hypothesis_internal_use_seed = seed
    try:
        test(**kwargs)
    except BaseException as exc:
        if isinstance(exc, Exception) or "ExceptionGroup" in type(exc).__name__:  # not skips and exits
            add_note(exc, f"hypothesis seed: {seed} (rerun with --hypothesis-seed={seed})")
        raise
    finally:
        test.hypothesis.inner_test = inner
        func._hypothesis_internal_use_settings, func._hypothesis_internal_use_seed = saved
        if channel not in _abandoned:  # after leaving, the others are stopped: nobody to tell
            channel.scatter_from_0(("done", None))


def _follow(test, kwargs, rank: int, channel: _Channel):
    """Ranks other than 0: run each example rank 0 sends, until it says it is done."""
    inner = test.hypothesis.inner_test
    own_self = (test.__self__,) if hasattr(test, "__self__") else ()
    while True:
        kind, payload = channel.scatter_from_0()
        if kind == "done":
            return
        if kind != "example":
            raise LockstepError(f"rank {rank} expected an example or done from rank 0, got {kind!r}")
        drawn = pickle.loads(payload)
        code, exc = _run_local(inner, own_self, {**kwargs, **drawn})
        _agree(code, exc, rank, channel, drawn)


def run_hypothesis_test(test, kwargs: dict, per_rank: set, rank: int, seed: int, token: str) -> None:
    """Run a ``@given`` test body on this rank in lockstep with the others.

    Args:
        test: the hypothesis-wrapped test (a function, or a method bound to an instance).
        kwargs: this rank's fixture arguments (per-rank ones already built).
        per_rank: names of the per-rank arguments; hypothesis on rank 0 sees a placeholder for them,
            so the falsifying example shows ``rank=<per rank>``, not rank 0's value as if it failed.
        rank: this rank.
        seed: the seed rank 0 gives hypothesis (reported on failure).
        token: a name unique to this test run (the protocol's store prefix).

    Raises:
        Whatever hypothesis raises on rank 0 (the shrunk failure, with the falsifying example and
        the seed as notes); other ranks return normally once rank 0 is done.
    """
    if not getattr(test, "is_hypothesis_test", False):
        raise LockstepError(f"{test!r} is not a hypothesis test (no @given)")
    channel = _Channel(token)
    if rank == 0:
        hidden = {k: v for k, v in kwargs.items() if k in per_rank}
        shown = {k: (_PerRank() if k in per_rank else v) for k, v in kwargs.items()}
        _lead(test, shown, hidden, seed, channel)
    else:
        _follow(test, kwargs, rank, channel)
