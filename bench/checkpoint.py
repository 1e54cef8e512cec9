"""Benchmark: load_checkpoint_in_model of a sharded safetensors checkpoint, accelerate_lite vs upstream 0.27.2.

Writes a checkpoint of --size-gb (default 2) of float32 Linear layers, sharded at --shard-mb, into a tmp
folder, then loads it into a meta model (init_empty_weights) with each library, alternating which goes
first, in two placements: everything on the cpu, and the second half of the layers offloaded to disk.
Prints the best time of each side, the ratio, and checks that both loaded the same values.

    python bench/checkpoint.py [--size-gb 2] [--shard-mb 500] [--repeat 3] [--folder /tmp/...]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file
from torch import nn

from accelerate_lite import init_empty_weights, load_checkpoint_in_model
from accelerate_lite.utils import shard_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
WIDTH = 4096  # one Linear(4096, 4096) in float32 is 64 MiB


def build(layers: int) -> nn.Module:
    return nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(layers)])


def write_checkpoint(folder: str, layers: int, shard_mb: int) -> None:
    torch.manual_seed(0)
    state = {}
    for i in range(layers):
        state[f"{i}.weight"] = torch.randn(WIDTH, WIDTH)
        state[f"{i}.bias"] = torch.randn(WIDTH)
    shards, index = shard_checkpoint(state, max_shard_size=f"{shard_mb}MB", weights_name="model.safetensors")
    for name, shard in shards.items():
        save_file(shard, os.path.join(folder, name), metadata={"format": "pt"})
    if index is not None:
        import json

        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f)


def read_all(model: nn.Module) -> None:
    """Touch every loaded byte: safetensors hands out memory-mapped tensors whose pages load on first use."""
    for tensor in model.state_dict().values():
        if not tensor.is_meta:
            tensor.sum()


def run(load, init_empty, folder, device_map, offload_folder):
    """Return (seconds to load, seconds to load and read every weight once, model)."""
    with init_empty():
        model = build(LAYERS)
    if offload_folder is not None:
        shutil.rmtree(offload_folder, ignore_errors=True)
    start = time.perf_counter()
    load(model, folder, device_map=device_map, offload_folder=offload_folder)
    loaded = time.perf_counter() - start
    read_all(model)
    return loaded, time.perf_counter() - start, model


def main() -> None:
    global LAYERS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--shard-mb", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folder", default=None, help="where to write the checkpoint (a tmp folder by default)")
    parser.add_argument("--upstream", default=os.path.join(HERE, "..", ".upstream"))
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.upstream))
    logging.disable(logging.WARNING)
    from accelerate.big_modeling import init_empty_weights as upstream_init_empty
    from accelerate.utils import modeling as upstream_modeling
    from accelerate.utils.modeling import load_checkpoint_in_model as upstream_load

    upstream_modeling.is_tqdm_available = lambda: False  # no progress bar per multi-device shard: keep output clean

    LAYERS = max(2, int(args.size_gb * 2**30 / (WIDTH * (WIDTH + 1) * 4)))
    folder = args.folder or tempfile.mkdtemp(prefix="bench-ckpt-")
    os.makedirs(folder, exist_ok=True)
    offload = os.path.join(folder, "offload")
    try:
        print(f"writing {LAYERS} x Linear({WIDTH}, {WIDTH}) float32 = {LAYERS * WIDTH * (WIDTH + 1) * 4 / 2**30:.2f} GiB "
              f"in {args.shard_mb} MB shards to {folder}")
        write_checkpoint(folder, LAYERS, args.shard_mb)
        half = LAYERS // 2
        placements = {
            "all on cpu": ({"": "cpu"}, None),
            "half cpu, half disk": ({**{str(i): "cpu" for i in range(half)}, **{str(i): "disk" for i in range(half, LAYERS)}},
                                    offload),
        }
        sides = {"upstream": (upstream_load, upstream_init_empty), "ours": (load_checkpoint_in_model, init_empty_weights)}
        print(f"torch {torch.__version__}, {os.cpu_count()} cpu(s); best of {args.repeat}, order alternating")
        print("seconds, best of each; 'load+read' also reads every loaded weight once (pages of memory-mapped files)")
        print(f"{'placement':22} {'upstream load':>14} {'ours load':>10} {'speedup':>8} {'upstream load+read':>19} "
              f"{'ours load+read':>15} {'speedup':>8}  same values")
        for label, (device_map, offload_folder) in placements.items():
            best = {name: float("inf") for name in sides}
            best_read = dict(best)
            models = {}
            for attempt in range(args.repeat):
                order = list(sides) if attempt % 2 == 0 else list(sides)[::-1]
                for name in order:
                    load, init_empty = sides[name]
                    models.pop(name, None)  # free the previous copy before loading again
                    seconds, with_read, models[name] = run(load, init_empty, folder, device_map, offload_folder)
                    best[name] = min(best[name], seconds)
                    best_read[name] = min(best_read[name], with_read)
            same = all(
                torch.equal(a, b) for a, b in zip(models["upstream"].state_dict().values(), models["ours"].state_dict().values())
                if not a.is_meta
            )
            print(f"{label:22} {best['upstream']:>14.3f} {best['ours']:>10.3f} {best['upstream'] / best['ours']:>7.2f}x "
                  f"{best_read['upstream']:>19.3f} {best_read['ours']:>15.3f} "
                  f"{best_read['upstream'] / best_read['ours']:>7.2f}x  {same}")
            models.clear()
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
