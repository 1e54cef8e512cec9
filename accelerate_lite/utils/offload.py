"""Offloading weights to disk as numpy memmaps (one .dat file per tensor plus an index.json) and reading them back."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np
import torch
from safetensors import safe_open

from ..errors import CheckpointNotFoundError, CorruptCheckpointError, OffloadFolderError

OFFLOAD_INDEX_NAME = "index.json"


def offload_weight(weight: torch.Tensor, weight_name: str, offload_folder, index: dict | None = None):
    """Write one tensor to `<offload_folder>/<weight_name>.dat` as a numpy memmap and record it in `index`.

    bfloat16 has no numpy dtype, so it is stored as int16 bits and recorded as "bfloat16".

    Args:
        weight: the tensor (any device).
        weight_name: its dotted name (the file name).
        offload_folder: an existing folder.
        index: name -> {"dtype", "shape"}, updated in place when given.

    Returns:
        The index (None when none was given).

    Raises:
        OffloadFolderError: the folder does not exist.

    Example:
        >>> import tempfile
        >>> offload_weight(torch.ones(2), "w", tempfile.mkdtemp(), index={})
        {'w': {'dtype': 'float32', 'shape': [2]}}
    """
    if not os.path.isdir(offload_folder):
        raise OffloadFolderError(
            f"offload_weight({weight_name!r}): offload folder {os.fspath(offload_folder)!r} does not exist; "
            "create it first (or pass offload_folder to the loading function)"
        )
    dtype = None
    if weight.dtype == torch.bfloat16:
        weight, dtype = weight.view(torch.int16), "bfloat16"
    array = weight.detach().cpu().numpy()
    if index is not None:
        index[weight_name] = {"dtype": dtype or str(array.dtype), "shape": list(array.shape)}
    if array.ndim == 0:
        array = array[None]  # memmaps cannot be 0-d
    file_array = np.memmap(os.path.join(offload_folder, f"{weight_name}.dat"), dtype=array.dtype, mode="w+",
                           shape=array.shape)
    file_array[:] = array[:]
    file_array.flush()
    return index


def load_offloaded_weight(weight_file, weight_info: dict) -> torch.Tensor:
    """Read back a tensor written by `offload_weight`, given its index entry.

    Raises:
        CheckpointNotFoundError: the .dat file is missing.
        CorruptCheckpointError: the file is shorter than the index entry says.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp(); info = offload_weight(torch.arange(3.0), "w", folder, index={})["w"]
        >>> load_offloaded_weight(os.path.join(folder, "w.dat"), info)
        tensor([0., 1., 2.])
    """
    if not os.path.isfile(weight_file):
        raise CheckpointNotFoundError(f"offloaded weight file {os.fspath(weight_file)!r} does not exist")
    shape = tuple(weight_info["shape"]) or (1,)
    dtype = "int16" if weight_info["dtype"] == "bfloat16" else weight_info["dtype"]
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if os.path.getsize(weight_file) < expected:
        raise CorruptCheckpointError(
            f"offloaded weight file {os.fspath(weight_file)!r} has {os.path.getsize(weight_file)} bytes, "
            f"but its index entry {weight_info} needs {expected}; offload it again"
        )
    array = np.memmap(weight_file, dtype=dtype, shape=shape, mode="r")
    if len(weight_info["shape"]) == 0:
        array = array[0]
    weight = torch.tensor(array)
    return weight.view(torch.bfloat16) if weight_info["dtype"] == "bfloat16" else weight


def save_offload_index(index: dict | None, offload_folder) -> None:
    """Merge `index` into `<offload_folder>/index.json` (nothing is written for an empty index)."""
    if not index:
        return
    path = os.path.join(offload_folder, OFFLOAD_INDEX_NAME)
    current = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            current = json.load(f)
    current.update(index)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(current, f, indent=2)


def offload_state_dict(save_dir, state_dict: dict) -> None:
    """Write every tensor of a state dict to `save_dir` as memmaps, with an index.json.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp(); offload_state_dict(folder, {"a": torch.ones(2)})
        >>> sorted(os.listdir(folder))
        ['a.dat', 'index.json']
    """
    os.makedirs(save_dir, exist_ok=True)
    index: dict = {}
    for name, tensor in state_dict.items():
        offload_weight(tensor, name, save_dir, index=index)
    save_offload_index(index, save_dir)


def read_offload_index(folder) -> dict:
    """Return the index.json of an offload folder, with errors that name the folder."""
    path = os.path.join(folder, OFFLOAD_INDEX_NAME)
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"offload folder {os.fspath(folder)!r} has no {OFFLOAD_INDEX_NAME}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise CorruptCheckpointError(f"{path!r} is not valid JSON ({error})") from None


class PrefixedDataset(Mapping):
    """A view of a mapping with string keys that adds `prefix` to every key looked up."""

    def __init__(self, dataset: Mapping, prefix: str):
        self.dataset = dataset
        self.prefix = prefix

    def __getitem__(self, key):
        return self.dataset[f"{self.prefix}{key}"]

    def __iter__(self):
        return iter([key for key in self.dataset if key.startswith(self.prefix)])

    def __len__(self):
        return len(self.dataset)


class OffloadedWeightsLoader(Mapping):
    """A read-only mapping of weights held in a state dict, in memmaps on disk, or in safetensors files.

    Args:
        state_dict: name -> tensor, looked up first.
        save_folder: folder of .dat files (as written by `offload_state_dict`); its index.json is read
            when `index` is not given.
        index: name -> {"dtype", "shape"} for .dat files, or {"safetensors_file", "weight_name", "dtype"}.
        device: where safetensors weights are loaded (cpu when None).

    Example:
        >>> loader = OffloadedWeightsLoader(state_dict={"a": torch.ones(1)})
        >>> list(loader), loader["a"]
        (['a'], tensor([1.]))
    """

    def __init__(self, state_dict: dict | None = None, save_folder=None, index: Mapping | None = None, device=None):
        if state_dict is None and save_folder is None and index is None:
            raise ValueError("OffloadedWeightsLoader needs a state_dict, a save_folder or an index of offloaded weights")
        self.state_dict = {} if state_dict is None else state_dict
        self.save_folder = save_folder
        if index is None and save_folder is not None:
            index = read_offload_index(save_folder)
        self.index = {} if index is None else index
        self.all_keys = list(self.state_dict.keys())
        self.all_keys.extend(key for key in self.index if key not in self.state_dict)
        self.device = device

    def __getitem__(self, key: str):
        if key in self.state_dict:
            return self.state_dict[key]
        info = self.index[key]
        if info.get("safetensors_file") is not None:
            return self._from_safetensors(key, info)
        return load_offloaded_weight(os.path.join(self.save_folder, f"{key}.dat"), info)

    def _from_safetensors(self, key: str, info: dict) -> torch.Tensor:
        device = "cpu" if self.device is None else self.device
        name = info.get("weight_name", key)
        try:
            with safe_open(info["safetensors_file"], framework="pt", device=device) as f:
                tensor = f.get_tensor(name)
        except TypeError:
            # Some dtypes cannot be loaded on some devices directly (bf16 on mps): go through the cpu.
            with safe_open(info["safetensors_file"], framework="pt", device="cpu") as f:
                tensor = f.get_tensor(name)
        if "dtype" in info:
            tensor = tensor.to(getattr(torch, info["dtype"]))
        if tensor.device != torch.device(device):
            tensor = tensor.to(device)
        return tensor

    def __iter__(self):
        return iter(self.all_keys)

    def __len__(self):
        return len(self.all_keys)


def extract_submodules_state_dict(state_dict: dict, submodule_names: list) -> dict:
    """Return the entries of a state dict that belong to the given submodules ("h.1" takes "h.1.*", not "h.10").

    Example:
        >>> extract_submodules_state_dict({"h.1.w": 1, "h.10.w": 2, "h.1": 3}, ["h.1"])
        {'h.1.w': 1, 'h.1': 3}
    """
    result = {}
    for module_name in submodule_names:
        result.update(
            {key: value for key, value in state_dict.items() if key == module_name or key.startswith(module_name + ".")}
        )
    return result


def load_offloaded_weights(model, index: dict | None, offload_folder) -> None:
    """Load every weight of an offload index from `offload_folder` into the model, on the cpu.

    8-bit statistics stored next to a weight (its "SCB" entry) are attached to it. Every file is checked
    before the model is touched, so a missing file leaves the model as it was.

    Raises:
        CheckpointNotFoundError: a .dat file named by the index is missing.
    """
    from .modeling_parts.tensors import set_module_tensor_to_device

    if not index:
        return
    for name in index:
        path = os.path.join(offload_folder, f"{name}.dat")
        if not os.path.isfile(path):
            raise CheckpointNotFoundError(
                f"offloaded weight {name!r}: file {path!r} named by the offload index does not exist"
            )
    for name, info in index.items():
        if "SCB" in name:
            continue
        statistics = None
        if "weight" in name and name.replace("weight", "SCB") in index:
            scb = name.replace("weight", "SCB")
            statistics = load_offloaded_weight(os.path.join(offload_folder, f"{scb}.dat"), index[scb])
        weight = load_offloaded_weight(os.path.join(offload_folder, f"{name}.dat"), info)
        set_module_tensor_to_device(model, name, "cpu", value=weight, fp16_statistics=statistics)
