"""Device tags: CPU tensors that report a simulated cuda/xpu/xla device, for kinds torch won't fake.

torch refuses to rename PrivateUse1 to an in-tree name ("cuda", "xpu", "xla"), so for those kinds a
``TorchFunctionMode`` keeps real CPU tensors and gives each placed tensor a *tag* (the simulated device,
kept in a tensor attribute with the mode's token, so deepcopy keeps it and a later mode ignores it):

- placing: factories with ``device="cuda:3"``, ``.to("cuda:3")``/``.to(other)``/``.cuda()``/``.xpu()``,
  ``Module.to(device)`` run on the CPU and tag their results; ``.cpu()``/``.to("cpu")`` copy and untag;
- reporting: ``.device``, ``.is_cuda``/``.is_xpu``, ``.is_cpu``, ``.get_device()`` answer from the tag;
  ``.grad`` and ``.data`` of a tagged tensor are tagged alike;
- checking: an op mixing tensors of two simulated devices, or a simulated device and a CPU tensor
  of one dimension or more, raises "Expected all tensors to be on the same device" like the real card;
- propagating: the results of an op on tagged tensors carry the inputs' tag.

The tag lives in Python: C++ code (autograd's engine, c10d, DDP's buckets) sees CPU tensors, so
gloo collectives just work and mistakes made inside C++ are not caught. The mode is active in the
thread that entered ``apply_profile(..., device_tags=True)`` only.
"""

import contextlib
import itertools

import torch
from torch.overrides import TorchFunctionMode

from .fake_device import fast_map, iter_leaves

__all__ = ["DeviceTagMode", "tag_devices"]

_CPU = torch.device("cpu")
_TAG = "_simulated_device"  # attribute holding (mode token, device) on a tagged tensor
_tokens = itertools.count()
_GETTERS = {
    torch.Tensor.device.__get__: "device",
    torch.Tensor.is_cuda.__get__: "is_cuda",
    torch.Tensor.is_xpu.__get__: "is_xpu",
    torch.Tensor.is_cpu.__get__: "is_cpu",
    torch.Tensor.grad.__get__: "grad",
    torch.Tensor.data.__get__: "data",
}
_DATA_SETTER = torch.Tensor.data.__set__
_MOVES = {torch.Tensor.to: "to", torch.Tensor.cuda: "cuda", torch.Tensor.xpu: "xpu", torch.Tensor.cpu: "cpu"}
# Ops that legitimately take tensors of several devices (indices may stay on the CPU; copies move data).
_MIXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.copy_, torch.Tensor.index_select,
           torch.index_select, torch.Tensor.index_put_, torch.Tensor.index_add_,
           torch._has_compatible_shallow_copy_type, torch.Tensor.set_}


class DeviceTagMode(TorchFunctionMode):
    """Report ``<kind>:<index>`` for CPU tensors placed on the simulated device, and check device mixes."""

    def __init__(self, host):
        super().__init__()
        self.host = host
        self.kind = host.profile.kind
        self.token = f"{id(self)}-{next(_tokens)}"  # tags of an earlier mode (stale attributes) do not count

    # -- helpers ---------------------------------------------------------------------------------
    def tag_of(self, tensor):
        """The simulated device tensor is tagged with by this mode, or None."""
        tag = getattr(tensor, _TAG, None)
        return tag[1] if tag is not None and tag[0] == self.token else None

    def untag(self, tensor):
        if getattr(tensor, _TAG, None) is not None:
            delattr(tensor, _TAG)

    def device_of(self, tensor):
        tag = self.tag_of(tensor)
        return tensor.device if tag is None else tag  # the mode is off inside its handler: the real device

    def _requested(self, device):
        """The simulated device a device argument names, CPU for "cpu", None if it is not a device."""
        if isinstance(device, int) and not isinstance(device, bool):
            return torch.device(self.kind, device)
        if isinstance(device, (str, torch.device)):
            device = torch.device(device)
            if device.type == self.kind:
                return torch.device(self.kind, self.host.index(device))
            return device
        return None

    def _tag(self, value, device):
        if device is None or device.type != self.kind:
            return value

        tag = (self.token, device)

        def tag_one(item):
            if isinstance(item, torch.Tensor) and self.tag_of(item) is None:
                setattr(item, _TAG, tag)
            return item

        return fast_map(tag_one, value)

    # -- the mode ----------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        getter = _GETTERS.get(func)
        if getter is not None:
            return self._get(getter, args[0])
        if func == _DATA_SETTER:
            func(*args, **kwargs)
            self._retag(args[0], args[1])
            return None
        move = _MOVES.get(func)
        if move is not None:
            return self._move(move, func, args, kwargs)
        if func is torch.Tensor.__repr__:
            return _with_device(func(*args, **kwargs), self.tag_of(args[0]))
        if func is torch.Tensor.get_device:
            device = self.device_of(args[0])
            return -1 if device.type == "cpu" else device.index
        if "device" in kwargs:
            return self._factory(func, args, kwargs)
        device = None if func in _MIXING else self._common_device(func, args, kwargs)
        result = func(*args, **kwargs)
        if device is None and func in _MIXING:
            device = self.device_of(args[0]) if args and isinstance(args[0], torch.Tensor) else None
        return self._tag(result, device)

    def _get(self, getter, tensor):
        device = self.device_of(tensor)
        if getter == "device":
            return device if device.type == self.kind else torch.Tensor.device.__get__(tensor)
        if getter in ("is_cuda", "is_xpu"):
            return device.type == getter[3:]
        if getter == "is_cpu":
            return device.type == "cpu"
        value = getattr(torch.Tensor, getter).__get__(tensor)
        return self._tag(value, device) if isinstance(value, torch.Tensor) else value

    def _retag(self, tensor, source):
        self.untag(tensor)
        self._tag(tensor, self.tag_of(source))

    def _factory(self, func, args, kwargs):
        device = self._requested(kwargs["device"])
        if device is None or device.type != self.kind:
            return func(*args, **kwargs)
        result = func(*args, **{**kwargs, "device": _CPU})
        return self._tag(result, device)

    def _move(self, move, func, args, kwargs):
        tensor, rest = args[0], list(args[1:])
        source = self.device_of(tensor)
        if move == "cpu":
            target = _CPU
        elif move in ("cuda", "xpu"):
            if move != self.kind:
                raise AssertionError(f"Torch not compiled with {move.upper()} enabled (simulated profile has {self.kind})")
            index = rest.pop(0) if rest else kwargs.pop("device", None)
            target = torch.device(self.kind, self.host.index(index))
        else:
            target = self._to_target(rest, kwargs, source)
        if target.type not in ("cpu", self.kind):
            return func(*args, **kwargs)  # e.g. "meta": a real device
        kwargs.pop("non_blocking", None)
        kwargs.pop("memory_format", None) if move != "to" else None
        if move == "to":
            result = torch.Tensor.to(tensor, *rest, **kwargs)
        else:
            result = tensor
        if target == source:
            return self._tag(result, target)  # same device: to() may return the tensor itself, as on the card
        if result is tensor:
            result = tensor.clone()  # a move copies, so the original keeps its own device
        self.untag(result)
        return self._tag(result, target)

    def _to_target(self, rest, kwargs, source):
        """Where Tensor.to(...) sends the tensor; strips a simulated device from rest/kwargs."""
        if "device" in kwargs:
            target = self._requested(kwargs["device"])
            kwargs["device"] = _CPU if target.type == self.kind else kwargs["device"]
            return target
        if rest and isinstance(rest[0], torch.Tensor):
            other = rest.pop(0)
            rest.insert(0, other.dtype)
            return self.device_of(other)
        if rest and not isinstance(rest[0], torch.dtype):
            target = self._requested(rest[0])
            if target is not None:
                rest[0] = _CPU if target.type == self.kind else rest[0]
                return target
        return source

    def _common_device(self, func, args, kwargs):
        tensors = [value for value in iter_leaves((args, kwargs)) if isinstance(value, torch.Tensor)]
        device = next((tag for tag in map(self.tag_of, tensors) if tag is not None), None)
        if device is None:
            return None
        for tensor in tensors:
            other = self.device_of(tensor)
            if other == device or (other.type == "cpu" and tensor.dim() == 0):
                continue
            name = getattr(func, "__name__", str(func))
            raise RuntimeError(
                "Expected all tensors to be on the same device, but found at least two devices, "
                f"{device} and {other}! (when checking argument for {name}, simulated device tags)"
            )
        return device


def _with_device(text, device):
    """A tensor repr with ``device='cuda:3'`` where torch puts it (before dtype/grad details)."""
    if device is None:
        return text
    cut = min([text.find(mark) for mark in (", dtype=", ", grad_fn=", ", requires_grad=") if mark in text]
              or [text.rfind(")")])
    return f"{text[:cut]}, device='{device}'{text[cut:]}"


@contextlib.contextmanager
def tag_devices(host):
    """Enter a :class:`DeviceTagMode` for host's device kind (cuda, xpu, xla or mps) in this thread.

    ``nn.Parameter(tensor)`` is built in C++ out of the mode's sight, so ``Parameter.__new__`` is
    wrapped meanwhile to carry the tag of its data over (restored on exit).

    Raises:
        ValueError: for a profile kind that has no simulated device to tag (cpu; npu has real fakes).
    """
    if host.profile.kind not in ("cuda", "xpu", "xla", "mps"):
        raise ValueError(
            f"device_tags=True: profile {host.profile.name!r} is {host.profile.kind!r}; tags exist for cuda, xpu, "
            "xla and mps (npu tensors are real fake-device tensors already)"
        )
    parameter = torch.nn.Parameter
    original = parameter.__dict__["__new__"]
    plain_new = original.__func__ if isinstance(original, staticmethod) else original

    def new_parameter(cls, data=None, requires_grad=True):
        result = plain_new(cls, data, requires_grad)
        tag = getattr(data, _TAG, None)
        if tag is not None and result is not data:
            setattr(result, _TAG, tag)
        return result

    parameter.__new__ = new_parameter
    try:
        with DeviceTagMode(host) as mode:
            yield mode
    finally:
        parameter.__new__ = original
