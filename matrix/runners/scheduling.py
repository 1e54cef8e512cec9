"""Which worlds run when: groups of cells sharing a world, packed into the machine's cores.

Pure planning, no I/O (tested with fakes). A group of world size w occupies min(w, cores) cores;
groups run side by side only while their cores add up to at most the machine's, so a 2-core box
runs two 1-rank worlds together but one 8-rank world alone, and never oversubscribes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cells import Cell


@dataclass
class Group:
    """Cells that run one after another in the same world (same size, hardware, backend)."""

    key: tuple[int, str, str]
    cells: list[Cell] = field(default_factory=list)

    @property
    def world(self) -> int:
        return self.key[0]

    def weight(self, cores: int) -> int:
        """Cores this group's world keeps busy."""
        return max(1, min(self.world, cores))


def group_cells(cells: list[Cell]) -> list[Group]:
    """Cells grouped by world key, largest worlds first (they cannot share the machine)."""
    groups: dict[tuple, Group] = {}
    for cell in cells:
        groups.setdefault(cell.world_key, Group(cell.world_key)).cells.append(cell)
    return sorted(groups.values(), key=lambda g: (-g.world, g.key))


class CoreBudget:
    """Admission control for groups: start one only if its cores fit in what is free.

    Example:
        >>> budget = CoreBudget(2)
        >>> budget.try_start(1), budget.try_start(1), budget.try_start(1)
        (True, True, False)
    """

    def __init__(self, cores: int):
        if cores < 1:
            raise ValueError(f"cores must be >= 1, got {cores!r}")
        self.cores = cores
        self.in_use = 0

    def try_start(self, weight: int) -> bool:
        weight = min(weight, self.cores)
        if self.in_use + weight > self.cores:
            return False
        self.in_use += weight
        return True

    def finish(self, weight: int) -> None:
        self.in_use -= min(weight, self.cores)
        if self.in_use < 0:
            raise RuntimeError("CoreBudget.finish() called more often than try_start()")


def next_startable(pending: list[Group], budget: CoreBudget) -> Group | None:
    """Remove and return the first pending group that fits the budget now, or None."""
    for index, group in enumerate(pending):
        if budget.try_start(group.weight(budget.cores)):
            return pending.pop(index)
    return None
