"""Presets: named, immutable slices of the matrix with their hypothesis settings.

The full product of the axes is ~15,000 cells; a preset says which part runs. Presets are
registered by name and may inherit from a parent; `str(preset)` shows only what it overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from types import MappingProxyType

from . import axes
from .cells import Cell, Slice, sort_cells
from .errors import UnknownPreset

_ALL_OPS = axes.axis_values("op")
_ALL_PRECISIONS = axes.axis_values("precision")
_ALL_PLUGINS = axes.axis_values("plugin")
_UNSET = None


@dataclass(frozen=True)
class Preset:
    """A named slice of the matrix and how hard each cell is tried.

    Args:
        name: the registry key (`--preset NAME`, `--quick`, `--thorough`).
        description: one line for `matrix list --presets`.
        parent: name of a registered preset to inherit unset fields from.
        slices: the products of axis values whose union is the preset's cells.
        examples: hypothesis examples per cell.
        world_timeout: seconds a single rank call may take before the world is declared hung.

    Example:
        >>> get_preset("quick").examples
        8
    """

    name: str
    description: str = ""
    parent: str | None = None
    slices: tuple[Slice, ...] | None = _UNSET
    examples: int | None = _UNSET
    world_timeout: float | None = _UNSET

    def resolved(self, field_name: str):
        """The value of a field, looked up through the parents when unset here."""
        value = getattr(self, field_name)
        if value is None and self.parent is not None:
            return get_preset(self.parent).resolved(field_name)
        return value

    @property
    def settings(self) -> dict:
        return {"examples": self.resolved("examples"), "world_timeout": self.resolved("world_timeout")}

    def cells(self) -> list[Cell]:
        """Every cell of the preset, deduplicated, in canonical order."""
        return sort_cells(cell for part in (self.resolved("slices") or ()) for cell in part.cells())

    def __str__(self) -> str:
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if f.name not in ("name", "slices", "description") and getattr(self, f.name) is not None]
        if self.slices is not None:
            shown.append(f"slices=<{len(self.slices)}>")
        return f"Preset({self.name!r}{''.join(', ' + s for s in shown)})"


_REGISTRY: dict[str, Preset] = {}
PRESETS = MappingProxyType(_REGISTRY)


def register_preset(preset: Preset) -> Preset:
    """Add a preset to the registry (names are unique; the parent must exist).

    Raises:
        ValueError: the name is taken.
        UnknownPreset: the parent is not registered.
    """
    if preset.name in _REGISTRY:
        raise ValueError(f"preset {preset.name!r} is already registered; choose another name")
    if preset.parent is not None:
        get_preset(preset.parent)
    _REGISTRY[preset.name] = preset
    return preset


def get_preset(name: str) -> Preset:
    """The registered preset called `name`.

    Raises:
        UnknownPreset: no such preset; the message lists the registered ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownPreset(f"no preset named {name!r}; registered: {', '.join(_REGISTRY)}") from None


register_preset(Preset(
    "default",
    "base settings every preset inherits",
    slices=(),
    examples=8,
    world_timeout=120.0,
))

register_preset(Preset(
    "quick",
    "every op x precision x plugin at w2 on 8xH100, ops at w8/w4/w1 on other profiles (~10 min budget)",
    parent="default",
    slices=(
        Slice(op=_ALL_OPS, precision=_ALL_PRECISIONS, plugin=_ALL_PLUGINS, world=(2,), hardware=("8xH100",)),
        Slice(op=_ALL_OPS, precision=("bf16",), world=(8,), hardware=("8xH100", "8xAscend910B")),
        Slice(op=_ALL_OPS, precision=("no", "fp16"), world=(4,), hardware=("cpu", "4xMax1550", "tpu-v4-8")),
        Slice(op=_ALL_OPS, precision=("no", "bf16"), world=(2,), hardware=("2xT4",)),
        Slice(op=_ALL_OPS, precision=("no", "fp16"), world=(1,), hardware=("cpu", "mps-m2")),
        Slice(op=_ALL_OPS, precision=("fp16",), plugin=("fsdp", "deepspeed"), world=(8,), hardware=("8xA100-80GB",)),
        # Not applicable, so reported with their reasons and never run: the table in action.
        Slice(op=_ALL_OPS, world=(8,), hardware=("2xT4", "mps-m2")),
    ),
))

register_preset(Preset(
    "ci",
    "a few cells per op for pull requests: w2 on 8xH100 with/without FSDP, w4 on cpu",
    parent="default",
    examples=5,
    slices=(
        Slice(op=_ALL_OPS, precision=("no", "bf16"), plugin=("none", "fsdp"), world=(2,), hardware=("8xH100",)),
        Slice(op=_ALL_OPS, precision=("no",), world=(4,), hardware=("cpu",)),
    ),
))

register_preset(Preset(
    "thorough",
    "the whole simulated product over gloo (every op, precision, plugin, world size, profile)",
    parent="default",
    examples=50,
    world_timeout=180.0,
    slices=(
        Slice(op=_ALL_OPS, precision=_ALL_PRECISIONS, plugin=_ALL_PLUGINS, world=axes.WORLD_SIZES,
              hardware=axes.HARDWARE),
    ),
))

register_preset(Preset(
    "smoke",
    "a handful of cells, for trying the tool and for its own tests",
    parent="default",
    examples=3,
    slices=(Slice(op=("gather", "reduce", "convert_to_fp32"), precision=("no", "bf16"), world=(2,), hardware=("cpu",)),),
))
