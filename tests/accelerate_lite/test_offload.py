"""Offload to disk with real memmap files: round trips of every dtype, the index, the loaders."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from accelerate_lite import init_empty_weights
from accelerate_lite.errors import CheckpointNotFoundError, CorruptCheckpointError, OffloadFolderError
from accelerate_lite.utils import (
    OffloadedWeightsLoader,
    PrefixedDataset,
    extract_submodules_state_dict,
    load_offloaded_weight,
    load_offloaded_weights,
    offload_state_dict,
    offload_weight,
)


@pytest.mark.parametrize(
    "tensor",
    [
        torch.randn(3, 4),
        torch.randn(5).to(torch.bfloat16),
        torch.randn(2, 2).half(),
        torch.arange(6, dtype=torch.int64).reshape(2, 3),
        torch.tensor(7.5),
        torch.tensor([True, False]),
    ],
    ids=["float32", "bfloat16", "float16", "int64", "0-d", "bool"],
)
def test_offload_weight_round_trip(tmp_path, tensor):
    index = offload_weight(tensor, "layer.weight", tmp_path, index={})
    assert (tmp_path / "layer.weight.dat").is_file()
    back = load_offloaded_weight(tmp_path / "layer.weight.dat", index["layer.weight"])
    assert back.dtype == tensor.dtype and back.shape == tensor.shape and torch.equal(back, tensor)


def test_offload_state_dict_writes_an_index_the_loader_reads(tmp_path):
    state = {"a.weight": torch.randn(3), "b.bias": torch.randn(2).to(torch.bfloat16)}
    offload_state_dict(tmp_path / "off", state)
    index = json.loads((tmp_path / "off" / "index.json").read_text())
    assert index == {"a.weight": {"dtype": "float32", "shape": [3]}, "b.bias": {"dtype": "bfloat16", "shape": [2]}}
    loader = OffloadedWeightsLoader(state_dict={"extra": torch.ones(1)}, save_folder=tmp_path / "off")
    assert list(loader) == ["extra", "a.weight", "b.bias"] and len(loader) == 3
    assert torch.equal(loader["b.bias"], state["b.bias"]) and torch.equal(loader["extra"], torch.ones(1))


def test_offloaded_weights_loader_reads_safetensors_entries_with_a_dtype(tmp_path):
    save_file({"w": torch.arange(4.0)}, tmp_path / "s.safetensors", metadata={"format": "pt"})
    loader = OffloadedWeightsLoader(index={"renamed": {"safetensors_file": str(tmp_path / "s.safetensors"),
                                                       "weight_name": "w", "dtype": "float16"}})
    assert loader["renamed"].dtype == torch.float16 and loader["renamed"].tolist() == [0, 1, 2, 3]


def test_prefixed_dataset_and_extract_submodules_state_dict():
    state = {"h.1.w": 1, "h.10.w": 2, "h.1": 3, "g": 4}
    assert extract_submodules_state_dict(state, ["h.1", "g"]) == {"h.1.w": 1, "h.1": 3, "g": 4}
    view = PrefixedDataset(state, "h.1")
    assert view[".w"] == 1 and sorted(view) == ["h.1", "h.1.w", "h.10.w"]


def test_load_offloaded_weights_puts_them_in_the_model_on_cpu(tmp_path):
    torch.manual_seed(0)
    source = nn.Linear(3, 2)
    offload_state_dict(tmp_path, source.state_dict())
    with init_empty_weights():
        target = nn.Linear(3, 2)
    load_offloaded_weights(target, json.loads((tmp_path / "index.json").read_text()), tmp_path)
    assert torch.equal(target.weight, source.weight) and target.bias.device.type == "cpu"


def test_load_offloaded_weights_checks_every_file_before_touching_the_model(tmp_path):
    offload_state_dict(tmp_path, nn.Linear(3, 2).state_dict())
    os.remove(tmp_path / "weight.dat")
    with init_empty_weights():
        target = nn.Linear(3, 2)
    with pytest.raises(CheckpointNotFoundError, match="weight.dat"):
        load_offloaded_weights(target, json.loads((tmp_path / "index.json").read_text()), tmp_path)
    assert target.bias.is_meta


def test_offload_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(OffloadFolderError, match="nowhere"):
        offload_weight(torch.ones(1), "w", tmp_path / "nowhere")
    with pytest.raises(CheckpointNotFoundError, match="gone.dat"):
        load_offloaded_weight(tmp_path / "gone.dat", {"dtype": "float32", "shape": [1]})
    offload_weight(torch.ones(2), "w", tmp_path)
    with pytest.raises(CorruptCheckpointError, match="w.dat"):
        load_offloaded_weight(tmp_path / "w.dat", {"dtype": "float32", "shape": [20]})
    with pytest.raises(ValueError, match="state_dict"):
        OffloadedWeightsLoader()
