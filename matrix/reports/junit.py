"""JUnit XML for CI: one testcase per cell, classname the operation, name the rest of the cell id."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from .. import results
from ..results import RunResult


def render_junit(run: RunResult) -> str:
    """The run as a JUnit XML document (failed/xpassed -> failure, error -> error, n/a and xfailed -> skipped)."""
    counts = run.counts()
    suite = ET.Element("testsuite", {
        "name": f"accelerate-lite matrix ({run.preset})",
        "tests": str(len(run.results)),
        "failures": str(counts[results.FAILED] + counts[results.XPASSED]),
        "errors": str(counts[results.ERROR]),
        "skipped": str(counts[results.NOT_APPLICABLE] + counts[results.XFAILED]),
        "time": f"{run.wall_time:.3f}",
        "hostname": str(run.environment.get("hostname", "")),
    })
    props = ET.SubElement(suite, "properties")
    for key, value in {**run.environment, **run.settings}.items():
        ET.SubElement(props, "property", {"name": str(key), "value": str(value)})
    for result in run.results:
        op = result.cell_id.split("/", 1)[0]
        case = ET.SubElement(suite, "testcase", {"classname": f"matrix.{op}", "name": result.cell_id,
                                                 "time": f"{result.duration:.3f}"})
        if result.status in (results.FAILED, results.XPASSED):
            node = ET.SubElement(case, "failure", {"message": result.failure.message.splitlines()[0],
                                                   "type": result.failure.error_type or result.status})
            node.text = result.failure.details()
        elif result.status == results.ERROR:
            node = ET.SubElement(case, "error", {"message": result.failure.message.splitlines()[0],
                                                 "type": result.failure.error_type or "error"})
            node.text = result.failure.details()
        elif result.status == results.NOT_APPLICABLE:
            ET.SubElement(case, "skipped", {"message": f"not applicable: {result.reason}"})
        elif result.status == results.XFAILED:
            ET.SubElement(case, "skipped", {"type": "pytest.xfail", "message": f"expected failure: {result.reason}"})
        if result.examples:
            ET.SubElement(case, "system-out").text = f"hypothesis examples: {result.examples}"
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def write_junit(run: RunResult, directory: str | os.PathLike) -> Path:
    path = Path(directory) / "junit.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_junit(run))
    return path
