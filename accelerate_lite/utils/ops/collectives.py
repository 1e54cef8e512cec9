"""The collective data ops: gather, broadcast, reduce, padding and object exchange across processes.

Each op flattens its nested structure once (traversal.flatten_tensors), hands the flat list of
tensors to the backend of the current state (backends.current_state_and_backend), and rebuilds the
structure from what comes back. With ACCELERATE_DEBUG_MODE on, each op first checks that the ranks
agree (debug.verify) so a mismatch raises on every rank instead of hanging.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from . import debug
from .backends import current_state_and_backend
from .traversal import flatten_tensors, recursively_apply

_REDUCTIONS = ("mean", "sum", "none")


class CannotPadNestedTensorWarning(UserWarning):
    """pad_across_processes met a nested tensor, which it leaves as it is."""


def gather(tensor):
    """Gather the tensors of a nested structure from all processes, concatenated on dim 0 in rank order.

    Tensors of one structure travel in one collective (per device), not one collective per tensor.

    Args:
        tensor: a tensor or nested list/tuple/dict of tensors, the same shapes on every process.

    Returns:
        The same structure; each tensor is every process's tensor concatenated on the first dimension
        (0-d tensors become 1-d). On a single process the input itself is returned.

    Raises:
        TypeError: a leaf is not a tensor.
        DistributedOperationException: in debug mode, when the processes' inputs disagree.

    Example:
        >>> gather({"x": torch.tensor([rank])})  # on 2 processes
        {'x': tensor([0, 1])}
    """
    state, backend = current_state_and_backend()
    if backend.passthrough:
        return tensor
    if state.debug:
        debug.verify(backend, "gather", tensor, debug.GATHER)
    leaves, rebuild = flatten_tensors(tensor, "gather")
    return rebuild(backend.gather(leaves))


def gather_object(object: Any):
    """Gather a picklable object from every process (lists are flattened one level, as upstream).

    Args:
        object: an iterable of picklable objects (usually a list) on every process.

    Returns:
        On several processes, the items of every process's `object` in rank order, as one list; on a
        single process, `object` itself.

    Example:
        >>> gather_object([f"rank {rank}"])  # on 2 processes
        ['rank 0', 'rank 1']
    """
    state, backend = current_state_and_backend()
    if backend.passthrough:
        return object
    if state.debug:
        debug.verify(backend, "gather_object", None, debug.NAME_ONLY, summary=debug.summarize_object(object))
    return [item for rank_objects in backend.gather_objects(object) for item in rank_objects]


def broadcast(tensor, from_process: int = 0):
    """Overwrite every tensor of a nested structure, in place, with process `from_process`'s values.

    Args:
        tensor: a tensor or nested list/tuple/dict of tensors, the same shapes on every process.
        from_process: the index of the process whose values everyone takes.

    Returns:
        The same structure holding the same (now overwritten) tensor objects.

    Raises:
        ValueError: from_process is not a process index.
        TypeError: a leaf is not a tensor.
        DistributedOperationException: in debug mode, when the processes' inputs disagree.

    Example:
        >>> broadcast(torch.tensor([rank]), from_process=1)  # on 2 processes
        tensor([1])
    """
    state, backend = current_state_and_backend()
    if backend.passthrough:
        return tensor
    _check_process_index("broadcast", from_process, backend.num_processes)
    if state.debug:
        debug.verify(backend, "broadcast", tensor, debug.SAME_SHAPES, {"from_process": from_process})
    leaves, rebuild = flatten_tensors(tensor, "broadcast")
    return rebuild(backend.broadcast(leaves, from_process))


def broadcast_object_list(object_list, from_process: int = 0):
    """Replace, in place, the items of `object_list` by those of process `from_process`.

    Args:
        object_list: a list of picklable objects, of the same length on every process.
        from_process: the index of the process whose objects everyone takes.

    Returns:
        `object_list` itself.

    Example:
        >>> broadcast_object_list([{"step": rank}])  # on 2 processes
        [{'step': 0}]
    """
    state, backend = current_state_and_backend()
    if backend.passthrough:
        return object_list
    _check_process_index("broadcast_object_list", from_process, backend.num_processes)
    if state.debug:
        params = {"from_process": from_process, "length": len(object_list)}
        debug.verify(backend, "broadcast_object_list", None, debug.NAME_ONLY, params, debug.summarize_object(object_list))
    backend.broadcast_objects(object_list, from_process)
    return object_list


def reduce(tensor, reduction="mean", scale=1.0):
    """Sum or average the tensors of a nested structure over all processes.

    Follows upstream's documentation where its code differs: `reduction="none"` leaves each tensor as
    it is (a copy, no communication), where upstream's code sums as for "sum". Tensors of one dtype
    travel in one collective.

    Args:
        tensor: a tensor or nested list/tuple/dict of tensors, the same shapes on every process.
        reduction: "mean", "sum" or "none".
        scale: a factor applied to the sum by XLA's all_reduce (ignored elsewhere, as upstream).

    Returns:
        The same structure holding new tensors. On a single process, copies of the inputs.

    Raises:
        ValueError: reduction is not one of "mean", "sum", "none".
        TypeError: a leaf is not a tensor, or "mean" of an integer or bool tensor across processes.
        DistributedOperationException: in debug mode, when the processes' inputs disagree.

    Example:
        >>> reduce(torch.tensor([1.0 + rank]), reduction="sum")  # on 2 processes
        tensor([3.])
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduce(): reduction={reduction!r} is not one of {', '.join(map(repr, _REDUCTIONS))}.")
    state, backend = current_state_and_backend()
    if state.debug and not backend.passthrough:
        debug.verify(backend, "reduce", tensor, debug.SAME_SHAPES, {"reduction": reduction})
    leaves, rebuild = flatten_tensors(tensor, "reduce")
    if backend.passthrough or reduction == "none":
        return rebuild([leaf.clone() for leaf in leaves])
    if reduction == "mean":
        _check_mean_dtypes(leaves)
    divisor = backend.num_processes if reduction == "mean" else 1
    return rebuild(backend.all_reduce(leaves, scale=scale, divisor=divisor))


def _check_mean_dtypes(leaves) -> None:
    for leaf in leaves:
        if not (leaf.is_floating_point() or leaf.is_complex()):
            raise TypeError(
                f"reduce(reduction='mean') got a {leaf.dtype} tensor of shape {list(leaf.shape)}: the mean of "
                "integers is not an integer. Cast it to a float dtype first, or use reduction='sum'."
            )


def pad_across_processes(tensor, dim=0, pad_index=0, pad_first=False):
    """Pad each tensor of a nested structure on `dim` to the largest size any process has there.

    The sizes of all tensors travel in one collective. A negative `dim` counts from the end; a tensor
    without such a dimension is left as it is. The padded tensor keeps its dtype on every process, and
    `pad_index` is converted to it as `Tensor.new_full` does (a float pad value on an integer tensor is
    truncated). Upstream's `new_zeros(...) + pad_index` instead promotes an integer tensor to float on
    the processes that needed padding only, so the processes would disagree on dtypes and the result
    could not be gathered.

    Args:
        tensor: a tensor or nested list/tuple/dict of tensors.
        dim: the dimension to pad.
        pad_index: the value padding is filled with.
        pad_first: pad at the start instead of the end.

    Returns:
        The same structure; tensors that were already the largest are returned as they are.

    Raises:
        TypeError: a leaf is not a tensor.
        ValueError: pad_index cannot be stored in the dtype of a tensor to pad (e.g. -1.5 in uint8).
        DistributedOperationException: in debug mode, when the processes' inputs disagree.

    Example:
        >>> pad_across_processes(torch.ones(1 + rank), pad_index=-1)  # on 2 processes, rank 0 gets
        tensor([ 1., -1.])
    """
    state, backend = current_state_and_backend()
    if state.debug and not backend.passthrough:
        debug.verify(backend, "pad_across_processes", tensor, debug.NDIM_ONLY, {"dim": dim})
    leaves, rebuild = flatten_tensors(tensor, "pad_across_processes")
    targets = []  # (leaf index, normalised dim)
    for index, leaf in enumerate(leaves):
        if getattr(leaf, "is_nested", False):
            warnings.warn("Cannot pad nested tensors without more information. Leaving unprocessed.", CannotPadNestedTensorWarning)
        elif -leaf.ndim <= dim < leaf.ndim:
            targets.append((index, dim % leaf.ndim))
    if backend.passthrough or not targets:
        return rebuild(leaves)
    _check_pad_value(pad_index, {leaves[index].dtype for index, _ in targets})
    first = leaves[targets[0][0]]
    sizes = torch.tensor([leaves[i].shape[d] for i, d in targets], dtype=torch.int64, device=first.device)
    all_sizes = backend.gather([sizes])[0].view(backend.num_processes, len(targets))
    largest = all_sizes.max(dim=0).values.tolist()
    padded = list(leaves)
    for (index, d), size in zip(targets, largest):
        if size > leaves[index].shape[d]:
            padded[index] = _pad(leaves[index], d, size, pad_index, pad_first)
    return rebuild(padded)


def _check_pad_value(pad_index, dtypes) -> None:
    # on every rank, before the collective: a rank that pads must not fail where the others do not
    for dtype in dtypes:
        try:
            torch.full((), pad_index, dtype=dtype)
        except (RuntimeError, TypeError) as error:
            raise ValueError(
                f"pad_across_processes(): pad_index={pad_index!r} cannot be stored in a {dtype} tensor ({error}). "
                "Pass a pad_index that fits the dtype, or cast the tensor first."
            ) from None


def _pad(tensor: torch.Tensor, dim: int, size: int, pad_index, pad_first: bool) -> torch.Tensor:
    shape = list(tensor.shape)
    shape[dim] = size
    padded = tensor.new_full(shape, pad_index)
    start = size - tensor.shape[dim] if pad_first else 0
    padded.narrow(dim, start, tensor.shape[dim]).copy_(tensor)
    return padded


def pad_input_tensors(tensor, batch_size, num_processes, dim=0):
    """Pad each tensor of a nested structure on `dim` so `num_processes` processes get equal shares.

    Follows upstream's documentation where its code differs: the size on `dim` becomes the smallest
    multiple of `num_processes` not below `batch_size`, and the new entries repeat the last one
    (upstream's code pads with zeros, to sizes that are not always such a multiple). No communication.

    Args:
        tensor: a tensor or nested list/tuple/dict of tensors.
        batch_size: the size of the batch dimension to pad.
        num_processes: the number of shares the batch must split into.
        dim: the batch dimension.

    Returns:
        The same structure with the padded tensors (tensors already long enough are returned as they are).

    Raises:
        TypeError: a leaf is not a tensor.
        ValueError: num_processes is not a positive integer.

    Example:
        >>> pad_input_tensors(torch.tensor([1, 2, 3]), batch_size=3, num_processes=4)
        tensor([1, 2, 3, 3])
    """
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"pad_input_tensors(): num_processes must be a positive integer, got {num_processes!r}.")
    target = math.ceil(batch_size / num_processes) * num_processes

    def _repeat_last(tensor):
        if tensor.ndim == 0 or tensor.shape[dim] >= target:
            return tensor
        missing = target - tensor.shape[dim]
        if tensor.shape[dim] == 0:
            shape = list(tensor.shape)
            shape[dim] = missing
            return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)
        last = tensor.narrow(dim, tensor.shape[dim] - 1, 1)
        return torch.cat([tensor, last.expand(*[missing if i == dim % tensor.ndim else -1 for i in range(tensor.ndim)])], dim=dim)

    return recursively_apply(_repeat_last, tensor, error_on_other_type=True)


def copy_tensor_to_devices(tensor=None) -> torch.Tensor:
    """Copy a tensor that exactly one process has to every process (the others pass None).

    Unlike `broadcast`, the receiving processes need not know the shape or dtype. Any dtype works.

    Args:
        tensor: the tensor on the one process that has it; None on the others.

    Returns:
        A new tensor equal to the source's on every process (on the process's device).

    Raises:
        ValueError: no process, or more than one, passed a tensor.

    Example:
        >>> copy_tensor_to_devices(torch.tensor([1, 2]) if rank == 0 else None)
        tensor([1, 2])
    """
    state, backend = current_state_and_backend()
    if backend.passthrough:
        if tensor is None:
            raise ValueError("copy_tensor_to_devices(): got None on the only process; pass the tensor to copy.")
        return tensor.clone()
    if state.debug:
        debug.verify(backend, "copy_tensor_to_devices", None, debug.NAME_ONLY, summary=debug.summarize_object(tensor))
    meta = None if tensor is None else (tuple(tensor.shape), tensor.dtype, tensor.device.type)
    metas = backend.gather_objects(meta)
    sources = [rank for rank, info in enumerate(metas) if info is not None]
    if len(sources) != 1:
        raise ValueError(
            f"copy_tensor_to_devices(): exactly one process must pass a tensor and the others None; got tensors "
            f"on processes {sources} of {len(metas)}. Pass None everywhere but on the process that has the tensor."
        )
    shape, dtype, device_type = metas[sources[0]]
    if tensor is None:
        device = torch.device("cpu") if device_type == "cpu" else state.device
        buffer = torch.empty(shape, dtype=dtype, device=device)
    else:
        buffer = tensor.clone(memory_format=torch.contiguous_format)
    return backend.broadcast([buffer], sources[0])[0]


def _check_process_index(op: str, from_process, num_processes: int) -> None:
    if not isinstance(from_process, int) or not 0 <= from_process < num_processes:
        raise ValueError(
            f"{op}(): from_process={from_process!r} is not a process index; expected an int in [0, {num_processes - 1}]."
        )
