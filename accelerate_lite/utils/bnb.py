"""bitsandbytes quantization: swap Linear layers for 8-bit or 4-bit ones, then load and place the weights.

bitsandbytes is an optional extra (`pip install accelerate-lite[bnb]`) and is imported only when a
function here needs it; without it, or without a CUDA GPU, the functions raise an error that says which.
"""

from __future__ import annotations

import importlib.metadata
import logging
from copy import deepcopy

import torch
from packaging import version
from torch import nn

from ..big_modeling import init_empty_weights
from ..errors import QuantizationDeviceError, QuantizationUnavailableError
from .enums import CustomDtype
from .modeling_parts.checkpoint import load_checkpoint_in_model
from .modeling_parts.device_map import infer_auto_device_map
from .modeling_parts.memory_budget import get_balanced_memory
from .modeling_parts.tensors import resolve_tensor_owner, set_module_tensor_to_device
from .modeling_parts.tied import find_tied_parameters
from .offload import offload_weight

logger = logging.getLogger(__name__)

_MINIMUM_BNB = {"8bit": "0.37.2", "4bit": "0.39.0"}
_DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def _require_bitsandbytes(load_in_8bit: bool, load_in_4bit: bool):
    """Import bitsandbytes, checking that its version has the asked quantization; return the module."""
    mode = "8bit" if load_in_8bit else "4bit"
    try:
        installed = importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        raise QuantizationUnavailableError(
            f"load_and_quantize_model(): {mode} quantization needs bitsandbytes, which is not installed; "
            "install it with `pip install accelerate-lite[bnb]` (or `pip install bitsandbytes`)"
        ) from None
    if version.parse(installed) < version.parse(_MINIMUM_BNB[mode]):
        raise QuantizationUnavailableError(
            f"load_and_quantize_model(): bitsandbytes {installed} is installed, but {mode} quantization needs "
            f">= {_MINIMUM_BNB[mode]}; upgrade it with `pip install -U bitsandbytes`"
        )
    import bitsandbytes  # imported late: it initialises CUDA on import

    return bitsandbytes


def _require_cuda(what: str) -> int:
    if not torch.cuda.is_available():
        raise QuantizationDeviceError(
            f"{what}: no CUDA GPU is available, and bitsandbytes quantization here runs on CUDA devices; "
            "run on a machine with an NVIDIA GPU (torch.cuda.is_available() is False)"
        )
    return torch.cuda.current_device()


def get_parameter_device(module: nn.Module) -> torch.device:
    """Return the device of a module's first parameter."""
    return next(module.parameters()).device


def load_and_quantize_model(
    model: nn.Module,
    bnb_quantization_config,
    weights_location=None,
    device_map=None,
    no_split_module_classes=None,
    max_memory=None,
    offload_folder=None,
    offload_state_dict: bool = False,
) -> nn.Module:
    """Quantize a model's Linear layers with bitsandbytes (8-bit or 4-bit), loading and placing its weights.

    A model built under `init_empty_weights` is converted on meta, then its checkpoint is loaded from
    `weights_location` where `device_map` says (the quantization happens as weights reach the GPU). A
    model that already holds weights is converted and moved to the current GPU. `skip_modules` (by default
    the output head and tied weights) and `keep_in_fp32_modules` are not quantized.

    Args:
        model: the model (meta or loaded).
        bnb_quantization_config: a `BnbQuantizationConfig`.
        weights_location: checkpoint file, shard index or folder (needed for a meta model).
        device_map: module name -> device, or "auto"/"balanced"/"balanced_low_0"/"sequential"; the current
            GPU when None.
        no_split_module_classes: class names never split across devices (for the string strategies).
        max_memory: device -> memory budget (for the string strategies).
        offload_folder: where "disk" weights go.
        offload_state_dict: stage cpu weights on disk while loading.

    Returns:
        The quantized model.

    Raises:
        QuantizationUnavailableError: bitsandbytes is missing or too old.
        QuantizationDeviceError: no CUDA GPU is available.
        RuntimeError: a meta model was given without weights_location.

    Example:
        >>> from accelerate_lite.utils import BnbQuantizationConfig
        >>> config = BnbQuantizationConfig(load_in_8bit=True)
        >>> model = load_and_quantize_model(model, config, weights_location="ckpt/", device_map={"": 0})  # doctest: +SKIP
    """
    config = bnb_quantization_config
    _require_bitsandbytes(config.load_in_8bit, config.load_in_4bit)
    modules_on_cpu = []
    if isinstance(device_map, dict) and len(device_map) > 1:
        modules_on_cpu = [key for key, value in device_map.items() if value in ("disk", "cpu")]
    if config.skip_modules is None:
        config.skip_modules = get_keys_to_not_convert(model)
    if config.load_in_4bit:
        config.skip_modules.extend(modules_on_cpu)  # 4-bit layers cannot run from the cpu: keep them unquantized
    if config.keep_in_fp32_modules is None:
        config.keep_in_fp32_modules = []
    modules_to_not_convert = config.skip_modules
    modules_to_not_convert.extend(config.keep_in_fp32_modules)
    model.is_loaded_in_4bit = config.load_in_4bit
    model.is_loaded_in_8bit = config.load_in_8bit

    if get_parameter_device(model).type != "meta":
        return _quantize_loaded_model(model, config, modules_to_not_convert)
    if weights_location is None:
        raise RuntimeError(
            "load_and_quantize_model(): the model is on the meta device, so `weights_location` must name its "
            f"checkpoint (a file, a shard index or a folder); got {weights_location!r}"
        )
    with init_empty_weights():
        model = replace_with_bnb_layers(model, config, modules_to_not_convert=modules_to_not_convert)
    device_map = get_quantized_model_device_map(
        model, config, device_map, max_memory=max_memory, no_split_module_classes=no_split_module_classes
    )
    if offload_state_dict is None and "disk" in device_map.values():
        offload_state_dict = True
    offload = any(device in ("cpu", "disk") for device in device_map.values())
    load_checkpoint_in_model(
        model,
        weights_location,
        device_map,
        dtype=config.torch_dtype,
        offload_folder=offload_folder,
        offload_state_dict=offload_state_dict,
        keep_in_fp32_modules=config.keep_in_fp32_modules,
        offload_8bit_bnb=config.load_in_8bit and offload,
    )
    return _dispatch(model, device_map, offload_folder)


def _quantize_loaded_model(model, config, modules_to_not_convert):
    logger.warning(
        "Quantizing a model that already holds weights; build it under init_empty_weights() and pass "
        "weights_location to load it quantized without a full-precision copy."
    )
    model_device = get_parameter_device(model)
    model = replace_with_bnb_layers(model, config, modules_to_not_convert=modules_to_not_convert)
    keep = config.keep_in_fp32_modules
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(kept in name for kept in keep):
                param.data = param.data.to(torch.float32)
            elif torch.is_floating_point(param) and param.__class__.__name__ not in ("Int8Params", "Params4bit"):
                param.data = param.data.to(config.torch_dtype)
    device = _require_cuda("load_and_quantize_model()")
    model.cuda(device)  # bitsandbytes parameters quantize as they move to the GPU
    if model_device.type == "cuda":
        torch.cuda.empty_cache()
    return model


def get_quantized_model_device_map(model, bnb_quantization_config, device_map=None, max_memory=None,
                                   no_split_module_classes=None) -> dict:
    """Resolve a quantized model's device map (a strategy name, a dict, or None for the current GPU).

    Raises:
        ValueError: an unknown strategy, or 4-bit layers that would land on the cpu or disk.
        QuantizationDeviceError: device_map is None and no CUDA GPU is available.
    """
    config = bnb_quantization_config
    if device_map is None:
        device_map = {"": _require_cuda("load_and_quantize_model(device_map=None)")}
    if isinstance(device_map, str):
        if device_map not in _DEVICE_MAP_STRATEGIES:
            raise ValueError(
                f"device_map={device_map!r} is not a strategy; pass a dict or one of {list(_DEVICE_MAP_STRATEGIES)}"
            )
        special_dtypes = {
            name: config.torch_dtype for name, _ in model.named_parameters() if any(m in name for m in config.skip_modules)
        }
        special_dtypes.update(
            {name: torch.float32 for name, _ in model.named_parameters() if any(m in name for m in config.keep_in_fp32_modules)}
        )
        target_dtype = getattr(config, "target_dtype", None) or (torch.int8 if config.load_in_8bit else CustomDtype.INT4)
        kwargs = {"special_dtypes": special_dtypes, "no_split_module_classes": no_split_module_classes, "dtype": target_dtype}
        if device_map != "sequential":
            max_memory = get_balanced_memory(model, low_zero=(device_map == "balanced_low_0"), max_memory=max_memory,
                                             **kwargs)
        device_map = infer_auto_device_map(model, max_memory=max_memory, **kwargs)
    unconverted = set(config.skip_modules) | set(config.keep_in_fp32_modules)
    offloaded = {key for key, value in device_map.items() if key not in unconverted and value in ("cpu", "disk")}
    if offloaded:
        if config.load_in_4bit:
            raise ValueError(
                f"4-bit quantized modules {sorted(offloaded)} would be placed on the cpu or disk; give the GPUs enough "
                "memory for the quantized model, or pass a device_map that keeps those modules in skip_modules"
            )
        logger.info("Some modules are offloaded to the cpu or disk; they will be converted to 8-bit.")
    return device_map


def replace_with_bnb_layers(model, bnb_quantization_config, modules_to_not_convert=None, current_key_name=None):
    """Replace every nn.Linear not listed in `modules_to_not_convert` by a bitsandbytes 8-bit or 4-bit Linear."""
    replaced = _replace_linear_layers(model, bnb_quantization_config, modules_to_not_convert or [],
                                      list(current_key_name or []))
    if not replaced:
        logger.warning(
            "Quantizing in 8 or 4 bit, but the model has no nn.Linear layer to convert (some architectures use "
            "Conv1D instead); check the model's architecture."
        )
    return model


def _skipped(dotted_name: str, modules_to_not_convert) -> bool:
    return any((key in dotted_name and key + "." in dotted_name) or key == dotted_name for key in modules_to_not_convert)


def _replace_linear_layers(model, config, modules_to_not_convert, path) -> bool:
    import bitsandbytes as bnb

    replaced = False
    for name, module in model.named_children():
        path.append(name)
        dotted = ".".join(path)
        if isinstance(module, nn.Linear) and name not in modules_to_not_convert and not _skipped(dotted, modules_to_not_convert):
            if config.load_in_8bit:
                new = bnb.nn.Linear8bitLt(module.in_features, module.out_features, module.bias is not None,
                                          has_fp16_weights=False, threshold=config.llm_int8_threshold)
            elif config.load_in_4bit:
                new = bnb.nn.Linear4bit(module.in_features, module.out_features, module.bias is not None,
                                        config.bnb_4bit_compute_dtype,
                                        compress_statistics=config.bnb_4bit_use_double_quant,
                                        quant_type=config.bnb_4bit_quant_type)
            else:
                raise ValueError("BnbQuantizationConfig: load_in_8bit and load_in_4bit are both False")
            new.weight.data = module.weight.data
            if module.bias is not None:
                new.bias.data = module.bias.data
            new.requires_grad_(False)
            setattr(model, name, new)
            replaced = True
        if len(list(module.children())) > 0:
            replaced = _replace_linear_layers(module, config, modules_to_not_convert, path) or replaced
        path.pop()
    return replaced


def get_keys_to_not_convert(model: nn.Module) -> list:
    """Return the modules kept in full precision: tied weights and the last top-level module (the head).

    Base models (transformers models whose `base_model_prefix` attribute is not a child) without tied
    weights keep everything convertible.
    """
    with init_empty_weights():
        tied_model = deepcopy(model)  # free: parameters are created on meta
    tied_keys = sum(find_tied_parameters(tied_model), [])
    is_base_model = hasattr(model, "base_model_prefix") and not hasattr(model, model.base_model_prefix)
    if not tied_keys and is_base_model:
        return []
    children = list(model.named_children())
    last = [children[-1][0]] if children else []
    untouched = list(set(tied_keys)) + list(set(last) - set(tied_keys))
    names = []
    for name in untouched:
        for suffix in (".weight", ".bias"):
            if suffix in name:
                name = name.replace(suffix, "")
        names.append(name)
    return names


def has_4bit_bnb_layers(model: nn.Module) -> bool:
    """Return whether the model holds bitsandbytes 4-bit Linear layers."""
    import bitsandbytes as bnb

    return any(isinstance(module, bnb.nn.Linear4bit) for module in model.modules())


def quantize_and_offload_8bit(model, param, param_name, new_dtype, offload_folder, offload_index, fp16_statistics):
    """Quantize one 8-bit weight on the GPU (unless already quantized) and offload it and its statistics."""
    if fp16_statistics is None:
        set_module_tensor_to_device(model, param_name, 0, dtype=new_dtype, value=param)
        owner, leaf = resolve_tensor_owner(model, param_name)
        quantized = owner._parameters[leaf]
        quantized.requires_grad = False
        offload_weight(quantized, param_name, offload_folder, index=offload_index)
        if hasattr(quantized, "SCB"):
            offload_weight(quantized.SCB, param_name.replace("weight", "SCB"), offload_folder, index=offload_index)
    else:
        offload_weight(param, param_name, offload_folder, index=offload_index)
        offload_weight(fp16_statistics, param_name.replace("weight", "SCB"), offload_folder, index=offload_index)
    set_module_tensor_to_device(model, param_name, "meta", dtype=new_dtype, value=torch.empty(*param.size()))


def _dispatch(model: nn.Module, device_map: dict, offload_folder) -> nn.Module:
    """Make a loaded model runnable across its device map: inputs follow each placed module to its device.

    accelerate_lite has no hook framework (upstream's dispatch_model), so weights sent to "disk" cannot be
    streamed back; such maps are refused here with what to do instead.
    """
    model.hf_device_map = dict(device_map)
    if "disk" in device_map.values():
        disk = [k for k, v in device_map.items() if v == "disk"]
        raise NotImplementedError(
            f"load_and_quantize_model(): modules {disk} were offloaded to disk in {offload_folder!r}, but "
            "accelerate_lite cannot run disk-offloaded modules (no dispatch hooks); give the GPUs or cpu room for them"
        )
    if len(set(device_map.values())) == 1:
        return model
    for name, device in device_map.items():
        module = model.get_submodule(name) if name else model
        module.register_forward_pre_hook(_inputs_to(device), with_kwargs=True)
    return model


def _inputs_to(device):
    target = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)

    def move(module, args, kwargs):
        def to(value):
            return value.to(target) if isinstance(value, torch.Tensor) else value

        return tuple(to(a) for a in args), {k: to(v) for k, v in kwargs.items()}

    return move
