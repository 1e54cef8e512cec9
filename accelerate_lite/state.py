"""The process state: which rank this is, of how many, on which device and distributed type.

`PartialState` reads the world the way the launchers describe it (torchrun and `accelerate launch`:
RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; Open MPI: OMPI_COMM_WORLD_*; Intel MPI/MPICH:
PMI_*; MVAPICH: MV2_COMM_WORLD_*), asks torch at call time which accelerator it has, and either adopts
an already initialised `torch.distributed` group or initialises one. Hardware differences live in one
table, `utils.launch_env.HARDWARE`, not in branches.

Unlike upstream 0.27.2, more than one process always means a distributed type: CPU-only ranks started
with WORLD_SIZE=8 come up MULTI_CPU with 8 processes whether or not `cpu=True` was passed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable

import torch
import torch.distributed as dist

from .utils.enums import TORCH_DISTRIBUTED_TYPES, DistributedType
from .utils.environment import parse_flag_from_env
from .utils.imports import is_deepspeed_available, is_module_importable
from .utils.launch_env import (
    DEFAULT_MASTER_PORT,
    LOCAL_WORLD_SIZE_KEYS,
    Hardware,
    LaunchEnvironment,
    choose_backend,
    detect_hardware,
    env_int,
    xla_world,
)

logger = logging.getLogger(__name__)



def _do_nothing(*args, **kwargs):
    return None


class ThreadLocalSharedDict(threading.local):
    """A class attribute holding one dict per thread (as upstream, for PJRT's one thread per XLA device).

    Reading it from the class or an instance gives the calling thread's dict; clear it in place.
    """

    def __init__(self):
        self._storage = {}

    def __get__(self, obj, objtype=None):
        return self._storage

    def __set__(self, obj, value):
        self._storage = value


# With torch_xla installed, replicas may be threads of one process: each needs its own state.
SharedDict = ThreadLocalSharedDict if is_module_importable("torch_xla") else dict


class PartialState:
    """Shared information about this process's place in the world (a Borg: all instances share it).

    Attributes (after construction):
        distributed_type: a `DistributedType`; NO for one process.
        num_processes, process_index, local_process_index: the world size, global and local rank.
        device: the `torch.device` this process computes on.
        backend: the torch.distributed backend in use, or None.
        debug: whether ACCELERATE_DEBUG_MODE is on.

    Args:
        cpu: use the CPU even where an accelerator is present (ACCELERATE_USE_CPU=true does the same).
        **kwargs: passed to `torch.distributed.init_process_group` when this state initialises the group
            (e.g. timeout, init_method); `backend` is honoured where it suits the hardware.

    Raises:
        ValueError: when the launcher variables disagree (rank outside the world, not an integer) or a
            multi-node run has no MASTER_ADDR.

    Example:
        >>> state = PartialState()
        >>> state.distributed_type, state.num_processes
        (<DistributedType.NO: 'NO'>, 1)
    """

    _shared_state = SharedDict()

    def __init__(self, cpu: bool = False, **kwargs):
        self.__dict__ = self._shared_state
        if not self.initialized:
            # Decide everything first, then publish: a failed start leaves the state uninitialised.
            self._shared_state.update(_decide_state(cpu, kwargs))
        self.fork_launched = parse_flag_from_env("FORK_LAUNCHED", False)

    def __repr__(self) -> str:
        backend = f"  Backend: {self.backend}" if self.backend else ""
        return (
            f"Distributed environment: {self.distributed_type}{backend}\n"
            f"Num processes: {self.num_processes}\n"
            f"Process index: {self.process_index}\n"
            f"Local process index: {self.local_process_index}\n"
            f"Device: {self.device}\n"
        )

    @staticmethod
    def _reset_state():
        """Forget the shared state (upstream's name; see `reset`)."""
        PartialState._shared_state.clear()

    @staticmethod
    def reset(destroy_process_group: bool = False) -> None:
        """Forget the shared state so the next `PartialState()` detects the world again.

        Tests call this between cases. The torch.distributed group is kept (the next state adopts it)
        unless destroy_process_group is True.

        Example:
            >>> PartialState.reset()
            >>> PartialState().initialized
            True
        """
        if destroy_process_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        PartialState._reset_state()

    @property
    def initialized(self) -> bool:
        """Whether the shared state has been set up."""
        return self._shared_state != {}

    @property
    def use_distributed(self) -> bool:
        """Whether more than one process works together."""
        return self.distributed_type != DistributedType.NO and self.num_processes > 1

    @property
    def is_last_process(self) -> bool:
        """Whether this is the process with the highest index."""
        return self.process_index == self.num_processes - 1

    @property
    def is_main_process(self) -> bool:
        """Whether this is the main process (the last one under Megatron-LM, as upstream)."""
        if self.distributed_type == DistributedType.MEGATRON_LM:
            return self.is_last_process
        return self.process_index == 0

    @property
    def is_local_main_process(self) -> bool:
        """Whether this is the main process of its node."""
        if self.distributed_type == DistributedType.MEGATRON_LM:
            return self.is_last_process
        return self.local_process_index == 0

    @property
    def default_device(self) -> torch.device:
        """The device a single process would use: the accelerator torch reports, else the CPU."""
        return _single_device(detect_hardware())

    def wait_for_everyone(self) -> None:
        """Block until every process reaches this point (a no-op on one process).

        Example:
            >>> PartialState().wait_for_everyone()
        """
        if self.distributed_type in TORCH_DISTRIBUTED_TYPES:
            dist.barrier()
        elif self.distributed_type == DistributedType.TPU:
            # not xm.rendezvous: it pins layouts, which hangs replicas that are threads (utils/ops/xla_replicas.py)
            from .utils.ops.xla_replicas import barrier

            barrier()

    def destroy_process_group(self, group=None) -> None:
        """Destroy `group` (the default group when None) if torch.distributed is initialised.

        Under a fork launcher (FORK_LAUNCHED) the default group belongs to the launcher and is kept.
        """
        if self.fork_launched and group is None:
            return
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group(group)

    def _goes_first(self, is_main: bool):
        if not is_main:
            self.wait_for_everyone()
        yield
        if is_main:
            self.wait_for_everyone()

    @contextmanager
    def main_process_first(self):
        """Run the block on the main process first; the others enter it once the main process has left."""
        yield from self._goes_first(self.is_main_process)

    @contextmanager
    def local_main_process_first(self):
        """Run the block on each node's local main process first, then on the node's others."""
        yield from self._goes_first(self.is_local_main_process)

    @contextmanager
    def split_between_processes(self, inputs, apply_padding: bool = False):
        """Yield this process's share of inputs (list, tuple, tensor, or a dict of those).

        Shares are contiguous, ceil(len / num_processes) long; the last process takes what is left. A
        process past the end gets the last element. With apply_padding every share is padded to the
        same length by repeating its last element (drop the padding after gathering).

        Raises:
            ValueError: when the values of a dict have different lengths.

        Example:
            >>> # on 2 processes
            >>> with PartialState().split_between_processes(["A", "B", "C"]) as share:
            ...     share  # process 0: ["A", "B"], process 1: ["C"]
        """
        if self.num_processes == 1:
            yield inputs
            return
        length = _split_length(inputs)
        per_process = math.ceil(length / self.num_processes)
        start = self.process_index * per_process
        end = length if self.process_index == self.num_processes - 1 else start + per_process
        yield _take_share(inputs, start, end, per_process if apply_padding else None)

    def on_main_process(self, function: Callable[..., Any] = None):
        """Decorator: run function on the main process only (elsewhere it returns None).

        Raises:
            ValueError: when the state is not initialised.
        """
        if not self.initialized:
            raise ValueError("on_main_process(): construct PartialState() (or an Accelerator) before decorating")
        return self._only_if(function, self.is_main_process)

    def on_local_main_process(self, function: Callable[..., Any] = None):
        """Decorator: run function on each node's local main process only."""
        return self._only_if(function, self.is_local_main_process)

    def on_last_process(self, function: Callable[..., Any]):
        """Decorator: run function on the last process only."""
        return self._only_if(function, self.is_last_process)

    def on_process(self, function: Callable[..., Any] = None, process_index: int = None):
        """Decorator: run function on the process with index process_index only.

        Example:
            >>> @PartialState().on_process(process_index=0)
            ... def report():
            ...     return "rank 0 says hi"
        """
        if function is None:
            return partial(self.on_process, process_index=process_index)
        return self._only_if(function, self.process_index == process_index)

    def on_local_process(self, function: Callable[..., Any] = None, local_process_index: int = None):
        """Decorator: run function on the process with local index local_process_index only (on every node)."""
        if function is None:
            return partial(self.on_local_process, local_process_index=local_process_index)
        return self._only_if(function, self.local_process_index == local_process_index)

    def _only_if(self, function, selected: bool):
        return function if selected or not self.use_distributed else _do_nothing

    def print(self, *args, **kwargs) -> None:
        """print() on each node's local main process only."""
        if self.is_local_main_process:
            print(*args, **kwargs)


def _split_length(inputs) -> int:
    if isinstance(inputs, dict):
        lengths = {key: len(value) for key, value in inputs.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"split_between_processes(): the dict's values have different lengths {lengths}; "
                f"every value must have the same number of elements"
            )
        return next(iter(lengths.values()), 0)
    if not isinstance(inputs, (list, tuple, torch.Tensor)):
        raise TypeError(
            f"split_between_processes(): got {type(inputs).__name__}; expected a list, tuple, tensor or dict of those"
        )
    return len(inputs)


def _take_share(inputs, start: int, end: int, pad_to: int | None):
    if isinstance(inputs, dict):
        return {key: _take_share(value, start, end, pad_to) for key, value in inputs.items()}
    if not isinstance(inputs, (list, tuple, torch.Tensor)):
        return inputs
    share = inputs[-1:] if start >= len(inputs) else inputs[start:end]
    missing = 0 if pad_to is None else pad_to - len(share)
    if missing <= 0:
        return share
    if isinstance(share, torch.Tensor):
        return torch.cat([share, share[-1:].expand(missing, *share.shape[1:])])
    return share + type(share)([share[-1]] * missing)


def _single_device(hardware: Hardware) -> torch.device:
    """The device of a lone process on this hardware (upstream's default_device)."""
    if hardware.kind == "mps":
        os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] = "1"
    if hardware.kind == "xpu":
        return torch.device("xpu", 0)
    if hardware.kind == "xla":
        return xla_world()[3]
    return torch.device(hardware.kind)


def _decide_state(cpu: bool, kwargs: dict) -> dict:
    """Work out the whole state (initialising the process group if needed) without publishing it."""
    kwargs = dict(kwargs)
    kwargs.pop("_use_sagemaker_dp", None)  # accepted for upstream compatibility; SageMaker is not supported
    cpu = bool(cpu) or parse_flag_from_env("ACCELERATE_USE_CPU")
    hardware = detect_hardware(cpu)
    env_device = os.environ.get("ACCELERATE_TORCH_DEVICE")
    state = {
        "_cpu": cpu,
        "backend": None,
        "debug": parse_flag_from_env("ACCELERATE_DEBUG_MODE"),
        "device": torch.device(env_device) if env_device else None,
    }
    if hardware.kind == "xla":
        num, index, local, device = xla_world()
        state.update(distributed_type=DistributedType.TPU, num_processes=num, process_index=index)
        state.update(local_process_index=local, device=state["device"] or device)
        return state

    launch = LaunchEnvironment.from_environ()
    deepspeed = parse_flag_from_env("ACCELERATE_USE_DEEPSPEED") and not cpu
    adopted = dist.is_available() and dist.is_initialized()
    if adopted:
        num, index = dist.get_world_size(), dist.get_rank()
        if launch.local_rank is None and env_int(LOCAL_WORLD_SIZE_KEYS) is None:
            launch = dataclasses.replace(launch, local_world_size=num)  # a group started by hand: one node
        state["backend"] = dist.get_backend()
    else:
        num, index = launch.world_size, launch.rank
    local = launch.local_rank_of(index)
    distributed = num > 1 or (launch.launched and (hardware.launcher_means_distributed or deepspeed))
    if not distributed:
        state.update(distributed_type=DistributedType.DEEPSPEED if deepspeed else DistributedType.NO)
        state.update(num_processes=1, process_index=0, local_process_index=0)
        state["device"] = state["device"] or (torch.device("cpu") if cpu else _single_device(hardware))
        return state

    if not adopted:
        state["backend"] = _init_process_group(hardware, launch, deepspeed, kwargs)
        num, index = dist.get_world_size(), dist.get_rank()
    state.update(
        distributed_type=DistributedType.DEEPSPEED if deepspeed else hardware.distributed_type,
        num_processes=num,
        process_index=index,
        local_process_index=local,
    )
    state["device"] = state["device"] or _rank_device(hardware, local, cpu)
    if hardware.per_rank_device and state["device"].type == hardware.kind:
        getattr(torch, hardware.kind).set_device(state["device"])
    if state["distributed_type"] == DistributedType.MULTI_CPU:
        _share_cpu_threads(launch.local_world_size)
    return state


def _rank_device(hardware: Hardware, local_rank: int, cpu: bool) -> torch.device:
    if cpu:
        return torch.device("cpu")
    if hardware.per_rank_device:
        return torch.device(hardware.kind, local_rank)
    return _single_device(hardware)


def _init_process_group(hardware: Hardware, launch: LaunchEnvironment, deepspeed: bool, kwargs: dict) -> str:
    """Initialise the default group for the launch environment; return the backend used."""
    backend = choose_backend(hardware, kwargs.pop("backend", None))
    if "init_method" not in kwargs and "store" not in kwargs:
        _fill_rendezvous_environment(launch, backend)
    if deepspeed:
        if not is_deepspeed_available():
            raise ImportError(
                "ACCELERATE_USE_DEEPSPEED=true but deepspeed is not installed: `pip install deepspeed`, or unset it"
            )
        from deepspeed import comm

        comm.init_distributed(dist_backend=backend, auto_mpi_discovery=False, **kwargs)
    else:
        dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size, **kwargs)
    logger.debug("initialised %s group: rank %d of %d", backend, launch.rank, launch.world_size)
    return backend


def _fill_rendezvous_environment(launch: LaunchEnvironment, backend: str) -> None:
    """Export what env:// rendezvous reads, where an MPI launcher did not set it (as upstream)."""
    if not os.environ.get("MASTER_ADDR") and launch.local_world_size != launch.world_size and backend != "mpi":
        raise ValueError(
            f"a multi-node run ({launch.world_size} processes, {launch.local_world_size} on this node) "
            f"needs MASTER_ADDR: export rank 0's hostname as MASTER_ADDR"
        )
    for key, value in (
        ("RANK", launch.rank),
        ("WORLD_SIZE", launch.world_size),
        ("LOCAL_RANK", launch.local_rank_of(launch.rank)),
        ("LOCAL_WORLD_SIZE", launch.local_world_size),
        ("MASTER_ADDR", "127.0.0.1"),  # one node: rank 0 is here
        ("MASTER_PORT", DEFAULT_MASTER_PORT),
    ):
        if not os.environ.get(key):
            os.environ[key] = str(value)


def _share_cpu_threads(local_world_size: int) -> None:
    """Give each CPU rank its share of the physical cores unless OMP/MKL_NUM_THREADS say otherwise."""
    if env_int(("OMP_NUM_THREADS", "MKL_NUM_THREADS"), 0) > 0:
        return
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // max(local_world_size, 1)))
