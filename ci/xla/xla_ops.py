"""The XLA lane: PartialState and the data ops of accelerate_lite on real torch_xla replicas (PJRT CPU).

Run it in the XLA lane's own environment (ci/xla/setup.sh builds it; ci/xla/run.sh runs this):

    python ci/xla/xla_ops.py --devices 4 8        # driver: one fresh interpreter per device count
    python ci/xla/xla_ops.py --replicas 4         # what the driver runs: 4 replicas, every check on each

On CPU, torch_xla's launcher starts ONE process with one thread per device (CPU_NUM_DEVICES), so the
replicas share the interpreter; the driver therefore runs each world in a child process, reads the
per-replica results the child prints as it goes (xla_checks.py) and still reports every check when a
child aborts (XLA kills a process whose collective never meets) or hangs. A check passes when it
passed on every replica.

Debugging: XLA_LANE_ONLY=state,gather_tensor runs only those checks; XLA_LANE_STACKS_AFTER=9 prints
every thread's Python stack after 9 s (XLA aborts a stuck collective after about 15 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xla_checks import CHECKS, RESULT_PREFIX, run_replicas


def replica_environment(n: int) -> dict:
    """The environment torch_xla needs, set before it is imported (notes/xla.md)."""
    env = dict(os.environ)
    env.update(PJRT_DEVICE="CPU", CPU_NUM_DEVICES=str(n))
    # the execution thread pool defaults to the core count: with fewer threads than replicas a collective
    # waits for replicas that never get a thread, and XLA aborts the process
    env["XLA_THREAD_POOL_SIZE"] = str(max(n, int(env.get("XLA_THREAD_POOL_SIZE") or 0)))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("ACCELERATE_DEBUG_MODE", None)
    return env


def run_world(n: int, timeout: float) -> tuple[dict, str]:
    """Run the n-replica child; return ({check: {rank: error or None}}, how the child ended)."""
    command = [sys.executable, "-u", os.path.abspath(__file__), "--replicas", str(n)]
    results: dict = {}
    started = time.monotonic()
    child = subprocess.Popen(
        command,
        env=replica_environment(n),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    tail: list = []

    def read():
        for line in child.stdout:
            if line.startswith(RESULT_PREFIX):
                record = json.loads(line[len(RESULT_PREFIX) :])
                results.setdefault(record["check"], {})[record["rank"]] = record
                mark = "ok  " if record["ok"] else "FAIL"
                print(
                    f"  [{n} devices] {mark} {record['check']:<32} replica {record['rank']}",
                    flush=True,
                )
            else:
                tail.append(line.rstrip())
                del tail[:-60]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = child.wait(timeout=timeout)
        ended = f"exit status {code}" + (f" (signal {-code})" if code < 0 else "")
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        ended = f"killed after {timeout:.0f} s (hung)"
    reader.join(timeout=10)
    elapsed = time.monotonic() - started
    if not ended.startswith("exit status 0"):
        # XLA's own lines say which collective never met; traceback frames (indented) add nothing
        last = [line for line in tail if line and not line.startswith(" ")][-15:]
        print(f"  [{n} devices] child {ended}; last output:\n    " + "\n    ".join(last), flush=True)
    return results, f"{ended}, {elapsed:.1f} s"


def summarise(n: int, results: dict, ended: str) -> tuple[int, int, list]:
    """Per check: passed when every replica reported it passed. Returns (passed, failed, failure texts)."""
    passed, failed, failures = 0, 0, []
    names = [name for name, _ in CHECKS] + ["state_process_indices_distinct"]
    indices = sorted(rec.get("process_index", -1) for rec in results.get("state", {}).values())
    results["state_process_indices_distinct"] = {
        -1: {
            "ok": indices == list(range(n)),
            "error": None if indices == list(range(n)) else f"process indices {indices}",
        }
    }
    if "setup" in results:
        names.insert(0, "setup")
    for name in names:
        by_rank = results.get(name, {})
        expected_ranks = [-1] if name in ("state_process_indices_distinct", "setup") else list(range(n))
        missing = [rank for rank in expected_ranks if rank not in by_rank]
        errors = {rank: rec["error"] for rank, rec in by_rank.items() if not rec["ok"]}
        if name == "setup":
            missing = []
        if not missing and not errors:
            passed += 1
            continue
        failed += 1
        text = f"[{n} devices] {name}: "
        if missing:
            text += f"no result from replicas {missing} (child {ended}). "
        for rank, error in sorted(errors.items()):
            text += f"\n  replica {rank}: " + (error or "").strip().splitlines()[-1]
        failures.append((text, errors))
    return passed, failed, failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--devices",
        type=int,
        nargs="+",
        default=[4, 8],
        help="device counts to run (driver)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        help="run the replicas of one world (what the driver runs)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("XLA_LANE_TIMEOUT", "900")),
        help="seconds one world may take before it counts as hung",
    )
    parser.add_argument("--verbose", action="store_true", help="print each failure's whole traceback")
    args = parser.parse_args(argv)
    if args.replicas:
        run_replicas(args.replicas)
        return 0
    total_passed = total_failed = 0
    all_failures = []
    for n in args.devices:
        print(
            f"== XLA lane: {n} devices (PJRT_DEVICE=CPU, CPU_NUM_DEVICES={n})",
            flush=True,
        )
        results, ended = run_world(n, args.timeout)
        passed, failed, failures = summarise(n, results, ended)
        print(
            f"== {n} devices: {passed} passed, {failed} failed (child {ended})",
            flush=True,
        )
        total_passed += passed
        total_failed += failed
        all_failures += failures
    for text, errors in all_failures:
        print("FAILED " + text)
        if args.verbose:
            for rank, error in sorted(errors.items()):
                print(f"--- replica {rank}:\n{error}")
    print(f"XLA lane summary: {total_passed} passed, {total_failed} failed")
    return 1 if total_failed else 0


if __name__ == "__main__":
    sys.exit(main())
