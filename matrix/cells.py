"""Cells (one value per axis, with a stable id) and selections of cells by axis values."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from . import axes
from .errors import BadCellId


@dataclass(frozen=True, order=True)
class Cell:
    """One combination of the six axes; `id` is the same on every machine.

    Example:
        >>> Cell("gather", "bf16", "fsdp", 8, "gloo", "8xH100").id
        'gather/bf16/fsdp/w8/gloo/8xH100'
    """

    op: str
    precision: str
    plugin: str
    world: int
    backend: str
    hardware: str

    def __post_init__(self):
        for axis in axes.AXIS_NAMES:
            axes.check_axis_value(axis, getattr(self, axis))

    @property
    def id(self) -> str:
        return f"{self.op}/{self.precision}/{self.plugin}/w{self.world}/{self.backend}/{self.hardware}"

    @property
    def world_key(self) -> tuple[int, str, str]:
        """What a world must match to run this cell: (size, hardware, backend)."""
        return (self.world, self.hardware, self.backend)

    def environment(self) -> dict[str, str]:
        """The launcher environment of this cell's plugin and precision."""
        return axes.plugin_environment(self.plugin, self.precision, self.world)

    @classmethod
    def parse(cls, cell_id: str) -> Cell:
        """Build a Cell from its id.

        Raises:
            BadCellId: the id does not have six parts or the world part is not `w<int>`.
            UnknownAxisValue: a part is not on its axis.

        Example:
            >>> Cell.parse("reduce/no/none/w2/gloo/cpu").world
            2
        """
        parts = cell_id.split("/")
        if len(parts) != 6 or not parts[3].startswith("w") or not parts[3][1:].isdigit():
            raise BadCellId(
                f"cell id {cell_id!r} is not op/precision/plugin/wN/backend/hardware, "
                "e.g. 'gather/bf16/fsdp/w8/gloo/8xH100'"
            )
        op, precision, plugin, world, backend, hardware = parts
        return cls(op, precision, plugin, int(world[1:]), backend, hardware)


_POSITION = {axis: {value: index for index, value in enumerate(axes.axis_values(axis))} for axis in axes.AXIS_NAMES}


def _canonical_rank(cell: Cell) -> tuple:
    """Sort key following each axis' canonical order (not alphabetical)."""
    return tuple(_POSITION[axis][getattr(cell, axis)] for axis in axes.AXIS_NAMES)


def sort_cells(cells: Iterable[Cell]) -> list[Cell]:
    """Cells without duplicates, in canonical axis order (op first)."""
    return sorted(set(cells), key=_canonical_rank)


@dataclass(frozen=True)
class Slice:
    """A product of axis values: every combination of the listed values.

    An axis left out takes a default: all ops, precision "no", plugin "none", world 2,
    backend "gloo", hardware "cpu".
    """

    op: tuple[str, ...] = axes.axis_values("op")
    precision: tuple[str, ...] = ("no",)
    plugin: tuple[str, ...] = ("none",)
    world: tuple[int, ...] = (2,)
    backend: tuple[str, ...] = ("gloo",)
    hardware: tuple[str, ...] = ("cpu",)

    def __post_init__(self):
        for axis in axes.AXIS_NAMES:
            for value in getattr(self, axis):
                axes.check_axis_value(axis, value)

    def cells(self) -> list[Cell]:
        values = [getattr(self, axis) for axis in axes.AXIS_NAMES]
        return [Cell(*combo) for combo in itertools.product(*values)]


@dataclass(frozen=True)
class Selection:
    """A filter on cells: for each axis, the values kept (an empty tuple keeps every value).

    Example:
        >>> sel = Selection.from_options(op="gather", world="2,8")
        >>> sel.matches(Cell.parse("gather/no/none/w8/gloo/cpu"))
        True
    """

    filters: Mapping[str, tuple] = field(default_factory=dict)

    @classmethod
    def from_options(cls, **options) -> Selection:
        """Build from CLI-style options: comma-separated strings, lists, or None for "any"."""
        filters = {}
        for axis, raw in options.items():
            if raw is None or raw == "" or raw == ():
                continue
            if axis not in axes.AXIS_NAMES:
                axes.axis_values(axis)  # raises with the list of axes
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            values = []
            for item in items:
                item = item.strip() if isinstance(item, str) else item
                if axis == "world":
                    item = _parse_world(item)
                axes.check_axis_value(axis, item)
                values.append(item)
            filters[axis] = tuple(values)
        return cls(filters)

    def matches(self, cell: Cell) -> bool:
        return all(getattr(cell, axis) in values for axis, values in self.filters.items())

    def apply(self, cells: Iterable[Cell]) -> list[Cell]:
        return [cell for cell in cells if self.matches(cell)]

    def is_empty(self) -> bool:
        return not self.filters

    def full_product(self) -> list[Cell]:
        """Every cell of the whole product that this selection keeps (used when no preset applies)."""
        values = [self.filters.get(axis) or axes.axis_values(axis) for axis in axes.AXIS_NAMES]
        return sort_cells(Cell(*combo) for combo in itertools.product(*values))


def _parse_world(item) -> int:
    text = str(item).strip().lstrip("w")
    if not text.isdigit():
        raise BadCellId(f"world size {item!r} is not a number; expected e.g. 2 or w8")
    return int(text)
