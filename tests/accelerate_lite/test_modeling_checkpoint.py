"""Checkpoints with real files in tmp dirs: shard/save/load round trips in both formats, offload, bad input."""

from __future__ import annotations

import json
import os
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from accelerate_lite import init_empty_weights, load_checkpoint_in_model
from accelerate_lite.errors import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    DeviceMapError,
    OffloadFolderError,
)
from accelerate_lite.utils import (
    SAFE_WEIGHTS_INDEX_NAME,
    WEIGHTS_INDEX_NAME,
    load_offloaded_weights,
    load_state_dict,
    shard_checkpoint,
)
from accelerate_lite.utils.modeling_parts import checkpoint as checkpoint_module


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.blocks = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8))
        self.head = nn.Linear(8, 4)
        self.register_buffer("steps", torch.tensor([3, 4], dtype=torch.int64))


def trained_state() -> dict:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in TinyNet().state_dict().items()}


def meta_model() -> TinyNet:
    with init_empty_weights():
        return TinyNet()


def save_sharded(folder, state: dict, safe: bool, max_shard_size=400) -> list[str]:
    """Shard `state` and write shards plus an index, as save_pretrained does; returns the shard names."""
    name = "model.safetensors" if safe else "pytorch_model.bin"
    shards, index = shard_checkpoint(state, max_shard_size=max_shard_size, weights_name=name)
    for shard_name, shard in shards.items():
        path = os.path.join(folder, shard_name)
        if safe:
            save_file({k: v.contiguous() for k, v in shard.items()}, path, metadata={"format": "pt"})
        else:
            torch.save(shard, path)
    assert index is not None, "the test wants several shards"
    with open(os.path.join(folder, SAFE_WEIGHTS_INDEX_NAME if safe else WEIGHTS_INDEX_NAME), "w") as f:
        json.dump(index, f)
    return list(shards)


def assert_state_equal(model: nn.Module, state: dict) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key].cpu().to(value.dtype), value), key


def test_shard_checkpoint_splits_in_key_order_and_keeps_shared_storage_together():
    weight = torch.zeros(10)
    state = OrderedDict(a=torch.zeros(10), b=torch.zeros(10), c=weight, d=weight, e=torch.zeros(30))
    shards, index = shard_checkpoint(state, max_shard_size=100)
    assert [list(s) for s in shards.values()] == [["a", "b"], ["c", "d"], ["e"]]  # e alone exceeds 100
    assert index["metadata"]["total_size"] == 3 * 40 + 120 and index["weight_map"]["d"].endswith("00002-of-00003.bin")
    assert shard_checkpoint({"a": torch.zeros(1)})[1] is None


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
@pytest.mark.parametrize("target", ["folder", "index"])
def test_sharded_round_trip_into_a_meta_model(tmp_path, safe, target):
    state = trained_state()
    save_sharded(tmp_path, state, safe)
    checkpoint = tmp_path if target == "folder" else tmp_path / (SAFE_WEIGHTS_INDEX_NAME if safe else WEIGHTS_INDEX_NAME)
    model = meta_model()
    load_checkpoint_in_model(model, checkpoint, device_map={"": "cpu"})
    assert_state_equal(model, state)


@pytest.mark.parametrize("file_name", ["model.safetensors", "pytorch_model.bin"])
def test_single_file_copies_into_a_loaded_model_without_a_device_map(tmp_path, file_name):
    state = trained_state()
    path = tmp_path / file_name
    save_file(state, path, metadata={"format": "pt"}) if file_name.endswith("safetensors") else torch.save(state, path)
    model = TinyNet()
    weight_before = model.head.weight
    load_checkpoint_in_model(model, tmp_path)
    assert model.head.weight is weight_before  # copied in place, as torch's load_state_dict does
    assert_state_equal(model, state)


def test_disk_offload_writes_memmaps_and_they_load_back(tmp_path):
    state = trained_state()
    save_sharded(tmp_path / "ckpt" if os.makedirs(tmp_path / "ckpt") is None else None, state, safe=True)
    model = meta_model()
    device_map = {"embed": "cpu", "blocks": "disk", "head": "disk", "steps": "cpu"}
    load_checkpoint_in_model(model, tmp_path / "ckpt", device_map=device_map, offload_folder=tmp_path / "offload")
    assert model.embed.weight.device.type == "cpu" and model.blocks[0].weight.is_meta and model.head.bias.is_meta
    index = json.loads((tmp_path / "offload" / "index.json").read_text())
    assert set(index) == {k for k in state if k.startswith(("blocks.", "head."))}
    load_offloaded_weights(model, index, tmp_path / "offload")
    assert_state_equal(model, state)


def test_offload_state_dict_stages_cpu_weights_on_disk_and_cleans_up(tmp_path, monkeypatch):
    state = trained_state()
    save_sharded(tmp_path, state, safe=False)
    staging = tmp_path / "staging"
    monkeypatch.setattr(checkpoint_module.tempfile, "mkdtemp", lambda: os.makedirs(staging) or str(staging))
    model = meta_model()
    load_checkpoint_in_model(model, tmp_path, device_map={"": "cpu"}, offload_state_dict=True)
    assert_state_equal(model, state)
    assert not staging.exists()


def test_dtype_converts_floating_weights_only_and_keeps_fp32_modules(tmp_path):
    state = trained_state()
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = meta_model()
    load_checkpoint_in_model(model, tmp_path, device_map={"": "cpu"}, dtype="float16", keep_in_fp32_modules=["head"])
    assert model.blocks[0].weight.dtype == torch.float16 and model.embed.weight.dtype == torch.float16
    assert model.head.weight.dtype == torch.float32 and model.steps.dtype == torch.int64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, "bfloat16"], ids=str)
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_dtype_casts_without_a_device_map_too(tmp_path, safe, dtype):
    # Regression (quick matrix, load_checkpoint_in_model/fp16|bf16): the no-map path copied into the fp32
    # model with torch's load_state_dict and ignored dtype.
    state = trained_state()
    path = tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")
    save_file(state, path, metadata={"format": "pt"}) if safe else torch.save(state, path)
    model = TinyNet()
    load_checkpoint_in_model(model, path, dtype=dtype, keep_in_fp32_modules=["head"])
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    kept = torch.float32 if torch_dtype == torch.float16 else torch_dtype  # keep_in_fp32_modules is for fp16 only
    loaded = model.state_dict()
    for key, value in state.items():
        expected = value if key == "steps" else value.to(kept if key.startswith("head.") else torch_dtype)
        assert loaded[key].dtype == expected.dtype and torch.equal(loaded[key], expected), key
    assert isinstance(model.head.weight, nn.Parameter) and model.head.weight.requires_grad


def test_dtype_without_a_device_map_keeps_tied_weights_tied(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    saved = model[0].weight.detach().clone()
    save_file({k: v.clone() for k, v in model.state_dict().items() if k != "1.weight"}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    model[1].weight = model[0].weight = nn.Parameter(torch.zeros(4, 4))
    load_checkpoint_in_model(model, tmp_path, dtype=torch.float16)
    assert model[1].weight is model[0].weight and torch.equal(model[0].weight, saved.half())


def test_tied_weights_are_tied_again_after_loading(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    save_file({k: v.clone() for k, v in model.state_dict().items() if k != "1.weight"}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    with init_empty_weights():
        empty = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    empty[1].weight = empty[0].weight
    load_checkpoint_in_model(empty, tmp_path, device_map={"": "cpu"})
    assert empty[1].weight is empty[0].weight and not empty[0].weight.is_meta


def test_load_state_dict_puts_disk_and_unmapped_keys_on_cpu(tmp_path):
    state = trained_state()
    save_file(state, tmp_path / "m.safetensors", metadata={"format": "pt"})
    loaded = load_state_dict(str(tmp_path / "m.safetensors"), device_map={"embed": "cpu", "blocks": "disk"})
    assert set(loaded) == set(state) and all(t.device.type == "cpu" for t in loaded.values())


# ------------------------------------------------------------------------------------------------
# Bad input: each case damages a two-shard checkpoint (or the call) and expects an error that names the
# file or key, with the model left exactly as it was.


def _damage_shard(folder, shards, how):
    path = folder / shards[-1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"\x00garbage" * 8)
    return shards[-1]


def _rewrite_last_shard(folder, shards, change, safe=True):
    path = folder / shards[-1]
    shard = load_state_dict(str(path))
    change(shard)
    save_file(shard, path, metadata={"format": "pt"}) if safe else torch.save(shard, path)


def case_missing_shard(folder, shards):
    os.remove(folder / shards[-1])
    return {}, CheckpointNotFoundError, shards[-1]


def case_truncated_safetensors(folder, shards):
    return {}, CorruptCheckpointError, _damage_shard(folder, shards, "truncate")


def case_corrupt_safetensors(folder, shards):
    return {}, CorruptCheckpointError, _damage_shard(folder, shards, "garbage")


def case_index_names_absent_file(folder, shards):
    index_path = folder / SAFE_WEIGHTS_INDEX_NAME
    index = json.loads(index_path.read_text())
    index["weight_map"]["head.bias"] = "elsewhere.safetensors"
    index_path.write_text(json.dumps(index))
    return {}, CheckpointNotFoundError, "elsewhere.safetensors"


def case_index_not_json(folder, shards):
    (folder / SAFE_WEIGHTS_INDEX_NAME).write_text("{not json")
    return {}, CorruptCheckpointError, SAFE_WEIGHTS_INDEX_NAME


def case_unknown_key(folder, shards):
    _rewrite_last_shard(folder, shards, lambda s: s.update(ghost=torch.zeros(2)))
    return {}, CheckpointMismatchError, "ghost"


def case_wrong_shape(folder, shards):
    _rewrite_last_shard(folder, shards, lambda s: s.update({"head.bias": torch.zeros(5)}))
    return {}, CheckpointMismatchError, "head.bias"


def case_device_map_leaves_key_unplaced(folder, shards):
    return {"device_map": {"embed": "cpu", "blocks": "cpu", "steps": "cpu"}}, DeviceMapError, "head."


def case_device_map_unknown_device(folder, shards):
    return {"device_map": {"": "gpu"}}, DeviceMapError, "gpu"


def case_device_map_absent_accelerator(folder, shards):
    # No accelerator exists on this machine, so index 3 names a device that is not there.
    return {"device_map": {"embed": "cpu", "blocks": 3, "head": "cpu", "steps": "cpu"}}, DeviceMapError, "blocks"


def case_disk_without_offload_folder(folder, shards):
    return {"device_map": {"embed": "cpu", "blocks": "disk", "head": "cpu", "steps": "cpu"}}, OffloadFolderError, "blocks"


def case_missing_checkpoint_path(folder, shards):
    return {"checkpoint": folder / "nowhere"}, CheckpointNotFoundError, "nowhere"


BAD_INPUT = {
    "load_checkpoint_in_model(missing_shard)": case_missing_shard,
    "load_checkpoint_in_model(truncated_safetensors)": case_truncated_safetensors,
    "load_checkpoint_in_model(corrupt_safetensors)": case_corrupt_safetensors,
    "load_checkpoint_in_model(index_names_absent_file)": case_index_names_absent_file,
    "load_checkpoint_in_model(index_not_json)": case_index_not_json,
    "load_checkpoint_in_model(unknown_key)": case_unknown_key,
    "load_checkpoint_in_model(wrong_shape)": case_wrong_shape,
    "load_checkpoint_in_model(device_map_leaves_key_unplaced)": case_device_map_leaves_key_unplaced,
    "load_checkpoint_in_model(device_map='gpu')": case_device_map_unknown_device,
    "load_checkpoint_in_model(device_map={'blocks': 3})": case_device_map_absent_accelerator,
    "load_checkpoint_in_model(disk_without_offload_folder)": case_disk_without_offload_folder,
    "load_checkpoint_in_model(missing_path)": case_missing_checkpoint_path,
}


def snapshot(model: nn.Module) -> dict:
    return {name: (tensor, tensor.detach().clone()) for name, tensor in model.state_dict(keep_vars=True).items()}


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = model.state_dict(keep_vars=True)
    assert set(after) == set(before)
    for name, (tensor, value) in before.items():
        assert after[name] is tensor, f"{name} was replaced"
        assert torch.equal(after[name].detach(), value), f"{name} was changed"


@pytest.mark.parametrize("make_case", list(BAD_INPUT.values()), ids=list(BAD_INPUT))
def test_bad_input_names_the_culprit_and_leaves_the_model_as_it_was(tmp_path, make_case):
    torch.manual_seed(1)
    new_state = TinyNet().state_dict()
    shards = save_sharded(tmp_path, new_state, safe=True)
    kwargs, error, culprit = make_case(tmp_path, shards)
    kwargs.setdefault("device_map", {"": "cpu"})
    checkpoint = kwargs.pop("checkpoint", tmp_path)
    model = TinyNet()
    before = snapshot(model)
    with pytest.raises(error, match=culprit.replace(".", r"\.")):
        load_checkpoint_in_model(model, checkpoint, **kwargs)
    assert_unchanged(model, before)


def test_bin_holding_arbitrary_objects_is_refused(tmp_path):
    torch.save({"head.bias": torch.zeros(4), "extra": OrderedDict(code=print)}, tmp_path / "pytorch_model.bin")
    model = TinyNet()
    before = snapshot(model)
    with pytest.raises(CorruptCheckpointError, match="pytorch_model.bin"):
        load_checkpoint_in_model(model, tmp_path, device_map={"": "cpu"})
    assert_unchanged(model, before)


def test_truncated_bin_is_refused(tmp_path):
    torch.save(trained_state(), tmp_path / "pytorch_model.bin")
    data = (tmp_path / "pytorch_model.bin").read_bytes()
    (tmp_path / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="pytorch_model.bin"):
        load_checkpoint_in_model(TinyNet(), tmp_path)


def test_a_failure_while_assigning_puts_every_tensor_back(tmp_path, monkeypatch):
    save_sharded(tmp_path, trained_state(), safe=True)
    model = TinyNet()
    before = snapshot(model)
    calls = []
    real = checkpoint_module.set_module_tensor_to_device

    def failing_after_three(*args, **kwargs):
        # Stands in for a device or I/O failure halfway through (it cannot be provoked for real here).
        calls.append(args[1])
        if len(calls) > 3:
            raise RuntimeError("simulated failure while assigning")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "set_module_tensor_to_device", failing_after_three)
    with pytest.raises(RuntimeError, match="simulated"):
        load_checkpoint_in_model(model, tmp_path, device_map={"": "cpu"})
    assert len(calls) == 4
    assert_unchanged(model, before)
