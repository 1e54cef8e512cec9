"""Benchmark of the pytest harness: world tests under ``pytest -n 8`` against the peers.

Measures, each as a real pytest session in a subprocess (the way users run tests):

1. 200 trivial ``@pytest.mark.world(8)`` tests (the issue's gather example) under ``pytest -n 8``.
2. The same tests written for torch's ``MultiProcessTestCase`` (8 processes spawned per test).
   Spawning 8 ranks costs seconds per test here, so a handful is run and the 200 extrapolated:
   ``fixed session cost + 200 x median per-test time`` of a session of a few tests - the output says so.
3. The same tests as one ``accelerate_lite.debug_launcher(fn, num_processes=8)`` call per test
   (forked ranks per test), extrapolated the same way.
4. Hypothesis examples per second through ``gather`` on 8 ranks (one world(8) ``@given`` test,
   after a warm-up test has started the world; examples counted by the body on rank 0).

Usage: ``python bench/harness.py [--tests 200] [--workers 8] [--examples 300]``.
Goals on the 2-core box: >= 100x faster than spawn per test; >= 100 examples/s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

WORLD_TESTS = '''
import pytest, torch
from accelerate_lite import PartialState
from accelerate_lite.utils import gather

@pytest.mark.parametrize("i", range({count}))
@pytest.mark.world(8)
def test_gather_orders_by_rank(i):
    state = PartialState()
    out = gather(torch.tensor([state.process_index]))
    assert out.tolist() == list(range(state.num_processes))
'''

SPAWN_TESTS = '''
import os, tempfile, torch, torch.distributed as dist
from torch.testing._internal.common_distributed import MultiProcessTestCase
from torch.testing._internal.common_utils import run_tests

class GatherTest(MultiProcessTestCase):
    @property
    def world_size(self):
        return 8

    def setUp(self):
        super().setUp()
        self._spawn_processes()

{methods}
'''

SPAWN_METHOD = '''
    def test_gather_orders_by_rank_{i}(self):
        store = dist.FileStore(self.file_name, self.world_size)
        dist.init_process_group("gloo", store=store, rank=self.rank, world_size=self.world_size)
        out = [torch.zeros(1, dtype=torch.long) for _ in range(self.world_size)]
        dist.all_gather(out, torch.tensor([self.rank]))
        assert [int(t) for t in out] == list(range(self.world_size))
        dist.destroy_process_group()
'''

LAUNCHER_TESTS = '''
import pytest, torch
from accelerate_lite import PartialState, debug_launcher
from accelerate_lite.utils import gather

def body():
    state = PartialState()
    out = gather(torch.tensor([state.process_index]))
    assert out.tolist() == list(range(state.num_processes))

@pytest.mark.parametrize("i", range({count}))
def test_gather_orders_by_rank(i):
    debug_launcher(body, num_processes=8)
'''

HYPOTHESIS_TESTS = '''
import os, pytest, torch
from hypothesis import given, settings, strategies as st
from accelerate_lite import PartialState
from accelerate_lite.utils import gather

@pytest.mark.world(8)
def test_0_warm_up():
    gather(torch.tensor([PartialState().process_index]))

@pytest.mark.world(8)
@settings(max_examples={examples}, database=None)
@given(values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=8))
def test_1_gather_examples(values):
    state = PartialState()
    mine = torch.tensor(values) + state.process_index
    out = gather(mine)
    assert out.shape[0] == len(values) * state.num_processes
    if state.process_index == 0:
        with open(os.environ["BENCH_EXAMPLES_FILE"], "a") as fh:
            fh.write("x\\n")
'''


def _session(directory: Path, *args: str, env: dict | None = None) -> tuple[float, dict]:
    """Run pytest in ``directory``; return (wall seconds, {testcase name: (outcome, seconds)})."""
    junit = directory / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=directory, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    cases = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            failed = any(child.tag in ("failure", "error") for child in case)
            cases[case.get("name")] = ("failed" if failed else "passed", float(case.get("time", 0)))
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"pytest session in {directory} failed (exit {proc.returncode})")
    return wall, cases


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


def harness_session(root: Path, tests: int, workers: int) -> tuple[float, float, float]:
    """Return (session wall, first test's time incl. the world's start, median time of the others)."""
    directory = _write(root / "harness", "test_world.py", WORLD_TESTS.format(count=tests))
    wall, cases = _session(directory, "-n", str(workers))
    assert len(cases) == tests and all(o == "passed" for o, _ in cases.values()), cases
    times = [t for _, t in cases.values()]
    first, rest = max(times), sorted(times)[: len(times) - 1]
    return wall, first, rest[len(rest) // 2]


def extrapolated(make, sample: int, tests: int) -> tuple[float, float]:
    """Return (extrapolated wall for ``tests`` tests, seconds per test) from one session of ``sample`` tests.

    Per test: the median of the tests' own JUnit times; the session's fixed cost (start, collection,
    teardown): its wall minus the tests' times. Both come from the same session.
    """
    wall, cases = _session(make(sample))
    times = sorted(t for _, t in cases.values())
    per_test = times[len(times) // 2]
    return (wall - sum(times)) + tests * per_test, per_test


def spawn_dir(root: Path, count: int) -> Path:
    methods = "".join(SPAWN_METHOD.format(i=i) for i in range(count))
    return _write(root / f"spawn{count}", "test_spawn.py", SPAWN_TESTS.format(methods=methods))


def launcher_dir(root: Path, count: int) -> Path:
    return _write(root / f"launcher{count}", "test_launcher.py", LAUNCHER_TESTS.format(count=count))


def hypothesis_rate(root: Path, examples: int) -> tuple[int, float]:
    directory = _write(root / "hypothesis", "test_hyp.py", HYPOTHESIS_TESTS.format(examples=examples))
    counter = directory / "examples.txt"
    _, cases = _session(directory, "--world-timeout=600", env={"BENCH_EXAMPLES_FILE": str(counter)})
    ran = len(counter.read_text().splitlines())
    return ran, cases["test_1_gather_examples"][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--spawn-sample", type=int, default=2, help="MultiProcessTestCase tests actually run")
    parser.add_argument("--launcher-sample", type=int, default=6, help="debug_launcher tests actually run")
    parser.add_argument("--only", nargs="+", choices=("harness", "spawn", "launcher", "hypothesis"),
                        default=("harness", "spawn", "launcher", "hypothesis"), help="run these parts only")
    args = parser.parse_args()
    ours = spawn = launch = rate = None
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp:
        root = Path(tmp)
        if "harness" in args.only:
            ours, first, median = harness_session(root, args.tests, args.workers)
            print(f"harness: {args.tests} world(8) tests under pytest -n {args.workers}: {ours:.1f} s wall "
                  f"({ours / args.tests * 1000:.0f} ms per test, session start included); "
                  f"first test (starts the world) {first:.1f} s, then median {median * 1000:.0f} ms per test")
        if "spawn" in args.only:
            spawn, spawn_per = extrapolated(lambda k: spawn_dir(root, k), args.spawn_sample, args.tests)
            print(f"MultiProcessTestCase (spawn 8 per test): {spawn_per:.2f} s per test; {args.tests} tests "
                  f"EXTRAPOLATED from a session of {args.spawn_sample} tests: {spawn:.0f} s")
        if "launcher" in args.only:
            launch, launch_per = extrapolated(lambda k: launcher_dir(root, k), args.launcher_sample, args.tests)
            print(f"debug_launcher per test (fork 8 per test): {launch_per:.2f} s per test; {args.tests} tests "
                  f"EXTRAPOLATED from a session of {args.launcher_sample} tests: {launch:.0f} s")
        if "hypothesis" in args.only:
            ran, seconds = hypothesis_rate(root, args.examples)
            rate = ran / seconds
            print(f"hypothesis through gather on 8 ranks: {ran} examples in {seconds:.2f} s = {rate:.0f} examples/s")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if ours and spawn:
        print(f"speedup vs spawn per test (MultiProcessTestCase): {spawn / ours:.0f}x   (goal >= 100x)")
    if ours and launch:
        print(f"speedup vs debug_launcher per test:               {launch / ours:.1f}x")
    if rate:
        print(f"hypothesis examples/s on 8 ranks:                  {rate:.0f}   (goal >= 100)")


if __name__ == "__main__":
    main()
