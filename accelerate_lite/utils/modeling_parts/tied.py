"""Tied parameters: one Parameter object reachable under several names (an embedding shared with a head)."""

from __future__ import annotations

import inspect
import logging

import torch
from torch import nn

from .sizes import walk_modules

logger = logging.getLogger(__name__)


class FindTiedParametersResult(list):
    """The list find_tied_parameters returns; `.values()` is kept for transformers' older callers."""

    def values(self):
        """Return every name of every group but the first of each, flattened."""
        return sum([group[1:] for group in self], [])


def _all_parameter_names(model: nn.Module):
    """Every (name, parameter) under every path, as named_parameters(remove_duplicate=False), in one loop."""
    for prefix, module, _ in walk_modules(model, remove_duplicate=False):
        for leaf, param in module._parameters.items():
            if param is not None:
                yield (f"{prefix}.{leaf}" if prefix else leaf), param


def _alias_names(model: nn.Module) -> tuple[dict[int, str], set[str]]:
    """Return (parameter id -> its first name, the other names of shared parameters)."""
    first_name: dict[int, str] = {}
    aliases: set[str] = set()
    for name, param in _all_parameter_names(model):
        if id(param) in first_name:
            if first_name[id(param)] != name:
                aliases.add(name)
        else:
            first_name[id(param)] = name
    return first_name, aliases


def find_tied_parameters(model: nn.Module, **kwargs) -> FindTiedParametersResult:
    """Find the groups of parameter names that refer to one shared Parameter.

    Groups come in upstream accelerate's order (by the first submodule, depth first, where a second name of
    the parameter shows up); names inside a group are sorted. Keyword arguments are accepted for
    signature compatibility and ignored.

    Args:
        model: the model to inspect.

    Returns:
        A list of lists of names, each list one shared parameter.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        >>> model[1].weight = model[0].weight
        >>> find_tied_parameters(model)
        [['0.weight', '1.weight']]
    """
    first_name, aliases = _alias_names(model)
    if not aliases:
        return FindTiedParametersResult([])
    # Only submodules above an alias can reveal one, so the walk skips every other subtree.
    relevant = set()
    for alias in aliases:
        parts = alias.split(".")
        relevant.update(".".join(parts[:i]) for i in range(1, len(parts)))
    known = set(first_name.values())
    groups: dict[str, list[str]] = {}

    def visit(module: nn.Module, prefix: str) -> None:
        for name, param in module.named_parameters():
            full_name = f"{prefix}.{name}"
            if full_name not in known and id(param) in first_name:
                groups.setdefault(first_name[id(param)], []).append(full_name)
        for child_name, child in module.named_children():
            child_prefix = f"{prefix}.{child_name}"
            if child_prefix in relevant:
                visit(child, child_prefix)

    for child_name, child in model.named_children():
        if child_name in relevant:
            visit(child, child_name)
    return FindTiedParametersResult([sorted([name] + list(set(tied))) for name, tied in groups.items()])


def _resolve(model: nn.Module, dotted_name: str) -> tuple[nn.Module, str]:
    """Return (owning submodule, attribute name) for a dotted tensor name."""
    *path, leaf = dotted_name.split(".")
    module = model
    for part in path:
        module = getattr(module, part)
    return module, leaf


def retie_parameters(model: nn.Module, tied_params) -> None:
    """Make every name of each tied group point at one Parameter again (the first one not on meta).

    Args:
        model: the model whose ties were broken (by loading, hooks or moving one copy).
        tied_params: groups as returned by `find_tied_parameters`.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        >>> retie_parameters(model, [["0.weight", "1.weight"]])
        >>> model[0].weight is model[1].weight
        True
    """
    for group in tied_params:
        keeper = None
        for name in group:
            module, leaf = _resolve(model, name)
            param = getattr(module, leaf)
            if param.device != torch.device("meta"):
                keeper = param
                break
        if keeper is None:
            continue
        for name in group:
            module, leaf = _resolve(model, name)
            setattr(module, leaf, keeper)


def get_param_device(name: str, device_map: dict):
    """Return the device a device map gives a tensor, from its most specific listed ancestor."""
    probe = name
    while probe not in device_map:
        if probe == "":
            raise ValueError(f"The device_map does not contain the module {name}.")
        probe = probe.rpartition(".")[0]
    return device_map[probe]


def check_tied_parameters_on_same_device(tied_params, device_map: dict) -> None:
    """Warn when a device map puts the names of one tied parameter on different devices."""
    for group in tied_params:
        devices = {name: get_param_device(name, device_map) for name in group}
        if len(set(devices.values())) > 1:
            logger.warning(
                f"Tied parameters are on different devices: {devices}. "
                "Put them on one device in your device_map, or use device_map='auto'."
            )


def check_tied_parameters_in_config(model: nn.Module) -> bool:
    """Return whether a transformers model's config says some weights should be tied."""
    if "PreTrainedModel" not in [cls.__name__ for cls in inspect.getmro(model.__class__)]:
        return False
    config = getattr(model, "config", None)
    tied_embeddings = bool(
        config is not None and getattr(config, "tie_word_embeddings", False) and model.get_output_embeddings()
    )
    tied_encoder_decoder = bool(
        config is not None
        and getattr(config, "is_encoder_decoder", False)
        and getattr(config, "tie_encoder_decoder", False)
    )
    tied_module = any(hasattr(module, "_tie_weights") for module in model.modules())
    return tied_embeddings or tied_encoder_decoder or tied_module
