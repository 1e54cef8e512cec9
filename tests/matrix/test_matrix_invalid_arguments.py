"""The matrix package's table of invalid arguments: each id reads like the call, each error says what to do."""

import pytest

from matrix import axes
from matrix.cells import Cell, Selection
from matrix.errors import BadCellId, ResultsFileError, UnknownAxisValue, UnknownPreset
from matrix.presets import get_preset
from matrix.results import RunResult
from matrix.runners.ci import github_matrix
from matrix.runners.scheduling import CoreBudget

CASES = [
    ("Cell.parse('gather/bf16')", lambda: Cell.parse("gather/bf16"), BadCellId, "op/precision/plugin/wN"),
    ("Cell.parse('gather/bf16/fsdp/eight/gloo/8xH100')", lambda: Cell.parse("gather/bf16/fsdp/eight/gloo/8xH100"),
     BadCellId, "wN"),
    ("Cell.parse('gathr/no/none/w2/gloo/cpu')", lambda: Cell.parse("gathr/no/none/w2/gloo/cpu"), UnknownAxisValue,
     "expected one of: gather"),
    ("Cell('gather', 'fp32', 'none', 2, 'gloo', 'cpu')", lambda: Cell("gather", "fp32", "none", 2, "gloo", "cpu"),
     UnknownAxisValue, "no, fp16, bf16, fp8"),
    ("Cell('gather', 'no', 'none', 3, 'gloo', 'cpu')", lambda: Cell("gather", "no", "none", 3, "gloo", "cpu"),
     UnknownAxisValue, "1, 2, 4, 8"),
    ("Selection.from_options(world='x')", lambda: Selection.from_options(world="x"), BadCellId, "not a number"),
    ("Selection.from_options(hardware='A100')", lambda: Selection.from_options(hardware="A100"), UnknownAxisValue,
     "8xA100-80GB"),
    ("Selection.from_options(colour='red')", lambda: Selection.from_options(colour="red"), UnknownAxisValue,
     "expected one of op, precision"),
    ("axes.plugin_environment('zero', 'no', 2)", lambda: axes.plugin_environment("zero", "no", 2), UnknownAxisValue,
     "deepspeed"),
    ("get_preset('fast')", lambda: get_preset("fast"), UnknownPreset, "registered: default, quick"),
    ("CoreBudget(0)", lambda: CoreBudget(0), ValueError, "cores must be >= 1"),
    ("RunResult.load('/nonexistent/results.json')", lambda: RunResult.load("/nonexistent/results.json"),
     ResultsFileError, "python -m matrix run"),
    ("RunResult.loads('{}')", lambda: RunResult.loads("{}"), ResultsFileError, "schema"),
    ("RunResult.loads('not json')", lambda: RunResult.loads("not json"), ResultsFileError, "not valid JSON"),
    ("github_matrix('ci', ['H100'])", lambda: github_matrix("ci", ["H100"]), UnknownAxisValue, "8xH100"),
]


@pytest.mark.parametrize("call, error, match", [(c, e, m) for c, _, e, m in CASES], ids=[c[0] for c in CASES])
def test_invalid_argument(call, error, match):
    function = {c: f for c, f, _, _ in CASES}[call]
    with pytest.raises(error, match=match.replace("(", r"\(")):
        function()
