"""The XLA lane: ci/xla/run.sh runs PartialState and the data ops on real torch_xla replicas (PJRT CPU).

torch_xla needs its own torch (2.9.0), so the lane lives in a separate virtual environment built by
ci/xla/setup.sh; this test runs the lane through that environment's python and skips, saying how to
build it, where it does not exist.
"""

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "ci" / "xla" / "run.sh"
SETUP = REPO / "ci" / "xla" / "setup.sh"
VENV = Path(os.environ.get("ACCELERATE_LITE_XLA_VENV", "/work/xla-venv"))
PYTHON = Path(os.environ.get("ACCELERATE_LITE_XLA_PYTHON", VENV / "bin" / "python"))
# Device counts to run, e.g. ACCELERATE_LITE_XLA_DEVICES="4 8" (each world costs a fresh interpreter).
DEVICES = os.environ.get("ACCELERATE_LITE_XLA_DEVICES", "4 8").split()
SUMMARY = re.compile(r"^XLA lane summary: (\d+) passed, (\d+) failed$", re.MULTILINE)


def _lane_is_installed() -> bool:
    """Whether PYTHON exists and finds torch_xla and accelerate_lite (asked without importing them)."""
    if not PYTHON.exists():
        return False
    probe = (
        "import importlib.util as u, sys; sys.exit(not (u.find_spec('torch_xla') and u.find_spec('accelerate_lite')))"
    )
    return subprocess.run([str(PYTHON), "-c", probe], capture_output=True, timeout=120, check=False).returncode == 0


def _number_of_checks() -> int:
    """How many checks one world runs (read from the lane's checks; importing them needs no torch_xla)."""
    spec = importlib.util.spec_from_file_location("xla_checks", REPO / "ci" / "xla" / "xla_checks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return len(module.CHECKS) + 1  # + the driver's check that the replicas' process indices are distinct


@pytest.mark.slow
@pytest.mark.skipif(
    not _lane_is_installed(),
    reason=f"no XLA lane environment (torch_xla and accelerate_lite) at {PYTHON}: create it with `{SETUP.relative_to(REPO)}` "
    f"(a venv with torch 2.9.0 + torch_xla 2.9.0, ~4 GB download, 3-7 minutes), "
    f"or point ACCELERATE_LITE_XLA_PYTHON at its python",
)
def test_data_ops_pass_on_every_xla_replica():
    env = {**os.environ, "ACCELERATE_LITE_XLA_PYTHON": str(PYTHON)}
    timeout = float(os.environ.get("XLA_LANE_TIMEOUT", "900"))
    done = subprocess.run(
        ["bash", str(RUN), *DEVICES],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout * len(DEVICES) + 120,
    )
    output = done.stdout + done.stderr
    summary = SUMMARY.search(done.stdout)
    assert summary, f"run.sh printed no summary (exit status {done.returncode}):\n{output[-6000:]}"
    passed, failed = map(int, summary.groups())
    assert (passed, failed) == (_number_of_checks() * len(DEVICES), 0), output[-6000:]
    assert done.returncode == 0, output[-6000:]
