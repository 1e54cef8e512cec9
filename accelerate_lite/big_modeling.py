"""Building models without memory: `init_empty_weights` (meta device) and `init_on_device`."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .utils.environment import parse_flag_from_env


@contextmanager
def init_empty_weights(include_buffers: bool | None = None):
    """Build models inside this context with every parameter on the meta device (no memory, no init time).

    Args:
        include_buffers: also put buffers on meta; defaults to the ACCELERATE_INIT_INCLUDE_BUFFERS flag (off).

    Example:
        >>> with init_empty_weights():
        ...     model = nn.Sequential(*[nn.Linear(10_000, 10_000) for _ in range(100)])
        >>> model[0].weight.device
        device(type='meta')
    """
    if include_buffers is None:
        include_buffers = parse_flag_from_env("ACCELERATE_INIT_INCLUDE_BUFFERS", False)
    with init_on_device(torch.device("meta"), include_buffers=include_buffers) as f:
        yield f


@contextmanager
def init_on_device(device: torch.device, include_buffers: bool | None = None):
    """Build models inside this context with every parameter (and optionally buffer) created on `device`.

    With include_buffers, torch's own default-device context is used (everything lands on `device`);
    otherwise only `nn.Module.register_parameter` is redirected, so buffers stay where their code puts them.

    Args:
        device: where parameters are created.
        include_buffers: also buffers; defaults to the ACCELERATE_INIT_INCLUDE_BUFFERS flag (off).

    Example:
        >>> with init_on_device(torch.device("meta")):
        ...     layer = nn.Linear(2, 2)
        >>> layer.bias.is_meta
        True
    """
    if include_buffers is None:
        include_buffers = parse_flag_from_env("ACCELERATE_INIT_INCLUDE_BUFFERS", False)
    if include_buffers:
        with torch.device(device):
            yield
        return

    original_register_parameter = nn.Module.register_parameter

    def register_parameter_on_device(module, name, param):
        original_register_parameter(module, name, param)
        if param is not None:
            registered = module._parameters[name]
            kwargs = dict(registered.__dict__)
            kwargs["requires_grad"] = param.requires_grad
            module._parameters[name] = type(registered)(registered.to(device), **kwargs)

    try:
        nn.Module.register_parameter = register_parameter_on_device
        yield
    finally:
        nn.Module.register_parameter = original_register_parameter
