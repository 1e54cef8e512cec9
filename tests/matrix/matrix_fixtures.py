"""Shared test data for tests/matrix: a run holding every status."""

from matrix import results
from matrix.results import CellResult, Failure, RunResult


def make_run() -> RunResult:
    failure = Failure(message="[property] PropertyFailed: gather(x)[0]: values differ", rank=1, ranks=(1,),
                      error_type="PropertyFailed", example="[tensor([0.]), tensor([1.])]",
                      traceback="Traceback ...\nPropertyFailed: <boom & 'quotes'>",
                      reproduce="python -m matrix run --cell gather/bf16/fsdp/w8/gloo/8xH100 --seed 0")
    run = RunResult(preset="quick", settings={"examples": 8, "seed": 0}, environment=results.environment("local"))
    run.results = [
        CellResult("gather/no/fsdp/w8/gloo/8xH100", results.PASSED, 0.5, 8),
        CellResult("gather/bf16/fsdp/w8/gloo/8xH100", results.FAILED, 0.7, 5, failure=failure),
        CellResult("gather/fp8/fsdp/w8/gloo/8xH100", results.XFAILED, 0.1, 1, reason="fp8 needs TE", rules=("fp8-needs-engine",)),
        CellResult("reduce/no/none/w8/gloo/2xT4", results.NOT_APPLICABLE, reason="2xT4 has 2 device(s)",
                   rules=("world-exceeds-devices",)),
        CellResult("reduce/bf16/none/w2/gloo/2xT4", results.XPASSED, 0.2, 8, reason="bf16 none",
                   rules=("bf16-unsupported-gpu",), failure=Failure(message="strict xfail: passed")),
        CellResult("save/no/none/w2/gloo/cpu", results.ERROR, 0.0, failure=Failure(message="RankCrashed: rank 1 died")),
    ]
    run.wall_time = 3.5
    return run
