"""Persistent multi-rank worlds: N rank processes in one gloo group, reused call after call.

The controller (this module, in the caller's process) owns a TCPStore on a port the OS
picked, asks the zygote (simulators/_zygote.py) to fork the ranks, and talks to each
rank over its own socket; simulators/_collect.py gathers one call's outcome. A call that
hangs, crashes a rank or leaves state that cannot be restored costs one rebuild: the
ranks' process group is killed and reaped, then the standby incarnation (ranks already
joined in their own group) takes over, or a new one is forked, before the error travels
back to the caller.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pickle
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from simulators import _collectives, _zygote
from simulators._collect import _Collector, read_outputs
from simulators._protocol import (
    Call,
    FnRef,
    Ready,
    SpawnRanks,
    StartFailed,
    dispatch,
)
from simulators._rank import RankConfig, collectives_path
from simulators.errors import (
    RankCrashed,
    RankError,
    WorldClosedError,
    WorldError,
    WorldStartError,
    WorldTimeout,
)

MAX_RANKS = 64
START_TIMEOUT = 120.0  # seconds for a (re)built incarnation to join its group; generous on busy boxes
PG_TIMEOUT = 1800.0  # gloo's own timeout: far beyond any call deadline, the world's deadline acts first
EXIT_WAIT = 10.0  # seconds to wait for the zygote to report killed ranks reaped
_ENV_DROP = ("PYTEST_CURRENT_TEST",)

_lock = threading.Lock()
_zygote_handle: _zygote.Zygote | None = None
_worlds: weakref.WeakSet[World] = weakref.WeakSet()
_world_ids = itertools.count(1)


def _get_zygote() -> _zygote.Zygote:
    global _zygote_handle
    with _lock:
        if _zygote_handle is None or not _zygote_handle.alive():
            if _zygote_handle is not None:
                _zygote_handle.stop()
            _zygote_handle = _zygote.Zygote()
        return _zygote_handle


def prestart() -> None:
    """Start the zygote now, in the background, so the first World does not wait for torch to import.

    Example (a pytest plugin's ``pytest_configure``, overlapping the zygote's start with collection):
        >>> simulators.world.prestart()
    """
    _get_zygote()


def shutdown() -> None:
    """Close every open world and stop the zygote (also run at interpreter exit)."""
    global _zygote_handle
    for world in list(_worlds):
        world.close()
    with _lock:
        if _zygote_handle is not None and _zygote_handle.owner == os.getpid():
            _zygote_handle.stop()
            _zygote_handle = None


atexit.register(shutdown)


class _Incarnation:
    """One generation of a world's rank processes."""

    def __init__(self, number: int, tmpdir: str, conns: list, zygote: _zygote.Zygote):
        self.number = number
        self.zygote = zygote  # the parent of these ranks: it reaps them and reports their exits
        self.sys_path: tuple = ()  # the caller's sys.path as these ranks last received it
        self.tmpdir = tmpdir
        self.conns = conns
        self.pids: tuple | None = None
        self.pgid: int | None = None
        self.ready = False
        self.dead = False
        self.promoted = False  # was the standby; if it failed to start, a fresh one is tried once
        self._selector: selectors.BaseSelector | None = None

    def selector(self) -> selectors.BaseSelector:
        """One epoll over the ranks' sockets (data: rank) and the zygote's (data: None), kept across calls."""
        if self._selector is None:
            self._selector = selectors.DefaultSelector()
            for rank, conn in enumerate(self.conns):
                self._selector.register(conn, selectors.EVENT_READ, rank)
            self._selector.register(self.zygote, selectors.EVENT_READ, None)
        return self._selector

    def close(self) -> None:
        if self._selector is not None:
            self._selector.close()
        for conn in self.conns:
            conn.close()


class _Resources:
    """What a world must release; kept apart from World so a finalizer can run without it."""

    def __init__(self, zygote: _zygote.Zygote, tmpdir: str, store):
        self.owner = os.getpid()  # a forked copy of the controller must not kill the owner's ranks
        self.zygote = zygote
        self.tmpdir = tmpdir
        self.store = store
        self.incarnation: _Incarnation | None = None
        self.standby: _Incarnation | None = None  # ready-to-promote ranks: a rebuild costs one kill

    def kill(self, inc: _Incarnation | None) -> None:
        """SIGKILL an incarnation's process group and wait until the zygote reaped every rank."""
        if inc is None or inc.dead:
            return
        inc.dead = True
        self.await_spawned(inc, EXIT_WAIT)
        if inc.pids:
            try:
                os.killpg(inc.pgid, signal.SIGKILL)
            except OSError:
                pass
            for pid in inc.pids:
                if pid not in inc.zygote.exits:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            self.await_exits(inc, inc.pids, EXIT_WAIT)
            for pid in inc.pids:
                inc.zygote.exits.pop(pid, None)
        inc.close()
        shutil.rmtree(inc.tmpdir, ignore_errors=True)

    def await_spawned(self, inc: _Incarnation, limit: float) -> bool:
        if inc.pids is not None:
            return True
        deadline = time.monotonic() + limit
        key = (self.world_id, inc.number)
        zygote = inc.zygote
        while key not in zygote.spawned:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not zygote.alive():
                return False
            if wait([zygote], remaining) and not zygote.drain():
                return False
        spawned = zygote.spawned.pop(key)
        inc.pids, inc.pgid = spawned.pids, spawned.pgid
        return True

    def await_exits(self, inc: _Incarnation, pids, limit: float) -> None:
        deadline = time.monotonic() + limit
        zygote = inc.zygote
        while any(pid not in zygote.exits for pid in pids):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not zygote.alive():
                return  # a dead zygote took its ranks with it (PR_SET_PDEATHSIG)
            if wait([zygote], remaining) and not zygote.drain():
                return

    def is_intact(self, inc: _Incarnation) -> bool:
        """Whether none of the incarnation's ranks is known to have died (while idle, say)."""
        if inc.dead or not inc.zygote.alive() or not inc.zygote.drain():
            return False
        return inc.pids is None or not any(pid in inc.zygote.exits for pid in inc.pids)

    def close(self) -> None:
        if os.getpid() != self.owner:
            return
        self.kill(self.incarnation)
        self.kill(self.standby)
        self.incarnation = self.standby = None
        self.store = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def _fn_ref(fn: Callable) -> FnRef:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not callable(fn) or not module or not qualname:
        raise TypeError(f"World.run() expects a module-level function, got {fn!r} (type {type(fn).__name__})")
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise TypeError(
            f"World.run() expects a module-level function, got {qualname!r} from {module}: ranks find the "
            "function by module and name, so define it at the top level of a module"
        )
    main = sys.modules.get(module)
    path = getattr(main, "__file__", None) or getattr(getattr(fn, "__code__", None), "co_filename", None)
    if path and not os.path.isfile(path):
        path = None
    if module == "__main__" and main is not None:
        sys.modules.setdefault("__mp_main__", main)  # ranks load the script as __mp_main__
    return FnRef(module, qualname, os.path.abspath(path) if path else None)


class World:
    """A persistent group of ``size`` rank processes that run SPMD functions on demand.

    Args:
        size: number of ranks, 1 to 64.
        profile: a hardware profile (or its catalog name) each rank applies for its local rank;
            None for plain CPU.
        backend: torch.distributed backend of the group; only "gloo" works on this machine.
        timeout: default deadline of one call, in seconds.
        standby: keep a second, idle set of ranks joined in their own group, so that a rebuild after a
            failure only swaps them in (the next standby forks in the background). True: from the
            start; None: once the world has been rebuilt (a world that failed once tends to fail
            again, and a healthy one costs nothing extra); False: never.

    Raises:
        ValueError, TypeError: for invalid arguments.
        WorldStartError: when the ranks cannot start or join their group.

    Example:
        >>> with World(4) as world:
        ...     world.run(torch.distributed.get_rank)
        [0, 1, 2, 3]
    """

    def __init__(self, size: int, profile: Any = None, backend: str = "gloo", timeout: float = 10.0, *,
                 standby: bool | None = None):
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"World(size={size!r}): size must be an int, got {type(size).__name__}")
        if not 1 <= size <= MAX_RANKS:
            raise ValueError(f"World(size={size}): size must be between 1 and {MAX_RANKS}")
        if backend != "gloo":
            raise ValueError(f"World(backend={backend!r}): only 'gloo' runs on CPU-only machines; use backend='gloo'")
        self.timeout = _check_timeout(timeout, "World(timeout=...)")
        self.size = size
        self.backend = backend
        if standby not in (None, True, False):
            raise TypeError(f"World(standby={standby!r}): expected True, False or None")
        self.standby = standby
        self._rebuilds = 0
        self.profile = _resolve_profile(profile)
        self.world_id = next(_world_ids)
        self._calls = itertools.count(1)
        self._call_lock = threading.Lock()
        self._closed = False
        env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
        import torch.distributed as dist

        store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
        tmpdir = tempfile.mkdtemp(prefix=f"simulators-world{self.world_id}-")
        self._res = _Resources(_get_zygote(), tmpdir, store)
        self._res.world_id = self.world_id
        self._env = env
        self._incarnations = itertools.count(1)
        self._finalizer = weakref.finalize(self, self._res.close)
        _worlds.add(self)
        try:
            self._spawn()
            self._ensure_ready()
        except BaseException:
            self.close()
            raise

    # --- public ------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        """How many times the ranks were (re)built: 1 for a world that never failed."""
        return self._res.incarnation.number if self._res.incarnation else 0

    @property
    def pids(self) -> tuple:
        """Process ids of the current ranks, in rank order."""
        inc = self._live_incarnation()
        if inc.pids is None and not self._res.await_spawned(inc, START_TIMEOUT):
            raise self._start_error(inc, "the zygote did not report the forked ranks")
        return inc.pids

    @property
    def all_pids(self) -> tuple:
        """Process ids of every rank process the world holds: the ranks in use, then the standby's."""
        pids = self.pids
        standby = self._res.standby
        if standby is not None and not standby.dead and self._res.await_spawned(standby, START_TIMEOUT):
            pids += standby.pids
        return pids

    @property
    def closed(self) -> bool:
        """Whether close() was called (a closed world refuses calls)."""
        return self._closed

    def run(self, fn: Callable, /, *args, timeout: float | None = None, **kwargs) -> list:
        """Run ``fn(*args, **kwargs)`` on every rank and return the results in rank order.

        Args:
            fn: a function defined at module level (found in each rank by module name, or by
                the module's file when the name does not import there, e.g. pytest test modules).
            *args, **kwargs: picklable arguments, the same for every rank.
            timeout: deadline of this call in seconds; the world's default when None.

        Returns:
            A list whose item i is what rank i returned.

        Raises:
            RankError: one or more ranks raised (tracebacks per rank in ``.failures``).
            WorldTimeout: a rank did not finish in time (``.stacks``, ``.missing``, ``.collectives``).
            RankCrashed: a rank process died (``.rank``, ``.exitcode``, ``.signal``).
            WorldClosedError: the world was closed.

        Example:
            >>> world.run(torch.distributed.get_world_size)
            [4, 4, 4, 4]
        """
        if self._closed:
            raise WorldClosedError(f"World(size={self.size}) is closed; create a new World to run {fn!r}")
        if os.getpid() != self._res.owner:
            raise WorldError(f"{self!r} belongs to process {self._res.owner}; this forked copy (pid {os.getpid()}) "
                             "cannot use its ranks: create a World in this process instead")
        with self._call_lock:  # one call at a time: the ranks answer in order
            return self._run(fn, args, kwargs, timeout)

    def _run(self, fn: Callable, args: tuple, kwargs: dict, timeout: float | None) -> list:
        ref = _fn_ref(fn)
        limit = self.timeout if timeout is None else _check_timeout(timeout, "run(timeout=...)")
        try:
            payload = pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            raise TypeError(f"World.run({ref.qualname}): arguments cannot be pickled for the ranks: {error}") from error
        inc = self._ensure_ready()
        if not self._res.is_intact(inc):  # a rank died between calls (OOM killer, a stray kill): not fn's fault
            self._rebuild()
            inc = self._ensure_ready()
        sys_path = tuple(sys.path)
        call = Call(next(self._calls), ref, payload, None if sys_path == inc.sys_path else sys_path, os.getcwd())
        inc.sys_path = sys_path
        message = pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
        for conn in inc.conns:
            try:
                conn.send_bytes(message)
            except OSError:
                pass  # a dead rank shows up as EOF while collecting
        try:
            return _Collector(self, inc, call, limit).collect()
        except (RankError, WorldTimeout, RankCrashed):
            raise  # the collector rebuilt the world where the failure required it
        except BaseException:
            self._rebuild()  # interrupted (Ctrl-C) or confused mid-call: the ranks may still be busy with it
            raise

    def recycle(self) -> None:
        """Replace the ranks with fresh ones (the next call waits for them if they are not ready yet)."""
        if self._closed:
            raise WorldClosedError("recycle() on a closed world")
        self._rebuild()

    def close(self) -> None:
        """Kill the ranks and release the world's store and files; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()
        _worlds.discard(self)

    def __reduce__(self):
        raise TypeError(
            f"{self!r} cannot be pickled (it owns processes and sockets); inside a rank use "
            "torch.distributed, or pass the data the ranks need as arguments to run()"
        )

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"incarnation {self.incarnation}"
        profile = getattr(self.profile, "name", self.profile)
        return f"World(size={self.size}, profile={profile!r}, backend={self.backend!r}, {state})"

    # --- incarnations ------------------------------------------------------------------

    def _rebuild(self) -> None:
        """Kill the current ranks (waiting until they are reaped) and promote the standby, or fork anew."""
        self._rebuilds += 1
        self._res.kill(self._res.incarnation)
        standby, self._res.standby = self._res.standby, None
        if standby is not None and self._res.is_intact(standby):
            standby.promoted = True
            self._res.incarnation = standby
        else:
            self._res.kill(standby)
            self._spawn()
        if self._wants_standby():
            self._spawn(standby=True)

    def _wants_standby(self) -> bool:
        return bool(self.standby) or (self.standby is None and self._rebuilds > 0)

    def _spawn(self, standby: bool = False) -> None:
        """Ask the zygote for a new incarnation (active, or the standby); do not wait for it."""
        number = next(self._incarnations)
        tmpdir = os.path.join(self._res.tmpdir, f"incarnation{number}")
        os.mkdir(tmpdir)
        _collectives.create_file(collectives_path(tmpdir), self.size)
        config = RankConfig(
            world_id=self.world_id, incarnation=number, size=self.size, backend=self.backend,
            store_host="127.0.0.1", store_port=self._res.store.port, env=self._env, sys_path=tuple(sys.path),
            cwd=os.getcwd(), tmpdir=tmpdir, profile=self.profile, pg_timeout=PG_TIMEOUT,
            start_timeout=START_TIMEOUT, seed=0,
        )
        pairs = [socket.socketpair() for _ in range(self.size)]
        zygote = self._res.zygote = _get_zygote()
        try:
            zygote.spawn(SpawnRanks(self.world_id, number, self.size, config), [theirs.fileno() for _, theirs in pairs])
        finally:
            for _, theirs in pairs:
                theirs.close()
        conns = [Connection(ours.detach()) for ours, _ in pairs]
        inc = _Incarnation(number, tmpdir, conns, zygote)
        inc.sys_path = config.sys_path  # what these ranks have; calls send it again only when it changed
        if standby:
            self._res.standby = inc
        else:
            self._res.incarnation = inc

    def _live_incarnation(self) -> _Incarnation:
        if self._closed:
            raise WorldClosedError(f"World(size={self.size}) is closed")
        if self._res.incarnation is None or self._res.incarnation.dead:
            self._spawn()
        return self._res.incarnation

    def _ensure_ready(self) -> _Incarnation:
        """Wait until every rank of the current incarnation said Ready; keep a standby forking."""
        inc = self._live_incarnation()
        if not inc.ready:
            try:
                self._await_ready(inc)
            except WorldStartError:
                if not inc.promoted:
                    raise
                self._spawn()  # the standby broke while idle: one fresh try
                inc = self._live_incarnation()
                self._await_ready(inc)
        if self._wants_standby() and self._res.standby is None:
            self._spawn(standby=True)
        return inc

    def _await_ready(self, inc: _Incarnation) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        if not self._res.await_spawned(inc, START_TIMEOUT):
            raise self._start_error(inc, "the zygote did not fork the ranks")
        waiting = {conn: rank for rank, conn in enumerate(inc.conns)}
        failures = {}
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._start_error(inc, f"ranks {sorted(waiting.values())} did not join within {START_TIMEOUT:g} s")
            for conn in wait(list(waiting), remaining):
                rank = waiting.pop(conn)
                try:
                    event = conn.recv()
                except (EOFError, OSError):
                    failures[rank] = f"rank {rank} died while starting"
                    continue
                outcome = dispatch(event, {Ready: lambda e: None, StartFailed: lambda e: e.traceback}, f"rank {rank}")
                if outcome is not None:
                    failures[rank] = outcome
            if failures:
                raise self._start_error(inc, "\n".join(failures[r] for r in sorted(failures)))
        inc.ready = True

    def _start_error(self, inc: _Incarnation, detail: str) -> WorldStartError:
        outputs = read_outputs(inc.tmpdir, range(self.size), limit=2000)
        self._res.kill(inc)
        zygote_log = inc.zygote.log_tail()
        profile = getattr(self.profile, "name", self.profile)
        text = f"World(size={self.size}, profile={profile!r}) could not start: {detail}"
        for rank, (out, err) in outputs.items():
            if err.strip():
                text += f"\n--- rank {rank} stderr:\n{err.rstrip()}"
        if zygote_log.strip():
            text += f"\n--- zygote log:\n{zygote_log.rstrip()}"
        return WorldStartError(text)


def _check_timeout(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}: expected a number of seconds, got {value!r} (type {type(value).__name__})")
    if not value > 0:
        raise ValueError(f"{where}: expected a positive number of seconds, got {value!r}")
    return float(value)


def _resolve_profile(profile):
    if profile is None:
        return None
    import simulators

    if not hasattr(simulators, "apply_profile"):
        raise WorldError("World(profile=...) needs simulators.apply_profile, which this version lacks")
    if isinstance(profile, str):
        return simulators.get_profile(profile)
    return profile
