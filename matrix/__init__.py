"""matrix: the conformance matrix of accelerate-lite.

Cells (operation x precision x plugin x world size x backend x hardware profile) with stable ids,
presets that say which slice runs, an exclusion table with reasons, the shipped property suite
(`matrix.suite`, run inside every rank), runners (local, docker, CI) and reports (terminal,
results.json, JUnit XML, HTML grid). Command line: `python -m matrix run | list | report | ci-matrix`.

Example:
    >>> from matrix import Cell, get_preset
    >>> Cell.parse("gather/bf16/fsdp/w8/gloo/8xH100").world
    8
    >>> len(get_preset("quick").cells()) > 0
    True
"""

from .cells import Cell, Selection, Slice
from .exclusions import RULES, Verdict, classify
from .presets import PRESETS, Preset, get_preset, register_preset
from .results import CellResult, Failure, RunResult

__all__ = [
    "PRESETS",
    "RULES",
    "Cell",
    "CellResult",
    "Failure",
    "Preset",
    "RunResult",
    "Selection",
    "Slice",
    "Verdict",
    "classify",
    "get_preset",
    "register_preset",
]
