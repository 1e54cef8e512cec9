"""The exclusion table: every rule is live, verdicts carry reasons, strict xfail is judged strictly."""

import pytest

from matrix import exclusions, results
from matrix.cells import Cell, Selection
from matrix.exclusions import NOT_APPLICABLE, RUN, XFAIL, classify
from matrix.results import Failure
from matrix.runners.local import RunSettings, judge

VERDICTS = [
    ("gather/no/none/w8/gloo/2xT4", NOT_APPLICABLE, "world-exceeds-devices", "2xT4 has 2 device(s)"),
    ("gather/no/none/w2/gloo/mps-m2", NOT_APPLICABLE, "mps-single-process", "single process"),
    ("gather/no/none/w2/nccl/8xAscend910B", NOT_APPLICABLE, "backend-device-kind", "nccl backend drives cuda"),
    ("gather/no/megatron/w2/gloo/cpu", NOT_APPLICABLE, "megatron-needs-cuda", "CUDA GPUs only"),
    ("gather/no/deepspeed/w2/gloo/tpu-v4-8", NOT_APPLICABLE, "deepspeed-no-device", "xla"),
    ("gather/no/fsdp/w1/gloo/mps-m2", NOT_APPLICABLE, "fsdp-no-device", "mps"),
    ("gather/bf16/none/w2/gloo/2xT4", XFAIL, "bf16-unsupported-gpu", "Tesla T4"),
    ("gather/fp8/none/w2/gloo/cpu", XFAIL, "fp8-needs-hopper", "8.9"),
    ("gather/bf16/fsdp/w8/gloo/8xH100", RUN, None, ""),
    ("gather/bf16/none/w1/gloo/mps-m2", RUN, None, ""),
]


@pytest.mark.parametrize("cell_id, action, rule, text", VERDICTS, ids=[v[0] for v in VERDICTS])
def test_verdict(cell_id, action, rule, text):
    verdict = classify(Cell.parse(cell_id))
    assert verdict.action == action
    if rule:
        assert rule in verdict.rules and text in verdict.reason
    else:
        assert verdict.rules == () and verdict.reason == ""


def test_fp8_without_an_engine_is_expected_to_fail_here():
    if exclusions.fp8_engine_installed():
        pytest.skip("Transformer Engine or MS-AMP is installed on this machine: the rule does not apply")
    verdict = classify(Cell.parse("gather/fp8/none/w2/gloo/8xH100"))
    assert verdict.action == XFAIL and verdict.rules == ("fp8-needs-engine",)


def test_not_applicable_wins_over_xfail_and_keeps_only_its_reasons():
    verdict = classify(Cell.parse("gather/fp8/megatron/w8/gloo/2xT4"))
    assert verdict.action == NOT_APPLICABLE
    assert verdict.rules == ("world-exceeds-devices",)  # the fp8 xfail rules also match, but N/A decides
    assert "fp8" not in verdict.reason


@pytest.mark.slow
def test_every_rule_hits_some_cell_of_the_whole_product():
    cells = Selection().full_product()
    rows = exclusions.table_rows(cells[::7] + [c for c in cells if c.backend != "gloo"][:2000])
    dead = [row["id"] for row in rows if not row["hits"]]
    assert dead == [], f"rules that exclude nothing: {dead}"


def _failure(message):
    return {"ok": False, "examples": 1, "rank": 0, "ranks": [0], "error_type": "PropertyFailed",
            "message": message, "traceback": "", "example": None, "stage": "preconditions"}


def test_strict_xfail_passing_is_a_failure_that_names_the_rule():
    cell = Cell.parse("gather/bf16/none/w2/gloo/2xT4")
    result = judge(cell, classify(cell), {"ok": True, "examples": 4}, None, 0.1, RunSettings())
    assert result.status == results.XPASSED and result.is_bad
    assert "bf16-unsupported-gpu" in result.failure.message


def test_xfail_failing_the_expected_way_is_xfailed():
    cell = Cell.parse("gather/bf16/none/w2/gloo/2xT4")
    outcome = _failure("bf16 requested but is_bf16_available() is False on 2xT4")
    result = judge(cell, classify(cell), outcome, None, 0.1, RunSettings())
    assert result.status == results.XFAILED and not result.is_bad


def test_xfail_failing_another_way_is_a_real_failure():
    cell = Cell.parse("gather/bf16/none/w2/gloo/2xT4")
    outcome = _failure("PartialState.device is cpu, expected a cuda device on 2xT4")
    result = judge(cell, classify(cell), outcome, None, 0.1, RunSettings())
    assert result.status == results.FAILED
    assert "expected a failure mentioning 'bf16 requested'" in result.failure.message


def test_a_failed_cell_keeps_rank_example_and_reproduction():
    cell = Cell.parse("gather/no/none/w2/gloo/cpu")
    outcome = {**_failure("values differ"), "rank": 1, "ranks": [1], "example": "[tensor([1]), tensor([2])]",
               "stage": "property", "per_rank": {1: "PropertyFailed: values differ"}}
    result = judge(cell, classify(cell), outcome, None, 0.1, RunSettings(seed=7, examples=3))
    assert result.status == results.FAILED
    assert isinstance(result.failure, Failure) and result.failure.rank == 1 and result.failure.ranks == (1,)
    assert result.failure.example == "[tensor([1]), tensor([2])]"
    assert result.failure.reproduce == "python -m matrix run --cell gather/no/none/w2/gloo/cpu --seed 7 --examples 3"
