"""The plugin end to end: one real pytest session of world tests on real gloo worlds.

The session runs once (module fixture) in a subprocess; each test below checks one behaviour
in its JUnit record and output. Bodies fail, skip, hang and crash on purpose.
"""

import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.owns_worlds]

BODIES = '''
import os, pytest, torch, torch.distributed as dist

@pytest.fixture
def shared_list():
    return [1, 2, 3]

@pytest.fixture
def unpicklable():
    return lambda: 1

@pytest.mark.world(2)
def test_passes(rank, world_size, tmp_path, shared_list, monkeypatch):
    monkeypatch.setenv("ONLY_HERE", str(rank))
    t = torch.tensor([rank + 1]); dist.all_reduce(t)
    assert int(t) == 3 and world_size == 2 and shared_list == [1, 2, 3]
    assert tmp_path.name == f"rank{rank}"
    (tmp_path / "mine").write_text(str(dist.get_rank()))

@pytest.mark.world(4)
def test_fails_on_one_rank(rank):
    print(f"rank {rank} says hi")
    assert [rank, rank * 2] == [rank, rank * 2 + (rank == 3)]

@pytest.mark.world(2)
def test_skips_on_one_rank(rank):
    if rank == 1:
        pytest.skip("nothing to do on rank 1")
    dist.barrier()

@pytest.mark.world(2)
@pytest.mark.xfail(raises=ZeroDivisionError, strict=True)
def test_xfail_with_raises(rank):
    1 / rank

@pytest.mark.world(2)
@pytest.mark.world_timeout(4)
def test_hangs_on_one_rank(rank):
    if rank == 0:
        dist.barrier()

@pytest.mark.world(2)
def test_crashes_on_one_rank(rank):
    if rank == 1:
        os._exit(7)
    dist.barrier()

@pytest.mark.world(2)
def test_world_is_healthy_afterwards(rank):
    assert "ONLY_HERE" not in os.environ
    t = torch.ones(1); dist.all_reduce(t); assert int(t) == 2

class TestMethods:
    @pytest.mark.world(2)
    @pytest.mark.parametrize("k", [1, 2])
    def test_method_runs_on_ranks(self, k, rank):
        assert os.environ["RANK"] == str(rank) and k in (1, 2)

@pytest.mark.world(2)
def test_unpicklable_fixture(unpicklable):
    pass

@pytest.mark.world(2)
def test_request_fixture(request):
    pass

@pytest.mark.world(0)
def test_bad_marker():
    pass

@pytest.mark.world(2)
@pytest.mark.hardware("8xH100")
def test_profile_on_every_rank(rank):
    from accelerate_lite import PartialState
    state = PartialState()
    assert torch.cuda.device_count() == 8 and state.distributed_type == "MULTI_GPU"
    assert state.process_index == rank and os.environ["LOCAL_RANK"] == str(rank)

@pytest.mark.hardware("8xH100")
def test_profile_in_process():
    assert torch.cuda.device_count() == 8

def test_plain_runs_in_the_pytest_process():
    assert not dist.is_initialized()
'''


@pytest.fixture(scope="module")
def session(tmp_path_factory, runs):
    directory = tmp_path_factory.mktemp("plugin")
    (directory / "test_bodies.py").write_text(BODIES)
    run = runs.run(directory, f"--basetemp={directory / 'base'}", "--world-timeout=120")
    run.directory = directory
    return run


def test_passing_body_with_per_rank_and_shared_fixtures(session):
    assert session.outcome("test_passes") == "passed", session.output
    written = sorted(p.read_text() for p in Path(session.directory, "base").rglob("rank*/mine"))
    assert written == ["0", "1"]


def test_failure_on_one_rank_reports_that_rank_and_the_others(session):
    assert session.outcome("test_fails_on_one_rank") == "failed"
    text = session.text("test_fails_on_one_rank")
    assert "rank 3 failed: AssertionError" in text
    assert "At index 1 diff: 6 != 7" in text  # pytest's assertion rewriting, inside the rank
    assert "other ranks:\n  rank 0: passed\n  rank 1: passed\n  rank 2: passed" in text
    assert "rank 3 says hi" in text


def test_skip_on_one_rank_skips_the_test(session):
    assert session.outcome("test_skips_on_one_rank") == "skipped"
    assert "rank 1: nothing to do on rank 1" in session.text("test_skips_on_one_rank")


def test_xfail_matches_the_rank_exception_type(session):
    assert session.outcome("test_xfail_with_raises") == "xfailed"


def test_hang_on_one_rank_shows_the_stack_and_collective(session):
    assert session.outcome("test_hangs_on_one_rank") == "failed"
    text = session.text("test_hangs_on_one_rank")
    assert "world test timed out after 4 s" in text
    assert "rank 0 stuck: did not finish within 4 s, blocked in barrier" in text
    assert "in test_hangs_on_one_rank" in text


def test_crash_on_one_rank_fails_that_test_only(session):
    assert session.outcome("test_crashes_on_one_rank") == "failed"
    assert "rank 1 crashed: exited with code 7" in session.text("test_crashes_on_one_rank")
    assert session.outcome("test_world_is_healthy_afterwards") == "passed"


def test_methods_and_parameters(session):
    assert session.outcome("test_method_runs_on_ranks[1]") == "passed"
    assert session.outcome("test_method_runs_on_ranks[2]") == "passed"


def test_fixture_that_cannot_reach_the_ranks_is_named(session):
    assert "argument 'unpicklable' (function) cannot be sent to the ranks" in session.text("test_unpicklable_fixture")
    assert "fixture 'request' belongs to the pytest process" in session.text("test_request_fixture")


def test_bad_marker_is_an_error_naming_the_value(session):
    assert session.outcome("test_bad_marker") == "error"
    assert "world size must be an int >= 1, got 0" in session.text("test_bad_marker")


def test_hardware_marker_applies_the_profile_on_every_rank(session):
    assert session.outcome("test_profile_on_every_rank") == "passed", session.text("test_profile_on_every_rank")


def test_hardware_marker_alone_applies_the_profile_in_process(session):
    assert session.outcome("test_profile_in_process") == "passed", session.text("test_profile_in_process")
    assert session.outcome("test_plain_runs_in_the_pytest_process") == "passed"


def test_one_report_per_test_and_no_stray_processes(session, runs):
    assert len(session.cases) == 15
    deadline = time.monotonic() + 15
    while runs.tagged(session.tag) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert runs.tagged(session.tag) == []
