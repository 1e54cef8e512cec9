"""The HTML report: the matrix as coloured grids (ops x precision, one grid per world/profile/plugin).

One self-contained page, no scripts: every result is exactly one `<td data-cell-id=...>`, and a
failing cell holds a `<details>` element that opens its rank, shrunk example and traceback.
"""

from __future__ import annotations

import datetime
import html
import os
from pathlib import Path

from .. import axes, results
from ..results import RunResult

SYMBOL = {
    results.PASSED: "✓", results.FAILED: "✗", results.XFAILED: "xfail", results.XPASSED: "XPASS",
    results.NOT_APPLICABLE: "n/a", results.ERROR: "error",
}

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em} h2{font-size:.95em;margin:1.2em 0 .3em}
div.block{display:inline-block;vertical-align:top;margin-right:1.2em}
table.grid{border-collapse:collapse;margin-bottom:.5em}
table.grid th,table.grid td{border:1px solid #ccc;padding:2px 6px;font-size:.85em;vertical-align:top}
table.grid th{background:#f4f4f4;text-align:left}
td.passed{background:#c8f0c8} td.failed,td.xpassed,td.error{background:#f7b4b4}
td.xfailed{background:#f3e2a9} td.na{background:#e4e4e4;color:#666} td.empty{background:#fff}
td .t{color:#555;font-size:.8em} details pre{white-space:pre-wrap;max-width:70em;font-size:.8em;background:#fff8f8;padding:.5em}
.summary span{display:inline-block;margin-right:1em;padding:2px 8px;border-radius:3px}
table.exclusions td{font-size:.85em;padding:2px 6px;border-bottom:1px solid #eee}
"""


def _block_key(cell):
    return (cell.world, cell.backend, cell.hardware, cell.plugin)


def _block_order(key):
    world, backend, hardware, plugin = key
    return (axes.HARDWARE.index(hardware), world, axes.axis_values("backend").index(backend),
            axes.axis_values("plugin").index(plugin))


def _cell_html(result) -> str:
    status = result.status
    css = "na" if status == results.NOT_APPLICABLE else status
    title = html.escape(f"{result.cell_id}: {status}" + (f" ({result.reason})" if result.reason else ""), quote=True)
    body = f"{SYMBOL[status]} <span class='t'>{result.duration:.2f}s</span>"
    if status == results.NOT_APPLICABLE or (status == results.XFAILED and result.reason):
        body = f"{SYMBOL[status]}"
    if result.failure is not None and result.is_bad:
        failure = result.failure
        rank = "" if failure.rank is None else f" rank {failure.rank}"
        body = (f"<details><summary>{SYMBOL[status]}{html.escape(rank)}</summary>"
                f"<pre>{html.escape(failure.details())}</pre></details>")
    return (f"<td class='{css}' data-cell-id='{html.escape(result.cell_id, quote=True)}' "
            f"data-status='{html.escape(status, quote=True)}' title='{title}'>{body}</td>")


def _grid(key, block_results) -> str:
    world, backend, hardware, plugin = key
    by_op_precision = {(r.cell.op, r.cell.precision): r for r in block_results}
    ops = [op for op in axes.axis_values("op") if any(k[0] == op for k in by_op_precision)]
    precisions = axes.axis_values("precision")
    rows = ["<tr><th>operation</th>" + "".join(f"<th>{p}</th>" for p in precisions) + "</tr>"]
    for op in ops:
        tds = [(_cell_html(by_op_precision[(op, p)]) if (op, p) in by_op_precision else "<td class='empty'></td>")
               for p in precisions]
        rows.append(f"<tr><th>{html.escape(op)}</th>{''.join(tds)}</tr>")
    label = axes.PLUGIN_BY_NAME[plugin].label
    title = f"w{world} · {backend} · {hardware} · {plugin} ({label})"
    return (f"<div class='block'><h2>{html.escape(title)}</h2>\n"
            f"<table class='grid' data-block='w{world}/{backend}/{hardware}/{plugin}'>"
            + "\n".join(rows) + "</table></div>")


def render_html(run: RunResult) -> str:
    """The whole page as a string."""
    blocks: dict[tuple, list] = {}
    for result in run.results:
        blocks.setdefault(_block_key(result.cell), []).append(result)
    counts = run.counts()
    colours = {results.PASSED: "#c8f0c8", results.FAILED: "#f7b4b4", results.XPASSED: "#f7b4b4",
               results.ERROR: "#f7b4b4", results.XFAILED: "#f3e2a9", results.NOT_APPLICABLE: "#e4e4e4"}
    summary = "".join(f"<span style='background:{colours[s]}'>{s}: {n}</span>" for s, n in counts.items())
    env = run.environment
    started = datetime.datetime.fromtimestamp(run.started, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    reasons: dict[str, str] = {}
    for result in run.results:
        for rule, reason in zip(result.rules, result.reason.split("; ")):
            reasons.setdefault(rule, reason)
    excl = "".join(f"<tr><td>{html.escape(r)}</td><td>{html.escape(t)}</td></tr>" for r, t in sorted(reasons.items()))
    grids = "\n".join(_grid(key, blocks[key]) for key in sorted(blocks, key=_block_order))
    verdict = "all cells passed or are listed in the exclusion table" if run.ok else "FAILING CELLS (red): click one for its traceback"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>accelerate-lite matrix: {html.escape(run.preset)}</title>
<style>{CSS}</style></head><body>
<h1>accelerate-lite conformance matrix: {html.escape(run.preset)}</h1>
<p>{html.escape(verdict)}. {len(run.results)} cells in {run.wall_time:.1f}s, started {started};
runner {html.escape(str(env.get('runner')))} on {html.escape(str(env.get('hostname')))}
({html.escape(str(env.get('machine')))}, {env.get('cpu_count')} cores), torch {html.escape(str(env.get('torch')))},
{run.settings.get('examples')} examples per cell, seed {run.settings.get('seed')}.</p>
<p class="summary">{summary}</p>
{grids}
<h2>Exclusions met in this run</h2>
<table class="exclusions">{excl or '<tr><td>none</td></tr>'}</table>
</body></html>
"""


def write_html(run: RunResult, directory: str | os.PathLike) -> Path:
    path = Path(directory) / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(run), encoding="utf-8")
    return path
