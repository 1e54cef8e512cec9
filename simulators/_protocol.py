"""Events exchanged between a world's controller, its zygote and its ranks.

Every message is a small frozen dataclass, pickled by ``multiprocessing.connection``.
Receivers dispatch on the type through a table; a type missing from the table is a
``ProtocolError``, never silently dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from simulators.errors import ProtocolError


@dataclasses.dataclass(frozen=True)
class FnRef:
    """Where a rank finds the function to run: module and qualname, or the module's file."""

    module: str
    qualname: str
    path: str | None


# controller -> zygote ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SpawnRanks:
    """Fork ``size`` ranks; the message carries one socket fd per rank (SCM_RIGHTS)."""

    world_id: int
    incarnation: int
    size: int
    rank_config: Any  # simulators._rank.RankConfig; pickled by value


@dataclasses.dataclass(frozen=True)
class StopZygote:
    """Kill every rank the zygote still has and exit."""


# zygote -> controller ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spawned:
    """The ranks of one incarnation were forked: their pids and process group."""

    world_id: int
    incarnation: int
    pids: tuple
    pgid: int


@dataclasses.dataclass(frozen=True)
class Exited:
    """A rank process was reaped: exit code, or the signal that ended it."""

    pid: int
    exitcode: int | None
    signal: int | None


# controller -> rank --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """Run ``fn(*args, **kwargs)``; args travel pickled once for all ranks."""

    call_id: int
    fn: FnRef
    payload: bytes
    sys_path: tuple | None  # None: unchanged since the last call
    cwd: str


@dataclasses.dataclass(frozen=True)
class Shutdown:
    """Leave the process group and exit cleanly."""


# rank -> controller --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ready:
    """The rank joined the process group and waits for calls."""

    rank: int
    pid: int


@dataclasses.dataclass(frozen=True)
class StartFailed:
    """The rank could not join the group or apply the profile."""

    rank: int
    traceback: str


@dataclasses.dataclass(frozen=True)
class Returned:
    """``fn`` returned; ``payload`` is its pickled result."""

    call_id: int
    rank: int
    payload: bytes
    output: tuple  # (stdout, stderr) written during the call
    recycle: tuple  # reasons the world must be rebuilt before the next call; () if none


@dataclasses.dataclass(frozen=True)
class Raised:
    """``fn`` raised; the traceback is formatted in the rank."""

    call_id: int
    rank: int
    traceback: str
    exc_type: str
    message: str
    exc_pickle: bytes | None
    output: tuple
    recycle: tuple


def dispatch(event: Any, handlers: Mapping[type, Callable[[Any], Any]], sender: str):
    """Call the handler registered for ``type(event)``; an unknown type is a ProtocolError."""
    handler = handlers.get(type(event))
    if handler is None:
        expected = ", ".join(sorted(t.__name__ for t in handlers))
        raise ProtocolError(
            f"{sender} sent an event of type {type(event).__name__!r}; expected one of {expected}. "
            "This is a bug in simulators; please report it with the traceback."
        )
    return handler(event)
