"""Recovering from out-of-memory: freeing device caches and retrying with smaller batches."""

import functools
import gc
import inspect

import torch

from .launch_env import detect_hardware

# Messages of the errors that mean "this batch does not fit" (each vendor words it its own way).
OUT_OF_MEMORY_MESSAGES = (
    "CUDA out of memory.",  # CUDA (torch.cuda.OutOfMemoryError)
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED.",  # cuDNN refusing a too-large problem
    "DefaultCPUAllocator: can't allocate memory",  # the CPU allocator
    "XPU out of memory.",  # Intel XPU
    "NPU out of memory.",  # Ascend NPU (torch_npu)
    "MPS backend out of memory",  # Apple MPS
)


def clear_device_cache(garbage_collection: bool = True) -> None:
    """Run the garbage collector and empty the cache of the accelerator torch reports (if any).

    Example:
        >>> clear_device_cache()
    """
    if garbage_collection:
        gc.collect()
    kind = detect_hardware().kind
    device_module = getattr(torch, kind, None) if kind in ("cuda", "xpu", "npu", "mps") else None
    if device_module is not None and hasattr(device_module, "empty_cache"):
        device_module.empty_cache()


def release_memory(*objects):
    """Drop references to objects, collect garbage and empty the device cache.

    Returns:
        A list of None, one per object: assign it back so the caller's names let go too.

    Example:
        >>> a, b = torch.ones(1000), torch.ones(1000)
        >>> a, b = release_memory(a, b)
        >>> a is None and b is None
        True
    """
    objects = [None] * len(objects)
    clear_device_cache()
    return objects


def should_reduce_batch_size(exception: BaseException) -> bool:
    """Whether exception is an out-of-memory error that a smaller batch may avoid."""
    out_of_memory = getattr(torch, "OutOfMemoryError", None)
    if out_of_memory is not None and isinstance(exception, out_of_memory):
        return True
    if isinstance(exception, RuntimeError) and len(exception.args) == 1 and isinstance(exception.args[0], str):
        return any(message in exception.args[0] for message in OUT_OF_MEMORY_MESSAGES)
    return False


def find_executable_batch_size(function=None, starting_batch_size: int = 128):
    """Decorator: call function(batch_size, ...) and halve batch_size after each out-of-memory error.

    The batch size found is kept for the next call, as upstream does. Errors that are not out of
    memory (see `OUT_OF_MEMORY_MESSAGES`) pass through untouched.

    Args:
        function: the function to wrap; its first parameter receives the batch size.
        starting_batch_size: the first batch size tried.

    Raises:
        TypeError: when the caller passes the batch size itself (the decorator supplies it).
        RuntimeError: when halving reaches zero without a batch that fits.

    Example:
        >>> @find_executable_batch_size(starting_batch_size=64)
        ... def train(batch_size, data):
        ...     if batch_size > 16:
        ...         raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        ...     return batch_size
        >>> train([1, 2, 3])
        16
    """
    if function is None:
        return functools.partial(find_executable_batch_size, starting_batch_size=starting_batch_size)

    batch_size = starting_batch_size
    parameters = list(inspect.signature(function).parameters.values())

    @functools.wraps(function)
    def decorator(*args, **kwargs):
        nonlocal batch_size
        _refuse_batch_size_from_caller(function, parameters, args, kwargs)
        clear_device_cache()
        while True:
            if batch_size == 0:
                raise RuntimeError(
                    f"No executable batch size found, reached zero: {function.__name__}() ran out of memory "
                    f"at every batch size from {starting_batch_size} down to 1"
                )
            try:
                return function(batch_size, *args, **kwargs)
            except Exception as error:
                if not should_reduce_batch_size(error):
                    raise
                del error  # its traceback holds the frames (and tensors) of the failed attempt
                clear_device_cache()
                batch_size //= 2

    return decorator


def _refuse_batch_size_from_caller(function, parameters, args, kwargs) -> None:
    name = function.__name__
    first = parameters[0].name if parameters else "batch_size"
    if first in kwargs:
        raise TypeError(
            f"`{name}` was called with {first}={kwargs[first]!r}; remove it: find_executable_batch_size "
            f"supplies the batch size as the first argument"
        )
    takes_var_positional = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    if not takes_var_positional and len(parameters) < len(args) + 1:
        rest = ", ".join(f"{p.name}={value!r}" for p, value in zip(parameters[1:], args[1:]))
        raise TypeError(
            f"Batch size was passed into `{name}` as the first argument when called ({len(args)} positional "
            f"arguments for the {len(parameters) - 1} after `{first}`). Remove it, the decorator already "
            f"supplies it: `{name}({rest})`"
        )
