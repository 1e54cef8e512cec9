"""The simulated host a profile describes, and the device-module functions that answer from it.

:class:`SimulatedHost` holds one rank's view of the hardware (profile, local rank, world size, the
current device, one RNG per device). :func:`device_functions` builds the functions that replace
``torch.cuda.*`` / ``torch.xpu.*`` / ``torch.npu.*`` (and :func:`mps_functions` those of ``torch.mps``)
while a profile is applied. Which attributes get replaced is :mod:`simulators.apply`'s business.
"""

import contextlib
import dataclasses
import os

import torch

from .profiles import HardwareProfile

__all__ = ["DeviceProperties", "SimulatedHost", "absent_functions", "device_functions", "mps_functions"]


class DeviceProperties:
    """What ``get_device_properties()`` returns for a simulated device (the fields torch's have)."""

    def __init__(self, profile: HardwareProfile):
        self.name = profile.device_name
        self.total_memory = profile.memory
        self.major, self.minor = profile.capability or (0, 0)
        self.multi_processor_count = profile.multi_processor_count
        self.is_integrated = profile.kind == "mps"
        self.is_multi_gpu_board = False
        self.type = profile.kind

    def __repr__(self):
        return (
            f"_SimulatedDeviceProperties(name={self.name!r}, major={self.major}, minor={self.minor}, "
            f"total_memory={self.total_memory // 2**20}MB, multi_processor_count={self.multi_processor_count})"
        )


@dataclasses.dataclass
class SimulatedHost:
    """One rank's view of a simulated machine; the object ``apply_profile`` yields.

    Args:
        profile: the hardware.
        local_rank: this process's index on the host.
        world_size: processes in the world.
        current: the current device index (``current_device()``), changed by ``set_device``.
    """

    profile: HardwareProfile
    local_rank: int = 0
    world_size: int = 1
    current: int = 0
    generators: dict[int, torch.Generator] = dataclasses.field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """This rank's device as the library should pick it (``cuda:<local_rank>``, ``xla:0``, ``cpu``...)."""
        kind = self.profile.kind
        if kind == "cpu":
            return torch.device("cpu")
        if kind in ("xla", "mps"):
            return torch.device(kind, 0)
        return torch.device(kind, self.local_rank)

    def env_device_type(self) -> str:
        """The PJRT device type (torch_xla.runtime.device_type()), from PJRT_DEVICE as on a real host."""
        return os.environ.get("PJRT_DEVICE", "TPU")

    def index(self, device=None) -> int:
        """The device index that device (None, int, "cuda:3", torch.device) means, checked against count."""
        kind = self.profile.kind
        if device is None:
            index = self.current
        elif isinstance(device, int) and not isinstance(device, bool):
            index = device
        elif isinstance(device, (str, torch.device)):
            parsed = torch.device(device)
            if parsed.type != kind:
                raise ValueError(f"Expected a {kind} device, but got: {device!r}")
            index = self.current if parsed.index is None else parsed.index
        else:
            raise TypeError(f"Expected a device index, a '{kind}:N' string or a torch.device, got {device!r} ({type(device).__name__})")
        if index < 0:
            index = self.current
        if index >= self.profile.count:
            raise RuntimeError(
                f"{kind} error: invalid device ordinal {index} (simulated profile {self.profile.name!r} has "
                f"{self.profile.count} device(s))"
            )
        return index

    def generator(self, device=None) -> torch.Generator:
        """The RNG of one simulated device (a CPU generator standing in for the device's)."""
        index = self.index(device)
        if index not in self.generators:
            generator = torch.Generator()
            generator.manual_seed(67280421310721 + index)  # CUDA's default seed, offset per device
            self.generators[index] = generator
        return self.generators[index]


def device_functions(host: SimulatedHost) -> dict:
    """The functions a cuda/xpu/npu device module exposes, answering from host (name -> callable)."""
    profile = host.profile

    def set_device(device):
        host.current = host.index(device)

    @contextlib.contextmanager
    def _device_context(device):
        previous = host.current
        if device is not None:
            host.current = host.index(device)
        try:
            yield
        finally:
            host.current = previous

    class device:
        """Context manager switching the current simulated device."""

        def __init__(self, device):
            self._context = _device_context(device)

        def __enter__(self):
            return self._context.__enter__()

        def __exit__(self, *exc):
            return self._context.__exit__(*exc)

    def get_device_capability(device=None):
        host.index(device)
        return profile.capability if profile.capability is not None else (0, 0)

    def mem_get_info(device=None):
        host.index(device)
        return (profile.memory, profile.memory)

    def zero(device=None):
        host.index(device)
        return 0

    def nothing(*args, **kwargs):
        return None

    def check_only(device=None):
        host.index(device)

    def get_device_properties(device=None):
        host.index(device)
        return DeviceProperties(profile)

    def get_device_name(device=None):
        host.index(device)
        return profile.device_name

    def memory_stats(device=None):
        host.index(device)
        return {}

    def set_rng_state_all(states):
        for index, state in enumerate(states):
            host.generator(index).set_state(state)

    def manual_seed(seed):
        host.generator().manual_seed(int(seed))

    def manual_seed_all(seed):
        for index in range(profile.count):
            host.generator(index).manual_seed(int(seed))

    def seed():
        host.generator().seed()

    def seed_all():
        for index in range(profile.count):
            host.generator(index).seed()

    def get_rng_state(device="current"):
        return host.generator(None if device == "current" else device).get_state()

    def set_rng_state(new_state, device="current"):
        host.generator(None if device == "current" else device).set_state(new_state)

    return {
        "is_available": lambda: True,
        "device_count": lambda: profile.count,
        "current_device": lambda: host.current,
        "set_device": set_device,
        "device": device,
        "get_device_properties": get_device_properties,
        "get_device_name": get_device_name,
        "get_device_capability": get_device_capability,
        "mem_get_info": mem_get_info,
        "is_bf16_supported": lambda including_emulation=True: profile.bf16,
        "synchronize": check_only,
        "empty_cache": nothing,
        "ipc_collect": nothing,
        "_lazy_init": nothing,
        "init": nothing,
        "memory_allocated": zero,
        "max_memory_allocated": zero,
        "memory_reserved": zero,
        "max_memory_reserved": zero,
        "reset_peak_memory_stats": check_only,
        "reset_max_memory_allocated": check_only,
        "memory_stats": memory_stats,
        "manual_seed": manual_seed,
        "manual_seed_all": manual_seed_all,
        "seed": seed,
        "seed_all": seed_all,
        "initial_seed": lambda: host.generator().initial_seed(),
        "get_rng_state": get_rng_state,
        "set_rng_state": set_rng_state,
        "get_rng_state_all": lambda: [host.generator(i).get_state() for i in range(profile.count)],
        "set_rng_state_all": set_rng_state_all,
        "_is_in_bad_fork": lambda: False,
    }


def mps_functions(host: SimulatedHost) -> dict:
    """The torch.mps functions a simulated Apple GPU answers (name -> callable)."""
    functions = device_functions(host)
    return {
        "device_count": functions["device_count"],
        "synchronize": lambda: None,
        "empty_cache": lambda: None,
        "manual_seed": functions["manual_seed"],
        "seed": functions["seed"],
        "get_rng_state": lambda device="mps": host.generator(0).get_state(),
        "set_rng_state": lambda new_state, device="mps": host.generator(0).set_state(new_state),
        "current_allocated_memory": lambda: 0,
        "driver_allocated_memory": lambda: 0,
        "recommended_max_memory": lambda: host.profile.memory,
    }


def absent_functions() -> dict:
    """is_available/device_count of a device kind the profile does not have (so the simulation is hermetic)."""
    return {"is_available": lambda: False, "device_count": lambda: 0}
