"""Reports of a run: terminal table, results.json (results.py), JUnit XML, HTML grid."""

from .html import render_html, write_html
from .junit import render_junit, write_junit


def write_all(run, directory):
    """Write results.json, junit.xml and index.html into `directory`; returns their paths."""
    return [run.save(directory), write_junit(run, directory), write_html(run, directory)]


__all__ = ["render_html", "render_junit", "write_all", "write_html", "write_junit"]
