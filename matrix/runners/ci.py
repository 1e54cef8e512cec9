"""The CI runner: a GitHub Actions matrix of real-hardware jobs, each running its slice of the cells.

`python -m matrix ci-matrix` prints `{"include": [...]}` for `strategy.matrix` (see
ci/github/matrix.yml). Each entry is one runner (labels from RUNNERS) and the `python -m matrix run`
arguments that select that hardware's cells with its native backend on real devices, so a cell id
run there (`gather/bf16/fsdp/w8/nccl/8xH100`) lines up with its simulated twin (`.../gloo/8xH100`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import axes
from ..exclusions import get_profile
from ..presets import get_preset


@dataclass(frozen=True)
class RunnerSpec:
    """A kind of real machine in CI: its runner labels, native backend and setup."""

    hardware: str
    runs_on: tuple[str, ...]
    backend: str
    setup: str = ""  # extra shell run before the matrix (vendor packages)


RUNNERS: tuple[RunnerSpec, ...] = (
    RunnerSpec("cpu", ("ubuntu-latest",), "gloo"),
    RunnerSpec("8xA100-80GB", ("self-hosted", "linux", "x64", "gpu", "a100-80gb-x8"), "nccl"),
    RunnerSpec("8xH100", ("self-hosted", "linux", "x64", "gpu", "h100-x8"), "nccl"),
    RunnerSpec("2xT4", ("self-hosted", "linux", "x64", "gpu", "t4-x2"), "nccl"),
    RunnerSpec("8xAscend910B", ("self-hosted", "linux", "arm64", "npu", "ascend910b-x8"), "hccl",
               "pip install torch-npu"),
    RunnerSpec("4xMax1550", ("self-hosted", "linux", "x64", "xpu", "max1550-x4"), "ccl",
               "pip install intel-extension-for-pytorch oneccl_bind_pt"),
    RunnerSpec("tpu-v4-8", ("self-hosted", "linux", "tpu", "v4-8"), "xla", "pip install torch_xla[tpu]"),
    RunnerSpec("mps-m2", ("macos-14",), "gloo"),
)
RUNNER_BY_HARDWARE = {spec.hardware: spec for spec in RUNNERS}


def _values(cells, axis) -> list:
    present = {getattr(cell, axis) for cell in cells}
    return [value for value in axes.axis_values(axis) if value in present]


def runner_arguments(spec: RunnerSpec, preset: str) -> str:
    """The `python -m matrix run` arguments of one runner: the preset's ops/precisions/plugins,
    world sizes 2 and the full machine, on the runner's own backend and real devices."""
    cells = get_preset(preset).cells()
    profile = get_profile(spec.hardware)
    worlds = sorted({1 if profile.kind == "mps" else 2, 1 if profile.kind == "mps" else max(2, profile.count)}
                    if spec.hardware != "cpu" else {2, 4})
    parts = ["--all-cells", f"--hardware {spec.hardware}", f"--backend {spec.backend}"]
    for axis in ("op", "precision", "plugin"):
        values = _values(cells, axis)
        if len(values) < len(axes.axis_values(axis)):  # all values: no option needed
            parts.append(f"--{axis} {','.join(values)}")
    parts += [f"--world {','.join(str(w) for w in worlds)}", f"--examples {get_preset(preset).resolved('examples')}"]
    if spec.hardware != "cpu":
        parts.append("--real")
    return " ".join(parts)


def github_matrix(preset: str = "ci", hardware: list[str] | None = None) -> dict:
    """The `strategy.matrix` object for GitHub Actions: one include entry per runner.

    Args:
        preset: the preset whose ops, precisions and plugins each runner covers.
        hardware: only these hardware ids (default: every runner in RUNNERS).

    Returns:
        {"include": [{"hardware", "runs-on", "backend", "setup", "args"}]}

    Example:
        >>> github_matrix("ci", ["8xH100"])["include"][0]["backend"]
        'nccl'
    """
    chosen = hardware or [spec.hardware for spec in RUNNERS]
    include = []
    for name in chosen:
        axes.check_axis_value("hardware", name)
        spec = RUNNER_BY_HARDWARE[name]
        include.append({
            "hardware": spec.hardware, "runs-on": list(spec.runs_on), "backend": spec.backend,
            "setup": spec.setup, "args": runner_arguments(spec, preset),
        })
    return {"include": include}
