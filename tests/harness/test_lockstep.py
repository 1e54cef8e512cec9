"""Hypothesis across ranks, end to end: every rank runs every example; shrinking stays in step."""

import re

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.owns_worlds]

BODIES = '''
import pytest, torch, torch.distributed as dist
from hypothesis import given, settings, strategies as st

def gathered(value):
    out = [torch.zeros(1, dtype=torch.long) for _ in range(dist.get_world_size())]
    dist.all_gather(out, torch.tensor([value]))
    return [int(t) for t in out]

@pytest.mark.world(4)
@settings(max_examples=30)
@given(x=st.integers(0, 10_000))
def test_every_rank_sees_the_same_example(x, rank):
    assert gathered(x) == [x] * 4

@pytest.mark.world(4)
@given(x=st.integers(0, 10_000), ys=st.lists(st.integers(0, 5), max_size=6))
def test_shrinks_a_failure_on_one_rank(x, ys, rank):
    assert gathered(x) == [x] * 4        # lockstep holds during shrinking too
    assert not (rank == 2 and x >= 17 and len(ys) >= 2), "too big on rank 2"

@pytest.mark.world(2)
@given(x=st.integers(0, 100))
def test_skip_on_one_rank(x, rank):
    if rank == 1:
        pytest.skip("rank 1 opts out")
    gathered(x)

@pytest.mark.world(2)
@settings(max_examples=20)
@given(x=st.integers())
def test_assume_on_one_rank_rejects_everywhere(x, rank):
    from hypothesis import assume
    parities = gathered(x % 2)
    assume(rank == 0 or x % 2 == 0)  # rejected on rank 1 only: all ranks must treat it as rejected
    assert parities == [0, 0]

@pytest.mark.world(2)
@given(x=st.integers(0, 100))
def test_fails_before_a_collective_on_one_rank(x, rank):
    assert rank == 0 or x < 1000 - 1000, "rank 1 gives up early"
    gathered(x)
'''


@pytest.fixture(scope="module")
def session(tmp_path_factory, runs):
    directory = tmp_path_factory.mktemp("lockstep")
    (directory / "test_bodies.py").write_text(BODIES)
    return runs.run(directory, "--world-timeout=300")


def test_every_example_runs_on_every_rank(session):
    assert session.outcome("test_every_rank_sees_the_same_example") == "passed", session.output


def test_failure_on_one_rank_shrinks_to_the_minimal_example_with_the_seed(session):
    assert session.outcome("test_shrinks_a_failure_on_one_rank") == "failed"
    text = session.text("test_shrinks_a_failure_on_one_rank")
    assert "AssertionError: too big on rank 2" in text
    assert "(failed on rank 2; hypothesis runs on rank 0)" in text
    assert re.search(r"Falsifying example: test_shrinks_a_failure_on_one_rank\(\s+rank=<per rank>,\s+x=17,\s+ys=\[0, 0\],\s+\)", text), text
    assert re.search(r"hypothesis seed: \d+ \(rerun with --hypothesis-seed=\d+\)", text)


def test_skip_on_one_rank_skips_the_hypothesis_test(session):
    assert session.outcome("test_skip_on_one_rank") == "skipped"


def test_assume_on_one_rank_is_a_rejection_for_all(session):
    assert session.outcome("test_assume_on_one_rank_rejects_everywhere") == "passed", session.output


def test_failure_before_a_collective_ends_the_run_instead_of_hanging(session):
    assert session.outcome("test_fails_before_a_collective_on_one_rank") == "failed"
    text = session.text("test_fails_before_a_collective_on_one_rank")
    assert "rank 1 failed: AssertionError: rank 1 gives up early" in text
    assert "shrinking ended here" in text
    assert "example: x=" in text
    assert "rank 0: stuck (in all_gather)" in text
