"""Device maps: plan where each submodule goes (GPUs in order, then cpu, then disk), merge, and check them.

`infer_auto_device_map` gives the same maps as upstream accelerate 0.27.2 (including its order of
splitting and its rule of keeping room for the largest layer still to be placed), but keeps, for every
submodule, the size and count of its largest layers, so that finding the largest remaining layer after a
split costs one pass over the pending list instead of a walk over every module below it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from torch import nn

from .memory_budget import get_max_memory
from .sizes import compute_module_sizes, gc_paused
from .tied import check_tied_parameters_in_config, find_tied_parameters
from ...errors import DeviceMapError

logger = logging.getLogger(__name__)


class _LayerSizes:
    """Largest layer below each pending entry: (size, how many layers have that size), memoised by name."""

    def __init__(self, module_sizes, no_split_module_classes):
        self.module_sizes = module_sizes
        self.no_split = no_split_module_classes
        self.cache: dict[str, tuple] = {}

    def of(self, name: str, module) -> tuple:
        found = self.cache.get(name)
        if found is None:
            found = self.cache[name] = self._compute(name, module)
        return found

    def _compute(self, name: str, module) -> tuple:
        children = list(module.named_children()) if isinstance(module, nn.Module) else []
        if not children or module.__class__.__name__ in self.no_split:
            return self.module_sizes[name], 1
        best, count = 0, 0
        for child_name, child in children:
            size, n = self.of(f"{name}.{child_name}", child)
            if size > best:
                best, count = size, n
            elif size == best:
                count += n
        return best, count

    def largest(self, pending_front_first, modules_only: bool) -> tuple:
        """Return (largest layer size, {entry name: number of layers of that size in it}) over pending entries."""
        best, counts = 0, {}
        for name, module in pending_front_first:
            if modules_only and not isinstance(module, nn.Module):
                continue
            size, n = self.of(name, module)
            if size > best:
                best, counts = size, {name: n}
            elif size == best:
                counts[name] = counts.get(name, 0) + n
        return best, counts


def _is_inside(name: str, other: str) -> bool:
    # Upstream's test, kept as is: a substring test on dotted names, not a prefix test.
    return name + "." in other + "."


def _split_entry(name: str, module) -> list:
    """The entries replacing a split module: its own parameters first, then its children."""
    parts = list(module.named_parameters(recurse=False)) + list(module.named_children())
    return [(f"{name}.{child}", sub) for child, sub in parts]


def _can_split(module, no_split_module_classes) -> bool:
    if not isinstance(module, nn.Module) or module.__class__.__name__ in no_split_module_classes:
        return False
    return any(True for _ in module.named_children())


def infer_auto_device_map(
    model: nn.Module,
    max_memory=None,
    no_split_module_classes=None,
    dtype=None,
    special_dtypes=None,
    verbose: bool = False,
    clean_result: bool = True,
):
    """Plan a device map: GPUs in order, then cpu, then disk, without exceeding any device's memory.

    When anything has to be offloaded, the first GPU and the CPU keep room for the largest layer still to be
    placed (it is brought back there to run). Tied parameters go to one device; modules whose class is in
    `no_split_module_classes` are never split. Only shapes and dtypes are read: a meta model is fine.

    Args:
        model: the model to place.
        max_memory: device -> bytes or size string ({0: "10GiB", "cpu": "30GiB"}); asked of the devices when None.
        no_split_module_classes: class names of modules that must stay on one device.
        dtype: size floating weights as if loaded in this (smaller) dtype.
        special_dtypes: tensor name -> dtype overrides.
        verbose: print each decision.
        clean_result: merge submodules that ended on the same device (see `clean_device_map`).

    Returns:
        An OrderedDict from module name to device (int, "cpu", "mps" or "disk").

    Example:
        >>> model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10), nn.Linear(10, 10))  # 440 bytes each
        >>> dict(infer_auto_device_map(model, max_memory={0: 1000, "cpu": 2000}))
        {'0': 0, '1': 'cpu', '2': 'cpu'}
    """
    max_memory = get_max_memory(max_memory)
    if no_split_module_classes is None:
        no_split_module_classes = []
    elif not isinstance(no_split_module_classes, (list, tuple)):
        no_split_module_classes = [no_split_module_classes]
    devices = list(max_memory.keys())
    if "disk" not in devices:
        devices.append("disk")
    gpus = [device for device in devices if device not in ("cpu", "disk")]
    main_devices = ["mps"] if "mps" in gpus else ([gpus[0], "cpu"] if gpus else ["cpu"])

    with gc_paused():
        module_sizes = compute_module_sizes(model, dtype=dtype, special_dtypes=special_dtypes)
        tied_parameters = find_tied_parameters(model)
    if check_tied_parameters_in_config(model) and len(tied_parameters) == 0:
        logger.warning("The model's weights are not tied: call model.tie_weights() before infer_auto_device_map().")
    with gc_paused():
        planner = _Planner(model, max_memory, devices, main_devices, module_sizes, no_split_module_classes,
                           tied_parameters, verbose)
        device_map = planner.run()
    if not clean_result:
        return device_map
    with gc_paused():
        return clean_device_map(device_map)


class _Planner:
    """The state of one infer_auto_device_map run; `pending` is a stack whose end is the front of the queue."""

    def __init__(self, model, max_memory, devices, main_devices, module_sizes, no_split, tied, verbose):
        self.max_memory, self.devices, self.main_devices = max_memory, devices, main_devices
        self.module_sizes, self.no_split, self.tied, self.verbose = module_sizes, no_split, tied, verbose
        self.layers = _LayerSizes(module_sizes, no_split)
        top = (
            list(model.named_parameters(recurse=False))
            + list(model.named_children())
            + list(model.named_buffers(recurse=False))
        )
        self.pending = list(reversed(top))
        self.max_layer, self.counts = self.layers.largest(top, modules_only=False)
        self.outstanding = sum(self.counts.values())
        self.device_map: OrderedDict = OrderedDict()
        self.current, self.used = 0, 0

    def say(self, message: str) -> None:
        if self.verbose:
            print(message)

    def front_first(self) -> list:
        return self.pending[::-1]

    def refresh_max_layer(self) -> None:
        self.max_layer, self.counts = self.layers.largest(reversed(self.pending), modules_only=True)
        self.outstanding = sum(self.counts.values())

    def next_device(self, name: str, module) -> None:
        self.current += 1
        self.pending.append((name, module))
        self.used = 0

    def run(self) -> OrderedDict:
        while self.pending:
            name, module = self.pending.pop()
            self.say(f"\nTreating module {name}.")
            # The largest pending layer changes only once every layer of that size has been taken.
            self.outstanding -= self.counts.pop(name, 0)
            if self.outstanding <= 0:
                self.refresh_max_layer()
            self.place(name, module)
        return self.device_map

    def place(self, name: str, module) -> None:
        size = self.module_sizes[name]
        groups = [g for g in self.tied if any(_is_inside(name, k) for k in g) and not all(_is_inside(name, k) for k in g)]
        tied_outside = [p for g in groups for p in g if not _is_inside(name, p)]
        if tied_outside:
            self.say(f"  Tied parameters outside {name} to account for: {tied_outside}")
        device = self.devices[self.current]
        limit = self.max_memory[device] if device != "disk" else None
        if device in self.main_devices:
            limit = limit - self.max_layer
        if limit is not None and self.used + size > limit:
            self.too_big(name, module, device, limit, size)
        elif tied_outside:
            self.place_with_ties(name, module, device, limit, size, tied_outside)
        else:
            self.say(f"Putting {name} (size={size}) on {device}.")
            self.used += size
            self.device_map[name] = device

    def too_big(self, name, module, device, limit, size) -> None:
        self.say(f"Not enough space on {device} for {name} (available {limit - self.used}, needs {size}).")
        if not _can_split(module, self.no_split):
            self.say("It cannot be split: moving on to the next device.")
            self.next_device(name, module)
            return
        self.say(f"Splitting {name}.")
        self.pending.extend(reversed(_split_entry(name, module)))
        self.refresh_max_layer()

    def find_pending(self, predicate):
        """Index in `pending` of the entry nearest the front for which predicate(name) holds, or None."""
        for index in range(len(self.pending) - 1, -1, -1):
            if predicate(self.pending[index][0]):
                return index
        return None

    def place_with_ties(self, name, module, device, limit, size, tied_outside) -> None:
        # A tied parameter whose module is no longer pending was placed already (upstream raises IndexError).
        found = [(param, self.find_pending(lambda n, p=param: n in p)) for param in tied_outside]
        tied_outside = [param for param, index in found if index is not None]
        tied_entries = [self.pending[index] for _, index in found if index is not None]
        total = size + sum(
            self.module_sizes[entry_name] - self.module_sizes[param]
            for param, (entry_name, _) in zip(tied_outside, tied_entries)
        )
        if limit is None or self.used + total <= limit:
            self.say(f"Putting {name} and {[n for n, _ in tied_entries]} on {device}.")
            self.used += total
            self.device_map[name] = device
            for entry_name, _ in tied_entries:
                names = [n for n, _ in self.pending]
                if entry_name in names:
                    del self.pending[self.find_pending(lambda n, e=entry_name: n == e)]
                self.device_map[entry_name] = device
            return
        self.say(f"Not enough space on {device} for {name} with its tied modules (needs {total}).")
        for entry_name, entry in tied_entries:
            if not _can_split(entry, self.no_split):
                continue
            self.say(f"Splitting {entry_name}.")
            queue = self.front_first()
            index = next(i for i, (n, _) in enumerate(queue) if n == entry_name)
            queue = [(name, module)] + queue[:index] + _split_entry(entry_name, entry) + queue[index + 1:]
            self.pending = queue[::-1]
            self.refresh_max_layer()
            return
        self.say("None of the tied modules can be split: moving on to the next device.")
        self.next_device(name, module)


def clean_device_map(device_map: dict, module_name: str = "") -> dict:
    """Merge the entries below a module into one entry when they all go to the same device, recursively.

    Only entries strictly below a name are merged ("a.0" and "a.1" into "a"), so siblings on different
    devices stay apart. The map is changed in place and returned.

    Example:
        >>> clean_device_map({"a.0": 0, "a.1": 0, "b": "cpu"})
        {'b': 'cpu', 'a': 0}
    """
    prefix = f"{module_name}." if module_name else ""
    keys = [k for k in device_map if k.startswith(prefix)]
    _clean_below(device_map, module_name, keys)
    return device_map


def _clean_below(device_map: dict, module_name: str, keys: list) -> None:
    """clean_device_map's recursion, given the keys under `module_name` (all keys for "")."""
    values = [device_map[k] for k in keys]
    if len(values) > 1 and len(set(values)) == 1:
        for k in keys:
            del device_map[k]
        device_map[module_name] = values[0]
        return
    depth = len(module_name.split(".")) + 1 if module_name else 1
    below: dict[str, list] = {}
    for k in keys:
        if len(k) <= len(module_name):
            continue
        child = ".".join(k.split(".")[:depth])
        below.setdefault(child, [])
        if k.startswith(child + "."):
            below[child].append(k)
    for child, child_keys in below.items():
        _clean_below(device_map, child, child_keys)


def find_device_for(name: str, device_map: dict):
    """Return the map entry that covers tensor `name` (the name itself or its nearest listed ancestor), or None."""
    probe = name
    while True:
        if probe in device_map:
            return probe
        if probe == "":
            return None
        probe = probe.rpartition(".")[0]


def check_device_map(model: nn.Module, device_map: dict) -> None:
    """Check that a device map gives a device to every tensor of the model's state dict.

    Raises:
        DeviceMapError: (a ValueError) naming every tensor no entry covers.

    Example:
        >>> check_device_map(nn.Linear(2, 2), {"": "cpu"})
    """
    if "" in device_map:
        return
    missing = [name for name in model.state_dict() if find_device_for(name, device_map) is None]
    if missing:
        raise DeviceMapError(
            "The device_map provided does not give any device for the following parameters: "
            f"{', '.join(missing)}; add entries for them (or for a module containing them)"
        )
