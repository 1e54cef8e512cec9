"""Benchmark simulators.World against starting a fresh multi-process world per call.

Measures, on this machine, in one run:
- per-call overhead of a trivial SPMD call on a warm 8-rank World;
- the same call on a fresh torch.multiprocessing.spawn world per call (what torch's
  MultiProcessTestCase does: spawn + init_process_group over a FileStore + destroy);
- the same call through upstream accelerate 0.27.2's debug_launcher (fork + PartialState);
- cold start of an 8-rank World (first ever, which starts the zygote, and later ones);
- rebuild after a failure (a rank that exits) until the next call has succeeded;
- latency of small and 1 MiB all_reduce / all_gather / broadcast inside the 8-rank World.

Usage: python bench/world.py [--ranks 8] [--calls 300] [--peer-reps 1] [--skip-peers]
The peers run first, before any World exists in this process (debug_launcher forks it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

UPSTREAM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".upstream")


# --- bodies (module level: the World finds them by this file's path) -----------------------


def trivial():
    return dist.get_rank()


def exit_on_rank_three():
    if dist.get_rank() == 3:
        os._exit(3)
    return dist.get_rank()


def collective_latency(op: str, numel: int, iters: int) -> float:
    size, rank = dist.get_world_size(), dist.get_rank()
    tensor = torch.ones(numel)
    gathered = [torch.empty(numel) for _ in range(size)]

    def once():
        if op == "all_reduce":
            dist.all_reduce(tensor)
        elif op == "all_gather":
            dist.all_gather(gathered, tensor)
        else:
            dist.broadcast(tensor, src=0)

    for _ in range(3):
        once()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(iters):
        once()
    elapsed = (time.perf_counter() - start) / iters
    del rank
    return elapsed


def _spawn_body(rank: int, size: int, init_file: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    trivial()
    dist.barrier()
    dist.destroy_process_group()


def _upstream_body():
    from accelerate import PartialState  # upstream 0.27.2, from .upstream

    state = PartialState()
    state.wait_for_everyone()
    return state.process_index


# --- measurements ---------------------------------------------------------------------------


def _timed(fn, reps: int) -> list:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def spawn_per_call(ranks: int, reps: int) -> float:
    def once():
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(_spawn_body, args=(ranks, os.path.join(tmp, "init")), nprocs=ranks, join=True)

    return statistics.median(_timed(once, reps))


def debug_launcher_per_call(ranks: int, reps: int) -> float:
    sys.path.insert(0, UPSTREAM)
    try:
        from accelerate import debug_launcher

        return statistics.median(_timed(lambda: debug_launcher(_upstream_body, num_processes=ranks), reps))
    finally:
        sys.path.remove(UPSTREAM)


def _rebuild_numbers(world, label: str, pause: float) -> dict:
    """Median time from a failing call's start to its error, and to the next call's success."""
    from simulators import RankCrashed

    reported, recovered = [], []
    world.run(trivial)
    for _ in range(3):
        time.sleep(pause)  # with a standby: time for its ranks to join their group
        start = time.perf_counter()
        try:
            world.run(exit_on_rank_three)
        except RankCrashed:
            pass
        failed = time.perf_counter()
        world.run(trivial)
        reported.append(failed - start)
        recovered.append(time.perf_counter() - start)
    world.close()
    return {f"failure reported ({label})": statistics.median(reported),
            f"rebuild after failure ({label})": statistics.median(recovered)}


def world_numbers(ranks: int, calls: int) -> dict:
    from simulators import World

    numbers = {}
    start = time.perf_counter()
    world = World(ranks)
    world.run(trivial)
    numbers["first world (starts the zygote)"] = time.perf_counter() - start
    world.close()
    cold = []
    for _ in range(3):
        start = time.perf_counter()
        world = World(ranks)
        world.run(trivial)
        cold.append(time.perf_counter() - start)
        world.close()
    numbers["cold start"] = statistics.median(cold)

    world = World(ranks)
    for _ in range(20):
        world.run(trivial)
    per_call = _timed(lambda: world.run(trivial), calls)
    numbers["warm call"] = statistics.median(per_call)
    numbers["warm call mean"] = statistics.fmean(per_call)

    for label, pause, standby in (("standby ready", 3.0, True), ("back to back", 0.0, True),
                                  ("no standby", 1.0, False)):
        numbers.update(_rebuild_numbers(World(ranks, standby=standby), label, pause))

    latencies = {}
    for op in ("all_reduce", "all_gather", "broadcast"):
        for label, numel, iters in (("4 B", 1, 200), ("1 MiB", 262144, 20)):
            latencies[(op, label)] = max(world.run(collective_latency, op, numel, iters, timeout=120))
    world.close()
    numbers["collectives"] = latencies
    return numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--peer-reps", type=int, default=1)
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()

    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} "
          f"(shared box: other sessions' work runs at the same time), torch {torch.__version__}")
    peers = {}
    if not args.skip_peers:
        peers["spawn per call (MultiProcessTestCase-style)"] = spawn_per_call(args.ranks, args.peer_reps)
        upstream = debug_launcher_per_call(args.ranks, args.peer_reps)
        peers["upstream accelerate 0.27.2 debug_launcher per call"] = upstream
    numbers = world_numbers(args.ranks, args.calls)

    ms = 1000.0
    print(f"\n{args.ranks}-rank world, trivial SPMD call (return dist.get_rank())")
    print(f"  warm World.run            {numbers['warm call'] * ms:9.2f} ms median "
          f"({numbers['warm call mean'] * ms:.2f} ms mean over {args.calls})   goal <= 3 ms")
    for name, seconds in peers.items():
        ratio = seconds / numbers["warm call"]
        goal = "   goal >= 1000x" if name.startswith("spawn") else ""
        print(f"  {name:<52} {seconds * ms:9.0f} ms   = {ratio:,.0f}x the warm call{goal}")
    first = numbers["first world (starts the zygote)"]
    print(f"\n  first World ever (zygote start + fork + group) {first * ms:7.0f} ms")
    print(f"  cold start of a World (zygote warm)            {numbers['cold start'] * ms:7.0f} ms   goal <= 1500 ms")
    for label in ("standby ready", "back to back", "no standby"):
        reported, rebuilt = numbers[f"failure reported ({label})"], numbers[f"rebuild after failure ({label})"]
        print(f"  failure (a rank exits) -> error raised, {label:<14} {reported * ms:7.0f} ms")
        print(f"  failure -> next call succeeded, {label:<14}        {rebuilt * ms:7.0f} ms   goal <= 500 ms")
    print(f"\ncollective latency in the {args.ranks}-rank World (slowest rank, per op)")
    for (op, label), seconds in numbers["collectives"].items():
        print(f"  {op:<11} {label:>6}  {seconds * 1e6:10.0f} us")
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")


if __name__ == "__main__":
    main()
