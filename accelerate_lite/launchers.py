"""debug_launcher: run a function on a real world of CPU processes joined by gloo, on this machine."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import wait

import torch.distributed as dist

from .errors import LaunchError
from .state import PartialState

# Optional overall deadline for debug_launcher, in seconds (unset: none; a failing rank never needs one).
TIMEOUT_ENV_KEY = "ACCELERATE_DEBUG_LAUNCHER_TIMEOUT"
_GRACE_SECONDS = 5.0  # how long a terminated rank gets before it is killed


def debug_launcher(function, args=(), num_processes=2):
    """Run function(*args) on num_processes CPU processes that form one gloo process group.

    Each process is a rank of a real torch.distributed world (RANK, WORLD_SIZE, LOCAL_RANK set; the
    group rendezvouses through a file, never a fixed port), so `PartialState()` inside it reports
    MULTI_CPU with its own index. The first rank that fails stops the others and makes the call raise
    with its traceback; no process started here outlives the call. Processes are forked where the
    platform allows (any callable works), else spawned (function and args must pickle).

    Args:
        function: the callable every rank runs.
        args: positional arguments for function.
        num_processes: how many ranks to start (>= 1).

    Returns:
        A list with each rank's return value, in rank order (upstream returns None; ignoring it is fine).

    Raises:
        TypeError / ValueError: for a function that is not callable, args that are not a tuple or
            list, or a num_processes that is not a positive int.
        LaunchError: when a rank raises (its traceback in the message and in `.failures`), exits with a
            non-zero code, or the optional ACCELERATE_DEBUG_LAUNCHER_TIMEOUT (seconds) passes.

    Example:
        >>> def where_am_i():
        ...     state = PartialState()
        ...     return state.process_index, state.num_processes
        >>> debug_launcher(where_am_i, num_processes=2)
        [(0, 2), (1, 2)]
    """
    _check_arguments(function, args, num_processes)
    context = _start_context()
    if context.get_start_method() != "fork":
        _check_picklable(function, args)
    deadline = _deadline()
    with tempfile.TemporaryDirectory(prefix="accelerate-lite-launch-") as workdir:
        ranks = []
        try:
            for rank in range(num_processes):
                process = context.Process(
                    target=_run_rank,
                    args=(function, tuple(args), rank, num_processes, workdir),
                    name=f"debug_launcher-rank{rank}",
                )
                process.start()
                ranks.append(process)
            first_failure = _wait_for_ranks(ranks, deadline)
        finally:
            _stop(ranks)
        return _collect(ranks, workdir, first_failure)


def _check_arguments(function, args, num_processes) -> None:
    if not callable(function):
        raise TypeError(f"debug_launcher(): function must be callable, got {type(function).__name__} {function!r}")
    if not isinstance(args, (tuple, list)):
        raise TypeError(f"debug_launcher(): args must be a tuple or list, got {type(args).__name__} {args!r}")
    if isinstance(num_processes, bool) or not isinstance(num_processes, int):
        raise TypeError(
            f"debug_launcher(): num_processes must be an int, got {type(num_processes).__name__} {num_processes!r}"
        )
    if num_processes < 1:
        raise ValueError(f"debug_launcher(): num_processes must be >= 1, got {num_processes}")


def _start_context():
    # Forking a process that already holds a process group would copy the group into the children.
    if "fork" in multiprocessing.get_all_start_methods() and not (dist.is_available() and dist.is_initialized()):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _check_picklable(function, args) -> None:
    try:
        pickle.dumps((function, tuple(args)))
    except Exception as error:
        raise TypeError(
            f"debug_launcher(): {function!r} or its args cannot be pickled for a spawned process ({error}); "
            f"define the function at module level"
        ) from error


def _deadline():
    text = os.environ.get(TIMEOUT_ENV_KEY)
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV_KEY}={text!r} is not a number of seconds") from None
    return time.monotonic() + seconds


def _result_path(workdir: str, rank: int) -> str:
    return os.path.join(workdir, f"rank{rank}.pickle")


def _run_rank(function, args, rank: int, world_size: int, workdir: str) -> None:
    """A rank's body: join the gloo group, run function, leave the outcome in the work folder."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        ACCELERATE_USE_CPU="true",
        ACCELERATE_MIXED_PRECISION="no",
        FORK_LAUNCHED="1",
    )
    PartialState._reset_state()  # a forked child inherits the parent's state
    try:
        store = dist.FileStore(os.path.join(workdir, "rendezvous"), world_size)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size)
        dist.barrier()  # every pair connected before any rank may leave (a quick exit breaks a peer's connect)
        outcome = ("ok", function(*args))
    except SystemExit:
        raise  # its code becomes the rank's exit code
    except BaseException as error:  # also pytest's skip/fail outcomes and KeyboardInterrupt
        # when it failed, so the launcher can tell the cause from peers that failed because of it
        outcome = ("error", type(error).__name__, str(error), traceback.format_exc(), time.monotonic())
    succeeded = _write_outcome(workdir, rank, outcome)
    if succeeded and dist.is_initialized():
        dist.destroy_process_group()
    if not succeeded:
        sys.stdout.flush()
        sys.stderr.flush()
        _kill_descendants(os.getpid())  # os._exit skips the cleanup that would end them
        os._exit(1)  # skip interpreter teardown: peers may be blocked in a collective with us


def _write_outcome(workdir: str, rank: int, outcome) -> bool:
    """Leave outcome where the launcher reads it; return whether it is a success."""
    path = _result_path(workdir, rank)
    try:
        payload = pickle.dumps(outcome)
    except Exception as error:
        outcome = ("error", "PicklingError", f"rank {rank}'s return value cannot be pickled: {error}", "")
        payload = pickle.dumps(outcome)
    with open(path + ".tmp", "wb") as handle:
        handle.write(payload)
    os.replace(path + ".tmp", path)
    return outcome[0] == "ok"


def _wait_for_ranks(ranks, deadline):
    """Wait until every rank has exited; return the first that failed (or "timeout"), else None."""
    running = {process.sentinel: process for process in ranks}
    while running:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = wait(list(running), timeout=remaining)
        if not ready:
            return "timeout"
        for sentinel in ready:
            process = running.pop(sentinel)
            process.join()
            if process.exitcode != 0:
                return ranks.index(process)
    return None


def _stop(ranks) -> None:
    """Terminate every rank still running (and its children), then reap them all."""
    for process in ranks:
        if process.is_alive():
            _kill_descendants(process.pid)
            process.terminate()
    for process in ranks:
        process.join(_GRACE_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()


def _kill_descendants(pid: int) -> None:
    import psutil

    try:
        for child in psutil.Process(pid).children(recursive=True):
            child.kill()
    except psutil.Error:
        pass


def _root_cause(noticed: int, outcomes: dict) -> int:
    """The rank whose error came first: peers blocked in a collective with it fail moments later
    (gloo "connection closed"), and their exits can be noticed before its own."""
    if noticed not in outcomes:
        return noticed  # it died without a word (killed): the others' errors follow from that
    timed = {rank: o[4] for rank, o in outcomes.items() if o[0] == "error" and len(o) > 4}
    return min(timed, key=timed.get) if timed else noticed


def _collect(ranks, workdir: str, first_failure):
    """Read every rank's outcome; raise LaunchError naming the first failing rank, else return the results."""
    outcomes = {}
    for rank in range(len(ranks)):
        try:
            with open(_result_path(workdir, rank), "rb") as handle:
                outcomes[rank] = pickle.load(handle)
        except FileNotFoundError:
            continue
    exitcodes = {rank: process.exitcode for rank, process in enumerate(ranks)}
    failures = {rank: outcome[3] or outcome[2] for rank, outcome in outcomes.items() if outcome[0] == "error"}
    if first_failure is None:
        return [outcomes.get(rank, ("ok", None))[1] for rank in range(len(ranks))]
    if first_failure == "timeout":
        missing = sorted(rank for rank in range(len(ranks)) if rank not in outcomes)
        raise LaunchError(
            f"debug_launcher(): ranks {missing} of {len(ranks)} had not finished when "
            f"{TIMEOUT_ENV_KEY}={os.environ.get(TIMEOUT_ENV_KEY)} seconds passed; they were stopped",
            failures,
            exitcodes,
        )
    first_failure = _root_cause(first_failure, outcomes)
    if first_failure in failures:
        kind, message = outcomes[first_failure][1], outcomes[first_failure][2]
        detail = f"raised {kind}: {message}\n\n{failures[first_failure]}"
    else:
        detail = f"exited with code {exitcodes[first_failure]} without reporting a result (killed or os._exit?)"
        failures[first_failure] = detail
    raise LaunchError(
        f"debug_launcher(): rank {first_failure} of {len(ranks)} {detail}\nThe other ranks were stopped.",
        failures,
        exitcodes,
    )
