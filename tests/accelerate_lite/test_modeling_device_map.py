"""Device maps: infer_auto_device_map's rules as properties on random module trees, and the budget helpers."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from accelerate_lite import init_empty_weights
from accelerate_lite.errors import DeviceMapError
from accelerate_lite.utils import (
    check_device_map,
    clean_device_map,
    compute_module_sizes,
    find_tied_parameters,
    get_balanced_memory,
    get_max_memory,
    infer_auto_device_map,
)
from accelerate_lite.utils.modeling_parts import memory_query
from accelerate_lite.utils.modeling_parts.device_map import find_device_for

from model_trees import NoSplit, tied_models

DEVICE_ORDER = {"cpu": 100, "disk": 101}


def covering_key(name: str, device_map: dict):
    key = find_device_for(name, device_map)
    assert key is not None, f"{name} has no device in {dict(device_map)}"
    return key


def bytes_per_device(model: nn.Module, device_map: dict, dtype=None) -> dict:
    """Bytes each device holds, counting each tensor object once (tied names share one)."""
    sizes = compute_module_sizes(model, dtype=dtype)
    seen, used = set(), {}
    for name, tensor in list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers()):
        device = device_map[covering_key(name, device_map)]
        if (id(tensor), device) in seen:
            continue
        seen.add((id(tensor), device))
        element = sizes[name] / max(tensor.numel(), 1) if name in sizes else tensor.element_size()
        used[device] = used.get(device, 0) + tensor.numel() * element
    return used


def layers_of(model: nn.Module, name: str, no_split) -> list:
    """The layers (leaf modules, no-split modules) at or under a map key.

    A tensor key is no layer: once placement starts, upstream's largest-layer rule looks at modules only.
    """
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return []
    found, stack = [], [(name, module)]
    while stack:
        n, m = stack.pop()
        children = list(m.named_children())
        if not children or m.__class__.__name__ in no_split:
            found.append(n)
        else:
            stack.extend((f"{n}.{c}" if n else c, s) for c, s in children)
    return found


budgets = st.tuples(
    st.integers(0, 3),  # GPUs
    st.lists(st.floats(0.0, 0.8), min_size=4, max_size=4),  # GPU budgets as fractions of the model
    st.floats(0.0, 0.8),  # cpu budget fraction
    st.booleans(),  # no-split classes on
)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=tied_models(), budget=budgets)
def test_infer_auto_device_map_follows_the_placement_rules(model, budget):
    gpus, fractions, cpu_fraction, use_no_split = budget
    total = compute_module_sizes(model)[""]
    max_memory = {i: int(fractions[i] * total) for i in range(gpus)}
    max_memory["cpu"] = int(cpu_fraction * total)
    no_split = ["NoSplit"] if use_no_split else []
    raw = infer_auto_device_map(model, max_memory=dict(max_memory), no_split_module_classes=no_split, clean_result=False)
    keys = list(raw)

    # Every parameter and buffer (under every name) is placed exactly once: keys never nest.
    for name in [n for n, _ in model.named_parameters(remove_duplicate=False)] + [n for n, _ in model.named_buffers()]:
        covering_key(name, raw)
    for a in keys:
        assert not any(b != a and (a == "" or b.startswith(a + ".")) for b in keys), f"{a} nests another key"

    # GPUs in order, then cpu, then disk.
    order = [DEVICE_ORDER.get(d, d) for d in raw.values()]
    assert order == sorted(order)

    # No device over its budget.
    used = bytes_per_device(model, raw)
    for device, amount in used.items():
        if device != "disk":
            assert amount <= max_memory[device], (device, amount, max_memory)

    # The first GPU (or the cpu) keeps room for the largest layer that was offloaded.
    main = 0 if gpus else "cpu"
    offloaded = [k for k, d in raw.items() if d in (("cpu", "disk") if gpus else ("disk",))]
    largest = max((compute_module_sizes(model)[lay] for k in offloaded for lay in layers_of(model, k, no_split)), default=0)
    if used.get(main, 0) > 0 and main in max_memory:
        assert used[main] + largest <= max_memory[main]

    # Modules of a no-split class are never split.
    for key in keys:
        parts = key.split(".")
        for i in range(1, len(parts)):
            ancestor = model.get_submodule(".".join(parts[:i]))
            assert not (use_no_split and isinstance(ancestor, NoSplit)), f"{key} splits a NoSplit module"

    # Tied parameters end on one device.
    for group in find_tied_parameters(model):
        assert len({raw[covering_key(n, raw)] for n in group}) == 1, group

    # Cleaning merges only entries of one device: every tensor keeps its device, and it is a fixpoint.
    clean = clean_device_map(OrderedDict(raw))
    for name, _ in model.named_parameters(remove_duplicate=False):
        assert clean[covering_key(name, clean)] == raw[covering_key(name, raw)]
    assert clean_device_map(dict(clean)) == dict(clean)


def test_infer_auto_device_map_fills_gpus_in_order_and_keeps_room_for_the_largest_layer():
    model = nn.Sequential(*[nn.Linear(10, 10) for _ in range(5)])  # 440 bytes each
    device_map = infer_auto_device_map(model, max_memory={0: 1000, 1: 440, "cpu": 2000})
    # GPU 0 keeps 440 bytes for a layer offloaded to cpu: it holds one layer, not two.
    assert device_map == {"0": 0, "1": 1, "2": "cpu", "3": "cpu", "4": "cpu"}


def test_infer_auto_device_map_does_not_split_no_split_classes():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(10, 10), nn.Linear(10, 10)

    model = nn.Sequential(Pair(), Pair(), Pair())  # 880 bytes each; GPU 0 keeps room for the largest layer
    kept_whole = infer_auto_device_map(model, max_memory={0: 1800, "cpu": 2000}, no_split_module_classes=["Pair"])
    assert kept_whole == {"0": 0, "1": "cpu", "2": "cpu"}
    split = infer_auto_device_map(model, max_memory={0: 1800, "cpu": 2000})
    assert split == {"0": 0, "1.a": 0, "1.b": "cpu", "2": "cpu"}


def test_infer_auto_device_map_keeps_tied_weights_together():
    model = nn.Sequential(*[nn.Linear(10, 10) for _ in range(4)])
    model[3].weight = model[0].weight  # layer 3 now holds only its bias (40 bytes) of its own
    device_map = infer_auto_device_map(model, max_memory={0: 1000, "cpu": 5000}, clean_result=False)
    # Layer 3 comes to GPU 0 with layer 0, ahead of layers 1 and 2, which no longer fit there.
    assert device_map == {"0": 0, "3": 0, "1": "cpu", "2": "cpu"}


def test_dtype_only_shrinks_floating_tensors():
    model = nn.Module()
    model.register_buffer("ids", torch.zeros(10, dtype=torch.int64))
    model.half_param = nn.Parameter(torch.zeros(10, dtype=torch.float16))
    model.param = nn.Parameter(torch.zeros(10))
    sizes = compute_module_sizes(model, dtype=torch.float16)
    assert (sizes["ids"], sizes["half_param"], sizes["param"]) == (80, 20, 20)
    assert compute_module_sizes(model, dtype="float64")["half_param"] == 20  # never grows


def test_check_device_map_names_the_uncovered_tensors():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    check_device_map(model, {"0": "cpu", "1": 0})
    with pytest.raises(DeviceMapError, match=r"1\.weight, 1\.bias"):
        check_device_map(model, {"0": "cpu"})


def test_clean_device_map_merges_same_device_siblings_only():
    device_map = {"a.0": 0, "a.1": 0, "b.0": 0, "b.1": "cpu", "c": "disk"}
    assert clean_device_map(dict(device_map)) == {"a": 0, "b.0": 0, "b.1": "cpu", "c": "disk"}
    assert clean_device_map({"x": 1, "y": 1}) == {"": 1}


def test_get_max_memory_converts_sizes_and_orders_devices():
    assert list(get_max_memory({"cpu": "1KB", "disk": 5, 1: "1KiB", 0: 3})) == [0, 1, "cpu", "disk"]
    assert get_max_memory({"cpu": "1KB"}) == {"cpu": 1000}
    with pytest.raises(ValueError, match="cuda:0"):
        get_max_memory({"cuda:0": 10})


def test_get_max_memory_asks_the_gpus_through_torch(monkeypatch):
    # No GPU can exist on this machine: torch.cuda's entry points are patched, as a simulated profile does.
    free = {0: 7 * 2**30, 1: 5 * 2**30}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (free[i], 8 * 2**30))
    memory = get_max_memory()
    assert (memory[0], memory[1]) == (free[0], free[1]) and memory["cpu"] > 0
    assert list(memory) == [0, 1, "cpu"]


def test_get_max_memory_answers_from_the_patched_memory_query(monkeypatch):
    # The one function simulators patch: memory_query.get_device_free_memory (no GPU here, so count is patched too).
    monkeypatch.setattr(memory_query, "get_accelerator_count", lambda: 1)
    monkeypatch.setattr(memory_query, "get_device_free_memory", lambda device: 123 if device == 0 else 456)
    assert get_max_memory() == {0: 123, "cpu": 456}


def test_get_balanced_memory_spreads_over_gpus():
    model = nn.Sequential(*[nn.Linear(10, 10) for _ in range(4)])  # 4 x 440 bytes
    balanced = get_balanced_memory(model, max_memory={0: 10_000, 1: 10_000, "cpu": 10_000})
    # 1760 / 2 + 1.25 x mean final module (440) = 1430 on GPU 0; the last GPU keeps all its memory.
    assert balanced == {0: 1430, 1: 10_000, "cpu": 10_000}
    low_zero = get_balanced_memory(model, max_memory={0: 10_000, 1: 10_000, 2: 10_000}, low_zero=True)
    assert low_zero[0] == 0 and low_zero[2] == 10_000
    with init_empty_weights():
        meta = nn.Sequential(*[nn.Linear(10, 10) for _ in range(4)])
    assert get_balanced_memory(meta, max_memory={"cpu": 100}) == {"cpu": 100}


@pytest.mark.parametrize("profile_name", ["8xA100-80GB", "2xT4", "8xAscend910B", "4xMax1550", "mps-m2", "cpu"])
def test_get_max_memory_and_auto_maps_see_a_simulated_profile(profile_name):
    simulators = pytest.importorskip("simulators")
    profile = simulators.get_profile(profile_name)
    with init_empty_weights():
        model = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(4)])
    with simulators.apply_profile(profile):
        memory = get_max_memory()
        device_map = infer_auto_device_map(model)
    accelerators = [k for k in memory if isinstance(k, int)]
    if profile.kind in ("cuda", "npu", "xpu"):
        assert accelerators == list(range(profile.count))
        assert all(memory[i] == profile.memory for i in accelerators)
        assert device_map == {"": 0}
    else:
        assert accelerators == [] and list(memory) == (["mps"] if profile.kind == "mps" else ["cpu"])
        assert device_map == {"": "mps" if profile.kind == "mps" else "cpu"}
