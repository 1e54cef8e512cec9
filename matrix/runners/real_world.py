"""A world of real ranks on this machine's devices (NCCL on GPUs, or gloo), for `run --real`.

simulators.World runs gloo only, which is what a simulated cell needs. On a real GPU/NPU/XPU runner
the same cells run here instead: one spawned process per rank, each pinned to its local device, in
one process group on the cell's backend, kept for all cells of the group. It offers the two calls
the local runner uses, `run(fn, *args, timeout=...)` and `close()`; a call that outlives its deadline
kills the ranks (the next call starts fresh ones) and raises RealWorldTimeout naming the missing ranks.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import traceback

from ..errors import RunnerError


class RealWorldTimeout(RunnerError, TimeoutError):
    """A call on the real world did not finish in time on every rank."""

    def __init__(self, message: str, missing: tuple[int, ...]):
        super().__init__(message)
        self.missing = missing
        self.collectives = {}
        self.stacks = {}


class RealRankError(RunnerError):
    """A function raised on one or more real ranks (outside the suite's own error handling)."""

    def __init__(self, message: str, failures: dict[int, str]):
        super().__init__(message)
        self.failures = failures


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, size: int, backend: str, port: int, conn) -> None:
    """Body of one rank: join the group, pin the device, then serve calls until told to stop."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(size), LOCAL_WORLD_SIZE=str(size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group(backend, rank=rank, world_size=size)
    conn.send(("ready", rank))
    while True:
        message = conn.recv()
        if message is None:
            break
        fn, args = message
        try:
            conn.send(("ok", fn(*args)))
        except BaseException:  # noqa: BLE001 - reported to the controller, which decides
            conn.send(("error", traceback.format_exc()))
    dist.destroy_process_group()


class RealWorld:
    """`size` ranks on real devices in one process group on `backend`.

    Example:
        >>> with RealWorld(2, backend="nccl") as world:
        ...     world.run(run_cell, "gather/bf16/none/w2/nccl/8xH100", 8, 0)
    """

    def __init__(self, size: int, backend: str = "nccl", timeout: float = 120.0):
        self.size, self.backend, self.timeout = size, backend, timeout
        self._ranks = []

    def _start(self) -> None:
        context = mp.get_context("spawn")  # CUDA cannot be used in a forked child
        port = _free_port()
        # One hash seed for every rank: hypothesis draws from pools whose order follows str hashes,
        # so ranks with different seeds would draw different examples from the same seed.
        previous = os.environ.get("PYTHONHASHSEED")
        os.environ["PYTHONHASHSEED"] = previous or "0"
        try:
            for rank in range(self.size):
                parent, child = context.Pipe()
                process = context.Process(target=_rank_main, args=(rank, self.size, self.backend, port, child),
                                          daemon=True)
                process.start()
                self._ranks.append((process, parent))
        finally:
            if previous is None:
                del os.environ["PYTHONHASHSEED"]
        self._collect(("ready",), max(self.timeout, 300.0))

    def _collect(self, expected_kinds, timeout) -> list:
        import time

        deadline = time.monotonic() + timeout
        replies: dict[int, tuple] = {}
        while len(replies) < self.size:
            remaining = deadline - time.monotonic()
            ready = [r for r, (_, conn) in enumerate(self._ranks) if r not in replies and conn.poll(max(0.0, min(remaining, 0.05)))]
            for rank in ready:
                replies[rank] = self._ranks[rank][1].recv()
            dead = [r for r, (p, _) in enumerate(self._ranks) if r not in replies and not p.is_alive()]
            if dead or remaining <= 0:
                missing = tuple(r for r in range(self.size) if r not in replies)
                self.close()
                reason = f"rank(s) {list(dead)} died" if dead else f"no answer within {timeout:.0f} s"
                raise RealWorldTimeout(f"real world of {self.size} ({self.backend}): {reason}; missing ranks {list(missing)}",
                                       missing)
        return [replies[rank] for rank in range(self.size)]

    def run(self, fn, *args, timeout: float | None = None) -> list:
        """Run fn(*args) on every rank; return each rank's result in rank order."""
        if not self._ranks:
            self._start()
        for _, conn in self._ranks:
            conn.send((fn, args))
        replies = self._collect(("ok", "error"), timeout or self.timeout)
        failures = {rank: text for rank, (kind, text) in enumerate(replies) if kind == "error"}
        if failures:
            raise RealRankError(f"{fn.__name__}() raised on rank(s) {sorted(failures)}", failures)
        return [value for _, value in replies]

    def close(self) -> None:
        for process, conn in self._ranks:
            try:
                conn.send(None)
            except OSError:
                pass
        for process, _ in self._ranks:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        self._ranks = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
