"""Parallelism helpers: unwrapping parallel/compiled models, saving from the right process, a barrier."""

from __future__ import annotations

import collections
from types import MethodType

import torch

from .enums import DistributedType
from .imports import is_deepspeed_available, is_torch_distributed_available


def is_compiled_module(module) -> bool:
    """Whether module is the wrapper torch.compile returns (an OptimizedModule)."""
    dynamo = getattr(torch, "_dynamo", None)
    optimized = getattr(getattr(dynamo, "eval_frame", None), "OptimizedModule", None)
    return optimized is not None and isinstance(module, optimized)


def _parallel_wrappers() -> tuple:
    """The container classes whose `.module` is the user's model."""
    wrappers = [torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel]
    if is_torch_distributed_available():
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrappers.append(FullyShardedDataParallel)
    if is_deepspeed_available():
        from deepspeed import DeepSpeedEngine

        wrappers.append(DeepSpeedEngine)
    return tuple(wrappers)


def extract_model_from_parallel(model, keep_fp32_wrapper: bool = True):
    """Return the model inside DDP/DataParallel/FSDP/DeepSpeed containers (and torch.compile's wrapper).

    Args:
        model: the possibly wrapped `torch.nn.Module`.
        keep_fp32_wrapper: when False, also undo the mixed-precision wrapper that makes forward return
            fp32 outputs (the original forward is restored).

    Returns:
        The innermost model; when the input was compiled, the compiled wrapper around it.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> extract_model_from_parallel(torch.nn.DataParallel(net)) is net
        True
    """
    compiled = model if is_compiled_module(model) else None
    if compiled is not None:
        model = compiled._orig_mod
    wrappers = _parallel_wrappers()
    while isinstance(model, wrappers):
        model = model.module
    if not keep_fp32_wrapper:
        _remove_fp32_wrapper(model)
    if compiled is not None:
        compiled._orig_mod = model
        return compiled
    return model


def _remove_fp32_wrapper(model) -> None:
    """Put back the forward that existed before mixed precision wrapped it (kept in `_original_forward`)."""
    original_forward = model.__dict__.pop("_original_forward", None)
    if original_forward is None:
        return
    forward = model.forward
    while hasattr(forward, "__wrapped__"):
        forward = forward.__wrapped__
        if forward == original_forward:
            break
    model.forward = MethodType(forward, model)


def wait_for_everyone() -> None:
    """Block until every process reaches this point (a no-op on one process).

    Example:
        >>> wait_for_everyone()
    """
    from ..state import PartialState

    PartialState().wait_for_everyone()


def clean_state_dict_for_safetensors(state_dict: dict) -> dict:
    """Drop the aliases of tensors sharing storage and make the rest contiguous, as safetensors needs.

    Of each group of names sharing one storage, the first name (in key order) is kept.
    """
    names_by_storage = collections.defaultdict(list)
    for name, tensor in state_dict.items():
        if isinstance(tensor, torch.Tensor):
            names_by_storage[_storage_key(tensor)].append(name)
    aliases = {name for names in names_by_storage.values() for name in names[1:]}
    return {
        name: tensor.contiguous() if isinstance(tensor, torch.Tensor) else tensor
        for name, tensor in state_dict.items()
        if name not in aliases
    }


def _storage_key(tensor: torch.Tensor) -> tuple:
    """(device, storage pointer), or the tensor's own id where there is no pointer to compare (XLA, empty)."""
    try:
        pointer = tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        pointer = 0
    return (tensor.device, pointer) if pointer else ("tensor", id(tensor))


def save(obj, f, save_on_each_node: bool = False, safe_serialization: bool = False) -> None:
    """Save obj to f from the main process only (each node's main process with save_on_each_node).

    On TPU a pickle goes through `xm.save` (CPU copies, one writer per host, then a rendezvous); with
    safe_serialization every process runs the pending XLA graph, the writer copies the tensors to the
    CPU and writes safetensors, and all processes meet at a rendezvous, as `xm.save` does.

    Args:
        obj: what to save; with safe_serialization, a dict of tensor names to tensors.
        f: a path (or file object, without safe_serialization).
        save_on_each_node: save once per node instead of once in all.
        safe_serialization: write safetensors (shared tensors deduplicated) instead of torch.save's pickle.

    Example:
        >>> save({"w": torch.ones(2)}, "/tmp/w.safetensors", safe_serialization=True)
    """
    from ..state import PartialState

    state = PartialState()
    on_tpu = state.distributed_type == DistributedType.TPU
    if on_tpu and not safe_serialization:
        import torch_xla.core.xla_model as xm

        xm.save(obj, f)
        return
    writes = state.is_local_main_process if save_on_each_node else state.is_main_process
    if on_tpu:
        # xla_replicas, not bare xm.mark_step/xm.rendezvous: those hang replicas that are threads of one
        # process (PJRT CPU, TPU v2/v3); see utils/ops/xla_replicas.py
        from .ops.xla_replicas import barrier, sync

        sync()  # on every process: the pending graph may hold collectives the writer's copy would wait on
    if writes and safe_serialization:
        from safetensors.torch import save_file

        if isinstance(obj, dict):
            obj = clean_state_dict_for_safetensors(obj)  # before the CPU copies, which would hide shared storage
        if on_tpu and isinstance(obj, dict):
            obj = {k: v.cpu() if isinstance(v, torch.Tensor) and v.device.type == "xla" else v for k, v in obj.items()}
        save_file(obj, f, metadata={"format": "pt"})
    elif writes:
        torch.save(obj, f)
    if on_tpu:
        barrier()
