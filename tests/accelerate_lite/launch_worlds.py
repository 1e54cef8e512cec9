"""Starting ranks the way launchers do (one forked process per launcher environment), for tests.

`run_ranks(body, environments)` forks one process per environment dict, sets exactly those launcher
variables, resets PartialState, runs body there and returns each rank's result (a failing rank fails
the test with its traceback). Every child is killed on the way out.
"""

import multiprocessing
import os
import socket
import traceback

import pytest
import torch.distributed as dist

from accelerate_lite import PartialState
from accelerate_lite.utils import clear_import_caches
from accelerate_lite.utils.launch_env import (
    LOCAL_RANK_KEYS,
    LOCAL_WORLD_SIZE_KEYS,
    RANK_KEYS,
    WORLD_SIZE_KEYS,
)

LAUNCH_KEYS = RANK_KEYS + WORLD_SIZE_KEYS + LOCAL_RANK_KEYS + LOCAL_WORLD_SIZE_KEYS + (
    "MASTER_ADDR",
    "MASTER_PORT",
    "ACCELERATE_USE_CPU",
    "ACCELERATE_USE_DEEPSPEED",
    "ACCELERATE_TORCH_DEVICE",
    "ACCELERATE_DEBUG_MODE",
    "FORK_LAUNCHED",
)
RANK_TIMEOUT = float(os.environ.get("ACCELERATE_LITE_TEST_RANK_TIMEOUT", "180"))


@pytest.fixture
def fresh_state():
    """Start from an undetected state and without launcher variables; restore both afterwards."""
    saved = {key: os.environ.pop(key) for key in LAUNCH_KEYS if key in os.environ}
    PartialState._reset_state()
    yield
    PartialState._reset_state()
    for key in LAUNCH_KEYS:
        os.environ.pop(key, None)
    os.environ.update(saved)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_child(connection, environment, body, args):
    for key in LAUNCH_KEYS:
        os.environ.pop(key, None)
    os.environ.update(environment)
    PartialState._reset_state()
    clear_import_caches()
    try:
        connection.send(("ok", body(*args)))
    except BaseException:
        connection.send(("error", traceback.format_exc()))
    connection.close()


def run_ranks(body, environments, args=()):
    """Fork one process per environment (as a launcher would start them), run body in each, return results.

    Every child is killed on the way out, whatever happened.
    """
    assert not dist.is_initialized(), "run_ranks() needs a parent without a process group"
    context = multiprocessing.get_context("fork")
    children = []
    try:
        for environment in environments:
            parent_end, child_end = context.Pipe(duplex=False)
            process = context.Process(target=_rank_child, args=(child_end, environment, body, args))
            process.start()
            child_end.close()
            children.append((process, parent_end))
        results = []
        for rank, (process, connection) in enumerate(children):
            if not connection.poll(RANK_TIMEOUT):
                pytest.fail(f"rank {rank} sent nothing within {RANK_TIMEOUT} s")
            status, value = connection.recv()
            if status != "ok":
                pytest.fail(f"rank {rank} raised:\n{value}")
            results.append(value)
        return results
    finally:
        for process, _ in children:
            process.kill()
            process.join()


def run_ranks_each(body, environments, per_rank_args):
    """run_ranks with per-rank arguments: rank i (its environment's _TEST_RANK) gets per_rank_args[i]."""
    return run_ranks(_dispatch_by_rank, [dict(env, _TEST_RANK=str(i)) for i, env in enumerate(environments)],
                     (body, per_rank_args))


def _dispatch_by_rank(body, per_rank_args):
    return body(*per_rank_args[int(os.environ["_TEST_RANK"])])


def torchrun_environments(size, local_size=None, **extra):
    """What torchrun sets for each of size ranks (local_size ranks per node), with a free port."""
    port = str(free_port())
    local_size = local_size or size
    return [
        dict(RANK=str(r), WORLD_SIZE=str(size), LOCAL_RANK=str(r % local_size), LOCAL_WORLD_SIZE=str(local_size),
             MASTER_ADDR="127.0.0.1", MASTER_PORT=port, **extra)
        for r in range(size)
    ]
