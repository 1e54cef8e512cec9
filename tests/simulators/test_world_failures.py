"""World failures: an exception on one rank, a hang, a crashed rank; each reported as one error,
followed by a world that works again and leaves no process of the failed ranks behind.

Real rank processes and real signals; deadlines are generous (the machine is shared) and no test
asserts a duration except "well within the deadline plus a margin".
"""

import ctypes
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import torch
import torch.distributed as dist

from simulators import RankCrashed, RankError, World, WorldError, WorldTimeout

# These tests start their own worlds: under xdist the harness runs them on its world worker.
pytestmark = pytest.mark.owns_worlds

HANG_DEADLINE = 4.0
MARGIN = 30.0  # loaded 2-core box: the error must come soon after the deadline, not exactly at it


# --- functions the ranks run -------------------------------------------------------------


def all_reduce_ones():
    tensor = torch.ones(1)
    dist.all_reduce(tensor)
    return tensor.item()


def raise_on_rank_one():
    if dist.get_rank() == 1:
        raise ValueError("rank one refuses")  # RAISE-LINE
    return dist.get_rank()


def raise_on_rank_one_before_all_reduce():
    if dist.get_rank() == 1:
        raise KeyError("missing before the collective")
    return all_reduce_ones()


def rank_two_skips_the_all_reduce():
    if dist.get_rank() != 2:
        all_reduce_ones()
    return dist.get_rank()


def crash_rank_three(how):
    if dist.get_rank() == 3:
        if how == "exit":
            os._exit(7)
        elif how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif how == "segfault":
            ctypes.string_at(0)
    return all_reduce_ones()


def crash_last_rank():
    if dist.get_rank() == dist.get_world_size() - 1:
        os._exit(1)
    return all_reduce_ones()


class _Custom(Exception):
    def __init__(self, a, b):  # not reconstructible from args: unpicklable in the usual way
        super().__init__(f"{a}-{b}")


class _Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")


def raise_unprintable():
    raise _Unprintable()


def raise_unpicklable():
    raise _Custom(1, 2)


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world():
    with World(8, timeout=60) as world:
        yield world


def _gone(pids) -> bool:
    return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


def _wait_gone(pids, limit=30.0) -> None:
    deadline = time.monotonic() + limit
    while not _gone(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pids)


def _zygote_children(world) -> set:
    zygote = psutil.Process(psutil.Process(world.pids[0]).ppid())
    return {child.pid for child in zygote.children()}


def _line_of(marker: str) -> int:
    with open(__file__) as f:
        return next(number for number, line in enumerate(f, 1) if marker in line and "def " not in line)


# --- exceptions -----------------------------------------------------------------------------


def test_exception_on_one_rank_names_the_rank_and_line(world):
    incarnation = world.incarnation
    with pytest.raises(RankError) as info:
        world.run(raise_on_rank_one)
    error = info.value
    assert list(error.failures) == [1]
    assert error.exc_types[1] == "ValueError" and error.messages[1] == "rank one refuses"
    assert isinstance(error.exceptions[1], ValueError)
    assert "rank 1 of 8" in error.failures[1]
    assert f"line {_line_of('RAISE-LINE')}, in raise_on_rank_one" in error.failures[1]
    assert "rank 1" in str(error)
    # nobody was left behind, so the ranks were kept
    assert world.incarnation == incarnation
    assert world.run(all_reduce_ones) == [8.0] * 8


def test_exception_before_a_collective_stops_the_waiting_ranks(world):
    old_pids = world.pids
    with pytest.raises(RankError) as info:
        world.run(raise_on_rank_one_before_all_reduce, timeout=60)
    error = info.value
    assert list(error.failures) == [1] and error.exc_types[1] == "KeyError"
    assert error.stopped == (0, 2, 3, 4, 5, 6, 7)
    assert error.collectives == {rank: "all_reduce" for rank in error.stopped}
    assert "all_reduce" in error.stacks[0]
    assert _gone(old_pids)
    assert world.run(all_reduce_ones) == [8.0] * 8


def test_unpicklable_exception_travels_as_text(world):
    with pytest.raises(RankError, match="_Custom: 1-2") as info:
        world.run(raise_unpicklable)
    assert info.value.exceptions == {}
    assert sorted(info.value.failures) == list(range(8))


def test_exception_whose_str_raises_is_still_reported(world):
    with pytest.raises(RankError, match="str\\(\\) failed") as info:
        world.run(raise_unprintable)
    assert "raise_unprintable" in info.value.failures[0]
    assert world.run(all_reduce_ones) == [8.0] * 8


# --- hangs ------------------------------------------------------------------------------------


def test_hang_times_out_with_stacks_and_collectives_then_recovers(world):
    old_pids = world.pids
    started = time.monotonic()
    with pytest.raises(WorldTimeout) as info:
        world.run(rank_two_skips_the_all_reduce, timeout=HANG_DEADLINE)
    assert HANG_DEADLINE <= time.monotonic() - started < HANG_DEADLINE + MARGIN
    error = info.value
    assert error.arrived == (2,)
    assert error.missing == (0, 1, 3, 4, 5, 6, 7)
    assert error.collectives == {rank: "all_reduce" for rank in error.missing}
    assert sorted(error.stacks) == list(range(8))
    for rank in error.missing:
        assert "in rank_two_skips_the_all_reduce" in error.stacks[rank]
        assert "all_reduce" in error.stacks[rank]
    text = str(error)
    assert "rank 2 did" in text and "rank 0: blocked in torch.distributed.all_reduce" in text
    assert _gone(old_pids)
    assert world.run(all_reduce_ones) == [8.0] * 8


# --- crashes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how, exitcode, signum",
    [("exit", 7, None), ("sigkill", None, signal.SIGKILL), ("segfault", None, signal.SIGSEGV)],
    ids=["os._exit(7)", "SIGKILL", "segfault"],
)
def test_crashed_rank_is_named_then_the_world_recovers(world, how, exitcode, signum):
    old_pids = world.pids
    with pytest.raises(RankCrashed) as info:
        world.run(crash_rank_three, how, timeout=60)
    error = info.value
    assert (error.rank, error.exitcode, error.signal) == (3, exitcode, signum)
    assert "rank 3" in str(error)
    if how == "segfault":
        assert "Segmentation fault" in error.output and "crash_rank_three" in error.output
    assert _gone(old_pids)
    assert _zygote_children(world) >= set(world.pids)
    assert world.run(all_reduce_ones) == [8.0] * 8


@pytest.mark.slow
def test_failures_do_not_accumulate_processes(world):
    zygote = psutil.Process(psutil.Process(world.pids[0]).ppid())
    failed = []
    for how in ("exit", "sigkill"):
        failed.extend(world.pids)
        with pytest.raises(RankCrashed):
            world.run(crash_rank_three, how, timeout=60)
    failed.extend(world.pids)
    with pytest.raises(WorldTimeout):
        world.run(rank_two_skips_the_all_reduce, timeout=HANG_DEADLINE)
    world.run(all_reduce_ones)
    assert _gone(failed)
    # the 8 ranks in use plus at most the 8 of the standby (forking in the background)
    assert len(zygote.children()) <= 16


# --- cleanup ------------------------------------------------------------------------------------


def test_close_leaves_no_rank_process():
    world = World(4, standby=True)
    pids = world.all_pids
    assert len(pids) == 8  # 4 ranks in use, 4 in standby
    zygote = psutil.Process(pids[0]).ppid()
    assert set(pids) <= {child.pid for child in psutil.Process(zygote).children()}
    world.close()
    assert _gone(pids)
    assert not set(pids) & {child.pid for child in psutil.Process(zygote).children()}


def test_world_without_standby_holds_only_its_ranks():
    with World(3, standby=False) as world:
        world.run(all_reduce_ones)
        assert world.all_pids == world.pids and len(world.pids) == 3
        old = world.pids
        with pytest.raises(RankCrashed):
            world.run(crash_last_rank)
        assert _gone(old) and len(world.all_pids) == 3
        assert world.run(all_reduce_ones) == [3.0] * 3


def test_forgotten_world_is_cleaned_up_by_garbage_collection():
    world = World(2)
    pids = world.all_pids
    del world
    gc.collect()
    assert _gone(pids)


@pytest.mark.slow
def test_controller_killed_with_sigkill_leaves_no_process(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent("""
        import time, psutil, simulators
        world = simulators.World(3, standby=True)
        pids = world.all_pids + (psutil.Process(world.pids[0]).ppid(),)
        print(" ".join(map(str, pids)), flush=True)
        time.sleep(600)
    """))
    controller = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in controller.stdout.readline().split()]
    finally:
        controller.kill()  # no atexit, no finalizer: the zygote sees EOF and takes the ranks down
        controller.wait()
    assert len(pids) == 7
    _wait_gone(pids)


@pytest.mark.slow
def test_world_left_open_at_exit_leaves_no_process(tmp_path):
    script = tmp_path / "forget.py"
    script.write_text(textwrap.dedent("""
        import simulators
        world = simulators.World(3)
        print(" ".join(map(str, world.pids)), flush=True)
        zygote = __import__("psutil").Process(world.pids[0]).ppid()
        print(zygote, flush=True)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ranks, zygote = done.stdout.split("\n")[:2]
    _wait_gone([int(pid) for pid in ranks.split()] + [int(zygote)])


def test_killed_zygote_takes_its_ranks_and_the_next_call_gets_new_ones(world):
    pids = world.all_pids
    zygote = psutil.Process(pids[0]).ppid()
    incarnation = world.incarnation
    os.kill(zygote, signal.SIGKILL)
    _wait_gone(pids + (zygote,))  # the ranks die by PR_SET_PDEATHSIG once the zygote is really gone
    assert world.run(all_reduce_ones) == [8.0] * 8  # between calls: not the call's fault, no error
    assert world.incarnation > incarnation
    assert psutil.Process(world.pids[0]).ppid() != zygote


def test_rank_killed_between_calls_is_replaced_before_the_next_call(world):
    incarnation = world.incarnation
    victim = world.pids[5]
    os.kill(victim, signal.SIGKILL)
    _wait_gone([victim])
    time.sleep(0.2)  # let the zygote report the exit
    assert world.run(all_reduce_ones) == [8.0] * 8
    assert world.incarnation == incarnation + 1 and victim not in world.pids


def test_a_forked_copy_of_the_controller_does_not_close_the_world(world):
    import simulators.world

    pids = world.pids
    child = os.fork()
    if child == 0:  # the copy runs the atexit cleanup; it must leave the owner's ranks alone
        try:
            simulators.world.shutdown()
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    assert world.pids == pids
    child = os.fork()
    if child == 0:  # nor may the copy send calls down the owner's sockets
        code = 3
        try:
            world.run(all_reduce_ones)
            code = 1
        except WorldError as error:
            code = 0 if "forked copy" in str(error) else 2
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    assert world.run(all_reduce_ones) == [8.0] * 8


def exit_with_sys_exit():
    sys.exit(3)


def test_sys_exit_in_a_rank_is_an_error_not_a_crash(world):
    incarnation = world.incarnation
    with pytest.raises(RankError) as info:
        world.run(exit_with_sys_exit)
    assert set(info.value.exc_types.values()) == {"SystemExit"}
    # eight identical tracebacks are shown once
    assert str(info.value).count("--- ranks 0, 1, 2, 3, 4, 5, 6, 7: SystemExit: 3") == 1
    assert world.incarnation == incarnation
    assert world.run(all_reduce_ones) == [8.0] * 8


@pytest.mark.slow
def test_profile_with_fewer_devices_than_ranks_fails_to_start_naming_the_cause():
    from simulators import WorldStartError

    with pytest.raises(WorldStartError, match="local_rank=2") as info:
        World(3, profile="2xT4")
    assert "rank 2" in str(info.value)


def test_two_worlds_side_by_side_fail_independently(world):
    with World(2) as small:
        with pytest.raises(RankCrashed):
            small.run(crash_last_rank)
        assert world.run(all_reduce_ones) == [8.0] * 8
        assert small.run(all_reduce_ones) == [2.0] * 2
        with pytest.raises(RankCrashed):
            world.run(crash_rank_three, "exit", timeout=60)
        assert small.run(all_reduce_ones) == [2.0] * 2
        assert world.run(all_reduce_ones) == [8.0] * 8
