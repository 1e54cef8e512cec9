"""The terminal report: per-cell lines while running, then a summary table, failures and timings."""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

from .. import axes, results
from ..results import CellResult, RunResult

STYLE = {
    results.PASSED: "green", results.FAILED: "bold red", results.XPASSED: "bold red", results.ERROR: "bold red",
    results.XFAILED: "yellow", results.NOT_APPLICABLE: "dim",
}
LABEL = {
    results.PASSED: "PASS", results.FAILED: "FAIL", results.XPASSED: "XPASS", results.ERROR: "ERROR",
    results.XFAILED: "xfail", results.NOT_APPLICABLE: "n/a",
}


def cell_line(result: CellResult) -> str:
    """One line per finished cell: status, id, time, examples, and the reason or first failing rank."""
    status = result.status
    text = f"[{STYLE[status]}]{LABEL[status]:>5}[/] {result.cell_id}"
    if status != results.NOT_APPLICABLE:
        text += f"  {result.duration:6.2f}s  {result.examples:3d} ex"
    if result.is_bad and result.failure is not None:
        rank = "" if result.failure.rank is None else f" rank {result.failure.rank}:"
        text += f"  [red]{rank} {_escape(result.failure.message.splitlines()[0])[:120]}[/]"
    elif result.reason:
        text += f"  [dim]({_escape(result.reason)[:110]})[/]"
    return text


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


def summary_table(run: RunResult) -> Table:
    """Rows: operations; columns: status counts and time spent."""
    table = Table(title=f"matrix {run.preset}: {len(run.results)} cells in {run.wall_time:.1f}s", show_lines=False)
    table.add_column("operation")
    for status in results.STATUSES:
        table.add_column(LABEL[status], justify="right", style=STYLE[status])
    table.add_column("time", justify="right")
    per_op: dict[str, list[CellResult]] = {}
    for result in run.results:
        per_op.setdefault(result.cell_id.split("/", 1)[0], []).append(result)
    for op in axes.axis_values("op"):
        cells = per_op.get(op)
        if not cells:
            continue
        counts = [sum(1 for c in cells if c.status == s) for s in results.STATUSES]
        table.add_row(op, *[str(n) if n else "" for n in counts], f"{sum(c.duration for c in cells):.1f}s")
    totals = run.counts()
    table.add_row("[b]total[/]", *[f"[b]{totals[s]}[/]" for s in results.STATUSES],
                  f"[b]{sum(r.duration for r in run.results):.1f}s[/]")
    return table


def timing_lines(run: RunResult, slowest: int = 5) -> list[str]:
    """Time per cell: mean, median, max, and the slowest cells."""
    ran = [r for r in run.results if r.status != results.NOT_APPLICABLE]
    if not ran:
        return ["no cell ran"]
    durations = [r.duration for r in ran]
    lines = [(f"time per cell ({len(ran)} run): mean {statistics.mean(durations):.2f}s, "
              f"median {statistics.median(durations):.2f}s, max {max(durations):.2f}s; wall {run.wall_time:.1f}s")]
    for r in sorted(ran, key=lambda r: -r.duration)[:slowest]:
        lines.append(f"  {r.duration:6.2f}s  {r.cell_id}")
    return lines


def failure_lines(run: RunResult) -> list[str]:
    """Every bad cell with its first failing rank, shrunk example and how to reproduce it."""
    lines = []
    for r in run.results:
        if not r.is_bad or r.failure is None:
            continue
        f = r.failure
        lines.append(f"[bold red]{LABEL[r.status]}[/] {r.cell_id}")
        if f.rank is not None:
            lines.append(f"  first failing rank: {f.rank}  (failing ranks: {list(f.ranks)})")
        for line in f.message.splitlines()[:8]:
            lines.append(f"  {_escape(line)}")
        if f.example:
            lines.append(f"  shrunk example: {_escape(f.example)[:400]}")
        if f.reproduce:
            lines.append(f"  reproduce: {f.reproduce}")
    return lines


def print_report(run: RunResult, console: Console | None = None, out_dir: str | None = None) -> None:
    """Print the summary table, the failures and the timings."""
    console = console or Console(soft_wrap=True)
    console.print(summary_table(run))
    for line in failure_lines(run):
        console.print(line, highlight=False)
    for line in timing_lines(run):
        console.print(line, highlight=False)
    if out_dir:
        console.print(f"report: {out_dir}/index.html  results: {out_dir}/results.json  junit: {out_dir}/junit.xml",
                      highlight=False)
    verdict = "[green]OK[/]: every cell passed or is in the exclusion table" if run.ok else \
        f"[bold red]FAILED[/]: {sum(1 for r in run.results if r.is_bad)} cell(s) failed"
    console.print(verdict)
