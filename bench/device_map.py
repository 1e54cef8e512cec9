"""Benchmark: infer_auto_device_map of accelerate_lite vs upstream accelerate 0.27.2, on meta models.

Shapes: a 70B-like dense decoder (80 layers of a no-split decoder class) and a large mixture-of-experts
model (60 layers x 256 experts, about 60k modules, split down to leaves). Both get budgets that force
placement over several GPUs, then cpu, then disk. Prints both times, the ratio, and whether the maps are
identical. Upstream is imported from /work/main/.upstream (or --upstream PATH); it is never a dependency.

    python bench/device_map.py [--repeat 3] [--random 500] [--upstream /work/main/.upstream]

--random N also compares the maps of both libraries on N random small module trees (random sizes,
budgets, no-split classes, dtypes and tied weights), counting the trees where upstream gives a map and
ours differs (cases where upstream raises are counted apart).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import torch
from torch import nn

from accelerate_lite import init_empty_weights, infer_auto_device_map

HERE = os.path.dirname(os.path.abspath(__file__))


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


class Attention(nn.Module):
    def __init__(self, hidden, kv):
        super().__init__()
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, kv, bias=False)
        self.v_proj = nn.Linear(hidden, kv, bias=False)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)


class MLP(nn.Module):
    def __init__(self, hidden, intermediate):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)


class DecoderLayer(nn.Module):
    def __init__(self, hidden, kv, intermediate):
        super().__init__()
        self.self_attn = Attention(hidden, kv)
        self.mlp = MLP(hidden, intermediate)
        self.input_layernorm = RMSNorm(hidden)
        self.post_attention_layernorm = RMSNorm(hidden)


class Experts(nn.Module):
    def __init__(self, hidden, intermediate, count):
        super().__init__()
        self.gate = nn.Linear(hidden, count, bias=False)
        self.experts = nn.ModuleList(MLP(hidden, intermediate) for _ in range(count))
        self.shared_expert = MLP(hidden, intermediate)


class MoELayer(nn.Module):
    def __init__(self, hidden, kv, intermediate, count):
        super().__init__()
        self.self_attn = Attention(hidden, kv)
        self.mlp = Experts(hidden, intermediate, count)
        self.input_layernorm = RMSNorm(hidden)
        self.post_attention_layernorm = RMSNorm(hidden)


class Body(nn.Module):
    def __init__(self, vocab, hidden, layers):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(hidden)


class CausalLM(nn.Module):
    def __init__(self, vocab, hidden, layers):
        super().__init__()
        self.model = Body(vocab, hidden, layers)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)


def dense_70b() -> nn.Module:
    with init_empty_weights():
        return CausalLM(128_256, 8192, [DecoderLayer(8192, 1024, 28_672) for _ in range(80)])


def moe_60x256() -> nn.Module:
    with init_empty_weights():
        return CausalLM(129_280, 7168, [MoELayer(7168, 1024, 2048, 256) for _ in range(60)])


GiB = 2**30
CASES = {
    # 70B in fp16 is ~141 GB: 4 GPUs hold ~100 GB, the cpu 30 GB, the rest goes to disk.
    "dense-70B (80 no-split layers)": (
        dense_70b,
        {"max_memory": {0: 25 * GiB, 1: 25 * GiB, 2: 25 * GiB, 3: 25 * GiB, "cpu": 30 * GiB},
         "no_split_module_classes": ["DecoderLayer"], "dtype": torch.float16},
    ),
    # ~670B parameters in bf16 (~1.3 TB): 8 GPUs of 80 GiB, 500 GiB of cpu, the rest to disk.
    "MoE 60x256 experts (split to leaves)": (
        moe_60x256,
        {"max_memory": {**{i: 80 * GiB for i in range(8)}, "cpu": 500 * GiB}, "dtype": torch.bfloat16},
    ),
}


class Block(nn.Module):
    pass


class NoSplit(nn.Module):
    pass


def random_tree(rng, depth=0):
    module = (rng.choice([Block, NoSplit]) if depth else Block)()
    for i in range(rng.randint(0, 4) if depth < 3 else 0):
        module.add_module(f"c{i}", random_tree(rng, depth + 1))
    if not list(module.children()) or rng.random() < 0.3:
        module.register_parameter("w", nn.Parameter(torch.empty(rng.randint(1, 50), device="meta")))
    if rng.random() < 0.2:
        module.register_buffer("b", torch.empty(rng.randint(1, 10), device="meta"))
    return module


def compare_random(count: int, upstream_infer) -> None:
    import random

    differ = upstream_raised = 0
    for seed in range(count):
        rng = random.Random(seed)
        model = random_tree(rng)
        params = list(model.named_parameters())
        if len(params) >= 2 and rng.random() < 0.5:
            (_, keep), (alias, _) = rng.sample(params, 2)
            owner, _, leaf = alias.rpartition(".")
            setattr(model.get_submodule(owner), leaf, keep)
        total = int(sum(p.numel() * 4 for p in model.parameters()))
        memory = {i: rng.randint(0, total) for i in range(rng.randint(0, 3))}
        memory["cpu"] = rng.randint(0, total)
        kwargs = {"max_memory": memory, "no_split_module_classes": rng.choice([[], ["NoSplit"]]),
                  "dtype": rng.choice([None, torch.float16])}
        try:
            expected = dict(upstream_infer(model, **{k: (dict(v) if isinstance(v, dict) else v) for k, v in kwargs.items()}))
        except Exception:  # upstream crashes on some trees (IndexError, AttributeError): nothing to compare
            upstream_raised += 1
            continue
        differ += dict(infer_auto_device_map(model, **{k: (dict(v) if isinstance(v, dict) else v) for k, v in kwargs.items()})) != expected
    print(f"random trees: {count}, maps differing from upstream: {differ} (upstream raised on {upstream_raised})")


def time_call(function, model, kwargs, repeat):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(model, **{k: (dict(v) if isinstance(v, dict) else v) for k, v in kwargs.items()})
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs for each side")
    parser.add_argument("--random", type=int, default=0, help="also compare maps on N random module trees")
    parser.add_argument("--upstream", default=os.path.join(HERE, "..", ".upstream"))
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.upstream))
    logging.disable(logging.WARNING)
    from accelerate.utils.modeling import infer_auto_device_map as upstream_infer

    print(f"torch {torch.__version__}, {os.cpu_count()} cpu(s); best of {args.repeat}")
    print(f"{'case':40} {'modules':>8} {'upstream s':>11} {'ours s':>9} {'speedup':>8}  identical")
    for label, (build, kwargs) in CASES.items():
        model = build()
        modules = sum(1 for _ in model.modules())
        up_time, up_map = time_call(upstream_infer, model, kwargs, args.repeat)
        our_time, our_map = time_call(infer_auto_device_map, model, kwargs, args.repeat)
        identical = dict(up_map) == dict(our_map)
        print(f"{label:40} {modules:>8} {up_time:>11.3f} {our_time:>9.3f} {up_time / our_time:>7.1f}x  {identical}"
              f"  ({len(our_map)} entries, devices {sorted(set(map(str, our_map.values())))})")
    if args.random:
        compare_random(args.random, upstream_infer)


if __name__ == "__main__":
    main()
