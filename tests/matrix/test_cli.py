"""`python -m matrix` as a user runs it, from a directory outside the project."""

import json
import subprocess
import sys

import pytest
from matrix_fixtures import make_run

from matrix.cli import main


def matrix(*args, cwd):
    return subprocess.run([sys.executable, "-m", "matrix", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow  # a fresh interpreter imports torch
def test_list_shows_cells_verdicts_and_the_exclusion_table(tmp_path):
    done = matrix("list", "--op", "gather", "--world", "8", "--hardware", "2xT4,8xH100", "--precision", "bf16",
                  "--all-cells", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "gather/bf16/none/w8/gloo/8xH100\n" in out
    assert "gather/bf16/none/w8/gloo/2xT4  n/a: 2xT4 has 2 device(s)" in out
    for rule in ("world-exceeds-devices", "fp8-needs-engine", "bf16-unsupported-gpu", "megatron-needs-cuda"):
        assert rule in out
    assert "60 cells:" in out  # 6 plugins x 5 backends x 2 profiles


def test_list_presets_shows_sizes(tmp_path):
    done = matrix("list", "--presets", cwd=tmp_path)
    assert done.returncode == 0 and "quick" in done.stdout and "thorough" in done.stdout


@pytest.mark.slow  # a fresh interpreter imports torch
def test_ci_matrix_is_json_for_github_actions(tmp_path):
    done = matrix("ci-matrix", "--hardware", "8xH100,tpu-v4-8", cwd=tmp_path)
    include = json.loads(done.stdout)["include"]
    assert [e["hardware"] for e in include] == ["8xH100", "tpu-v4-8"]
    assert include[0]["backend"] == "nccl" and "--real" in include[0]["args"] and "--world 2,8" in include[0]["args"]
    assert include[1]["backend"] == "xla" and "torch_xla" in include[1]["setup"]


def test_bad_selection_exits_2_with_the_valid_values(tmp_path, capsys):
    assert main(["run", "--op", "gathr", "--out", str(tmp_path)]) == 2
    assert "expected one of: gather" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter imports torch
def test_report_rerenders_saved_results_and_exits_1_on_failures(tmp_path):
    make_run().save(tmp_path)
    done = matrix("report", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1
    assert "first failing rank: 1" in done.stdout
    assert (tmp_path / "index.html").exists() and (tmp_path / "junit.xml").exists()


def test_report_of_missing_results_says_how_to_make_them(tmp_path):
    done = matrix("report", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert done.returncode == 2 and "python -m matrix run" in done.stderr
