"""`python -m matrix run | list | report | ci-matrix`: the command line of the conformance matrix."""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import axes, exclusions, results
from .cells import Cell, Selection, sort_cells
from .errors import MatrixError
from .presets import PRESETS, get_preset

AXIS_OPTIONS = (("op", "--op"), ("precision", "--precision"), ("plugin", "--plugin"), ("world", "--world"),
                ("backend", "--backend"), ("hardware", "--hardware"))


def _add_selection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("selection (comma-separated values; each narrows the preset)")
    for axis, flag in AXIS_OPTIONS:
        values = ", ".join(str(v) for v in axes.axis_values(axis))
        group.add_argument(flag, dest=axis, default=None, help=f"one or more of: {values}")
    group.add_argument("--cell", action="append", default=[], help="an exact cell id (repeatable); bypasses the preset")
    group.add_argument("--all-cells", action="store_true",
                       help="select from the whole product of the axes instead of the preset's slice")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--preset", default=None, choices=sorted(PRESETS), help="a registered preset (default: quick)")
    mode.add_argument("--quick", dest="preset", action="store_const", const="quick", help="the quick preset")
    mode.add_argument("--thorough", dest="preset", action="store_const", const="thorough", help="the thorough preset")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m matrix", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run cells and write the reports")
    _add_selection(run)
    run.add_argument("--examples", type=int, default=None, help="hypothesis examples per cell (default: the preset's)")
    run.add_argument("--seed", type=int, default=0, help="the run's seed; each cell mixes in its id")
    run.add_argument("--world-timeout", type=float, default=None, help="seconds one cell may take before it counts as hung")
    run.add_argument("--out", default="matrix-report", help="directory for results.json, junit.xml, index.html")
    run.add_argument("--runner", default="local", choices=("local", "docker"), help="where the cells run")
    run.add_argument("--real", action="store_true", help="use this machine's real devices (e.g. --backend nccl on GPUs)")
    run.add_argument("--cores", type=int, default=None, help="cores to fill with worlds (default: all)")
    run.add_argument("--rank-setup", default=None, metavar="MODULE:FUNCTION",
                     help="a function every rank runs once after its world starts (fault injection)")
    run.add_argument("--no-progress", action="store_true", help="plain lines, no live progress bar")
    run.add_argument("--docker-image", default=None, help="docker runner: image to use (default: build the skeleton image)")
    run.add_argument("--gpus", action="store_true", help="docker runner: request all GPUs (NVIDIA runtime)")

    listing = sub.add_parser("list", help="list the selected cells with their verdicts, and the exclusion table")
    _add_selection(listing)
    listing.add_argument("--exclusions", action="store_true", help="only the exclusion table")
    listing.add_argument("--presets", action="store_true", help="only the presets")

    report = sub.add_parser("report", help="re-render a saved results.json into the terminal, JUnit and HTML")
    report.add_argument("path", nargs="?", default="matrix-report", help="results.json or its directory")
    report.add_argument("--out", default=None, help="where to write junit.xml and index.html (default: beside it)")

    ci = sub.add_parser("ci-matrix", help="print the GitHub Actions matrix (JSON) over real-hardware runners")
    ci.add_argument("--preset", default="ci", choices=sorted(PRESETS))
    ci.add_argument("--hardware", default=None, help="only these runner hardware ids (comma-separated)")
    return parser


def select_cells(args) -> list[Cell]:
    """The cells a `run`/`list` invocation means: --cell ids, else the preset (or whole product) narrowed by axes."""
    if args.cell:
        return sort_cells(Cell.parse(cell_id) for cell_id in args.cell)
    selection = Selection.from_options(**{axis: getattr(args, axis) for axis, _ in AXIS_OPTIONS})
    if args.all_cells:
        return selection.full_product()
    preset_cells = get_preset(args.preset or "quick").cells()
    chosen = selection.apply(preset_cells)
    if not chosen and not selection.is_empty():
        chosen = selection.full_product()  # a selection outside the preset: take it from the whole product
    return chosen


def _settings(args, preset):
    from .runners.local import RunSettings

    rank_setup = None
    if args.rank_setup:
        from .suite.entry import resolve_function

        module, _, name = args.rank_setup.rpartition(":")
        path = module if module.endswith(".py") else ""
        rank_setup = resolve_function((module, path, name))
    return RunSettings(
        examples=args.examples or preset.resolved("examples"), seed=args.seed,
        world_timeout=args.world_timeout or preset.resolved("world_timeout"), real=args.real,
        cores=args.cores, rank_setup=rank_setup,
    )


def command_run(args) -> int:
    from rich.console import Console

    from .progress import LiveProgress
    from .reports import write_all
    from .reports.terminal import print_report
    from .runners import make_runner

    preset = get_preset(args.preset or "quick")
    cells = select_cells(args)
    settings = _settings(args, preset)
    console = Console(soft_wrap=not sys.stdout.isatty())
    source = "cells chosen by id or from the whole product" if (args.cell or args.all_cells) else f"preset {preset.name}"
    console.print(f"matrix: {len(cells)} cells ({source}), {settings.examples} examples per cell, "
                  f"seed {settings.seed}, runner {args.runner}", highlight=False)
    runner = make_runner(args.runner, settings, args)
    label = "selection" if (args.cell or args.all_cells) else preset.name
    run = results.RunResult(preset=label, settings={**settings.__dict__, "rank_setup": args.rank_setup},
                            environment=results.environment(os.environ.get("MATRIX_RUNNER", runner.name)))
    started = time.perf_counter()
    with LiveProgress(console, len(cells), enabled=not args.no_progress) as progress:
        run.results = runner.run(cells, on_result=progress.advance)
    run.wall_time = time.perf_counter() - started
    write_all(run, args.out)
    print_report(run, console, out_dir=args.out)
    return 0 if run.ok else 1


def command_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if args.presets:
        for name, preset in PRESETS.items():
            console.print(f"{name:10s} {len(preset.cells()):6d} cells  {preset.description}  {preset}", highlight=False)
        return 0
    cells = [] if args.exclusions else select_cells(args)
    for cell in cells:
        verdict = exclusions.classify(cell)
        note = "" if verdict.action == exclusions.RUN else f"  {verdict.action}: {verdict.reason}"
        console.print(f"{cell.id}{note}", highlight=False, markup=False)
    table = Table(title="exclusion table (matrix/exclusions.py)")
    for column in ("rule", "kind", "reason", "env-dependent") + (("hits",) if cells else ()):
        table.add_column(column)
    for row in exclusions.table_rows(cells if cells else None):
        extra = (str(row["hits"]),) if cells else ()
        table.add_row(row["id"], row["kind"], row["reason"], "yes" if row["environmental"] else "", *extra)
    console.print(table)
    if cells:
        counts = {}
        for cell in cells:
            action = exclusions.classify(cell).action
            counts[action] = counts.get(action, 0) + 1
        console.print(f"{len(cells)} cells: " + ", ".join(f"{k} {v}" for k, v in counts.items()), highlight=False)
    return 0


def command_report(args) -> int:
    from .reports import write_html, write_junit
    from .reports.terminal import print_report

    run = results.RunResult.load(args.path)
    out = args.out or (args.path if not str(args.path).endswith(".json") else str(__import__("pathlib").Path(args.path).parent))
    write_junit(run, out)
    write_html(run, out)
    print_report(run, out_dir=out)
    return 0 if run.ok else 1


def command_ci_matrix(args) -> int:
    import json

    from .runners.ci import github_matrix

    hardware = args.hardware.split(",") if args.hardware else None
    print(json.dumps(github_matrix(args.preset, hardware)))
    return 0


COMMANDS = {"run": command_run, "list": command_list, "report": command_report, "ci-matrix": command_ci_matrix}


def main(argv=None) -> int:
    """Entry point of `python -m matrix`; returns the exit code (1 when any cell failed, 2 on bad usage)."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MatrixError as exc:
        print(f"matrix: error: {exc}", file=sys.stderr)
        return 2
