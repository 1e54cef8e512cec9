"""``pytest -n N``: world tests share one world on one worker; the process count stays ~2N+2.

Each case starts N xdist workers that import torch, on a 2-core box: a few cases only, all slow.
"""

import re
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.owns_worlds]

BODIES = '''
import os, pytest, torch, torch.distributed as dist

@pytest.mark.parametrize("i", range(3))
@pytest.mark.world(2)
def test_w2(i, rank):
    t = torch.ones(1); dist.all_reduce(t); assert int(t) == 2

@pytest.mark.parametrize("i", range(3))
@pytest.mark.world({n})
def test_wn(i, rank, world_size):
    t = torch.ones(1); dist.all_reduce(t); assert int(t) == world_size == {n}

@pytest.mark.world({n})
def test_wn_fails_on_rank_1(rank):
    assert rank != 1

@pytest.mark.parametrize("i", range(6))
def test_plain(i):
    assert os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw")
'''

# Counts the controller's descendant processes while the session runs (workers, zygote, ranks).
CONFTEST = '''
import os, threading, time, psutil
PEAK = [1]
def _watch():
    me = psutil.Process(os.getpid())
    while True:
        try:
            PEAK[0] = max(PEAK[0], 1 + len(me.children(recursive=True)))
        except psutil.Error:
            pass
        time.sleep(0.05)
def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        threading.Thread(target=_watch, daemon=True).start()
def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        with open("peak.txt", "w") as fh:
            fh.write(str(PEAK[0]))
'''


def _write(directory, n):
    (directory / "test_bodies.py").write_text(BODIES.replace("{n}", str(n)))
    (directory / "conftest.py").write_text(CONFTEST)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_world_tests_share_one_worker_and_the_process_count_stays_bounded(tmp_path_factory, runs, n):
    directory = tmp_path_factory.mktemp(f"xdist{n}")
    _write(directory, n)
    others = None
    if n == 2:  # a second pytest run at the same time: its worlds must not meet ours (ports, stores)
        other_dir = tmp_path_factory.mktemp("concurrent")
        _write(other_dir, 2)
        others = (other_dir, *runs.start(other_dir))
    run = runs.run(directory, "-n", str(n), "-v", "--world-timeout=300")
    assert len(run.cases) == 3 + 3 + 1 + 6  # one report per test, not one per rank
    assert run.outcome("test_wn_fails_on_rank_1") == "failed"
    assert "rank 1 failed: AssertionError" in run.text("test_wn_fails_on_rank_1")
    assert all(outcome == "passed" for name, (outcome, _) in run.cases.items() if name != "test_wn_fails_on_rank_1")
    world_workers = set(re.findall(r"\[(gw\d+)\] \[ *\d+%\] \w+ test_bodies.py::test_w", run.output))
    assert len(world_workers) == 1, run.output
    # Steady state: controller + n workers + the world's zygote + its n ranks = 2n + 2. Two more are
    # allowed for ranks being reaped while the world is rebuilt after the failing test.
    peak = int((directory / "peak.txt").read_text())
    assert peak <= 2 * n + 2 + 2, f"{peak} processes for -n {n}"
    deadline = time.monotonic() + 15  # workers, zygote and ranks are all gone after the session
    while runs.tagged(run.tag) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert runs.tagged(run.tag) == []
    if others is not None:
        other = runs.finish(*others)
        assert other.outcome("test_w2[0]") == "passed" and other.outcome("test_wn[2]") == "passed", other.output
        assert other.outcome("test_wn_fails_on_rank_1") == "failed"
