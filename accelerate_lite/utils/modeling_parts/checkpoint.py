"""Checkpoints: shard a state dict, and load a (sharded) checkpoint into a model as a device map says.

Loading is all-or-nothing: every file is found and its keys and shapes checked against the model and the
device map before any weight moves, and if something still fails while weights are assigned, every
parameter and buffer the model held before the call is put back.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import torch
from torch import nn

from ...errors import CheckpointMismatchError, DeviceMapError, OffloadFolderError
from ..constants import WEIGHTS_NAME
from ..offload import load_offloaded_weights, offload_weight, save_offload_index
from . import memory_query
from .checkpoint_files import (
    device_for_key,
    load_state_dict,
    load_torch_file,
    read_safetensors_shapes,
    resolve_checkpoint_files,
)
from .sizes import convert_file_size_to_int, dtype_byte_size, id_tensor_storage, to_torch_dtype
from .tensors import resolve_tensor_owner, set_module_tensor_to_device
from .tied import check_tied_parameters_in_config, check_tied_parameters_on_same_device, find_tied_parameters
from .tied import retie_parameters

logger = logging.getLogger(__name__)

_NAMED_DEVICES = ("cpu", "disk", "meta", "mps")


def shard_checkpoint(state_dict: dict, max_shard_size="10GB", weights_name: str = WEIGHTS_NAME):
    """Split a state dict into shards of at most `max_shard_size`, in key order, with an index.

    Tensors sharing storage stay in one shard; a tensor bigger than the limit gets a shard of its own.
    String entries (bitsandbytes serialization metadata) are skipped.

    Args:
        state_dict: name -> tensor.
        max_shard_size: bytes, or a size string such as "5GB".
        weights_name: file name; shards are named "<stem>-00001-of-0000N<ext>".

    Returns:
        (shards, index): shard file name -> state dict, and {"metadata": {"total_size"}, "weight_map"}
        (None when everything fits in one shard).

    Example:
        >>> shards, index = shard_checkpoint({"a": torch.zeros(4), "b": torch.zeros(4)}, max_shard_size=20)
        >>> sorted(shards), index["weight_map"]["b"]
        (['pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin'], 'pytorch_model-00002-of-00002.bin')
    """
    limit = convert_file_size_to_int(max_shard_size)
    blocks: list[dict] = [{}]
    block_size = total_size = 0
    storage_to_block: dict = {}
    for key, weight in state_dict.items():
        if isinstance(weight, str):
            continue
        storage = id_tensor_storage(weight)
        if storage in storage_to_block:
            blocks[storage_to_block[storage]][key] = weight
            continue
        size = weight.numel() * dtype_byte_size(weight.dtype)
        if block_size + size > limit:
            blocks.append({})
            block_size = 0
        blocks[-1][key] = weight
        block_size += size
        total_size += size
        storage_to_block[storage] = len(blocks) - 1
    if len(blocks) == 1:
        return {weights_name: blocks[0]}, None
    shards, weight_map = {}, {}
    count = len(blocks)
    for number, block in enumerate(blocks, start=1):
        suffix = f"-{number:05d}-of-{count:05d}"
        shard_file = weights_name.replace(".bin", f"{suffix}.bin").replace(".safetensors", f"{suffix}.safetensors")
        shards[shard_file] = block
        weight_map.update(dict.fromkeys(block, shard_file))
    return shards, {"metadata": {"total_size": total_size}, "weight_map": weight_map}


def validate_device_map(device_map: dict) -> None:
    """Check that every device a device map names exists here (accelerator indices below the count seen).

    Raises:
        DeviceMapError: naming the entry and the device.
    """
    count, kind = memory_query.get_accelerator_count(), memory_query.get_accelerator_kind()
    for key, device in device_map.items():
        if isinstance(device, str) and device in _NAMED_DEVICES:
            continue
        if isinstance(device, int) and not isinstance(device, bool):
            if 0 <= device < count:
                continue
            raise DeviceMapError(
                f"device_map[{key!r}] = {device}: no such accelerator here (torch sees {count} {kind or 'accelerator'} "
                "device(s)); use an index below that, 'cpu' or 'disk'"
            )
        try:
            parsed = torch.device(device)
        except (RuntimeError, TypeError):
            raise DeviceMapError(
                f"device_map[{key!r}] = {device!r} is not a device; expected an accelerator index, 'cpu', 'mps' or 'disk'"
            ) from None
        if parsed.type in ("cpu", "meta", "mps"):
            continue
        if parsed.type != kind or (parsed.index or 0) >= count:
            raise DeviceMapError(
                f"device_map[{key!r}] = {device!r}: torch sees {count} {kind or 'accelerator'} device(s) here"
            )


def _model_tensor_shapes(model: nn.Module) -> tuple[dict, set]:
    """(name -> shape of every parameter and buffer under every name, buffer names)."""
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters(remove_duplicate=False)}
    buffers = set()
    for name, buffer in model.named_buffers(remove_duplicate=False):
        shapes[name] = tuple(buffer.shape)
        buffers.add(name)
    return shapes, buffers


def _check_file_against_model(path: str, key_shapes: dict, model_shapes: dict, device_map) -> None:
    for key, shape in key_shapes.items():
        if "SCB" in key:
            continue  # bitsandbytes 8-bit statistics travel next to their weight
        if key not in model_shapes:
            raise CheckpointMismatchError(
                f"checkpoint file {path!r} has key {key!r}, which the model does not have; load a checkpoint "
                "of this architecture (or drop that key)"
            )
        if model_shapes[key] != tuple(shape):
            raise CheckpointMismatchError(
                f"checkpoint file {path!r} has {key!r} of shape {list(shape)}, but the model's is "
                f"{list(model_shapes[key])}"
            )
        if device_map is not None and device_for_key(key, device_map) is None:
            raise DeviceMapError(f"{key!r} (in {path!r}) doesn't have any device set in the device_map; add an entry")


def _stage(files: list, model: nn.Module, device_map) -> dict:
    """Read every file's keys and shapes (loading .bin files, memory-mapped) and check them; path -> loaded or None."""
    model_shapes, _ = _model_tensor_shapes(model)
    staged = {}
    for path in files:
        if path.endswith(".safetensors"):
            key_shapes, staged[path] = read_safetensors_shapes(path), None
        else:
            staged[path] = load_torch_file(path)
            key_shapes = {k: tuple(v.shape) for k, v in staged[path].items() if isinstance(v, torch.Tensor)}
        _check_file_against_model(path, key_shapes, model_shapes, device_map)
    return staged


def _snapshot(model: nn.Module) -> list:
    return [(m, dict(m._parameters), dict(m._buffers)) for m in model.modules()]


def _restore(snapshot: list) -> None:
    for module, parameters, buffers in snapshot:
        module._parameters.clear()
        module._parameters.update(parameters)
        module._buffers.clear()
        module._buffers.update(buffers)


def _prepare_offload_folder(device_map, offload_folder) -> None:
    if device_map is None or "disk" not in device_map.values():
        return
    if offload_folder is None:
        disk = [k for k, v in device_map.items() if v == "disk"]
        raise OffloadFolderError(
            f"device_map sends {disk[:3]}{'...' if len(disk) > 3 else ''} to 'disk' but no offload_folder was "
            "given; pass offload_folder=<a folder for the offloaded weights>"
        )
    try:
        os.makedirs(offload_folder, exist_ok=True)
    except OSError as error:
        raise OffloadFolderError(f"offload_folder {os.fspath(offload_folder)!r} cannot be created: {error}") from None


def _target_dtype(name, param, dtype, keep_in_fp32_modules):
    """The dtype a weight is loaded in: `dtype` for floating weights, fp32 for kept modules under fp16."""
    if dtype is None or not torch.is_floating_point(param):
        return None
    if keep_in_fp32_modules is not None and dtype == torch.float16:
        for key in keep_in_fp32_modules:
            if (key in name and key + "." in name) or key == name:
                return torch.float32
    return dtype


def load_checkpoint_in_model(
    model: nn.Module,
    checkpoint,
    device_map=None,
    offload_folder=None,
    dtype=None,
    offload_state_dict: bool = False,
    offload_buffers: bool = False,
    keep_in_fp32_modules=None,
    offload_8bit_bnb: bool = False,
) -> None:
    """Load a (sharded) checkpoint into a model, sending each weight where the device map says.

    Without a device map the weights are copied into the model's tensors (as `model.load_state_dict`
    with strict=False, except that unknown keys are an error), but a tensor whose dtype `dtype` changes is
    replaced by the cast weight on the same device. "disk" entries are written to
    `offload_folder` as memmaps and left on meta. The model is not dispatched (no hooks are added).

    Args:
        model: the model (often built under `init_empty_weights`).
        checkpoint: a .bin/.safetensors file, a shard index (.json), or a folder holding one of those.
        device_map: module name -> device (int, "cpu", "disk", ...); the most specific entry decides.
        offload_folder: where "disk" weights go (created if needed).
        dtype: load floating weights in this dtype (integer and bool weights keep theirs), with or without a map.
        offload_state_dict: stage cpu weights on disk while loading, to save RAM.
        offload_buffers: also offload buffers mapped to "disk".
        keep_in_fp32_modules: module names kept in fp32 when dtype is fp16.
        offload_8bit_bnb: quantize 8-bit bitsandbytes weights before offloading them.

    Raises:
        CheckpointNotFoundError: the checkpoint or a shard is missing.
        CorruptCheckpointError: a file or index cannot be read.
        CheckpointMismatchError: a key the model lacks, or a shape that differs.
        DeviceMapError: a key without a device, or a device that does not exist here.
        OffloadFolderError: "disk" in the map without a usable offload_folder.

    Example:
        >>> import tempfile; from safetensors.torch import save_file
        >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
        >>> save_file({"weight": torch.ones(2, 2), "bias": torch.zeros(2)}, path, metadata={"format": "pt"})
        >>> layer = nn.Linear(2, 2, device="meta")
        >>> load_checkpoint_in_model(layer, path, device_map={"": "cpu"})
        >>> layer.weight.sum().item()
        4.0
    """
    tied_params = find_tied_parameters(model)
    if check_tied_parameters_in_config(model) and len(tied_params) == 0:
        logger.warning("The model's weights are not tied: call model.tie_weights() before loading.")
    if device_map is not None:
        validate_device_map(device_map)
        check_tied_parameters_on_same_device(tied_params, device_map)
    _prepare_offload_folder(device_map, offload_folder)
    dtype = to_torch_dtype(dtype)
    files = resolve_checkpoint_files(checkpoint)
    staged = _stage(files, model, device_map)

    snapshot = _snapshot(model)
    loader = _Loader(model, device_map, offload_folder, dtype, offload_state_dict, offload_buffers,
                     keep_in_fp32_modules, offload_8bit_bnb)
    try:
        for path in files:
            state = staged.pop(path) if staged[path] is not None else load_state_dict(path, device_map=device_map)
            loader.load(state)
            # No gc.collect() here (upstream runs one per shard): a state dict holds no reference cycles, so
            # dropping it frees its tensors at once, and a full collection costs 0.1-1 s in a big process.
            del state
        loader.finish()
    except BaseException:
        _restore(snapshot)
        raise
    finally:
        loader.cleanup()
    retie_parameters(model, tied_params)


class _Loader:
    """Assigns the tensors of one state dict after another; `finish` writes the offload index and reloads staging."""

    def __init__(self, model, device_map, offload_folder, dtype, offload_state_dict, offload_buffers,
                 keep_in_fp32_modules, offload_8bit_bnb):
        self.model, self.device_map, self.offload_folder, self.dtype = model, device_map, offload_folder, dtype
        self.offload_state_dict, self.offload_buffers = offload_state_dict, offload_buffers
        self.keep_in_fp32_modules, self.offload_8bit_bnb = keep_in_fp32_modules, offload_8bit_bnb
        self.buffer_names = {name for name, _ in model.named_buffers()}
        self.offload_index: dict = {}
        self.staging_folder = tempfile.mkdtemp() if offload_state_dict else None
        self.staging_index: dict = {}

    def load(self, state: dict) -> None:
        if self.device_map is None:
            state = {k: v for k, v in state.items() if "SCB" not in k}
            self.recast(state)
            self.model.load_state_dict(state, strict=False)
            return
        for name, param in state.items():
            if "SCB" in name:
                continue
            self.assign(name, param, state)

    def recast(self, state: dict) -> None:
        """Without a device map, replace (on its device) each tensor whose dtype `dtype` changes; pop its key.

        torch's load_state_dict copies into the model's tensors and so keeps their dtype; the rest of the
        keys are still copied in place, keeping the model's tensor objects.
        """
        if self.dtype is None:
            return
        for name in list(state):
            new_dtype = _target_dtype(name, state[name], self.dtype, self.keep_in_fp32_modules)
            owner, leaf = resolve_tensor_owner(self.model, name)
            current = getattr(owner, leaf)
            if new_dtype is not None and new_dtype != current.dtype:
                set_module_tensor_to_device(self.model, name, current.device, value=state.pop(name), dtype=new_dtype)

    def assign(self, name: str, param: torch.Tensor, state: dict) -> None:
        device = device_for_key(name, self.device_map)
        new_dtype = _target_dtype(name, param, self.dtype, self.keep_in_fp32_modules)
        statistics = None
        scb_name = name.replace("weight", "SCB")
        if "weight" in name and scb_name in state and param.dtype == torch.int8:
            statistics = state[scb_name]
        if device == "disk":
            if self.offload_buffers or name not in self.buffer_names:
                self.offload(name, param, new_dtype, statistics, self.offload_folder, self.offload_index)
        elif device == "cpu" and self.offload_state_dict:
            self.offload(name, param, new_dtype, statistics, self.staging_folder, self.staging_index)
        else:
            set_module_tensor_to_device(
                self.model, name, device, value=param, dtype=new_dtype, fp16_statistics=statistics
            )

    def offload(self, name, param, new_dtype, statistics, folder, index) -> None:
        new_dtype = param.dtype if new_dtype is None else new_dtype
        if self.offload_8bit_bnb:
            from ..bnb import quantize_and_offload_8bit

            quantize_and_offload_8bit(self.model, param, name, new_dtype, folder, index, statistics)
            return
        set_module_tensor_to_device(self.model, name, "meta", dtype=new_dtype)
        offload_weight(param, name, folder, index=index)

    def finish(self) -> None:
        save_offload_index(self.offload_index, self.offload_folder)
        if self.staging_folder is not None:
            load_offloaded_weights(self.model, self.staging_index, self.staging_folder)

    def cleanup(self) -> None:
        if self.staging_folder is not None:
            shutil.rmtree(self.staging_folder, ignore_errors=True)
