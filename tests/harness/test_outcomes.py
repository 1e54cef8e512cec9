"""Merging every rank's outcome into one verdict (pure rules, no world needed)."""

from harness.outcomes import RankOutcome, merge


def test_all_passed_is_passed():
    verdict = merge([RankOutcome(r, "passed") for r in range(4)], 4)
    assert verdict.status == "passed"
    assert verdict.deciding_rank is None


def test_first_failing_rank_decides_and_others_are_listed():
    outcomes = [
        RankOutcome(0, "passed"),
        RankOutcome(1, "failed", "AssertionError: late", "tb-late", finished_at=20.0),
        RankOutcome(2, "failed", "AssertionError: early", "tb-early", finished_at=10.0),
        RankOutcome(3, "stuck", "stopped", "stack-3", collective="all_gather"),
    ]
    verdict = merge(outcomes, 4)
    assert verdict.status == "failed"
    assert verdict.deciding_rank == 2
    assert verdict.longrepr.startswith("rank 2 failed: AssertionError: early\n\ntb-early")
    assert "  rank 1: failed: AssertionError: late" in verdict.longrepr
    assert "  rank 3: stuck (in all_gather): stopped" in verdict.longrepr
    assert "stack-3" in verdict.longrepr


def test_crash_decides_over_the_errors_it_caused():
    outcomes = [
        RankOutcome(0, "failed", "RuntimeError: Connection closed by peer", finished_at=5.0),
        RankOutcome(1, "crashed", "was killed by SIGKILL (9)"),
    ]
    assert merge(outcomes, 2).deciding_rank == 1


def test_skip_on_one_rank_skips_the_test():
    outcomes = [RankOutcome(0, "stuck", "stopped"), RankOutcome(1, "skipped", "no data", finished_at=1.0)]
    verdict = merge(outcomes, 2)
    assert (verdict.status, verdict.reason) == ("skipped", "rank 1: no data")


def test_failure_wins_over_skip():
    outcomes = [RankOutcome(0, "skipped", "later"), RankOutcome(1, "failed", "ValueError: x", finished_at=1.0)]
    assert merge(outcomes, 2).status == "failed"


def test_xfail_on_one_rank_xfails_the_test():
    outcomes = [RankOutcome(0, "passed"), RankOutcome(1, "xfailed", "known bug")]
    assert merge(outcomes, 2).status == "xfailed"


def test_stuck_ranks_without_a_leaver_are_a_hang():
    outcomes = [RankOutcome(0, "passed"), RankOutcome(1, "stuck", "did not finish within 3 s", "stack")]
    verdict = merge(outcomes, 2)
    assert verdict.status == "failed"
    assert verdict.deciding_rank == 1


def test_missing_ranks_count_as_missing():
    verdict = merge([RankOutcome(0, "passed")], 3)
    assert verdict.status == "failed"
    assert "rank 2: missing" in verdict.longrepr


def test_captured_output_becomes_one_section_per_rank_and_stream():
    outcomes = [RankOutcome(0, "passed", stdout="a\n"), RankOutcome(1, "passed", stderr="b\n")]
    assert merge(outcomes, 2).sections == (("Captured stdout rank 0", "a\n"), ("Captured stderr rank 1", "b\n"))


def test_outcome_round_trips_through_a_dict():
    outcome = RankOutcome(3, "failed", "m", "tb", "out", "err", 1.5, b"blob", "barrier")
    assert RankOutcome.from_dict(outcome.to_dict()) == outcome
