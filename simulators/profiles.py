"""Hardware profiles: what a simulated machine looks like, as data.

A :class:`HardwareProfile` is an immutable record (device kind, count, memory per device, name, compute
capability, bf16 support, launcher environment). The catalog ships in ``catalog.yaml`` next to this
module and is loaded at import into :data:`PROFILES`; a maintainer adds a machine by writing an entry
there, in their own YAML file (:func:`load_profiles`), or by calling :func:`register_profile`.
Applying a profile is :func:`simulators.apply_profile`'s job, not this module's.
"""

import dataclasses
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import yaml

from accelerate_lite.utils.enums import DistributedType

from .errors import ProfileError, UnknownProfileError

__all__ = [
    "KINDS",
    "PROFILES",
    "HardwareProfile",
    "get_profile",
    "load_profiles",
    "parse_memory",
    "register_profile",
]

KINDS = ("cpu", "cuda", "npu", "xpu", "xla", "mps")
TAGGED_KINDS = ("cuda", "xpu", "xla", "mps")  # kinds whose tensors can carry device tags (simulators.device_tags)

# What PartialState reports for each kind when more than one process runs (mps ranks compute on the CPU).
_KIND_TO_DISTRIBUTED_TYPE = {
    "cpu": DistributedType.MULTI_CPU,
    "cuda": DistributedType.MULTI_GPU,
    "npu": DistributedType.MULTI_NPU,
    "xpu": DistributedType.MULTI_XPU,
    "xla": DistributedType.TPU,
    "mps": DistributedType.MULTI_CPU,
}

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_memory(value) -> int:
    """Return a memory size in bytes from an integer or a string such as "80GiB", "16GB", "512 MiB".

    Raises:
        ProfileError: for a negative number, a bool, or a string that is not a size.

    Example:
        >>> parse_memory("2GiB")
        2147483648
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ProfileError(f"memory: expected bytes as an int or a size like '80GiB', got {value!r} ({type(value).__name__})")
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*", value, re.IGNORECASE)
        if match is None:
            raise ProfileError(f"memory: {value!r} is not a size; write bytes or e.g. '80GiB', '16GB', '512MiB'")
        value = float(match.group(1)) * _UNITS[(match.group(2) or "").upper()]
    if value < 0 or value != int(value):
        raise ProfileError(f"memory: expected a whole non-negative number of bytes, got {value!r}")
    return int(value)


def _format_memory(size: int) -> str:
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


@dataclasses.dataclass(frozen=True)
class HardwareProfile:
    """One simulated machine: its accelerator kind and what each device reports.

    Args:
        name: the catalog id, e.g. "8xH100".
        kind: one of cpu, cuda, npu, xpu, xla, mps.
        count: devices on the host (>= 1).
        memory: bytes per device (0: use the host's memory, for cpu).
        device_name: what get_device_name()/get_device_properties().name report.
        capability: (major, minor) compute capability, or None where the kind has none.
        bf16: whether bfloat16 is supported (is_bf16_supported()).
        fp16: whether float16 is supported.
        multi_processor_count: get_device_properties().multi_processor_count.
        env: environment variables the platform's launcher sets for this hardware.
        description: one line for humans.
        device_tags: apply it with device tags on by default (cuda, xpu, xla, mps; see apply_profile),
            so a tagged variant can be named where only a profile can be passed (``World(profile=...)``).

    Raises:
        ProfileError: when a field has the wrong type or value (the message names the field).

    Example:
        >>> HardwareProfile("4xA10", kind="cuda", count=4, memory="24GiB", capability=(8, 6))
        HardwareProfile('4xA10', kind='cuda', count=4, memory='24GiB', capability=(8, 6))
    """

    name: str
    kind: str = "cpu"
    count: int = 1
    memory: int = 0
    device_name: str = ""
    capability: tuple[int, int] | None = None
    bf16: bool = True
    fp16: bool = True
    multi_processor_count: int = 0
    env: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    description: str = ""
    device_tags: bool = False

    def __post_init__(self):
        _check(isinstance(self.name, str) and self.name.strip() != "", "name", "a non-empty string", self.name)
        _check(self.kind in KINDS, "kind", f"one of {', '.join(KINDS)}", self.kind, self.name)
        _check(_is_int(self.count) and self.count >= 1, "count", "an int >= 1", self.count, self.name)
        object.__setattr__(self, "memory", parse_memory(self.memory))
        if self.capability is not None:
            capability = tuple(self.capability) if isinstance(self.capability, (list, tuple)) else None
            _check(capability is not None and len(capability) == 2 and all(_is_int(v) and v >= 0 for v in capability),
                   "capability", "(major, minor) of two ints, or None", self.capability, self.name)
            object.__setattr__(self, "capability", capability)
        for field in ("bf16", "fp16", "device_tags"):
            _check(isinstance(getattr(self, field), bool), field, "True or False", getattr(self, field), self.name)
        _check(_is_int(self.multi_processor_count) and self.multi_processor_count >= 0,
               "multi_processor_count", "an int >= 0", self.multi_processor_count, self.name)
        _check(isinstance(self.env, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()),
               "env", "a mapping of str to str", self.env, self.name)
        _check(isinstance(self.device_name, str), "device_name", "a string", self.device_name, self.name)
        _check(not self.device_tags or self.kind in TAGGED_KINDS, "device_tags",
               f"False for kind {self.kind!r} (tags exist for {', '.join(TAGGED_KINDS)})", self.device_tags, self.name)
        object.__setattr__(self, "env", _FrozenEnv(self.env))
        if not self.device_name:
            object.__setattr__(self, "device_name", self.kind)

    def __repr__(self):
        # Like hypothesis settings: show only what this profile sets beyond the defaults.
        shown = [repr(self.name)]
        for field in dataclasses.fields(self)[1:]:
            value = getattr(self, field.name)
            if field.name == "description" or (field.name == "device_name" and value == self.kind):
                continue
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            if value == default:
                continue
            if field.name == "memory":
                value = _format_memory(value)
            elif field.name == "env":
                value = dict(value)
            shown.append(f"{field.name}={value!r}")
        return f"HardwareProfile({', '.join(shown)})"

    @property
    def distributed_type(self) -> DistributedType:
        """What PartialState reports on this hardware when more than one process runs."""
        return _KIND_TO_DISTRIBUTED_TYPE[self.kind]

    @property
    def device_type(self) -> str:
        """The torch device type of this hardware ("cuda", "npu", ..., "xla", or "cpu")."""
        return self.kind

    def replace(self, **changes) -> "HardwareProfile":
        """Return a copy with some fields changed (a derived profile; give it a new name).

        Example:
            >>> get_profile("8xA100-80GB").replace(name="4xA100-40GB", count=4, memory="40GiB").count
            4
        """
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Return the profile as plain data, the shape a catalog entry has (without the name)."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data["env"] = dict(self.env)
        data["capability"] = list(self.capability) if self.capability else None
        del data["name"]
        return data


class _FrozenEnv(dict):
    """A read-only dict (hashable and picklable, unlike MappingProxyType) for a profile's env."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a HardwareProfile's env is read-only; use profile.replace(env={...})")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self):
        return hash(frozenset(self.items()))

    def __reduce__(self):
        return (_FrozenEnv, (dict(self),))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok, field, expected, value, name=None):
    if not ok:
        where = f"profile {name!r}: " if name else ""
        raise ProfileError(f"{where}{field}: expected {expected}, got {value!r} ({type(value).__name__})")


_FIELDS = {field.name for field in dataclasses.fields(HardwareProfile)}
_registry = {}
PROFILES = MappingProxyType(_registry)
"""All known profiles, name -> HardwareProfile (read-only view; add with register_profile)."""


def get_profile(name) -> HardwareProfile:
    """Return the registered profile called name (a profile passes through unchanged).

    Raises:
        UnknownProfileError: for a name nobody registered; the message lists the known ones.

    Example:
        >>> get_profile("2xT4").bf16
        False
    """
    if isinstance(name, HardwareProfile):
        return name
    if not isinstance(name, str):
        raise ProfileError(f"get_profile(): expected a profile name (str) or a HardwareProfile, got {name!r} ({type(name).__name__})")
    try:
        return _registry[name]
    except KeyError:
        known = ", ".join(sorted(_registry))
        raise UnknownProfileError(
            f"get_profile({name!r}): no such hardware profile; known: {known}. "
            "Add one with simulators.register_profile(...) or simulators.load_profiles('my_profiles.yaml')"
        ) from None


def register_profile(profile=None, *, replace=False, **fields) -> HardwareProfile:
    """Add a profile to :data:`PROFILES`, given as a HardwareProfile or as fields (``parent=`` derives one).

    Args:
        profile: a HardwareProfile, or None to build one from fields.
        replace: allow overwriting a profile of the same name.
        **fields: HardwareProfile fields (``name`` required), plus ``parent`` (a registered name whose
            fields the new profile starts from).

    Returns:
        The registered profile.

    Raises:
        ProfileError: for an unknown field, a bad value, or a name already registered without replace=True.

    Example:
        >>> register_profile(name="4xA100-40GB", parent="8xA100-80GB", count=4, memory="40GiB").memory
        42949672960
    """
    if profile is None:
        profile = _profile_from_data(fields.pop("name", None), fields)
    elif fields:
        raise ProfileError(f"register_profile(): pass a HardwareProfile or fields, not both (got fields {sorted(fields)})")
    if not isinstance(profile, HardwareProfile):
        raise ProfileError(f"register_profile(): expected a HardwareProfile, got {profile!r} ({type(profile).__name__})")
    if profile.name in _registry and not replace and _registry[profile.name] != profile:
        raise ProfileError(f"register_profile(): a profile named {profile.name!r} exists; pass replace=True to overwrite it")
    _registry[profile.name] = profile
    return profile


def _profile_from_data(name, data) -> HardwareProfile:
    if not isinstance(data, Mapping):
        raise ProfileError(f"profile {name!r}: expected a mapping of fields, got {data!r} ({type(data).__name__})")
    data = dict(data)
    unknown = set(data) - _FIELDS - {"parent"}
    if unknown:
        raise ProfileError(f"profile {name!r}: unknown field(s) {sorted(unknown)}; known: {sorted(_FIELDS - {'name'})} and parent")
    parent = data.pop("parent", None)
    if parent is not None:
        return dataclasses.replace(get_profile(parent), name=name, **data)
    return HardwareProfile(name=name, **data)


def load_profiles(source, *, replace=False) -> list:
    """Register every profile in a YAML file (or an already parsed mapping), name -> fields.

    Args:
        source: a path to a YAML file, or a mapping of the same shape as simulators/catalog.yaml.
        replace: allow overwriting profiles that already exist.

    Returns:
        The registered profiles, in file order.

    Raises:
        ProfileError: when the file does not hold a mapping of profiles, or an entry is invalid.

    Example:
        >>> load_profiles({"1xL4": {"kind": "cuda", "count": 1, "memory": "24GB", "capability": [8, 9]}})[0].name
        '1xL4'
    """
    data = source
    if isinstance(source, (str, Path)):
        with open(source, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    if not isinstance(data, Mapping):
        raise ProfileError(f"load_profiles(): expected a mapping of profile name -> fields, got {type(data).__name__} from {source!r}")
    return [register_profile(_profile_from_data(str(name), fields), replace=replace) for name, fields in data.items()]


def _load_catalog():
    text = resources.files(__package__).joinpath("catalog.yaml").read_text(encoding="utf-8")
    load_profiles(yaml.safe_load(text))


_load_catalog()
CATALOG = tuple(_registry)
"""The names shipped in catalog.yaml, in file order."""
