"""The local runner on real simulated worlds: verdicts, results, and a broken op turning exactly its cells red."""

import pytest

from matrix import results
from matrix.cells import Cell
from matrix.reports import render_html, render_junit
from matrix.runners.local import LocalRunner, RunSettings

pytestmark = pytest.mark.slow


def break_gather_on_rank_1():
    """Rank setup (runs inside every rank before each cell): gather on rank 1 returns every value + 1."""
    import torch.distributed as dist

    from accelerate_lite import utils

    if not dist.is_initialized() or dist.get_rank() != 1:
        return
    original = utils.gather

    def wrong(t):
        import torch

        return ~t if t.dtype == torch.bool else (t + 1).to(t.dtype)  # same dtype, other values

    def off_by_one(tensor):
        return utils.recursively_apply(wrong, original(tensor))

    utils.gather = off_by_one


CELLS = [
    "gather/no/none/w2/gloo/cpu",
    "gather/bf16/fsdp/w2/gloo/8xH100",
    "reduce/no/none/w2/gloo/cpu",
    "pad_across_processes/no/none/w2/gloo/cpu",
    "gather/no/none/w1/gloo/cpu",  # one rank: there is no rank 1 to misbehave
    "gather/no/none/w8/gloo/2xT4",  # not applicable: never runs
]


def run(cells, **settings):
    runner = LocalRunner(RunSettings(examples=4, world_timeout=120, cores=1, **settings))
    seen = []
    got = runner.run([Cell.parse(c) for c in cells], on_result=seen.append)
    assert sorted(r.cell_id for r in seen) == sorted(cells)  # every cell reported once, as it finished
    return {r.cell_id: r for r in got}


def test_healthy_cells_pass_and_excluded_ones_carry_their_reason():
    got = run(CELLS)
    assert got["gather/no/none/w8/gloo/2xT4"].status == results.NOT_APPLICABLE
    assert "2xT4 has 2 device(s)" in got["gather/no/none/w8/gloo/2xT4"].reason
    ran = [r for r in got.values() if r.status != results.NOT_APPLICABLE]
    assert all(r.status == results.PASSED for r in ran), {r.cell_id: r.failure for r in ran if r.is_bad}
    assert all(r.examples >= 1 and r.duration > 0 for r in ran)


def test_a_broken_op_on_one_rank_turns_exactly_its_cells_red_with_rank_and_shrunk_example():
    got = run(CELLS, rank_setup=break_gather_on_rank_1)
    red = {cell_id for cell_id, r in got.items() if r.is_bad}
    assert red == {"gather/no/none/w2/gloo/cpu", "gather/bf16/fsdp/w2/gloo/8xH100"}
    for cell_id in red:
        failure = got[cell_id].failure
        assert failure.rank == 1 and failure.ranks == (1,)
        assert "values differ" in failure.message
        assert failure.example and failure.example.startswith("[")  # the shrunk world input: one entry per rank
        assert f"--cell {cell_id}" in failure.reproduce
    assert got["gather/no/none/w1/gloo/cpu"].status == results.PASSED
    run_result = results.RunResult("test", {}, results.environment("local"), list(got.values()))
    page, junit = render_html(run_result), render_junit(run_result)
    for cell_id in red:
        assert f"data-cell-id='{cell_id}' data-status='failed'" in page
        assert f'name="{cell_id}"' in junit
    assert "first failing rank: 1" in page and "first failing rank: 1" in junit


def test_real_mode_runs_cells_on_this_machines_own_ranks():
    """--real: no profile simulation; spawned ranks on this CPU machine's gloo (NCCL on a GPU runner)."""
    got = run(["gather/no/none/w2/gloo/cpu", "broadcast_object_list/no/none/w2/gloo/cpu"], real=True)
    assert all(r.status == results.PASSED for r in got.values()), {k: r.failure for k, r in got.items()}


def draw_by_rank():
    """Every rank 'draws' its own rank: the agreement must notice and stop, on every rank alike."""
    import torch.distributed as dist

    from matrix.suite.spmd import RanksDrewDifferently, agree, digest_of

    try:
        agree(None, digest_of(dist.get_rank()))
    except RanksDrewDifferently as exc:
        return str(exc)
    return "agreed"


def test_ranks_that_draw_different_examples_are_stopped_not_left_to_desynchronise():
    from matrix.runners.real_world import RealWorld

    with RealWorld(2, backend="gloo", timeout=120) as world:
        answers = world.run(draw_by_rank)
    assert all("drew different examples" in answer for answer in answers)
