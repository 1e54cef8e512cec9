"""Benchmark: accelerate_lite's data ops vs raw torch.distributed calls vs upstream accelerate, in one world.

Cases: a dict of 8 tensors (1024x64 fp32 each), a single small tensor (1 MiB), a single large tensor
(256 MiB on GPU, 16 MiB on CPU by default). Ops: gather, reduce (mean), broadcast, pad_across_processes
(ragged: rank r holds r more rows). "raw" is what a user would write with torch.distributed, one call
per tensor (all_gather_into_tensor on device backends, all_gather of a list on gloo). "upstream" is
accelerate's operations (from /work/main/.upstream when present, else the installed `accelerate`;
the column is skipped with a note when neither imports).

Timing: the implementations take turns, round after round (who goes first rotates), so drift on a
shared machine hits them alike; each number is the median over rounds of (loop time / iterations), on rank 0, between barriers.

Usage:
    python bench/ops.py                       # 4-rank gloo world on this machine (spawned)
    python bench/ops.py --world 2 --large-mib 4
    torchrun --nproc_per_node=2 bench/ops.py --backend nccl   # 2 GPUs, one process each
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist

UPSTREAM_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".upstream")
OPS = ("gather", "reduce", "broadcast", "pad_across_processes")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    parser.add_argument("--world", type=int, default=None, help="ranks to spawn (default 4 for gloo; ignored under torchrun)")
    parser.add_argument("--large-mib", type=float, default=None, help="size of the large tensor (default 16 on CPU, 256 on GPU)")
    parser.add_argument("--small-mib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--cases", default="dict8,small,large")
    parser.add_argument("--no-upstream", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser.parse_args(argv)


# --- inputs ---------------------------------------------------------------------------------


def make_case(name: str, args, rank: int, device, ragged: bool):
    """The input of `name` on `rank` (ragged: rank r has r more rows, for pad_across_processes)."""
    extra = rank if ragged else 0
    if name == "dict8":
        return {f"t{i}": torch.full((1024 + extra, 64), float(rank + i), device=device) for i in range(8)}
    mib = args.small_mib if name == "small" else args.large_mib
    rows = max(1, int(mib * 2**20 / 4 / 1024))
    return torch.full((rows + extra, 1024), float(rank), device=device)


def _leaves(data):
    return list(data.values()) if isinstance(data, dict) else [data]


def _rebuild(data, leaves):
    return dict(zip(data.keys(), leaves)) if isinstance(data, dict) else leaves[0]


# --- raw torch.distributed ------------------------------------------------------------------


def raw_ops(backend: str, world: int):
    def gather_one(t):
        if backend != "gloo":
            out = torch.empty((world * t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
            dist.all_gather_into_tensor(out, t)
            return out
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t)
        return torch.cat(parts)

    def reduce_one(t):
        out = t.clone()
        dist.all_reduce(out)
        return out.div_(world)

    def broadcast_one(t):
        dist.broadcast(t, src=0)
        return t

    def pad_one(t):
        sizes = gather_one(torch.tensor([t.shape[0]], device=t.device))
        size = int(sizes.max())
        if size == t.shape[0]:
            return t
        out = t.new_zeros((size, *t.shape[1:]))
        out[: t.shape[0]] = t
        return out

    per_tensor = {"gather": gather_one, "reduce": reduce_one, "broadcast": broadcast_one, "pad_across_processes": pad_one}
    return {op: (lambda data, f=f: _rebuild(data, [f(t) for t in _leaves(data)])) for op, f in per_tensor.items()}


def lite_ops():
    from accelerate_lite.state import PartialState
    from accelerate_lite.utils import operations

    PartialState()
    return {op: getattr(operations, op) for op in OPS}


def upstream_ops(backend: str):
    """accelerate's ops, or (None, reason)."""
    if os.path.isdir(UPSTREAM_PATH):
        sys.path.insert(0, os.path.abspath(UPSTREAM_PATH))
    try:
        import accelerate
        from accelerate import PartialState
        from accelerate.utils import operations
    except Exception as error:  # noqa: BLE001 - any import failure means: no upstream column
        return None, f"upstream accelerate not importable ({type(error).__name__}: {error})"
    PartialState(cpu=backend == "gloo")
    return {op: getattr(operations, op) for op in OPS}, f"accelerate {accelerate.__version__} from {os.path.dirname(accelerate.__file__)}"


# --- timing ---------------------------------------------------------------------------------


def iterations_for(case: str, device) -> int:
    if device.type == "cuda":
        return {"dict8": 50, "small": 100, "large": 10}[case]
    return {"dict8": 10, "small": 10, "large": 3}[case]


def time_loop(fn, data, iterations: int, device) -> float:
    dist.barrier()
    start = time.perf_counter()
    for _ in range(iterations):
        fn(data)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dist.barrier()
    return (time.perf_counter() - start) / iterations


def bench(args, rank: int, world: int, device):
    impls = {"lite": lite_ops(), "raw": raw_ops(args.backend, world)}
    upstream, note = (None, "skipped (--no-upstream)") if args.no_upstream else upstream_ops(args.backend)
    if upstream is not None:
        impls["upstream"] = upstream
    results = []
    for case in args.cases.split(","):
        for op in args.ops.split(","):
            data = make_case(case, args, rank, device, ragged=op == "pad_across_processes")
            iterations = iterations_for(case, device)
            times = {name: [] for name in impls}
            for name, ops in impls.items():  # warm-up (allocator, NCCL channels, caches)
                time_loop(ops[op], data, 1, device)
            order = list(impls)
            for round_index in range(args.rounds):
                shift = round_index % len(order)  # rotate who goes first: no one always pays the round's cold start
                for name in order[shift:] + order[:shift]:
                    times[name].append(time_loop(impls[name][op], data, iterations, device))
            results.append({"case": case, "op": op, **{name: statistics.median(t) for name, t in times.items()}})
            del data
    return results, note


def report(results, note: str, args, world: int, device) -> str:
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    lines = [
        f"bench/ops.py: backend {args.backend}, {world} ranks, device {card}, torch {torch.__version__}",
        f"large tensor {args.large_mib} MiB, small {args.small_mib} MiB, dict8 = 8 x (1024x64 fp32); median of {args.rounds} rounds",
        f"upstream: {note}",
        "",
        f"{'case':<7} {'op':<21} {'lite ms':>9} {'raw ms':>9} {'upstream ms':>12} {'lite/raw':>9} {'upstream/lite':>14}",
    ]
    for r in results:
        lite, raw, up = r["lite"], r["raw"], r.get("upstream")
        up_ms = f"{up * 1e3:12.3f}" if up else f"{'-':>12}"
        up_ratio = f"{up / lite:14.2f}" if up else f"{'-':>14}"
        lines.append(f"{r['case']:<7} {r['op']:<21} {lite * 1e3:9.3f} {raw * 1e3:9.3f} {up_ms} {lite / raw:9.2f} {up_ratio}")
    lines.append("")
    lines.append("lite/raw < 1: faster than raw per-tensor calls; upstream/lite > 1: faster than upstream.")
    return "\n".join(lines)


# --- world ----------------------------------------------------------------------------------


def rank_main(args, rank: int = None, world: int = None, port: int = None, rendezvous: str = None):
    if rank is not None:  # spawned here: play torchrun
        os.environ.update(
            RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        )
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if args.backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    # spawned ranks meet through a file: a port picked in advance can be taken by another process meanwhile
    init_method = f"file://{rendezvous}" if rendezvous else None
    dist.init_process_group(args.backend, init_method=init_method, rank=rank, world_size=world)
    try:
        results, note = bench(args, rank, world, device)
        if rank == 0:
            print(report(results, note, args, world, device), flush=True)
            if args.json:
                with open(args.json, "w") as handle:
                    json.dump({"backend": args.backend, "world": world, "results": results, "upstream": note}, handle, indent=1)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv=None):
    args = parse_args(argv)
    on_gpu = args.backend == "nccl"
    if args.large_mib is None:
        args.large_mib = 256.0 if on_gpu else 16.0
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    if "RANK" in os.environ:  # under torchrun
        rank_main(args)
        return
    world = args.world or (torch.cuda.device_count() if on_gpu else 4)
    with tempfile.TemporaryDirectory(prefix="bench-ops-") as workdir:
        torch.multiprocessing.start_processes(
            _spawned, args=(args, world, _free_port(), os.path.join(workdir, "rendezvous")), nprocs=world, join=True, start_method="spawn"
        )


def _spawned(rank: int, args, world: int, port: int, rendezvous: str):
    rank_main(args, rank, world, port, rendezvous)


if __name__ == "__main__":
    main()
