"""debug_launcher: real gloo worlds of 2, 4 and 8 CPU processes on this machine, failures, and cleanup."""

import os
import signal
import time

import psutil
import pytest
import torch
import torch.distributed as dist

from accelerate_lite import PartialState, debug_launcher
from accelerate_lite.errors import LaunchError
from accelerate_lite.launchers import TIMEOUT_ENV_KEY
from accelerate_lite.utils import DistributedType, patch_environment


@pytest.fixture(autouse=True)
def no_child_survives():
    """Every test here also checks that the launcher left no process behind."""
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    yield
    after = {child.pid for child in psutil.Process().children(recursive=True) if child.is_running()}
    assert after <= before, f"processes survived debug_launcher: {sorted(after - before)}"


def _report():
    state = PartialState()
    values = torch.tensor([float(state.process_index)])
    dist.all_reduce(values)
    return state.distributed_type, state.process_index, state.num_processes, state.local_process_index, values.item()


@pytest.mark.parametrize("size", [2, 4, 8])
def test_every_rank_is_multi_cpu_with_its_index(size):
    results = debug_launcher(_report, num_processes=size)
    total = size * (size - 1) / 2
    assert results == [(DistributedType.MULTI_CPU, rank, size, rank, total) for rank in range(size)]


def test_args_reach_every_rank_and_closures_work():
    offset = 10
    assert debug_launcher(lambda a, b: a + b + offset + PartialState().process_index, (1, 2)) == [13, 14]


def _fail_on(rank_that_fails):
    state = PartialState()
    if state.process_index == rank_that_fails:
        raise KeyError(f"rank {rank_that_fails} is broken")
    state.wait_for_everyone()  # the others block here until the launcher stops them


@pytest.mark.parametrize("size", [2, 4, 8])
def test_a_failing_rank_raises_with_its_traceback_and_stops_the_others(size):
    failing = size - 1
    with pytest.raises(LaunchError) as caught:
        debug_launcher(_fail_on, (failing,), num_processes=size)
    message = str(caught.value)
    assert f"rank {failing} of {size} raised KeyError" in message
    assert "in _fail_on" in message and "is broken" in message
    assert failing in caught.value.failures and "Traceback" in caught.value.failures[failing]
    assert caught.value.exitcodes[failing] == 1
    assert all(code != 0 for code in caught.value.exitcodes.values()), "blocked ranks were not stopped"


def _die_hard():
    if PartialState().process_index == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    PartialState().wait_for_everyone()


def test_a_killed_rank_is_reported_without_hanging():
    with pytest.raises(LaunchError, match=r"rank 1 of 3 exited with code -9"):
        debug_launcher(_die_hard, num_processes=3)


def _exit_quietly(code):
    raise SystemExit(code)


def test_system_exit_zero_is_success_and_non_zero_is_failure():
    assert debug_launcher(_exit_quietly, (0,)) == [None, None]
    with pytest.raises(LaunchError, match="exited with code 3"):
        debug_launcher(_exit_quietly, (3,))


def _start_grandchild_and_block():
    import subprocess
    import sys

    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    if PartialState().process_index == 0:
        raise RuntimeError("stop")
    time.sleep(600)


def test_grandchildren_of_stopped_ranks_are_killed():
    with pytest.raises(LaunchError, match="rank 0 of 2 raised RuntimeError"):
        debug_launcher(_start_grandchild_and_block)


def _hang():
    PartialState()
    time.sleep(600)


def test_deadline_from_environment_stops_a_hung_world():
    with patch_environment(**{TIMEOUT_ENV_KEY: "2"}):
        with pytest.raises(LaunchError, match=r"ranks \[0, 1\] of 2 had not finished"):
            debug_launcher(_hang)


def _unpicklable():
    return lambda: None


def test_unpicklable_result_fails_that_rank():
    with pytest.raises(LaunchError, match="cannot be pickled"):
        debug_launcher(_unpicklable)


def _launch_nested():
    # This rank holds a process group, so the nested launch spawns instead of forking.
    return debug_launcher(_report, num_processes=2)


@pytest.mark.slow
def test_nested_launch_spawns_fresh_processes():
    results = debug_launcher(_launch_nested, num_processes=1)
    assert results == [[(DistributedType.MULTI_CPU, 0, 2, 0, 1.0), (DistributedType.MULTI_CPU, 1, 2, 1, 1.0)]]


def test_state_of_the_caller_is_untouched():
    PartialState._reset_state()
    before = PartialState()
    debug_launcher(_report, num_processes=2)
    assert before.distributed_type == DistributedType.NO and not dist.is_initialized()


def _skip_on_rank_one():
    if PartialState().process_index == 1:
        pytest.skip("not on this rank")
    PartialState().wait_for_everyone()


def test_base_exceptions_such_as_pytest_outcomes_are_reported_as_failures():
    with pytest.raises(LaunchError, match="rank 1 of 2 raised Skipped: not on this rank"):
        debug_launcher(_skip_on_rank_one)


def _fail_after_starting_a_child():
    import subprocess
    import sys

    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    raise RuntimeError("failing with a child running")


def test_children_of_a_failing_rank_do_not_outlive_it():
    before = {p.pid for p in psutil.process_iter() if "time.sleep(600)" in " ".join(_cmdline(p))}
    with pytest.raises(LaunchError, match="failing with a child running"):
        debug_launcher(_fail_after_starting_a_child, num_processes=2)
    time.sleep(0.5)  # a killed process may take a moment to leave the process table
    after = {p.pid for p in psutil.process_iter() if "time.sleep(600)" in " ".join(_cmdline(p))}
    assert after <= before


def _cmdline(process):
    try:
        return process.cmdline() if process.status() != psutil.STATUS_ZOMBIE else []
    except psutil.Error:
        return []


def test_the_first_error_in_time_is_named_not_the_first_exit_noticed():
    # Rank 3 raised first; rank 0 then failed in gloo because rank 3 left, and its exit was seen first.
    from accelerate_lite.launchers import _root_cause

    outcomes = {
        0: ("error", "RuntimeError", "Connection closed by peer", "tb0", 10.5),
        1: ("ok", None),
        3: ("error", "KeyError", "'is broken'", "tb3", 10.2),
    }
    assert _root_cause(0, outcomes) == 3
    assert _root_cause(2, outcomes) == 2  # rank 2 died without a word (killed): it is the cause
