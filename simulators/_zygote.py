"""The zygote: a single-threaded process that imported torch once and forks ranks on request.

The controller starts it with ``python -c "...main()" FD`` (a fresh interpreter,
so it never inherits the controller's threads or CUDA state) and talks to it over an
AF_UNIX SOCK_SEQPACKET pair: one pickled event per packet, rank sockets passed as
SCM_RIGHTS. The zygote is the parent of every rank, so it reaps them and reports each
exit status. When the controller goes away (EOF) it kills its ranks and exits.
"""

from __future__ import annotations

import gc
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

from simulators._protocol import Exited, Spawned, SpawnRanks, StopZygote, dispatch

MAX_PACKET = 1 << 20
SEND_LIMIT = 200_000  # one SOCK_SEQPACKET message must fit net.core.wmem_max (212992 by default)
# Thread pools that would start at import (OpenBLAS via numpy): off, so forking stays safe.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PRELOAD = ("numpy", "accelerate_lite", "accelerate_lite.utils", "accelerate_lite.state", "simulators")
PRELOAD_ENV = "SIMULATORS_ZYGOTE_PRELOAD"  # extra comma-separated modules, e.g. "pytest"
# Heavy modules ranks usually import again (test modules, the harness): preloaded when the
# controller has them loaded already, so the zygote never imports more than its parent did.
MIRRORED = ("pytest", "_pytest.assertion.rewrite", "hypothesis", "harness", "harness.rankside", "matrix")


# --- zygote side ------------------------------------------------------------------------


def _preload() -> None:
    import importlib

    import torch  # noqa: F401
    import torch.distributed  # noqa: F401

    from simulators import _collectives

    _collectives.install()  # before anything copies the collectives by name
    extra = [m for m in os.environ.get(PRELOAD_ENV, "").split(",") if m.strip()]
    for name in (*PRELOAD, *extra):
        try:
            importlib.import_module(name.strip())
        except Exception as error:  # noqa: BLE001 - a broken optional import only costs speed
            print(f"zygote: preloading {name} failed: {error!r}", file=sys.stderr, flush=True)
    import simulators._rank  # noqa: F401

    gc.collect()
    gc.freeze()  # keep the collector off the preloaded objects: ranks share those pages instead of copying


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


class _ZygoteServer:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.children = {}  # pid -> pgid
        self.fds = []  # the sockets that came with the message being handled
        self.world_dirs = set()  # the worlds' private directories, removed when the controller is gone
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.handlers = {SpawnRanks: self.spawn, StopZygote: self.stop}

    def serve(self) -> None:
        import selectors

        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ, "controller")
        selector.register(self.wake_r, selectors.EVENT_READ, "children")
        while True:
            for key, _ in selector.select():
                if key.data == "children":
                    self.reap()
                    continue
                try:
                    data, self.fds, _, _ = socket.recv_fds(self.sock, MAX_PACKET, 64)
                except OSError:
                    data, self.fds = b"", []
                if not data:
                    self.stop(StopZygote())
                dispatch(pickle.loads(data), self.handlers, "the controller")

    def send(self, event) -> None:
        try:
            self.sock.send(pickle.dumps(event))
        except OSError:
            self.stop(StopZygote())

    def reap(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.pop(pid, None)
            code = os.waitstatus_to_exitcode(status)
            self.send(Exited(pid, code if code >= 0 else None, -code if code < 0 else None))

    def spawn(self, event: SpawnRanks) -> None:
        """Fork one rank per fd that came with the event (``self.fds``), all in one process group."""
        fds = self.fds
        self.world_dirs.add(os.path.dirname(event.rank_config.tmpdir))
        if _thread_count() > 1:
            print(f"zygote: {_thread_count()} threads before fork; ranks may deadlock", file=sys.stderr, flush=True)
        pids, pgid = [], 0
        for rank in range(event.size):
            pid = os.fork()
            if pid == 0:
                self._become_rank(event, rank, list(fds), pgid)
            try:
                os.setpgid(pid, pgid or pid)  # both sides set it: whichever runs first wins the race
            except OSError:
                pass
            pgid = pgid or pid
            pids.append(pid)
            self.children[pid] = pgid
        for fd in fds:
            os.close(fd)
        self.send(Spawned(event.world_id, event.incarnation, tuple(pids), pgid))

    def _become_rank(self, event: SpawnRanks, rank: int, fds: list, pgid: int) -> None:
        try:
            try:
                os.setpgid(0, pgid)
            except OSError:
                pass
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for i, fd in enumerate(fds):
                if i != rank:
                    os.close(fd)
            os.close(self.wake_r)
            os.close(self.wake_w)
            parent = os.getppid()
            self.sock.close()
            from simulators import _rank

            _rank.main(event.rank_config, rank, fds[rank], parent)
        finally:
            os._exit(70)

    def stop(self, event: StopZygote) -> None:
        for pgid in set(self.children.values()):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        # A controller that died without closing its worlds left their files: remove them, and our log.
        for directory in self.world_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        try:
            os.unlink(os.readlink("/proc/self/fd/2"))
        except OSError:
            pass
        os._exit(0)


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    _preload()
    _ZygoteServer(sock).serve()


# --- controller side --------------------------------------------------------------------


class Zygote:
    """Controller-side handle: starts the zygote, sends spawn requests, collects exit statuses."""

    def __init__(self):
        self.log = tempfile.NamedTemporaryFile(prefix="simulators-zygote-", suffix=".log", delete=False)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mirrored = [name for name in MIRRORED if name in sys.modules]
        preload = ",".join(filter(None, [os.environ.get(PRELOAD_ENV, ""), *mirrored]))
        env = {**os.environ, **THREAD_ENV, PRELOAD_ENV: preload,
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from simulators._zygote import main; main()", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.log, env=env, start_new_session=True, close_fds=True,
        )
        theirs.close()
        self.owner = os.getpid()
        self.sock = ours
        self.exits = {}  # pid -> Exited
        self.spawned = {}  # (world_id, incarnation) -> Spawned

    def alive(self) -> bool:
        return self.process.poll() is None

    def fileno(self) -> int:
        return self.sock.fileno()

    def spawn(self, event: SpawnRanks, fds: list) -> None:
        data = pickle.dumps(event)
        if len(data) > SEND_LIMIT:
            raise ValueError(f"world configuration pickles to {len(data)} bytes (limit {SEND_LIMIT}, the "
                             "socket's buffer): shrink the environment or the profile passed to World")
        socket.send_fds(self.sock, [data], fds)

    def drain(self, block: bool = False) -> bool:
        """Read every pending event; return False if the zygote is gone."""
        self.sock.setblocking(block)
        try:
            while True:
                try:
                    data = self.sock.recv(MAX_PACKET)
                except (BlockingIOError, InterruptedError):
                    return True
                if not data:
                    return False
                dispatch(pickle.loads(data), {Exited: self._on_exit, Spawned: self._on_spawned}, "the zygote")
                self.sock.setblocking(False)
        except OSError:
            return False
        finally:
            if self.sock.fileno() >= 0:
                self.sock.setblocking(True)

    def _on_exit(self, event: Exited) -> None:
        self.exits[event.pid] = event

    def _on_spawned(self, event: Spawned) -> None:
        self.spawned[(event.world_id, event.incarnation)] = event

    def log_tail(self, limit: int = 4000) -> str:
        try:
            with open(self.log.name, "rb") as f:
                return f.read()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            self.sock.send(pickle.dumps(StopZygote()))
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.sock.close()
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass

