"""Benchmark: what simulated devices cost per op, as a ratio to the same op on plain CPU tensors.

Peers, all in this process: plain CPU tensors (the baseline), fake npu tensors (PrivateUse1 wrapper
subclass, simulators.fake_device), device tags for cuda (TorchFunctionMode, simulators.device_tags),
and a profile applied without tensors on the device (flags only: should cost nothing). Also the cost
of entering and leaving apply_profile once.

    python bench/fake_device.py [--repeat 5] [--number 2000]
"""

from __future__ import annotations

import argparse
import os
import timeit

import torch

from simulators import apply_profile


def _workloads(device):
    small_a = torch.randn(16, device=device)
    small_b = torch.randn(16, device=device)
    mat = torch.randn(64, 64, device=device)
    linear = torch.nn.Linear(32, 32).to(device)
    batch = torch.randn(8, 32, device=device)

    def train_step():
        linear.zero_grad(set_to_none=True)
        linear(batch).sum().backward()

    return {
        "add (16 elems)": lambda: small_a + small_b,
        "matmul (64x64)": lambda: mat @ mat,
        "Linear fwd+bwd (8x32)": train_step,
    }


def _best(function, repeat, number):
    return min(timeit.repeat(function, repeat=repeat, number=number)) / number


def _measure(workloads, repeat, number):
    return {name: _best(function, repeat, number) for name, function in workloads.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=2000)
    options = parser.parse_args()
    torch.set_num_threads(1)

    results = {"plain CPU": _measure(_workloads("cpu"), options.repeat, options.number)}
    with apply_profile("8xH100", local_rank=3, world_size=8):
        results["8xH100 flags only (CPU tensors)"] = _measure(_workloads("cpu"), options.repeat, options.number)
    with apply_profile("8xAscend910B", local_rank=3, world_size=8) as host:
        results["fake npu tensors (npu:3)"] = _measure(_workloads(host.device), options.repeat, options.number)
    with apply_profile("8xH100", local_rank=3, world_size=8, device_tags=True) as host:
        results["cuda device tags (cuda:3)"] = _measure(_workloads(host.device), options.repeat, options.number)

    def enter_and_leave():
        with apply_profile("8xAscend910B", local_rank=1, world_size=2):
            pass

    enter = _best(enter_and_leave, options.repeat, max(options.number // 20, 10))

    baseline = results["plain CPU"]
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, 1 intra-op thread; best of {options.repeat} x {options.number}")
    header = f"{'peer':34s}" + "".join(f"{name:>28s}" for name in baseline)
    print(header)
    for peer, timings in results.items():
        cells = "".join(
            f"{timings[name] * 1e6:12.1f} us ({timings[name] / baseline[name]:5.1f}x)".rjust(28) for name in baseline
        )
        print(f"{peer:34s}{cells}")
    print(f"apply_profile('8xAscend910B') enter+exit: {enter * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
