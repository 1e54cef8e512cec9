"""Put one parameter or buffer of a module on a device (from meta with a value, across devices, with a dtype)."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from . import memory_query
from .sizes import is_floating_dtype_name, to_torch_dtype

# bitsandbytes parameter classes, recognised by name so that bitsandbytes need not be importable.
_INT8_PARAMS = "Int8Params"
_QUANTIZED_PARAMS = ("Int8Params", "FP4Params", "Params4bit")


def check_device_same(first_device: torch.device, second_device: torch.device) -> bool:
    """Return whether two devices are the same, reading a bare "cuda" as "cuda:0".

    Example:
        >>> check_device_same(torch.device("cuda"), torch.device("cuda:0"))
        True
    """
    if first_device.type != second_device.type:
        return False
    if first_device.type == "cuda":
        first_device = torch.device("cuda", first_device.index or 0)
        second_device = torch.device("cuda", second_device.index or 0)
    return first_device == second_device


def resolve_tensor_owner(module: nn.Module, tensor_name: str) -> tuple[nn.Module, str]:
    """Return (the submodule holding a dotted tensor name, the tensor's own name), checking that it exists.

    Raises:
        ValueError: a module on the path is missing or None, or the last part is no parameter or buffer.
    """
    owner = module
    *path, leaf = tensor_name.split(".")
    for part in path:
        child = getattr(owner, part, None)
        if child is None:
            raise ValueError(f"{tensor_name!r}: {owner.__class__.__name__} has no submodule {part!r}")
        owner = child
    if leaf not in owner._parameters and leaf not in owner._buffers:
        raise ValueError(
            f"{tensor_name!r}: {owner.__class__.__name__} does not have a parameter or a buffer named {leaf!r}"
        )
    return owner, leaf


def _accelerator_device(device):
    """Turn a bare int into "npu:i"/"xpu:i" where those are the accelerators (their `.to(int)` is unsupported)."""
    if isinstance(device, int) and not isinstance(device, bool):
        kind = memory_query.get_accelerator_kind()
        if kind in ("npu", "xpu"):
            return f"{kind}:{device}"
    return device


def set_module_tensor_to_device(
    module: nn.Module,
    tensor_name: str,
    device,
    value=None,
    dtype=None,
    fp16_statistics=None,
    tied_params_map=None,
) -> None:
    """Put a parameter or buffer (dotted name) of a module on a device, optionally with a new value.

    `param.to(device)` would make a new tensor the module does not hold; this replaces the module's entry.
    A value is cast to the existing tensor's dtype unless `dtype` is given (which integer and bool values
    ignore). bitsandbytes parameters are rebuilt with their quantization attributes and quantized when
    they reach a CUDA device.

    Args:
        module: the module holding the tensor.
        tensor_name: dotted name of the parameter or buffer ("encoder.layer.0.weight").
        device: where to put it (int, "cpu", "cuda:1", "meta", torch.device ...).
        value: the new value (needed when the tensor is on meta and goes elsewhere).
        dtype: cast floating values to this dtype instead of the existing one.
        fp16_statistics: bitsandbytes 8-bit statistics (SCB) to attach to the weight.
        tied_params_map: data pointer -> {device: tensor already placed}, to reuse tied copies on a device.

    Raises:
        ValueError: the tensor does not exist, is on meta with no value given, or the value's shape differs.

    Example:
        >>> layer = nn.Linear(2, 2, device="meta")
        >>> set_module_tensor_to_device(layer, "weight", "cpu", value=torch.ones(2, 2))
        >>> layer.weight.device
        device(type='cpu')
    """
    module, tensor_name = resolve_tensor_owner(module, tensor_name)
    is_buffer = tensor_name in module._buffers
    old_value = getattr(module, tensor_name)
    if _reuse_tied_copy(module, tensor_name, device, value, old_value, tied_params_map):
        return
    if old_value.device == torch.device("meta") and device not in ("meta", torch.device("meta")) and value is None:
        raise ValueError(f"{tensor_name} is on the meta device; a `value` is needed to put it on {device}")
    dtype = to_torch_dtype(dtype)
    if value is not None:
        if old_value.shape != value.shape:
            raise ValueError(
                f"cannot set a tensor of shape {tuple(value.shape)} in {tensor_name!r}, which has shape "
                f"{tuple(old_value.shape)}"
            )
        if dtype is None:
            value = value.to(old_value.dtype)  # as torch's load_state_dict: the model's dtype wins
        elif is_floating_dtype_name(value.dtype):
            value = value.to(dtype)

    param = module._parameters.get(tensor_name)
    param_cls = type(param)
    with torch.no_grad():
        quantize_on = None
        if (
            param is not None
            and param.device.type != "cuda"
            and torch.device(device).type == "cuda"
            and param_cls.__name__ in _QUANTIZED_PARAMS
        ):
            quantize_on, device = device, "cpu"  # build on cpu, quantize when moved to cuda below
        device = _accelerator_device(device)
        if value is None:
            new_value = old_value.to(device)
            if dtype is not None and device in ("meta", torch.device("meta")):
                if is_floating_dtype_name(old_value.dtype):
                    new_value = new_value.to(dtype)
                if not is_buffer:
                    module._parameters[tensor_name] = param_cls(new_value, requires_grad=old_value.requires_grad)
        elif isinstance(value, torch.Tensor):
            new_value = value.to(device)
        else:
            new_value = torch.tensor(value, device=device)
        if quantize_on is not None:
            device = quantize_on
        if is_buffer:
            module._buffers[tensor_name] = new_value
        elif value is not None or not check_device_same(torch.device(device), module._parameters[tensor_name].device):
            _assign_parameter(module, tensor_name, new_value, old_value, device, fp16_statistics)
    _remember_tied_copy(device, value, old_value, module, tensor_name, is_buffer, tied_params_map)


def _reuse_tied_copy(module, tensor_name, device, value, old_value, tied_params_map) -> bool:
    """Point at a tied weight's copy already placed on `device`, if there is one."""
    if tied_params_map is None:
        return False
    for source in (value, old_value):
        if source is not None and device in tied_params_map.get(source.data_ptr(), ()):
            module._parameters[tensor_name] = tied_params_map[source.data_ptr()][device]
            return True
    return False


def _remember_tied_copy(device, value, old_value, module, tensor_name, is_buffer, tied_params_map) -> None:
    if tied_params_map is None:
        return
    new_value = module._buffers[tensor_name] if is_buffer else module._parameters[tensor_name]
    if old_value.data_ptr() in tied_params_map and device not in tied_params_map[old_value.data_ptr()]:
        tied_params_map[old_value.data_ptr()][device] = new_value
    elif value is not None and value.data_ptr() in tied_params_map and device not in tied_params_map[value.data_ptr()]:
        tied_params_map[value.data_ptr()][device] = new_value


def _assign_parameter(module, tensor_name, new_value, old_value, device, fp16_statistics) -> None:
    """Wrap new_value in the parameter's class (keeping bitsandbytes attributes) and store it."""
    current = module._parameters[tensor_name]
    param_cls = type(current)
    if param_cls.__name__ in _QUANTIZED_PARAMS:
        kwargs = _constructor_kwargs(param_cls, current)
        if param_cls.__name__ == _INT8_PARAMS and new_value.dtype == torch.float32:
            new_value = new_value.to(torch.float16)  # bitsandbytes 8-bit serialization expects fp16
        if device == "cpu" and param_cls.__name__ == _INT8_PARAMS:
            # Quantize on the GPU, keep the quantized weight (and its statistics) on the cpu.
            new_value = param_cls(new_value, requires_grad=old_value.requires_grad, **kwargs).to(0).to("cpu")
            new_value.CB = new_value.CB.to("cpu")
            new_value.SCB = new_value.SCB.to("cpu")
        else:
            new_value = param_cls(new_value, requires_grad=old_value.requires_grad, **kwargs).to(device)
    else:
        new_value = param_cls(new_value, requires_grad=old_value.requires_grad).to(device)
    module._parameters[tensor_name] = new_value
    if fp16_statistics is not None:
        module._parameters[tensor_name].SCB = fp16_statistics.to(device)
    _quantize_bnb_module_if_ready(module, device)


def _constructor_kwargs(param_cls, current) -> dict:
    """The quantization attributes of a bitsandbytes parameter that its class's constructor accepts."""
    try:
        accepted = inspect.signature(param_cls.__new__).parameters
    except (TypeError, ValueError):
        return dict(current.__dict__)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return {k: v for k, v in current.__dict__.items() if k not in ("data", "requires_grad")}
    return {k: v for k, v in current.__dict__.items() if k in accepted and k not in ("data", "requires_grad")}


def _quantize_bnb_module_if_ready(module, device) -> None:
    """Quantize a bitsandbytes layer once its weight (and bias) are real tensors on a CUDA device."""
    target = torch.device(device)
    index = target.index if target.type == "cuda" else None
    if index is None:
        return
    name = module.__class__.__name__
    if name == "Linear8bitLt" and getattr(module.weight, "SCB", None) is None and str(module.weight.device) != "meta":
        if module.bias is None or module.bias.device.type != "meta":
            module.cuda(index)
    elif name == "Linear4bit" and getattr(module.weight, "quant_state", None) is None:
        # The bias can arrive first (checkpoint keys sort "bias" < "weight"): wait for a real weight.
        if module.weight.device.type != "meta":
            module.weight = module.weight.cuda(index)
