"""Modeling utilities (upstream path `accelerate.utils.modeling`): sizes, device maps, tied weights, checkpoints.

A thin module: the code lives in `modeling_parts/`, one concern per module.
"""

from .modeling_parts.checkpoint import load_checkpoint_in_model, shard_checkpoint, validate_device_map
from .modeling_parts.checkpoint_files import load_state_dict, resolve_checkpoint_files
from .modeling_parts.device_map import check_device_map, clean_device_map, infer_auto_device_map
from .modeling_parts.memory_budget import get_balanced_memory, get_max_memory
from .modeling_parts.memory_query import get_device_free_memory
from .modeling_parts.sizes import (
    calculate_maximum_sizes,
    compute_module_sizes,
    convert_file_size_to_int,
    dtype_byte_size,
    get_max_layer_size,
    get_non_persistent_buffers,
    id_tensor_storage,
    named_module_tensors,
)
from .modeling_parts.tensors import check_device_same, set_module_tensor_to_device
from .modeling_parts.tied import (
    FindTiedParametersResult,
    check_tied_parameters_in_config,
    check_tied_parameters_on_same_device,
    find_tied_parameters,
    retie_parameters,
)
from .offload import load_offloaded_weights

__all__ = [
    "FindTiedParametersResult",
    "calculate_maximum_sizes",
    "check_device_map",
    "check_device_same",
    "check_tied_parameters_in_config",
    "check_tied_parameters_on_same_device",
    "clean_device_map",
    "compute_module_sizes",
    "convert_file_size_to_int",
    "dtype_byte_size",
    "find_tied_parameters",
    "get_balanced_memory",
    "get_device_free_memory",
    "get_max_layer_size",
    "get_max_memory",
    "get_non_persistent_buffers",
    "id_tensor_storage",
    "infer_auto_device_map",
    "load_checkpoint_in_model",
    "load_offloaded_weights",
    "load_state_dict",
    "named_module_tensors",
    "resolve_checkpoint_files",
    "retie_parameters",
    "set_module_tensor_to_device",
    "shard_checkpoint",
    "validate_device_map",
]
