"""Scheduling of worlds onto cores, with fake groups: never more cores busy than the machine has."""

from matrix.cells import Cell
from matrix.runners.scheduling import CoreBudget, group_cells, next_startable


def _cells(*ids):
    return [Cell.parse(i) for i in ids]


def test_cells_sharing_a_world_form_one_group_largest_first():
    groups = group_cells(_cells("gather/no/none/w2/gloo/cpu", "reduce/no/none/w8/gloo/8xH100",
                                "reduce/no/none/w2/gloo/cpu", "gather/no/fsdp/w8/gloo/8xH100",
                                "gather/no/none/w1/gloo/cpu"))
    assert [g.key for g in groups] == [(8, "8xH100", "gloo"), (2, "cpu", "gloo"), (1, "cpu", "gloo")]
    assert [len(g.cells) for g in groups] == [2, 2, 1]


def test_two_cores_run_two_single_rank_worlds_but_one_bigger_world_alone():
    groups = group_cells(_cells("a/no/none/w1/gloo/cpu".replace("a", "gather"), "reduce/no/none/w1/gloo/mps-m2",
                                "gather/no/none/w8/gloo/8xH100", "gather/no/none/w2/gloo/cpu"))
    budget = CoreBudget(2)
    pending = list(groups)
    first = next_startable(pending, budget)
    assert first.world == 8 and next_startable(pending, budget) is None  # w8 fills both cores
    budget.finish(first.weight(2))
    second = next_startable(pending, budget)
    assert second.world == 2 and next_startable(pending, budget) is None
    budget.finish(second.weight(2))
    third, fourth = next_startable(pending, budget), next_startable(pending, budget)
    assert (third.world, fourth.world) == (1, 1) and budget.in_use == 2
    assert pending == []


def test_budget_never_exceeds_its_cores_in_a_simulated_run():
    groups = group_cells(_cells(*(f"gather/no/none/w{w}/gloo/{hw}" for w in (1, 2, 4, 8)
                                  for hw in ("cpu", "8xH100", "8xA100-80GB"))))
    budget, pending, running, peak = CoreBudget(2), list(groups), [], 0
    while pending or running:
        while (group := next_startable(pending, budget)) is not None:
            running.append(group)
        peak = max(peak, budget.in_use)
        budget.finish(running.pop(0).weight(2))
    assert peak <= 2 and budget.in_use == 0


def test_finish_more_than_started_is_a_bug_reported_loudly():
    budget = CoreBudget(2)
    try:
        budget.finish(1)
    except RuntimeError as exc:
        assert "more often than try_start" in str(exc)
    else:
        raise AssertionError("finish() without try_start() must raise")
