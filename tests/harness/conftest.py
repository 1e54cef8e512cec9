"""Shared helpers of the harness tests: pytester (loaded here) and real pytest runs in subprocesses."""

import os
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import psutil
import pytest


def pytest_configure(config):
    # pytest_plugins may only be set in the root conftest; importing the plugin works from here.
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


@dataclass
class Run:
    """A finished pytest subprocess: its exit code, output, and each test's JUnit record."""

    returncode: int
    output: str
    cases: dict  # test name -> (outcome, text)
    tag: str

    def outcome(self, name):
        return self.cases[name][0]

    def text(self, name):
        return self.cases[name][1]


def _read_junit(path):
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, text = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                kind = child.get("type", "")
                outcome = {"failure": "failed", "error": "error"}.get(child.tag, "xfailed" if "xfail" in kind else "skipped")
                text += (child.get("message") or "") + "\n" + (child.text or "")
            elif child.tag in ("system-out", "system-err"):
                text += "\n" + (child.text or "")
        cases[case.get("name")] = (outcome, text)
    return cases


def start_pytest(directory, *args, tag=None):
    """Start ``python -m pytest`` in ``directory`` with a tag in its environment (to find its processes)."""
    tag = tag or uuid.uuid4().hex
    env = dict(os.environ, HARNESS_TEST_TAG=tag)
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
           f"--junitxml={directory}/junit.xml", "-o", "junit_logging=all", "-rA", *args]
    proc = subprocess.Popen(cmd, cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, tag


def finish_pytest(directory, proc, tag, timeout=900):
    output, _ = proc.communicate(timeout=timeout)
    junit = os.path.join(directory, "junit.xml")
    cases = _read_junit(junit) if os.path.exists(junit) else {}
    return Run(proc.returncode, output, cases, tag)


def run_pytest(directory, *args, timeout=900):
    """Run pytest on the files in ``directory`` and return a ``Run``."""
    proc, tag = start_pytest(directory, *args)
    return finish_pytest(directory, proc, tag, timeout)


def tagged_processes(tag):
    """Processes still alive that carry the tag in their environment (a run's leftovers)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("HARNESS_TEST_TAG") == tag:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


class Runs:
    """The helpers above, handed to tests as a fixture (test modules here are not a package)."""

    start = staticmethod(start_pytest)
    finish = staticmethod(finish_pytest)
    run = staticmethod(run_pytest)
    tagged = staticmethod(tagged_processes)


@pytest.fixture(scope="session")
def runs():
    """Start real pytest subprocesses and inspect what they left behind."""
    return Runs
