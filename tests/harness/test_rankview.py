"""``--world-rank-view=R``: the body runs in the pytest process as rank R, helpers run the others."""

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.owns_worlds]

BODIES = '''
import pytest, torch, torch.distributed as dist

@pytest.mark.world(2)
def test_viewed_rank_runs_in_pytest(rank, world_size, tmp_path):
    t = torch.tensor([rank]); dist.all_reduce(t)
    assert int(t) == 1 and world_size == 2
    if rank == 1:   # in the pytest process: pytest's own tmp_path, not a per-rank subdirectory
        assert not tmp_path.name.startswith("rank")
        print("viewed rank speaking")
    else:
        assert tmp_path.name == "rank0"

@pytest.mark.world(2)
def test_other_rank_fails(rank):
    dist.barrier()
    assert rank == 1, "rank 0 is wrong"

@pytest.mark.world(1)
def test_world_without_the_viewed_rank(rank):
    pass
'''


def test_rank_view_runs_one_rank_in_process_and_reports_the_others(tmp_path, runs):
    (tmp_path / "test_bodies.py").write_text(BODIES)
    run = runs.run(tmp_path, "--world-rank-view=1", "-s")
    assert run.outcome("test_viewed_rank_runs_in_pytest") == "passed", run.output
    assert "viewed rank speaking" in run.output  # -s: the viewed rank prints straight to the terminal
    assert run.outcome("test_other_rank_fails") == "failed"
    assert "rank 0 failed: AssertionError: rank 0 is wrong" in run.text("test_other_rank_fails")
    assert run.outcome("test_world_without_the_viewed_rank") == "skipped"
