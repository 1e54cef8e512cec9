"""Live progress while a run goes: a line per finished cell above a bar with done/total, failures, ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .reports.terminal import cell_line


class LiveProgress:
    """Context manager; `advance(result)` prints the cell's line and moves the bar (thread-safe via rich)."""

    def __init__(self, console: Console, total: int, enabled: bool = True):
        self.console = console
        self.total = total
        self.enabled = enabled and console.is_terminal
        self.failures = 0
        self.done = 0
        self._progress = None

    def __enter__(self):
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]matrix[/]"), BarColumn(), MofNCompleteColumn(),
                TextColumn("[red]{task.fields[failures]} failed[/]"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), console=self.console, transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("cells", total=self.total, failures=0)
        return self

    def advance(self, result) -> None:
        self.done += 1
        self.failures += result.is_bad
        line = cell_line(result)
        if self._progress is not None:
            self._progress.console.print(line, highlight=False)
            self._progress.update(self._task, advance=1, failures=self.failures)
        else:
            self.console.print(f"[{self.done}/{self.total}, {self.failures} failed] {line}", highlight=False)

    def __exit__(self, *exc_info):
        if self._progress is not None:
            self._progress.__exit__(*exc_info)
        return False
