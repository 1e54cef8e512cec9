"""Results of a matrix run: one record per cell, the run's environment, and results.json I/O."""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .cells import Cell
from .errors import ResultsFileError

PASSED = "passed"
FAILED = "failed"
XFAILED = "xfailed"  # an excluded cell failed as its rule says it must
XPASSED = "xpassed"  # an excluded cell passed: strict xfail, counts as a failure
NOT_APPLICABLE = "n/a"
ERROR = "error"  # the cell could not be run at all (world crashed, runner broke)

STATUSES = (PASSED, FAILED, XFAILED, XPASSED, NOT_APPLICABLE, ERROR)
BAD_STATUSES = (FAILED, XPASSED, ERROR)
SCHEMA = "accelerate-lite-matrix/1"


@dataclass
class Failure:
    """Why a cell failed: the first failing rank, every failing rank, the shrunk example."""

    message: str
    rank: int | None = None
    ranks: tuple[int, ...] = ()
    error_type: str = ""
    example: str | None = None
    traceback: str = ""
    reproduce: str = ""

    def details(self) -> str:
        """The failure as the reports show it: message, ranks, shrunk example, how to replay, traceback."""
        parts = [self.message]
        if self.rank is not None:
            parts.append(f"first failing rank: {self.rank} (failing ranks: {list(self.ranks)})")
        if self.example:
            parts.append(f"shrunk example: {self.example}")
        if self.reproduce:
            parts.append(f"reproduce: {self.reproduce}")
        if self.traceback:
            parts.append(self.traceback)
        return "\n".join(part for part in parts if part)


@dataclass
class CellResult:
    """The outcome of one cell."""

    cell_id: str
    status: str
    duration: float = 0.0
    examples: int = 0
    reason: str = ""  # for n/a and xfail: the exclusion table's reason
    rules: tuple[str, ...] = ()
    failure: Failure | None = None

    @property
    def cell(self) -> Cell:
        return Cell.parse(self.cell_id)

    @property
    def is_bad(self) -> bool:
        return self.status in BAD_STATUSES

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rules"] = list(self.rules)
        if self.failure is not None:
            data["failure"]["ranks"] = list(self.failure.ranks)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CellResult:
        failure = data.get("failure")
        if failure is not None:
            failure = Failure(**{**failure, "ranks": tuple(failure.get("ranks", ()))})
        return cls(
            cell_id=data["cell_id"], status=data["status"], duration=data.get("duration", 0.0),
            examples=data.get("examples", 0), reason=data.get("reason", ""),
            rules=tuple(data.get("rules", ())), failure=failure,
        )


def environment(runner: str) -> dict:
    """What this run ran on: torch version, machine, python, runner, CPU count."""
    import torch

    return {
        "runner": runner,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }


@dataclass
class RunResult:
    """A whole run: settings, environment and every cell's result, in the order they were planned."""

    preset: str
    settings: dict
    environment: dict
    results: list[CellResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    wall_time: float = 0.0

    def counts(self) -> dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for result in self.results:
            counts[result.status] += 1
        return counts

    @property
    def ok(self) -> bool:
        return not any(result.is_bad for result in self.results)

    def by_id(self) -> dict[str, CellResult]:
        return {result.cell_id: result for result in self.results}

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA, "preset": self.preset, "settings": self.settings,
            "environment": self.environment, "started": self.started, "wall_time": self.wall_time,
            "counts": self.counts(), "cells": [result.to_dict() for result in self.results],
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write results.json into `directory` (created if needed) and return its path."""
        path = Path(directory) / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> RunResult:
        """Read a results.json (or the directory holding one).

        Raises:
            ResultsFileError: missing file, bad JSON or another schema; the message says which.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ResultsFileError(f"no results at {path}; run `python -m matrix run --out {path.parent}` first") from None
        except json.JSONDecodeError as exc:
            raise ResultsFileError(f"{path} is not valid JSON ({exc}); re-run the matrix to rewrite it") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def loads(cls, text: str, source: str = "<results>") -> RunResult:
        """Read the text of a results.json (e.g. copied out of a container)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResultsFileError(f"{source} is not valid JSON ({exc}); re-run the matrix to rewrite it") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<results>") -> RunResult:
        if data.get("schema") != SCHEMA:
            raise ResultsFileError(f"{source} has schema {data.get('schema')!r}; expected {SCHEMA!r}")
        run = cls(preset=data["preset"], settings=data["settings"], environment=data["environment"],
                  started=data.get("started", 0.0), wall_time=data.get("wall_time", 0.0))
        run.results = [CellResult.from_dict(cell) for cell in data["cells"]]
        return run

    def merge(self, other: RunResult) -> None:
        """Add another run's cells (e.g. from a container); a cell id present in both keeps `other`'s."""
        mine = self.by_id()
        for result in other.results:
            mine[result.cell_id] = result
        self.results = list(mine.values())
