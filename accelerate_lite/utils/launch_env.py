"""What the launcher's environment and the hardware tell a process about its world.

Hardware differences are data: `HARDWARE` maps a device kind to the distributed type, the
torch.distributed backends and the device placement it implies; `detect_hardware()` asks torch at
call time which kind is present, so patching torch's entry points changes the answer.
`LaunchEnvironment` reads the variables torchrun, `accelerate launch` and MPI launchers set. XLA is
detected as upstream 0.27.2 does, by torch_xla answering `xla_device()` (PJRT_DEVICE picks its device).
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from .enums import DistributedType
from .imports import (
    is_ccl_available,
    is_mps_available,
    is_npu_available,
    is_tpu_available,
    is_xpu_available,
)

# Launcher environment variables, in the order upstream reads them (torchrun's first).
RANK_KEYS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
WORLD_SIZE_KEYS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
LOCAL_RANK_KEYS = ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK")
LOCAL_WORLD_SIZE_KEYS = (
    "LOCAL_WORLD_SIZE",
    "MPI_LOCALNRANKS",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "MV2_COMM_WORLD_LOCAL_SIZE",
)
DEFAULT_MASTER_PORT = "29500"  # torchrun's default, used only when a launcher set none


@dataclasses.dataclass(frozen=True)
class Hardware:
    """What one kind of device means for the process state.

    Attributes:
        kind: the torch device type ("cuda", "npu", "xpu", "xla", "mps", "cpu").
        distributed_type: the type reported with more than one process.
        backends: torch.distributed backends, preferred first; the first one this torch has is used.
        per_rank_device: each rank gets `kind:<local rank>` and selects it with `torch.<kind>.set_device`.
        launcher_means_distributed: LOCAL_RANK alone (torchrun with one process) makes the state
            distributed, as upstream does for CUDA and NPU.
    """

    kind: str
    distributed_type: DistributedType
    backends: tuple
    per_rank_device: bool = False
    launcher_means_distributed: bool = False


HARDWARE = {
    "xla": Hardware("xla", DistributedType.TPU, ()),
    "cuda": Hardware("cuda", DistributedType.MULTI_GPU, ("nccl", "gloo", "mpi"), True, True),
    "npu": Hardware("npu", DistributedType.MULTI_NPU, ("hccl", "gloo"), True, True),
    "xpu": Hardware("xpu", DistributedType.MULTI_XPU, ("ccl", "xccl", "gloo"), True),
    "mps": Hardware("mps", DistributedType.MULTI_CPU, ("gloo",)),
    "cpu": Hardware("cpu", DistributedType.MULTI_CPU, ("gloo", "mpi")),
}

# How to tell whether a kind of device is here, asked in this order at call time.
_DEVICE_PROBES = (
    ("xla", lambda: is_tpu_available(check_device=True)),
    ("cuda", lambda: torch.cuda.is_available()),
    ("npu", lambda: is_npu_available()),
    ("xpu", lambda: is_xpu_available()),
    ("mps", lambda: is_mps_available()),
)

# Modules that register a backend with torch.distributed when imported.
_BACKEND_MODULES = {"ccl": ("oneccl_bindings_for_pytorch", "torch_ccl")}


def detect_hardware(cpu: bool = False) -> Hardware:
    """Return the HARDWARE entry for the accelerator torch reports now (cpu=True forces "cpu")."""
    if not cpu:
        for kind, is_present in _DEVICE_PROBES:
            if is_present():
                return HARDWARE[kind]
    return HARDWARE["cpu"]


def env_int(keys, default=None):
    """The first of keys set in the environment, as an int; default when none is set."""
    for key in keys:
        text = os.environ.get(key)
        if text is None or text.strip() == "":
            continue
        try:
            return int(text)
        except ValueError:
            raise ValueError(
                f"environment variable {key}={text!r} is not an integer; launchers set it to a number "
                f"(unset it or fix the launch command)"
            ) from None
    return default


@dataclasses.dataclass(frozen=True)
class LaunchEnvironment:
    """The world as the launcher's environment variables describe it."""

    rank: int
    world_size: int
    local_rank: int | None  # None when no launcher set one
    local_world_size: int

    @property
    def launched(self) -> bool:
        """Whether a launcher (torchrun, accelerate launch, MPI) set a local rank."""
        return self.local_rank is not None

    def local_rank_of(self, rank: int) -> int:
        """This process's local rank; without a launcher's, rank modulo the local world size (one node)."""
        return rank % max(self.local_world_size, 1) if self.local_rank is None else self.local_rank

    @classmethod
    def from_environ(cls) -> "LaunchEnvironment":
        """Read the launcher variables of os.environ, checking they make sense together."""
        world_size = env_int(WORLD_SIZE_KEYS, 1)
        rank = env_int(RANK_KEYS, 0)
        local_rank = env_int(LOCAL_RANK_KEYS)
        local_world_size = env_int(LOCAL_WORLD_SIZE_KEYS, world_size)
        if world_size < 1:
            raise ValueError(f"world size {world_size} from the environment ({_which(WORLD_SIZE_KEYS)}): expected >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(
                f"rank {rank} ({_which(RANK_KEYS)}) is outside the world of {world_size} processes "
                f"({_which(WORLD_SIZE_KEYS)}): expected 0 <= rank < world size"
            )
        if local_rank is not None and local_rank < 0:
            local_rank = None  # upstream's "-1 means unset"
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, local_world_size=local_world_size)


def _which(keys) -> str:
    found = [f"{key}={os.environ[key]}" for key in keys if key in os.environ]
    return ", ".join(found) or "unset"


def choose_backend(hardware: Hardware, requested: str | None = None) -> str:
    """Pick the torch.distributed backend: the requested one if it suits the hardware, else the first available.

    Raises:
        RuntimeError: when this torch has none of the hardware's backends.
    """
    candidates = hardware.backends
    if requested is not None and requested in candidates:
        candidates = (requested,) + tuple(name for name in candidates if name != requested)
    for name in candidates:
        if _backend_available(name):
            return name
    raise RuntimeError(
        f"none of the torch.distributed backends {list(hardware.backends)} for {hardware.kind} is available "
        f"in this torch build; install one (e.g. torch with gloo) or pass cpu=True"
    )


def _backend_available(name: str) -> bool:
    if name == "ccl" and is_ccl_available():
        _import_first(_BACKEND_MODULES["ccl"])  # registers "ccl" with torch.distributed
    checks = {"gloo": dist.is_gloo_available, "nccl": dist.is_nccl_available, "mpi": dist.is_mpi_available}
    if name in checks:
        return bool(checks[name]())
    is_backend_available = getattr(dist, "is_backend_available", None)
    return bool(is_backend_available and is_backend_available(name))


def _import_first(module_names) -> None:
    for module_name in module_names:
        try:
            __import__(module_name)
            return
        except ImportError:
            continue


def xla_world():
    """(num_processes, process_index, local_process_index, device) from torch_xla."""
    import torch_xla.core.xla_model as xm

    if hasattr(xm, "xrt_world_size"):
        return xm.xrt_world_size(), xm.get_ordinal(), xm.get_local_ordinal(), xm.xla_device()
    import torch_xla.runtime as xr

    return xr.world_size(), xr.global_ordinal(), xr.local_ordinal(), xm.xla_device()
