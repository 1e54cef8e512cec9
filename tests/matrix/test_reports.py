"""results.json, JUnit XML, HTML and the terminal report, from a run holding every status."""

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from matrix_fixtures import make_run
from rich.console import Console

from matrix import results
from matrix.reports import render_html, render_junit, write_all
from matrix.reports.terminal import cell_line, print_report
from matrix.results import RunResult


def test_results_json_round_trips_every_field(tmp_path):
    run = make_run()
    path = run.save(tmp_path)
    data = json.loads(path.read_text())
    assert data["counts"] == {"passed": 1, "failed": 1, "xfailed": 1, "xpassed": 1, "n/a": 1, "error": 1}
    assert {"torch", "machine", "runner", "python"} <= set(data["environment"])
    failed = data["cells"][1]
    assert failed["failure"]["rank"] == 1 and failed["failure"]["example"].startswith("[tensor")
    again = RunResult.load(tmp_path)
    assert [r.to_dict() for r in again.results] == [r.to_dict() for r in run.results]
    assert not again.ok


def test_junit_has_one_testcase_per_cell_with_failures_and_skips():
    suite = ET.fromstring(render_junit(make_run()).split("?>", 1)[1])
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [r.cell_id for r in make_run().results]
    assert suite.get("failures") == "2" and suite.get("errors") == "1" and suite.get("skipped") == "2"
    failed = cases[1].find("failure")
    assert "first failing rank: 1" in failed.text and "shrunk example: [tensor([0.])" in failed.text
    assert cases[3].find("skipped").get("message") == "not applicable: 2xT4 has 2 device(s)"


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self.details = [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "td" and "data-cell-id" in attrs:
            self.cells.append((attrs["data-cell-id"], attrs["data-status"], attrs["class"]))
        self.details += tag == "details"


def test_html_has_one_grid_cell_per_result_and_details_for_failures():
    page = render_html(make_run())
    parser = _Cells()
    parser.feed(page)
    assert sorted(c[0] for c in parser.cells) == sorted(r.cell_id for r in make_run().results)
    assert parser.details == 3  # failed, xpassed, error
    assert "&lt;boom &amp; &#x27;quotes&#x27;&gt;" in page  # tracebacks are escaped
    assert "w8 · gloo · 8xH100 · fsdp" in page


def test_terminal_report_lists_failures_with_rank_example_and_timings():
    console = Console(record=True, width=200)
    print_report(make_run(), console, out_dir="matrix-report")
    text = console.export_text()
    assert "FAIL gather/bf16/fsdp/w8/gloo/8xH100" in text
    assert "first failing rank: 1" in text and "shrunk example: [tensor([0.]), tensor([1.])]" in text
    assert "time per cell (5 run)" in text and "FAILED: 3 cell(s) failed" in text
    assert "matrix-report/index.html" in text


def test_cell_line_shows_reason_for_not_applicable():
    line = cell_line(make_run().results[3])
    assert "n/a" in line and "2xT4 has 2 device(s)" in line


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_html_renders_in_headless_chromium_with_one_cell_per_result(tmp_path):
    run = make_run()
    write_all(run, tmp_path)
    page = tmp_path / "index.html"
    profile = tmp_path / "chromium-profile"
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--no-first-run", f"--user-data-dir={profile}", "--dump-dom", page.as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    parser = _Cells()
    parser.feed(dom)
    assert len(parser.cells) == len(run.results)
    assert {status for _, status, _ in parser.cells} == set(results.STATUSES)
    shot = tmp_path / "grid.png"
    subprocess.run(command[:-2] + [f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 5000  # a real rendering, not an empty image
