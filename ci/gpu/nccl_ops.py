"""accelerate_lite's data ops on real GPUs with NCCL: one process per GPU, tensors on cuda.

Runs under torchrun (ci/gpu/nccl_ops.sh starts it). Every rank runs the same SPMD checks as the gloo
test suite (tests/accelerate_lite/ops_spmd.py): hypothesis-drawn nested structures of every dtype
checked against the harness oracles for gather/reduce/broadcast/pad_across_processes/gather_object/
broadcast_object_list/copy_tensor_to_devices, the debug-mode mismatch cases (raised on every rank),
the coalescing counts, and bad arguments. Rank 0 prints one PASS/FAIL line per check and a summary;
the exit code is non-zero when any check failed on any rank.

    torchrun --nproc_per_node=2 ci/gpu/nccl_ops.py [--examples 40]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "accelerate_lite")]

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


def checks(examples: int, world_size: int):
    import ops_spmd  # noqa: PLC0415 (found through the sys.path entry above)

    bad = world_size - 1
    yield "every op vs oracle, fp32/fp64/int/bool/complex", lambda: _examples_ran(ops_spmd.check_collectives(examples, "no"), examples)
    yield "every op vs oracle, fp16", lambda: _examples_ran(ops_spmd.check_collectives(examples, "fp16"), examples)
    yield "every op vs oracle, bf16", lambda: _examples_ran(ops_spmd.check_collectives(examples, "bf16"), examples)
    yield f"debug mode: mismatch on rank {bad} raises on every rank", lambda: _debug_cases(ops_spmd, bad)
    yield "debug mode: agreeing inputs pass", ops_spmd.check_debug_agreeing_inputs_pass
    yield "coalescing: 9 tensors, 1 gather / 1 broadcast / 2 reduces", lambda: _counts(ops_spmd.check_collective_counts())
    yield "bad arguments raise on every rank, world usable after", lambda: _invalid(ops_spmd.check_invalid_collective_arguments())


def _examples_ran(count, expected):
    assert count == expected, f"ran {count} examples, expected {expected}"
    return f"{count} examples"


def _debug_cases(ops_spmd, bad):
    seen = ops_spmd.check_all_debug_cases(bad)
    slowest = 0.0
    for case, outcome in seen.items():
        assert outcome["raised"] == "DistributedOperationException", f"{case}: {outcome}"
        assert "Input shapes:" in outcome["message"], f"{case}: {outcome['message']}"
        slowest = max(slowest, outcome["seconds"])
    return f"{len(seen)} cases, slowest {slowest:.2f} s"


def _counts(counts):
    assert counts == {"gather": 1, "broadcast": 1, "reduce": 2, "tensors": 9}, counts
    return str(counts)


def _invalid(seen):
    expected = {
        "gather([t, 'text'])": "TypeError",
        "reduce({'a': 'text'})": "TypeError",
        "reduce(int, 'mean')": "TypeError",
        "broadcast(t, from_process=world_size)": "ValueError",
        "broadcast_object_list([1], from_process=-1)": "ValueError",
        "copy_tensor_to_devices(t on every rank)": "ValueError",
        "gather_object(5)": "TypeError",
    }
    got = {name: (seen[name] or ("no error",))[0] for name in expected}
    assert got == expected, got
    assert seen["afterwards"] == list(range(dist.get_world_size())), seen["afterwards"]
    return "7 cases"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="accelerate_lite data ops on NCCL")
    parser.add_argument("--examples", type=int, default=40, help="hypothesis examples per property check")
    parser.add_argument("--allow-cpu", action="store_true", help="dry run on a CPU gloo world (to test this script)")
    args = parser.parse_args(argv)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")

    from accelerate_lite.state import PartialState  # noqa: PLC0415

    state = PartialState()
    rank, world = state.process_index, state.num_processes
    header = f"{state.distributed_type} backend={state.backend} world={world} device={state.device}"
    if rank == 0:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
        print(f"nccl_ops: {header}; torch {torch.__version__}; GPUs {names}", flush=True)
    problems = []
    if not args.allow_cpu and (state.backend != "nccl" or state.device.type != "cuda"):
        problems.append(f"expected MULTI_GPU with nccl on cuda, got {header}")

    results = []
    for name, check in checks(args.examples, world):
        start = time.perf_counter()
        try:
            detail, ok = check(), True
        except Exception as error:  # noqa: BLE001 - reported per check
            detail, ok = "".join(traceback.format_exception_only(type(error), error)).strip()[-2000:], False
        results.append((name, ok, detail, time.perf_counter() - start))
    everyone = [None] * world
    dist.all_gather_object(everyone, (results, problems))
    failed = passed = 0
    if rank == 0:
        for index, (name, _, _, seconds) in enumerate(results):
            per_rank = [rank_results[index] for rank_results, _ in everyone]
            ok = all(r[1] for r in per_rank)
            passed, failed = passed + ok, failed + (not ok)
            print(f"{'PASS' if ok else 'FAIL'}  {name}  ({str(per_rank[0][2]) + '; ' if ok else ''}{seconds:.1f} s)", flush=True)
            for r, outcome in enumerate(per_rank):
                if not outcome[1]:
                    print(f"      rank {r}: {outcome[2]}", flush=True)
        for r, (_, rank_problems) in enumerate(everyone):
            for problem in rank_problems:
                failed += 1
                print(f"FAIL  rank {r}: {problem}", flush=True)
        print(f"NCCL ops summary: {passed} passed, {failed} failed", flush=True)
    verdict = [failed]
    dist.broadcast_object_list(verdict, src=0)
    dist.destroy_process_group()
    return 1 if verdict[0] else 0


if __name__ == "__main__":
    sys.exit(main())
