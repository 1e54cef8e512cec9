"""The life of one rank: forked by the zygote, joins the group, serves calls until shut down.

Nothing here runs in the controller. A rank leaves only through ``os._exit`` so that
the zygote's inherited state (its sockets, atexit handlers) is never run twice.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime
import faulthandler
import importlib
import importlib.util
import os
import pickle
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from simulators import _collectives, _hygiene
from simulators._protocol import (
    Call,
    FnRef,
    Raised,
    Ready,
    Returned,
    Shutdown,
    StartFailed,
    dispatch,
)

_PR_SET_PDEATHSIG = 1
OUTPUT_LIMIT = 64 * 1024  # characters of a call's stdout/stderr sent back


@dataclasses.dataclass(frozen=True)
class RankConfig:
    """Everything a rank needs to join its world; identical for all ranks of an incarnation."""

    world_id: int
    incarnation: int
    size: int
    backend: str
    store_host: str
    store_port: int
    env: dict
    sys_path: tuple
    cwd: str
    tmpdir: str
    profile: Any
    pg_timeout: float
    start_timeout: float
    seed: int


def rank_paths(tmpdir: str, rank: int) -> dict:
    """Files a rank writes: its stdout, stderr, and the Python stacks dumped on SIGUSR1."""
    return {kind: os.path.join(tmpdir, f"rank{rank}.{kind}") for kind in ("out", "err", "stack")}


def collectives_path(tmpdir: str) -> str:
    return os.path.join(tmpdir, "collectives")


class _Output:
    """Sends fd 1 and 2 to files and hands back what each call wrote."""

    def __init__(self, paths: dict):
        for fd, kind in ((1, "out"), (2, "err")):
            target = os.open(paths[kind], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(target, fd)
            os.close(target)
        self.readers = [open(paths["out"], "rb"), open(paths["err"], "rb")]

    def take(self) -> tuple:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        return tuple(r.read()[-OUTPUT_LIMIT:].decode(errors="replace") for r in self.readers)


def _set_environment(config: RankConfig, rank: int) -> None:
    env = dict(config.env)
    env.update(
        RANK=str(rank), WORLD_SIZE=str(config.size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(config.size),
        GROUP_RANK="0", ROLE_RANK=str(rank), ROLE_WORLD_SIZE=str(config.size),
        MASTER_ADDR=config.store_host, MASTER_PORT=str(config.store_port),
    )
    env.setdefault("OMP_NUM_THREADS", "1")  # as torchrun does: ranks share the cores
    os.environ.clear()
    os.environ.update(env)


def _join_group(config: RankConfig, rank: int) -> None:
    import torch.distributed as dist

    store = dist.TCPStore(
        config.store_host, config.store_port, world_size=config.size, is_master=False,
        timeout=datetime.timedelta(seconds=config.start_timeout), wait_for_workers=False,
    )
    store = dist.PrefixStore(f"incarnation{config.incarnation}/", store)
    dist.init_process_group(
        config.backend, store=store, rank=rank, world_size=config.size,
        timeout=datetime.timedelta(seconds=config.pg_timeout),
    )


_profile_context = None  # held for the rank's lifetime: a collected generator would exit the profile


def _apply_profile(config: RankConfig, rank: int) -> None:
    global _profile_context
    if config.profile is None:
        return
    import simulators

    before = dict(os.environ)
    _profile_context = simulators.apply_profile(config.profile, local_rank=rank, world_size=config.size)
    _profile_context.__enter__()
    # The profile may drop the host's hardware variables, but the launcher's and the rest stay.
    dropped = set(getattr(sys.modules.get("simulators.apply"), "HARDWARE_ENV_VARS", ()))
    for key, value in before.items():
        if key not in os.environ and key not in dropped:
            os.environ[key] = value


def _seed(config: RankConfig, rank: int) -> None:
    """Start every call from the RNG state of a fresh process, distinct per rank for Python/NumPy."""
    import random

    import torch

    random.seed(config.seed + rank)
    torch.manual_seed(torch.initial_seed())
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(config.seed + rank)


class _Rank:
    """Serves Call events until Shutdown or until the controller goes away."""

    def __init__(self, config: RankConfig, rank: int, conn: Connection, output: _Output, slot):
        self.config = config
        self.rank = rank
        self.conn = conn
        self.output = output
        self.slot = slot
        self.sys_path = list(sys.path)
        self.by_path = {}
        self.functions = {}  # FnRef -> function, resolved once
        self.baseline: _hygiene.Baseline | None = None

    def serve(self) -> None:
        handlers = {Call: self.on_call, Shutdown: self.on_shutdown}
        self.baseline = _hygiene.Baseline(self.config.seed + self.rank)
        while True:
            try:
                event = self.conn.recv()
            except (EOFError, OSError):
                return  # the controller is gone
            if dispatch(event, handlers, "the controller") is Shutdown:
                return

    def on_shutdown(self, event: Shutdown):
        return Shutdown

    def on_call(self, call: Call) -> None:
        if call.sys_path is not None:
            self.sys_path = list(call.sys_path)
        if sys.path != self.sys_path:
            sys.path[:] = self.sys_path
        if call.cwd != self.baseline.cwd:
            os.chdir(call.cwd)
            self.baseline.cwd = call.cwd
        self.baseline.before_call()
        try:
            fn = self.functions.get(call.fn) or self.resolve(call.fn)
            args, kwargs = pickle.loads(call.payload)
            result = fn(*args, **kwargs)
            try:
                payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as error:
                raise TypeError(
                    f"{call.fn.qualname} returned a {type(result).__name__} that cannot be pickled back to "
                    f"the controller ({error}); return plain data (numbers, lists, dicts, tensors)"
                ) from None
            raised = None
        except BaseException as error:  # noqa: BLE001 - SystemExit/KeyboardInterrupt are reported too
            raised = self.raised(error)
        if sys.path != self.sys_path:
            sys.path[:] = self.sys_path
        reasons = self.baseline.after_call(self.slot.take_failed())
        output = self.output.take()
        if raised is None:
            self.conn.send(Returned(call.call_id, self.rank, payload, output, reasons))
        else:
            self.conn.send(Raised(call.call_id, self.rank, *raised, output, reasons))

    def raised(self, error: BaseException) -> tuple:
        try:
            frames = traceback.format_exception(type(error), error, error.__traceback__.tb_next)
            message = str(error)
        except Exception as broken:  # noqa: BLE001 - an exception whose __str__ raises still gets reported
            message = f"<str() failed: {broken!r}>"
            frames = [*traceback.format_tb(error.__traceback__.tb_next), f"{type(error).__name__}: {message}\n"]
        text = f"rank {self.rank} of {self.config.size} (pid {os.getpid()}):\n" + "".join(frames)
        try:
            exc_pickle = pickle.dumps(error)
            pickle.loads(exc_pickle)
        except Exception:  # noqa: BLE001 - unpicklable exceptions travel as text only
            exc_pickle = None
        name = type(error).__qualname__
        module = type(error).__module__
        exc_type = name if module == "builtins" else f"{module}.{name}"
        return text, exc_type, message, exc_pickle

    def resolve(self, ref: FnRef):
        """Find ``ref`` by module name, else by loading the module's file."""
        module = None
        if ref.module not in ("__main__", "__mp_main__"):
            try:
                module = importlib.import_module(ref.module)
            except ImportError:
                if not ref.path:
                    raise
        if module is None or not _has_path(module, ref.qualname):
            if not ref.path:
                raise LookupError(f"module {ref.module!r} has no attribute {ref.qualname!r}")
            module = self.load_file(ref)
        obj = module
        for part in ref.qualname.split("."):
            obj = getattr(obj, part)
        self.functions[ref] = obj
        return obj

    def load_file(self, ref: FnRef):
        if ref.path in self.by_path:
            return self.by_path[ref.path]
        is_main = ref.module in ("__main__", "__mp_main__")
        # keep the controller's module name so classes it defines unpickle there
        name = "__mp_main__" if is_main else ref.module
        if name in sys.modules and not is_main:
            name = f"_simulators_file_{abs(hash(ref.path))}"
        spec = importlib.util.spec_from_file_location(name, ref.path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {ref.path!r} to find {ref.qualname!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        if is_main:
            sys.modules["__main__"] = module
        spec.loader.exec_module(module)
        self.by_path[ref.path] = module
        return module


def _has_path(module, qualname: str) -> bool:
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return True


def main(config: RankConfig, rank: int, fd: int, parent_pid: int) -> None:
    """Run rank ``rank`` over socket ``fd``; never returns."""
    code = 0
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the zygote
        if os.getppid() != parent_pid:
            os._exit(1)
        conn = Connection(fd)
        paths = rank_paths(config.tmpdir, rank)
        output = _Output(paths)
        faulthandler.enable(file=sys.stderr, all_threads=True)
        stack_file = open(paths["stack"], "w")
        faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
        try:
            os.chdir(config.cwd)
            sys.path[:] = list(config.sys_path)
            _set_environment(config, rank)
            import torch

            torch.set_num_threads(1)
            slot = _collectives.attach(collectives_path(config.tmpdir), rank)
            _join_group(config, rank)
            _apply_profile(config, rank)
            _seed(config, rank)
            _hygiene.reset_states()
        except BaseException:  # noqa: BLE001 - any start failure is reported, then the rank exits
            conn.send(StartFailed(rank, f"rank {rank}: " + traceback.format_exc()))
            code = 3
            return
        rank_obj = _Rank(config, rank, conn, output, slot)
        conn.send(Ready(rank, os.getpid()))
        rank_obj.serve()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = 4
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)
