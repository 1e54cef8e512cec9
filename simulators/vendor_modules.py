"""Stand-ins for the vendor packages the library looks for: torch_npu, intel_extension_for_pytorch, torch_xla.

They are built fresh for each :func:`simulators.apply_profile` and made importable through a
``sys.meta_path`` finder that also answers ``importlib.metadata`` (so ``find_spec``, ``import`` and
``importlib.metadata.version`` all find them). The torch_xla stand-in's collectives run on
torch.distributed (gloo) when a process group exists, and are the identity on a single process.
"""

import importlib.abc
import importlib.machinery
import importlib.metadata
import types

import torch
import torch.distributed as dist

from . import gloo_dtypes

__all__ = ["VENDOR_PACKAGES", "VendorFinder", "build_vendor_modules"]

# kind -> the top-level package a real install of that hardware's torch plugin provides
VENDOR_PACKAGES = {"npu": "torch_npu", "xpu": "intel_extension_for_pytorch", "xla": "torch_xla"}


def _torch_version():
    return torch.__version__.split("+")[0]


class _Metadata(importlib.metadata.Distribution):
    """Just enough package metadata for importlib.metadata.version()/metadata()."""

    def __init__(self, name, version):
        self._text = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: simulated by simulators\n"

    def read_text(self, filename):
        return self._text if filename in ("METADATA", "PKG-INFO") else None

    def locate_file(self, path):
        return path


class _Loader(importlib.abc.Loader):
    def __init__(self, modules):
        self._modules = modules

    def create_module(self, spec):
        return self._modules[spec.name]

    def exec_module(self, module):
        return None


class VendorFinder(importlib.abc.MetaPathFinder):
    """A meta-path finder serving prebuilt modules and their distribution metadata.

    Args:
        modules: module name -> module object (packages carry ``__path__``).
        versions: distribution name -> version string.
    """

    def __init__(self, modules, versions):
        self.modules = dict(modules)
        self.versions = dict(versions)
        self._loader = _Loader(self.modules)
        for name, module in self.modules.items():
            is_package = hasattr(module, "__path__")
            module.__spec__ = importlib.machinery.ModuleSpec(name, self._loader, is_package=is_package)
            module.__loader__ = self._loader

    def find_spec(self, fullname, path=None, target=None):
        module = self.modules.get(fullname)
        return None if module is None else module.__spec__

    def find_distributions(self, context=None):
        wanted = None if context is None else context.name
        for name, version in self.versions.items():
            if wanted is None or _normalise(wanted) == _normalise(name):
                yield _Metadata(name, version)


def _normalise(name):
    return name.replace("-", "_").lower()


def _module(name, doc, **attributes):
    module = types.ModuleType(name, doc)
    module.__dict__.update(attributes)
    return module


def _package(name, doc, **attributes):
    module = _module(name, doc, **attributes)
    module.__path__ = []  # a package: submodules are found through the finder
    return module


def build_vendor_modules(host):
    """Return (modules, versions) standing in for the vendor package of host.profile.kind (may be empty).

    Args:
        host: the :class:`simulators.device_modules.SimulatedHost` the modules answer from.
    """
    kind = host.profile.kind
    version = _torch_version()
    if kind == "npu":
        modules = {"torch_npu": _package("torch_npu", "simulated torch_npu", __version__=version, npu=torch.npu)}
    elif kind == "xpu":
        modules = {"intel_extension_for_pytorch": _package(
            "intel_extension_for_pytorch", "simulated intel_extension_for_pytorch",
            __version__=version, optimize=_ipex_optimize, xpu=torch.xpu)}
    elif kind == "xla":
        modules = _torch_xla_modules(host, version)
    else:
        return {}, {}
    return modules, {VENDOR_PACKAGES[kind]: version}


def _ipex_optimize(model, dtype=None, optimizer=None, inplace=False, level="O1", **kwargs):
    """ipex.optimize: the model (and optimizer) unchanged except for the dtype asked."""
    if dtype is not None:
        model = model.to(dtype)
    return model if optimizer is None else (model, optimizer)


# ---- torch_xla ---------------------------------------------------------------------------------

_REDUCE_OPS = {"sum": "SUM", "mul": "PRODUCT", "min": "MIN", "max": "MAX", "and": "BAND", "or": "BOR"}


def _torch_xla_modules(host, version):
    xm = _xla_model(host)
    runtime = _module(
        "torch_xla.runtime", "simulated torch_xla.runtime",
        world_size=xm.xrt_world_size, global_ordinal=xm.get_ordinal, local_ordinal=xm.get_local_ordinal,
        device_type=lambda: host.env_device_type(), using_pjrt=lambda: True,
        local_process_count=xm.xrt_world_size, global_device_count=xm.xrt_world_size,
        global_runtime_device_count=xm.xrt_world_size, addressable_device_count=lambda: 1,
        local_device_count=lambda: 1, use_spmd=_unsupported("torch_xla.runtime.use_spmd"),
    )
    xmp = _module(
        "torch_xla.distributed.xla_multiprocessing", "simulated xla_multiprocessing",
        spawn=lambda fn, args=(), nprocs=None, start_method="spawn": fn(xm.get_local_ordinal(), *args),
    )
    core = _package("torch_xla.core", "simulated torch_xla.core", xla_model=xm)
    distributed = _package("torch_xla.distributed", "simulated torch_xla.distributed", xla_multiprocessing=xmp)
    top = _package(
        "torch_xla", "simulated torch_xla (collectives on torch.distributed)", __version__=version,
        core=core, runtime=runtime, distributed=distributed, device=xm.xla_device, sync=xm.mark_step,
        # torch_xla.launch runs fn(*args) on every replica; here each process is one replica.
        launch=lambda fn, args=(), start_method="spawn", debug_single_process=False: fn(*args),
    )
    return {
        "torch_xla": top,
        "torch_xla.core": core,
        "torch_xla.core.xla_model": xm,
        "torch_xla.runtime": runtime,
        "torch_xla.distributed": distributed,
        "torch_xla.distributed.xla_multiprocessing": xmp,
    }


def _unsupported(name):
    def refuse(*args, **kwargs):
        raise NotImplementedError(f"{name}() is not simulated: the fake torch_xla runs one replica per process on gloo")

    return refuse


def _group_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def _xla_model(host):
    """torch_xla.core.xla_model: ordinals from the world, collectives on gloo, the device from the profile."""

    def xrt_world_size(defval=1):
        return dist.get_world_size() if dist.is_initialized() else host.world_size

    def get_ordinal(defval=0):
        return dist.get_rank() if dist.is_initialized() else host.local_rank

    def get_local_ordinal(defval=0):
        return host.local_rank

    def is_master_ordinal(local=True):
        return (get_local_ordinal() if local else get_ordinal()) == 0

    def xla_device(n=None, devkind=None):
        # PJRT gives every process one addressable device, xla:0 (as on a real TPU host).
        return torch.device("xla", 0 if n is None else n)

    def xla_real_devices(devices):
        # "xla:0" -> "TPU:<ordinal>" as PJRT names the device behind it.
        return [f"{host.env_device_type()}:{get_ordinal() if torch.device(d).index in (None, 0) else torch.device(d).index}"
                for d in devices]

    def all_reduce(reduce_type, inputs, scale=1.0, groups=None, pin_layout=True):
        if reduce_type not in _REDUCE_OPS:
            raise ValueError(f"all_reduce(): reduce_type {reduce_type!r} unknown; expected one of {sorted(_REDUCE_OPS)}")
        op = getattr(dist.ReduceOp, _REDUCE_OPS[reduce_type])
        tensors = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        results = []
        for tensor in tensors:
            target = tensor.clone() if isinstance(inputs, torch.Tensor) else tensor
            if _group_size() > 1:
                gloo_dtypes.all_reduce_(target, op)
            if scale != 1.0:
                target.mul_(scale)
            results.append(target)
        return results[0] if isinstance(inputs, torch.Tensor) else inputs

    def all_gather(value, dim=0, groups=None, output=None, pin_layout=True):
        gathered = gloo_dtypes.all_gather_cat(value, dim, _group_size())
        if output is not None:
            output.copy_(gathered)
            return output
        return gathered

    def collective_broadcast(tensors, root_ordinal=0, groups=None, pin_layout=True):
        if _group_size() > 1:
            for tensor in tensors:
                gloo_dtypes.broadcast_(tensor, root_ordinal)

    def _all_objects(value):
        objects = [None] * _group_size()
        if len(objects) > 1:
            dist.all_gather_object(objects, value)
        else:
            objects = [value]
        return objects

    def mesh_reduce(tag, data, reduce_fn):
        data = data.cpu() if isinstance(data, torch.Tensor) else data
        return reduce_fn(_all_objects(data))

    def rendezvous(tag, payload=b"", replicas=()):
        return _all_objects(payload)

    def save(data, file_or_path, master_only=True, global_master=False):
        if not master_only or is_master_ordinal(local=not global_master):
            torch.save(data, file_or_path)
        rendezvous("torch_xla.core.xla_model.save")

    def optimizer_step(optimizer, barrier=False, optimizer_args=None, groups=None, pin_layout=True):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if _group_size() > 1 and grads:
            all_reduce("sum", grads, scale=1.0 / _group_size())
        return optimizer.step(**(optimizer_args or {}))

    rng = {"seed": 101}

    def set_rng_state(seed, device=None):
        rng["seed"] = int(seed)

    def get_rng_state(device=None):
        return rng["seed"]

    return _module(
        "torch_xla.core.xla_model", "simulated torch_xla.core.xla_model",
        xrt_world_size=xrt_world_size, get_ordinal=get_ordinal, get_local_ordinal=get_local_ordinal,
        is_master_ordinal=is_master_ordinal, xla_device=xla_device, xla_device_hw=lambda device: host.env_device_type(),
        xla_real_devices=xla_real_devices,
        all_reduce=all_reduce, all_gather=all_gather, collective_broadcast=collective_broadcast,
        mesh_reduce=mesh_reduce, rendezvous=rendezvous, save=save, optimizer_step=optimizer_step,
        mark_step=lambda wait=False, reset_scope=True: None, wait_device_ops=lambda devices=(): None,
        set_rng_state=set_rng_state, get_rng_state=get_rng_state,
        REDUCE_SUM="sum", REDUCE_MUL="mul", REDUCE_MIN="min", REDUCE_MAX="max", REDUCE_AND="and", REDUCE_OR="or",
    )
