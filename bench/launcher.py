"""Benchmark accelerate_lite.debug_launcher against upstream accelerate 0.27.2's debug_launcher.

Both fork CPU processes that join one gloo group through a file store. Measured in one run, same
process, same body (PartialState() plus one all_reduce): the time of a whole launch for 2, 4 and 8
processes, and the time until a launch where the last rank raises (while the others wait in a
barrier) has raised in the caller. Prints the median of each and the ratio upstream / ours.

Usage: python bench/launcher.py [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist

UPSTREAM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".upstream")


def body(state_class):
    state = state_class()
    value = torch.ones(1)
    dist.all_reduce(value)
    assert value.item() == state.num_processes


def failing_body(state_class):
    state = state_class()
    if state.process_index == state.num_processes - 1:
        raise ValueError("the last rank fails")
    dist.barrier()


def timed(launch, function, args, size, expect_error):
    start = time.perf_counter()
    try:
        launch(function, args, size)
    except Exception:
        if not expect_error:
            raise
    else:
        if expect_error:
            raise AssertionError("the failing launch did not raise")
    return time.perf_counter() - start


def median_of(reps, *args):
    return statistics.median(timed(*args) for _ in range(reps))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    options = parser.parse_args()

    from accelerate_lite import PartialState, debug_launcher

    sys.path.insert(0, UPSTREAM)
    import accelerate
    from accelerate import PartialState as UpstreamState
    from accelerate import debug_launcher as upstream_launcher

    assert accelerate.__version__ == "0.27.2"
    peers = {"accelerate_lite": (debug_launcher, PartialState), "upstream": (upstream_launcher, UpstreamState)}
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, median of {options.reps} launches (seconds)")
    print(f"{'case':<28}{'accelerate_lite':>16}{'upstream':>12}{'upstream/ours':>15}")
    for label, function, expect_error in (("launch", body, False), ("last rank raises", failing_body, True)):
        for size in (2, 4, 8):
            times = {
                name: median_of(options.reps, launch, function, (state,), size, expect_error)
                for name, (launch, state) in peers.items()
            }
            ratio = times["upstream"] / times["accelerate_lite"]
            print(f"{label + f', {size} processes':<28}{times['accelerate_lite']:>16.3f}{times['upstream']:>12.3f}"
                  f"{ratio:>15.2f}")


if __name__ == "__main__":
    main()
