"""Properties of the modeling and checkpoint utilities, at the cell's precision and on its profile."""

from __future__ import annotations

import itertools
import os

import torch
import torch.distributed as dist
from hypothesis import strategies as st
from torch import nn

from .collectives import op
from .compare import assert_tree_equal, fail
from .spmd import Property

_counter = itertools.count()


def _dtype_size(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8 if dtype.is_floating_point else torch.iinfo(dtype).bits // 8


def make_model(widths: list[int], seed: int) -> nn.Module:
    """A small MLP: Linear layers of the drawn widths inside nested Sequentials."""
    torch.manual_seed(seed)
    layers = [nn.Linear(a, b) for a, b in itertools.pairwise(widths)]
    half = len(layers) // 2
    return nn.Sequential(nn.Sequential(*layers[:half]), *layers[half:])


def models():
    return st.tuples(st.lists(st.integers(1, 12), min_size=2, max_size=5), st.integers(0, 1000))


def compute_module_sizes_check(ctx, example):
    widths, seed = example
    model = make_model(widths, seed)
    sizes = op("compute_module_sizes")(model, dtype=ctx.dtype)
    size = min(_dtype_size(ctx.dtype), 4)
    for name, module in itertools.chain([("", model)], model.named_modules()):
        expected = sum(t.numel() for t in itertools.chain(module.parameters(), module.buffers())) * size
        got = sizes.get(name, 0)  # upstream returns a defaultdict: a module without tensors has no entry
        if got != expected:
            fail(f"compute_module_sizes(model, dtype={ctx.dtype})[{name!r}] is {got}, expected {expected} "
                 f"(numel x {size} bytes)")


def _expected_devices(ctx) -> tuple[int, int]:
    """(count, memory per device) of the accelerators the library should see: the profile's when
    simulated; on real devices (--real) this box's own, asked of torch directly."""
    if ctx.profile.kind in ("cpu", "mps", "xla"):
        return 0, 0
    if not ctx.real:
        return ctx.profile.count, ctx.profile.memory
    module = getattr(torch, ctx.profile.kind)
    count = module.device_count()
    return count, max((module.get_device_properties(i).total_memory for i in range(count)), default=0)


def infer_strategy(ctx):
    accelerators = min(_expected_devices(ctx)[0], 3)
    budget = st.integers(0, 4000)
    return st.tuples(models(), st.lists(budget, min_size=accelerators, max_size=accelerators), budget)


def _check_max_memory(ctx):
    """get_max_memory() sees the profile: one entry per device, none above its memory, plus the host
    memory under "cpu" (under "mps" on Apple silicon, whose RAM the GPU shares, as upstream)."""
    found = op("get_max_memory")()
    host = "mps" if ctx.profile.kind == "mps" else "cpu"
    if host not in found:
        fail(f"get_max_memory() has no {host!r} entry on {ctx.profile.name}: {found}")
    if ctx.profile.kind in ("cuda", "npu", "xpu"):
        count, memory = _expected_devices(ctx)
        where = "this machine" if ctx.real else ctx.profile.name
        devices = sorted(k for k in found if isinstance(k, int))
        if devices != list(range(count)):
            fail(f"get_max_memory() lists devices {devices}, expected 0..{count - 1} on {where}")
        over = {k: v for k, v in found.items() if isinstance(k, int) and v > memory}
        if over:
            fail(f"get_max_memory() gives {over}, more than the {memory} bytes a device of {where} has")


def infer_auto_device_map_check(ctx, example):
    (widths, seed), budgets, cpu_budget = example
    _check_max_memory(ctx)
    model = make_model(widths, seed)
    max_memory = {index: budget for index, budget in enumerate(budgets)}
    max_memory["mps" if ctx.profile.kind == "mps" else "cpu"] = cpu_budget
    device_map = op("infer_auto_device_map")(model, max_memory=max_memory, dtype=ctx.dtype)
    sizes = op("compute_module_sizes")(model, dtype=ctx.dtype)
    for name, _ in model.named_parameters():
        owners = [key for key in device_map if key == "" or name == key or name.startswith(key + ".")]
        if len(owners) != 1:
            fail(f"infer_auto_device_map placed parameter {name!r} {len(owners)} times: {device_map}")
    used: dict = {}
    for key, device in device_map.items():
        used[device] = used.get(device, 0) + sizes.get(key, 0)
    over = {d: (u, max_memory[d]) for d, u in used.items() if d in max_memory and u > max_memory[d]}
    if over:
        fail(f"infer_auto_device_map(max_memory={max_memory}) overfills {over} (used, allowed): {device_map}")


def shard_strategy(ctx):
    return st.tuples(models(), st.integers(1, 600))


def shard_checkpoint_check(ctx, example):
    (widths, seed), max_size = example
    state_dict = {k: v.to(ctx.dtype) for k, v in make_model(widths, seed).state_dict().items()}
    shards, index = op("shard_checkpoint")(state_dict, max_shard_size=max_size, weights_name="w.bin")
    keys = [key for shard in shards.values() for key in shard]
    if keys != list(state_dict):
        fail(f"shard_checkpoint keys in shard order {keys}, expected the state dict's order {list(state_dict)}")
    for filename, shard in shards.items():
        total = sum(t.numel() * _dtype_size(t.dtype) for t in shard.values())
        if total > max_size and len(shard) > 1:
            fail(f"shard {filename} holds {total} bytes in {len(shard)} tensors, over max_shard_size={max_size}")
        for key, tensor in shard.items():
            if tensor is not state_dict[key] and not torch.equal(tensor, state_dict[key]):
                fail(f"shard {filename}[{key!r}] differs from the state dict")
    if len(shards) == 1:
        if index is not None or list(shards) != ["w.bin"]:
            fail(f"one shard must be named w.bin with no index; got {list(shards)}, index={index}")
    else:
        weight_map = index["weight_map"]
        wrong = {k: f for f, shard in shards.items() for k in shard if weight_map.get(k) != f}
        if wrong:
            fail(f"the index maps {wrong} to the wrong shard files: {weight_map}")


def load_strategy(ctx):
    return st.tuples(models(), st.booleans())


def load_checkpoint_check(ctx, example):
    (widths, seed), safe = example
    source = make_model(widths, seed)
    path = os.path.join(ctx.shared_dir, f"ckpt-{ctx.rank}-{next(_counter)}" + (".safetensors" if safe else ".bin"))
    if safe:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    else:
        torch.save(source.state_dict(), path)
    target = make_model(widths, seed + 1)
    op("load_checkpoint_in_model")(target, path, dtype=ctx.dtype)
    expected = {k: v.to(ctx.dtype) for k, v in source.state_dict().items()}
    assert_tree_equal(dict(target.state_dict()), expected, path=f"state dict after load_checkpoint_in_model(dtype={ctx.dtype})")
    os.remove(path)


def save_strategy(ctx):
    return st.tuples(models(), st.booleans(), st.booleans())


def save_check(ctx, example):
    (widths, seed), on_each_node, safe = example
    state = {k: v.to(ctx.dtype).contiguous() for k, v in make_model(widths, seed).state_dict().items()}
    stem = os.path.join(ctx.shared_dir, f"save-{next(_counter)}")
    try:
        op("save")(state, f"{stem}-r{ctx.rank}.pt", save_on_each_node=on_each_node, safe_serialization=safe)
    finally:  # every rank reaches the barrier, even when save raised on one
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()
    written = [r for r in range(ctx.world) if os.path.exists(f"{stem}-r{r}.pt")]
    if written != [0]:
        fail(f"save(save_on_each_node={on_each_node}) was written by rank(s) {written}; expected only the main "
             "process (all ranks share one node)")
    if ctx.rank == 0:
        if safe:
            from safetensors.torch import load_file

            loaded = load_file(f"{stem}-r0.pt")
        else:
            loaded = torch.load(f"{stem}-r0.pt")
        if sorted(loaded) != sorted(state):
            fail(f"save(safe_serialization={safe}) wrote keys {sorted(loaded)}, expected {sorted(state)}")
        ordered = {key: loaded[key] for key in state}  # safetensors files keep keys sorted, not in insertion order
        assert_tree_equal(ordered, state, path=f"what save(safe_serialization={safe}) wrote")


PROPERTIES = {
    "compute_module_sizes": Property(lambda ctx: models(), compute_module_sizes_check),
    "infer_auto_device_map": Property(infer_strategy, infer_auto_device_map_check),
    "shard_checkpoint": Property(shard_strategy, shard_checkpoint_check),
    "load_checkpoint_in_model": Property(load_strategy, load_checkpoint_check),
    "save": Property(save_strategy, save_check),
}
