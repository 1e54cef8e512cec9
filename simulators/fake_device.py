"""Tensors that really live on a simulated accelerator ("npu:3") while their data stays on the CPU.

torch's PrivateUse1 dispatch key is renamed once per process (to ``npu``), a few factory/copy kernels
are registered on it, and every tensor on that device is a :class:`FakeDeviceTensor`: a wrapper subclass
that reports ``device=npu:i`` and holds a plain CPU tensor. Its ``__torch_dispatch__`` checks that all
tensor arguments sit on one device (as the real card's kernels do), unwraps to CPU, runs the op, and
wraps the results again. c10d collectives are dispatcher ops too, so gloo runs on the unwrapped
CPU tensors and results are exact.

What stays after the first install (torch allows no undo): the PrivateUse1 name, the kernels, the
python device guard/hooks, and an inert ``torch.npu`` module (no device: torch.accelerator and
DataLoader(pin_memory=True) need *a* module once the name exists). :func:`simulators.apply_profile`
swaps in the profile's ``torch.npu`` for the duration of the block.
"""

import sys
import threading
import types

import torch
from torch.utils._pytree import tree_map

from .errors import FakeDeviceError

__all__ = ["FakeDeviceTensor", "fake_backend_name", "install_fake_backend", "is_fake_tensor", "unwrap"]

_install_lock = threading.Lock()
_installed = None  # the backend name once installed in this process
_library = None  # keeps the torch.library registrations alive
_CPU = torch.device("cpu")

# Ops that legitimately mix devices (they are how data moves between devices).
_CROSS_DEVICE_OPS = {
    "aten::_to_copy",
    "aten::copy_",
    "aten::_copy_from",
    "aten::_copy_from_and_resize",
    "aten::to",
}


_aten = torch.ops.aten
# Shape queries torch routes to Python for a wrapper with dynamic sizes and strides: answered by elem.
_METADATA_OPS = {
    _aten.sym_size.default, _aten.sym_size.int, _aten.sym_stride.default, _aten.sym_stride.int,
    _aten.sym_numel.default, _aten.sym_storage_offset.default, _aten.dim.default, _aten.size.default,
    _aten.size.int, _aten.stride.default, _aten.stride.int, _aten.numel.default, _aten.storage_offset.default,
    _aten.is_contiguous.default, _aten.is_contiguous.memory_format, _aten.is_strides_like_format.default,
    _aten.is_non_overlapping_and_dense.default,
}


class FakeDeviceTensor(torch.Tensor):
    """A tensor reporting a simulated device while its data stays in a CPU tensor (``.elem``)."""

    elem: torch.Tensor

    __slots__ = ("elem", "fake_device")

    @staticmethod
    def __new__(cls, elem, device):
        if isinstance(elem, FakeDeviceTensor):
            elem = elem.elem
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls,
            elem.shape,
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            layout=elem.layout,
            device=device,
            requires_grad=elem.requires_grad,
            # Sizes and strides are asked of elem each time: out= ops resize elem after the wrapper exists.
            dispatch_sizes_strides_policy="sizes",  # "sizes" makes strides custom too
        )
        wrapper.elem = elem.detach() if elem.requires_grad else elem
        wrapper.fake_device = torch.device(device)
        return wrapper

    def __repr__(self, *, tensor_contents=None):
        text = repr(self.elem)
        return f"{text[:-1]}, device='{self.device}')"

    # Keep torch functions on the dispatcher path only (no python-level __torch_function__ overrides).
    __torch_function__ = torch._C._disabled_torch_function_impl

    def tolist(self):
        return self.elem.tolist()

    def numpy(self, *args, **kwargs):
        raise TypeError(
            f"can't convert {self.device.type}:{self.device.index} device type tensor to numpy. "
            "Use Tensor.cpu() to copy the tensor to host memory first."
        )

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        if func in _METADATA_OPS:
            return func(args[0].elem, *args[1:])
        kwargs = kwargs or {}
        name = func._schema.name
        device = _common_device(name, list(iter_leaves((args, kwargs))))
        inputs = {}

        def unwrap_one(value):
            if type(value) is FakeDeviceTensor:
                inputs[id(value.elem)] = value
                return value.elem
            if type(value) is torch.device and value.type == _installed:
                return _CPU
            return value

        target = _target_device(kwargs, device)
        out = func(*fast_map(unwrap_one, args), **fast_map(unwrap_one, kwargs))
        if target is None:
            return out
        return fast_map(lambda value: _wrap(value, target, inputs), out)


def fast_map(function, tree):
    """tree_map for the containers ops take and return (tuple, list, dict), with a pytree fallback."""
    kind = type(tree)
    if kind is tuple or kind is list:
        return kind([fast_map(function, item) for item in tree])
    if kind is dict:
        return {key: fast_map(function, value) for key, value in tree.items()}
    if isinstance(tree, tuple):  # torch.return_types, namedtuples
        return tree_map(function, tree)
    return function(tree)


def iter_leaves(tree):
    """Yield the non-container values of nested tuples, lists and dicts."""
    kind = type(tree)
    if kind is tuple or kind is list:
        for item in tree:
            yield from iter_leaves(item)
    elif kind is dict:
        for value in tree.values():
            yield from iter_leaves(value)
    else:
        yield tree


def _wrap(value, target, inputs):
    if isinstance(value, torch.Tensor) and type(value) is not FakeDeviceTensor:
        original = inputs.get(id(value))
        if original is not None and original.fake_device == target:
            return original  # in-place ops (and out=) return the very object that came in
        if value.device.type == "cpu":
            return FakeDeviceTensor(value, target)
    return value


def _common_device(name, flat):
    """Return the one fake device of the op's tensors, raising as real kernels do on a mix."""
    device = None
    for value in flat:
        if type(value) is FakeDeviceTensor:
            device = value.fake_device
            break
    if name in _CROSS_DEVICE_OPS:
        return device
    for value in flat:
        if not isinstance(value, torch.Tensor):
            continue
        other = value.fake_device if type(value) is FakeDeviceTensor else value.device
        if other == device:
            continue
        # CPU scalars (0-dim) mix freely with device tensors, as on CUDA.
        if other.type == "cpu" and value.dim() == 0:
            continue
        raise RuntimeError(
            "Expected all tensors to be on the same device, but found at least two devices, "
            f"{device} and {other}! (when checking argument for {name}, simulated device)"
        )
    return device


def _target_device(kwargs, device):
    """Where the op's results live: the device kwarg of a copy/factory, else the inputs' device."""
    requested = kwargs.get("device")
    if requested is not None:
        requested = torch.device(requested)
        if requested.type == _installed:
            return _device_of(requested)
        return None
    return device


def unwrap(tensor):
    """Return the CPU tensor behind a fake-device tensor (the tensor itself otherwise)."""
    return tensor.elem if isinstance(tensor, FakeDeviceTensor) else tensor


def is_fake_tensor(tensor) -> bool:
    """Return True when tensor is a :class:`FakeDeviceTensor`."""
    return isinstance(tensor, FakeDeviceTensor)


def fake_backend_name():
    """Return the name PrivateUse1 got in this process by :func:`install_fake_backend`, or None."""
    return _installed


class _Hooks(torch._C._acc.PrivateUse1Hooks):
    """PrivateUse1 hooks that answer from whatever module is torch.<name> right now."""

    def is_available(self) -> bool:
        module = getattr(torch, _installed or "", None)
        return bool(module is not None and module.is_available())

    def has_primary_context(self, dev_id) -> bool:
        return self.is_available()

    def is_built(self) -> bool:
        return True


def _inert_module(name):
    """The torch.<name> left between profiles: no device, so torch.accelerator and DataLoader see none.

    Once PrivateUse1 carries the name, torch.accelerator.current_accelerator() is that device type for
    good, and torch.get_device_module(name) must find a module or torch.accelerator.is_available() and
    DataLoader(pin_memory=True) raise.
    """
    module = types.ModuleType(f"torch.{name}", f"simulators: no {name} device outside a hardware profile")
    module.__dict__.update(
        is_available=lambda: False,
        device_count=lambda: 0,
        current_device=lambda: 0,
        is_initialized=lambda: False,
        _is_in_bad_fork=lambda: False,
        manual_seed_all=lambda seed: None,
        get_amp_supported_dtype=list,
    )
    return module


def _device_of(device):
    """The indexed fake device a device argument means ("npu" alone: the current device)."""
    device = torch.device(device) if device is not None else torch.device(_installed)
    if device.index is None:
        module = getattr(torch, device.type, None)
        device = torch.device(device.type, module.current_device() if module is not None else 0)
    return device


def _empty_memory_format(size, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    cpu = torch.empty(size, dtype=dtype, layout=layout, memory_format=memory_format)
    return FakeDeviceTensor(cpu, _device_of(device))


def _empty_strided(size, stride, dtype=None, layout=None, device=None, pin_memory=None):
    cpu = torch.empty_strided(size, stride, dtype=dtype, layout=layout)
    return FakeDeviceTensor(cpu, _device_of(device))


def _copy_from(src, dst, non_blocking=False):
    unwrap(dst).copy_(unwrap(src))
    return dst


def install_fake_backend(name="npu"):
    """Rename PrivateUse1 to ``name`` and register the kernels fake-device tensors need (once per process).

    Args:
        name: the device type to create; torch refuses in-tree names ("cuda", "xpu", ...).

    Returns:
        The installed name.

    Raises:
        FakeDeviceError: when PrivateUse1 already carries another name in this process (it can be
            renamed only once), or torch refuses the name.

    Example:
        >>> install_fake_backend("npu")
        'npu'
    """
    global _installed, _library
    with _install_lock:
        if _installed is not None:
            if _installed != name:
                raise FakeDeviceError(
                    f"install_fake_backend({name!r}): PrivateUse1 is already named {_installed!r} in this "
                    "process and torch allows one rename per process; use a fresh process for another name"
                )
            return name
        current = torch._C._get_privateuse1_backend_name()
        if current not in ("privateuseone", name):
            raise FakeDeviceError(
                f"install_fake_backend({name!r}): something else renamed PrivateUse1 to {current!r} in this "
                "process; fake devices need it unclaimed"
            )
        try:
            if current != name:
                torch.utils.rename_privateuse1_backend(name)
        except RuntimeError as exc:
            raise FakeDeviceError(f"install_fake_backend({name!r}): torch refused the name: {exc}") from exc
        from torch.utils import backend_registration as registration

        torch._C._acc.register_python_privateuseone_hook(_Hooks())
        torch._C._acc.register_python_privateuseone_device_guard(registration._DummyDeviceGuard())
        library = torch.library.Library("aten", "IMPL")
        library.impl("empty.memory_format", _empty_memory_format, "PrivateUse1")
        library.impl("empty_strided", _empty_strided, "PrivateUse1")
        library.impl("_copy_from", _copy_from, "PrivateUse1")
        # torch registers no autocast rules for PrivateUse1: let autocast("npu") pass through (no casting).
        fallbacks = torch.library.Library("_", "IMPL")
        fallbacks.fallback(torch.library.fallthrough_kernel, "AutocastPrivateUse1")
        _library = (library, fallbacks)
        _installed = name
        inert = _inert_module(name)
        setattr(torch, name, inert)
        sys.modules[f"torch.{name}"] = inert
        return name
