"""Applying a hardware profile: make this process look like the profile's machine, then undo it exactly.

:func:`apply_profile` is a context manager. While it is active:

- ``os.environ`` loses the hardware-selecting variables of the real host (:data:`HARDWARE_ENV_VARS`)
  and gains the profile's ``env`` (e.g. ``PJRT_DEVICE=TPU``); with ``launcher_env=True`` also
  ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``LOCAL_WORLD_SIZE``. On exit the environment is restored
  exactly, whatever the block changed (built on ``clear_environment``).
- the profile's device module answers from the profile (see :data:`PATCHED_FUNCTIONS`); the other
  device kinds report no device;
- the vendor package (torch_npu, intel_extension_for_pytorch, torch_xla) imports and has metadata;
- the library's cached ``is_*_available`` answers and ``PartialState`` are reset (on entry and exit).

Everything is recorded by a :class:`_Patches` journal and undone in reverse order.
"""

import contextlib
import os
import sys
import threading
import types

import torch

from accelerate_lite.utils.environment import clear_environment

from . import fake_device
from .device_modules import (
    SimulatedHost,
    absent_functions,
    device_functions,
    mps_functions,
)
from .errors import ProfileActiveError, ProfileError
from .profiles import HardwareProfile, get_profile
from .vendor_modules import VendorFinder, build_vendor_modules

__all__ = ["HARDWARE_ENV_VARS", "PATCHED_FUNCTIONS", "active_profile", "apply_profile"]

# Variables of the real host that select hardware; removed while a profile is active unless it sets them.
HARDWARE_ENV_VARS = (
    "ACCELERATE_USE_CPU", "ACCELERATE_USE_XPU", "ACCELERATE_USE_MPS_DEVICE", "ACCELERATE_TORCH_DEVICE",
    "CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES", "ZE_AFFINITY_MASK",
    "PJRT_DEVICE", "XRT_TPU_CONFIG", "TPU_NAME", "COLAB_TPU_ADDR", "TPU_NUM_DEVICES", "GPU_NUM_DEVICES",
)


_MISSING = object()
_lock = threading.Lock()
_active = None  # the SimulatedHost of the profile applied in this process, if any


def active_profile():
    """Return the HardwareProfile applied in this process right now, or None."""
    return None if _active is None else _active.profile


class _Patches:
    """A journal of reversible changes to attributes, sys.modules and sys.meta_path."""

    def __init__(self):
        self._undo = []

    def setattr(self, owner, name, value):
        previous = owner.__dict__.get(name, _MISSING) if isinstance(owner, types.ModuleType) else getattr(owner, name, _MISSING)
        self._undo.append((self._restore_attr, owner, name, previous))
        setattr(owner, name, value)

    def set_module(self, name, module):
        self._undo.append((self._restore_module, name, sys.modules.get(name, _MISSING)))
        sys.modules[name] = module

    def insert_finder(self, finder):
        self._undo.append((sys.meta_path.remove, finder))
        sys.meta_path.insert(0, finder)

    def call_on_undo(self, function, *args):
        self._undo.append((function, *args))

    def undo(self):
        errors = []
        while self._undo:
            function, *args = self._undo.pop()
            try:
                function(*args)
            except Exception as exc:  # noqa: BLE001 - keep undoing the rest; report after
                errors.append(exc)
        if errors:
            raise ProfileError(f"apply_profile: {len(errors)} change(s) could not be undone: {errors!r}")

    @staticmethod
    def _restore_attr(owner, name, previous):
        if previous is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, previous)

    @staticmethod
    def _restore_module(name, previous):
        if previous is _MISSING:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous


def _check_arguments(profile_or_name, local_rank, world_size):
    if not isinstance(profile_or_name, (str, HardwareProfile)):
        raise ProfileError(
            f"apply_profile(): expected a profile name or a HardwareProfile, got {profile_or_name!r} "
            f"({type(profile_or_name).__name__})"
        )
    profile = get_profile(profile_or_name)
    for name, value, low in (("local_rank", local_rank, 0), ("world_size", world_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ProfileError(f"apply_profile({profile.name!r}): {name} must be an int >= {low}, got {value!r}")
    if local_rank >= world_size:
        raise ProfileError(f"apply_profile({profile.name!r}): local_rank={local_rank} must be < world_size={world_size}")
    if profile.kind not in ("cpu", "mps") and local_rank >= profile.count:
        raise ProfileError(
            f"apply_profile({profile.name!r}): local_rank={local_rank} but the profile has {profile.count} "
            f"{profile.kind} device(s); run at most {profile.count} ranks per host, or register a profile with more"
        )
    return profile


def _environment(profile, local_rank, world_size, launcher_env):
    environment = {key: value for key, value in os.environ.items() if key not in HARDWARE_ENV_VARS}
    environment.update(profile.env)
    if launcher_env:
        environment.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank),
                           WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size))
    return environment


def _patch_module(patches, module, functions):
    for name, function in functions.items():
        patches.setattr(module, name, function)


def _patch_devices(patches, host, fake_tensors):
    kind = host.profile.kind
    for other in ("cuda", "xpu"):
        functions = device_functions(host) if other == kind else absent_functions()
        _patch_module(patches, getattr(torch, other), functions)
    if kind == "cuda":
        patches.setattr(torch.cuda.memory, "mem_get_info", torch.cuda.mem_get_info)
    mps = kind == "mps"
    patches.setattr(torch.backends.mps, "is_available", lambda: mps)
    patches.setattr(torch.backends.mps, "is_built", lambda: mps)
    if mps:
        _patch_module(patches, torch.mps, mps_functions(host))
    if kind == "npu":
        _install_npu(patches, host, fake_tensors)


def _install_npu(patches, host, fake_tensors):
    """Register torch.npu (a module answering from host) and, with fake_tensors, the npu device type."""
    if fake_tensors:
        fake_device.install_fake_backend("npu")
        patches.call_on_undo(torch._C._set_multithreading_enabled, torch._C._is_multithreading_enabled())
        # The autograd engine has no worker queue for PrivateUse1 devices >= 1: run backward in-thread.
        torch._C._set_multithreading_enabled(False)
    # torch.get_device_module is functools.cache'd: forget the module it handed out, after restoring too.
    patches.call_on_undo(_forget_device_modules)
    module = types.ModuleType("torch.npu", "simulated torch.npu (simulators.apply_profile)")
    module.__dict__.update(_npu_functions(host))
    patches.setattr(torch, "npu", module)
    patches.set_module("torch.npu", module)
    _forget_device_modules()


def _npu_functions(host):
    functions = device_functions(host)
    # What torch's own helpers ask a PrivateUse1 runtime module (autocast, fork_rng, lazy init checks).
    amp_dtypes = [torch.float16] + ([torch.bfloat16] if host.profile.bf16 else [])
    functions["get_amp_supported_dtype"] = lambda: list(amp_dtypes)
    functions["is_initialized"] = lambda: True
    return functions


def _forget_device_modules():
    clear = getattr(torch.get_device_module, "cache_clear", None)
    if clear is not None:
        clear()


def _install_vendor(patches, host):
    modules, versions = build_vendor_modules(host)
    if not modules:
        return
    for name in modules:
        if name in sys.modules:
            patches.set_module(name, sys.modules[name])  # restore exactly what was there
    # Drop entries on exit that the block imported (they are ours).
    patches.call_on_undo(_forget_modules, tuple(modules))
    patches.insert_finder(VendorFinder(modules, versions))


def _forget_modules(names):
    for name in names:
        sys.modules.pop(name, None)


def _reset_library_caches():
    """Clear the library's cached availability answers and its PartialState (where those exist)."""
    imports = sys.modules.get("accelerate_lite.utils.imports")
    if imports is None:
        try:
            from accelerate_lite.utils import imports
        except ImportError:
            imports = None
    clear = getattr(imports, "clear_import_caches", None)
    if clear is not None:
        clear()
    state = sys.modules.get("accelerate_lite.state")
    reset = getattr(getattr(state, "PartialState", None), "_reset_state", None)
    if reset is not None:
        reset()


@contextlib.contextmanager
def apply_profile(profile_or_name, *, local_rank=0, world_size=1, launcher_env=False, fake_tensors=True,
                  device_tags=None):
    """Make this process see the hardware of a profile for the duration of a block, then restore it exactly.

    Args:
        profile_or_name: a HardwareProfile or a registered name ("8xH100", "tpu-v4-8", ...).
        local_rank: this process's index on the host; its device is ``<kind>:<local_rank>`` and
            ``current_device()`` starts there (as if the launcher pinned it).
        world_size: processes in the world (torch_xla's ordinals fall back to it without a process group).
        launcher_env: also set RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE (worlds set these themselves).
        fake_tensors: for npu profiles, make ``device="npu:i"`` tensors real (simulators.fake_device).
        device_tags: for cuda/xpu/xla/mps profiles, report the simulated device on CPU tensors
            (simulators.device_tags; opt-in, see the README for what it covers); None takes the
            profile's ``device_tags`` field.

    Yields:
        The :class:`~simulators.device_modules.SimulatedHost` (``.profile``, ``.device``, ``.current``).

    Raises:
        ProfileError: for a bad argument (UnknownProfileError for an unknown name).
        ProfileActiveError: when a profile is already applied in this process (no nesting).

    Example:
        >>> with apply_profile("2xT4", local_rank=1, world_size=2):
        ...     torch.cuda.is_available(), torch.cuda.current_device(), torch.cuda.is_bf16_supported()
        (True, 1, False)
    """
    global _active
    profile = _check_arguments(profile_or_name, local_rank, world_size)
    device_tags = profile.device_tags if device_tags is None else device_tags
    if not isinstance(fake_tensors, bool) or not isinstance(device_tags, bool) or not isinstance(launcher_env, bool):
        raise ProfileError(
            f"apply_profile({profile.name!r}): launcher_env, fake_tensors and device_tags must be True or False, "
            f"got {launcher_env!r}, {fake_tensors!r}, {device_tags!r}"
        )
    host = SimulatedHost(profile, local_rank=local_rank, world_size=world_size,
                         current=0 if profile.kind in ("cpu", "xla", "mps") else local_rank)
    with _lock:
        if _active is not None:
            raise ProfileActiveError(
                f"apply_profile({profile.name!r}): profile {_active.profile.name!r} is already applied in this "
                "process; leave it first (profiles do not nest)"
            )
        _active = host
    patches = _Patches()
    try:
        with contextlib.ExitStack() as stack:
            # Read the host's environment before clearing it: only the hardware variables are dropped.
            environment = _environment(profile, local_rank, world_size, launcher_env)
            stack.enter_context(clear_environment())
            os.environ.update(environment)
            stack.callback(_reset_library_caches)
            stack.callback(patches.undo)
            _patch_devices(patches, host, fake_tensors)
            _install_vendor(patches, host)
            if device_tags:
                from .device_tags import tag_devices

                stack.enter_context(tag_devices(host))
            _reset_library_caches()
            yield host
    finally:
        with _lock:
            _active = None


# Which functions apply_profile replaces, per module, for a profile of that kind (other kinds get only
# is_available/device_count answering "none"); see README "Hardware profiles".
PATCHED_FUNCTIONS = {
    "torch.cuda": sorted(device_functions(SimulatedHost(get_profile("8xH100")))),
    "torch.cuda.memory": ["mem_get_info"],
    "torch.xpu": sorted(device_functions(SimulatedHost(get_profile("4xMax1550")))),
    "torch.npu": sorted(_npu_functions(SimulatedHost(get_profile("8xAscend910B")))),
    "torch.mps": sorted(mps_functions(SimulatedHost(get_profile("mps-m2")))),
    "torch.backends.mps": ["is_available", "is_built"],
}
