"""Keep one call's side effects inside a rank from leaking into the next call.

A ``Baseline`` is taken once the rank is ready (process group up, profile applied).
Before each call it resets RNG states and PartialState; after each call it restores
the environment, the working directory, torch's global switches and the attributes
of the torch (and accelerate_lite) modules that profiles and tests patch. What cannot
be restored in place (the default process group destroyed or replaced, a collective
that raised and may have left peers out of step, a PrivateUse1 backend renamed) is
returned as a reason to rebuild the world.
"""

from __future__ import annotations

import os
import random
import sys
import warnings

import torch
import torch.distributed as dist

_MISSING = object()

# Modules whose attributes profiles and tests monkeypatch; watched once imported.
WATCHED_MODULES = (
    "torch", "torch.cuda", "torch.cuda.memory", "torch.distributed", "torch.distributed.distributed_c10d",
    "torch.backends", "torch.backends.mps", "torch.backends.cuda", "torch.backends.cudnn", "torch.mps",
    "torch.xpu", "torch.mtia", "torch.accelerator", "torch.utils.backend_registration",
    "accelerate_lite.state", "accelerate_lite.utils", "accelerate_lite.utils.imports",
    "accelerate_lite.utils.environment",
)
# Vendor packages profiles fake in sys.modules; a fake left behind must not survive the call.
VENDOR_PREFIXES = ("torch_npu", "intel_extension_for_pytorch", "torch_xla", "habana_frameworks")
STATE_CLASSES = ("PartialState", "AcceleratorState", "GradientState")


# Watched modules get a ModuleType subclass whose __setattr__/__delattr__ note the module here,
# so a call that patched nothing costs no comparison of ~3000 attributes. Writes straight into a
# module's __dict__ (its own code rebinding globals) are not seen, and are not ours to undo.
_touched: set = set()
_watching_types: dict = {}


def _watching_type(cls: type) -> type:
    watching = _watching_types.get(cls)
    if watching is None:

        def __setattr__(self, name, value):
            _touched.add(id(self))
            cls.__setattr__(self, name, value)

        def __delattr__(self, name):
            _touched.add(id(self))
            cls.__delattr__(self, name)

        watching = type(cls.__name__, (cls,), {"__setattr__": __setattr__, "__delattr__": __delattr__,
                                                "__module__": cls.__module__})
        _watching_types[cls] = _watching_types[watching] = watching
    return watching


def _watch(module) -> bool:
    """Make attribute writes on ``module`` visible; False where its class cannot be swapped."""
    try:
        module.__class__ = _watching_type(type(module))
        return True
    except TypeError:
        return False


def _vendor_modules() -> dict:
    if not any(name in sys.modules for name in VENDOR_PREFIXES):
        return {}  # the common case, without scanning sys.modules
    return {name: mod for name, mod in sys.modules.items() if name.split(".", 1)[0] in VENDOR_PREFIXES}


def _environ_data() -> dict:
    """os.environ's encoded mapping: comparing it skips decoding every variable (~2 us vs ~30 us)."""
    return getattr(os.environ, "_data", None) or dict(os.environ)


def _torch_switches() -> dict:
    return {
        "default_dtype": torch.get_default_dtype(),
        "grad_enabled": torch.is_grad_enabled(),
        "num_threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "anomaly": torch.is_anomaly_enabled(),
        "default_device": torch.get_default_device(),
    }


_SWITCH_SETTERS = {
    "default_dtype": torch.set_default_dtype,
    "grad_enabled": torch.set_grad_enabled,
    "num_threads": torch.set_num_threads,
    "deterministic": torch.use_deterministic_algorithms,  # imports torch._inductor: only when changed
    "matmul_precision": torch.set_float32_matmul_precision,
    "anomaly": torch.set_anomaly_enabled,
    "default_device": torch.set_default_device,
}


def _set_torch_switches(values: dict) -> None:
    current = _torch_switches()
    for key, value in values.items():
        if current[key] != value:
            _SWITCH_SETTERS[key](value)


def _privateuse1_name() -> str:
    return torch._C._get_privateuse1_backend_name()


def _process_groups() -> set:
    return set(dist.distributed_c10d._world.pg_map) if dist.is_initialized() else set()


class Baseline:
    """The state a rank returns to between calls."""

    def __init__(self, numpy_seed: int):
        self.numpy_seed = numpy_seed
        self.environ = dict(os.environ)
        self.environ_data = dict(_environ_data())
        self.cwd = os.getcwd()
        self.meta_path = list(sys.meta_path)  # profiles add import finders for vendor modules
        self.warning_filters = list(warnings.filters)
        self.switches = _torch_switches()
        self.attributes = {}  # id(module) -> (module, its attributes)
        self.unwatched = set()  # ids of modules compared after every call (class swap refused)
        self.modules_seen = -1
        self._watch_new_modules()
        self.vendors = _vendor_modules()
        self.privateuse1 = _privateuse1_name()
        self.default_group = dist.distributed_c10d._get_default_group() if dist.is_initialized() else None
        self.groups = _process_groups()
        self.python_rng = random.getstate()
        self.torch_rng = torch.get_rng_state()

    def _watch_new_modules(self) -> None:
        if len(sys.modules) == self.modules_seen:
            return
        self.modules_seen = len(sys.modules)
        for name in WATCHED_MODULES:
            module = sys.modules.get(name)
            if module is not None and id(module) not in self.attributes:
                self.attributes[id(module)] = (module, dict(vars(module)))
                if not _watch(module):
                    self.unwatched.add(id(module))

    def before_call(self) -> None:
        """Reset RNG states and the accelerate_lite state singletons."""
        random.setstate(self.python_rng)
        torch.set_rng_state(self.torch_rng)
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            numpy.random.seed(self.numpy_seed)  # 3x cheaper than set_state, same state
        reset_states()

    def after_call(self, collective_failed: bool) -> tuple:
        """Restore what can be restored; return the reasons the world must be rebuilt."""
        reasons = []
        if collective_failed:
            reasons.append("a torch.distributed collective raised, so peers may be out of step")
        reasons.extend(self._check_process_groups())
        if _privateuse1_name() != self.privateuse1:
            reasons.append(f"the PrivateUse1 backend was renamed to {_privateuse1_name()!r}")
        if _environ_data() != self.environ_data:
            os.environ.clear()
            os.environ.update(self.environ)
        if os.getcwd() != self.cwd:
            os.chdir(self.cwd)
        if sys.meta_path != self.meta_path:
            sys.meta_path[:] = self.meta_path
        if warnings.filters != self.warning_filters:
            warnings.filters[:] = self.warning_filters
            warnings._filters_mutated()
        if _torch_switches() != self.switches:
            _set_torch_switches(self.switches)
        vendors_changed = self._restore_vendor_modules()
        if self._restore_attributes() or vendors_changed:
            _clear_import_caches()
        self._watch_new_modules()  # modules first imported by this call join the watch list
        return tuple(reasons)

    def _check_process_groups(self) -> list:
        if self.default_group is None:
            return []
        if not dist.is_initialized():
            return ["the call destroyed the default process group"]
        if dist.distributed_c10d._get_default_group() is not self.default_group:
            return ["the call replaced the default process group"]
        for group in _process_groups() - self.groups:
            try:
                dist.destroy_process_group(group)
            except Exception as error:  # noqa: BLE001 - any failure means the group state is unknown
                return [f"a process group created by the call could not be destroyed: {error!r}"]
        return []

    def _restore_attributes(self) -> bool:
        changed = False
        suspects = (_touched | self.unwatched) & self.attributes.keys()
        _touched.clear()
        for module, saved in (self.attributes[key] for key in suspects):
            current = vars(module)
            try:
                if current == saved:  # C-level, identity first: the common case costs ~20 us for torch
                    continue
            except Exception:  # noqa: BLE001 - a patched value whose __eq__ raises: compare by identity below
                pass
            for key, value in saved.items():
                if current.get(key, _MISSING) is not value:
                    setattr(module, key, value)
                    changed = True
            if len(current) != len(saved):
                for key in [k for k in current if k not in saved]:
                    value = current[key]
                    # submodules imported by the call stay (sys.modules holds them); other additions go
                    if getattr(value, "__name__", None) in sys.modules and type(value) is type(sys):
                        continue
                    delattr(module, key)
                    changed = True
        _touched.clear()  # our own restoring writes
        return changed

    def _restore_vendor_modules(self) -> bool:
        current = _vendor_modules()
        if current.keys() == self.vendors.keys() and all(current[k] is v for k, v in self.vendors.items()):
            return False
        for name in set(current) - set(self.vendors):
            del sys.modules[name]
        sys.modules.update(self.vendors)
        return True


def reset_states() -> None:
    """Forget accelerate_lite's shared state so the next PartialState() adopts the world's group."""
    state = sys.modules.get("accelerate_lite.state")
    if state is None:
        return
    for name in reversed(STATE_CLASSES):  # dependants first
        cls = getattr(state, name, None)
        reset = getattr(cls, "_reset_state", None)
        if reset is None:
            continue
        try:
            reset()
        except TypeError:
            reset(True)


def _clear_import_caches() -> None:
    """Drop cached is_*_available answers so they are recomputed against the restored entry points."""
    imports = sys.modules.get("accelerate_lite.utils.imports")
    for value in vars(imports).values() if imports is not None else ():
        clear = getattr(value, "cache_clear", None)
        if clear is not None:
            clear()
