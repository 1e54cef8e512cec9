"""Checkpoint files: find them (file, folder, sharded index), read their keys safely, and load state dicts."""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as safe_load_file

from ...errors import CheckpointNotFoundError, CorruptCheckpointError
from ..constants import SAFE_WEIGHTS_NAME, WEIGHTS_NAME
from . import memory_query

logger = logging.getLogger(__name__)


def resolve_checkpoint_files(checkpoint) -> list[str]:
    """Return the files of a checkpoint: a state-dict file, an .index.json of shards, or a folder of either.

    Raises:
        CheckpointNotFoundError: the path, or a shard the index names, does not exist.
        CorruptCheckpointError: the index is not valid JSON, or a folder holds no (or several) candidates.
    """
    checkpoint = os.fspath(checkpoint)
    if os.path.isfile(checkpoint):
        return _shards_of_index(checkpoint) if checkpoint.endswith(".json") else [checkpoint]
    if not os.path.isdir(checkpoint):
        raise CheckpointNotFoundError(
            f"checkpoint {checkpoint!r} does not exist; pass a state-dict file (.bin/.safetensors), the "
            ".index.json of a sharded checkpoint, or a folder holding one of those"
        )
    names = os.listdir(checkpoint)
    for whole in (WEIGHTS_NAME, SAFE_WEIGHTS_NAME):
        if whole in names:
            return [os.path.join(checkpoint, whole)]
    indexes = [n for n in names if n.endswith(".index.json")]
    if not indexes:
        raise CorruptCheckpointError(
            f"{checkpoint!r} is not a folder containing a `.index.json` file or a {WEIGHTS_NAME} or a "
            f"{SAFE_WEIGHTS_NAME} file"
        )
    if len(indexes) > 1:
        raise CorruptCheckpointError(
            f"{checkpoint!r} contains more than one `.index.json` file ({sorted(indexes)}); delete the irrelevant ones"
        )
    return _shards_of_index(os.path.join(checkpoint, indexes[0]))


def _shards_of_index(index_file: str) -> list[str]:
    try:
        with open(index_file, encoding="utf-8") as f:
            index = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptCheckpointError(f"checkpoint index {index_file!r} is not valid JSON ({error})") from None
    weight_map = index.get("weight_map", index) if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CorruptCheckpointError(
            f"checkpoint index {index_file!r} has no weight_map of key -> shard file name; got {type(index).__name__}"
        )
    folder = os.path.dirname(index_file)
    files = [os.path.join(folder, name) for name in sorted(set(weight_map.values()))]
    for path in files:
        if not os.path.isfile(path):
            keys = [k for k, v in weight_map.items() if os.path.join(folder, v) == path]
            raise CheckpointNotFoundError(
                f"shard {path!r} named by index {index_file!r} (for {len(keys)} key(s), e.g. {keys[0]!r}) "
                "does not exist; the checkpoint is incomplete"
            )
    return files


def _check_safetensors_metadata(checkpoint_file: str, metadata) -> None:
    if metadata is None:
        logger.warning(f"safetensors file {checkpoint_file!r} has no metadata; reading it as 'pt' format")
        return
    fmt = metadata.get("format")
    if fmt not in ("pt", "tf", "flax"):
        raise CorruptCheckpointError(
            f"safetensors file {checkpoint_file!r} has no valid 'format' metadata (got {fmt!r}); save it with "
            "save_pretrained or safetensors.torch.save_file(..., metadata={'format': 'pt'})"
        )
    if fmt != "pt":
        raise CorruptCheckpointError(f"safetensors file {checkpoint_file!r} was saved from {fmt}; a 'pt' file is needed")


def read_safetensors_shapes(checkpoint_file: str) -> dict[str, tuple]:
    """Return key -> shape of a safetensors file from its header (no tensor data is read).

    Raises:
        CorruptCheckpointError: the file is truncated, corrupt or not in 'pt' format.
    """
    try:
        with safe_open(checkpoint_file, framework="pt") as f:
            _check_safetensors_metadata(checkpoint_file, f.metadata())
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError) as error:
        raise CorruptCheckpointError(f"safetensors file {checkpoint_file!r} cannot be read: {error}") from None


def load_torch_file(checkpoint_file: str) -> dict:
    """Load a .bin state dict with `weights_only=True` (memory-mapped when the file allows it).

    Raises:
        CorruptCheckpointError: the file is truncated, corrupt, or holds objects other than tensors.
    """
    try:
        try:
            state = torch.load(checkpoint_file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            state = torch.load(checkpoint_file, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise CorruptCheckpointError(
            f"checkpoint file {checkpoint_file!r} cannot be loaded with weights_only=True: {error}"
        ) from None
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"checkpoint file {checkpoint_file!r} holds a {type(state).__name__}, not a state dict")
    return state


def _target_device(device):
    """The device string safetensors is given: ints become "npu:i"/"xpu:i" where those are the accelerators."""
    if isinstance(device, int) and not isinstance(device, bool):
        kind = memory_query.get_accelerator_kind()
        return f"{kind}:{device}" if kind in ("npu", "xpu") else device
    return device


def device_for_key(key: str, device_map: dict):
    """The device the most specific entry of a device map covering `key` gives, or None."""
    probe = key
    while True:
        if probe in device_map:
            return device_map[probe]
        if probe == "":
            return None
        probe = probe.rpartition(".")[0]


def load_state_dict(checkpoint_file, device_map=None) -> dict:
    """Load a state dict from a .safetensors or .bin file; safetensors weights go straight to their mapped device.

    Weights mapped to "disk", or not covered by the map, are loaded on the cpu. `.bin` files are loaded
    with `weights_only=True`, so a pickle holding arbitrary objects is refused.

    Args:
        checkpoint_file: path to the file.
        device_map: module name -> device; the most specific entry covering a key decides.

    Returns:
        name -> tensor.

    Raises:
        CheckpointNotFoundError: the file does not exist.
        CorruptCheckpointError: it cannot be read.

    Example:
        >>> import tempfile; from safetensors.torch import save_file
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> save_file({"w": torch.ones(2)}, path, metadata={"format": "pt"})
        >>> load_state_dict(path, device_map={"": "cpu"})
        {'w': tensor([1., 1.])}
    """
    checkpoint_file = os.fspath(checkpoint_file)
    if not os.path.isfile(checkpoint_file):
        raise CheckpointNotFoundError(f"checkpoint file {checkpoint_file!r} does not exist")
    if not checkpoint_file.endswith(".safetensors"):
        return load_torch_file(checkpoint_file)
    shapes = read_safetensors_shapes(checkpoint_file)
    try:
        if device_map is None:
            return safe_load_file(checkpoint_file)
        if len(set(device_map.values())) == 1:
            only = next(iter(device_map.values()))
            return safe_load_file(checkpoint_file, device="cpu" if only == "disk" else _target_device(only))
        by_device: dict = {}
        for key in shapes:
            device = device_for_key(key, device_map)
            by_device.setdefault("cpu" if device in (None, "disk") else device, []).append(key)
        tensors = {}
        for device, keys in by_device.items():
            with safe_open(checkpoint_file, framework="pt", device=_target_device(device)) as f:
                for key in keys:
                    tensors[key] = f.get_tensor(key)
        return {key: tensors[key] for key in shapes}
    except SafetensorError as error:
        raise CorruptCheckpointError(f"safetensors file {checkpoint_file!r} cannot be read: {error}") from None
