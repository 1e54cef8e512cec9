"""The part of the harness that runs inside a rank: load the test, build its arguments, run the body.

The plugin sends a ``BodySpec`` to every rank of a world with ``world.run(run_body, spec)``.
This module imports nothing from the plugin (the controller side): only the spec crosses over,
and only plain data comes back. A rank that does not pass raises ``RankLeftTest`` after writing
its outcome to the spec's outbox, so the world stops waiting for it and the plugin still learns
exactly what happened on every rank.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import os
import pickle
import sys
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

from harness.errors import RankLeftExample, RankLeftTest
from harness.outcomes import RankOutcome

# Fixtures whose value differs per rank: the controller sends a recipe, the rank builds the value.
PER_RANK_FIXTURES = ("tmp_path", "tmpdir", "monkeypatch", "capsys", "rank", "world_size")


@dataclass(frozen=True)
class BodySpec:
    """Everything a rank needs to run one test body.

    Args:
        nodeid: the pytest node id (for messages).
        module_name: the test module's ``__name__`` in the pytest process.
        module_path: the test module's file.
        qualname: ``"test_x"`` or ``"TestClass.test_x"`` (the undecorated name, without params).
        sys_path: the pytest process's ``sys.path``, so the test module's imports resolve alike.
        shared_blob: pickled ``{argname: value}`` of the fixtures and parameters every rank shares.
        per_rank: ``(argname, kind, payload)`` for fixtures built on each rank (see PER_RANK_FIXTURES).
        outbox: a directory where ranks that do not pass write their outcome.
        token: a name unique to this test run, used for the outbox files.
        verbosity: pytest's assertion verbosity, for assertion explanations.
        hypothesis_seed: the seed rank 0 gives hypothesis, or None for a test without @given.
    """

    nodeid: str
    module_name: str
    module_path: str
    qualname: str
    sys_path: tuple
    shared_blob: bytes
    per_rank: tuple
    outbox: str
    token: str
    verbosity: int = 0
    hypothesis_seed: int | None = None


# ---------------------------------------------------------------- loading the test module

_loaded: dict[str, tuple[tuple[str, int], types.ModuleType]] = {}


def _ensure_sys_path(entries: tuple) -> None:
    """Put the pytest process's sys.path entries missing here in front, in the same order."""
    missing = [p for p in entries if p not in sys.path]
    if missing:
        sys.path[:0] = missing


def load_test_module(name: str, path: str) -> types.ModuleType:
    """Import a test module with pytest's assertion rewriting, once per file version.

    Args:
        name: the module's ``__name__`` in the pytest process.
        path: its file.

    Returns:
        The module, registered in ``sys.modules`` under ``name``.
    """
    key = (path, os.stat(path).st_mtime_ns)
    cached = _loaded.get(name)
    if cached is not None and cached[0] == key and sys.modules.get(name) is cached[1]:
        return cached[1]
    from _pytest.assertion.rewrite import rewrite_asserts

    source = Path(path).read_bytes()
    tree = ast.parse(source, filename=path)
    rewrite_asserts(tree, source, path, None)
    code = compile(tree, path, "exec", dont_inherit=True)
    module = types.ModuleType(name)
    module.__file__ = path
    module.__spec__ = importlib.util.spec_from_file_location(name, path)
    module.__package__ = name.rpartition(".")[0]
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)  # noqa: S102 - this is how pytest runs rewritten test modules too
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _loaded[name] = (key, module)
    return module


def _resolve(module: types.ModuleType, qualname: str):
    """Return the test callable; a method is bound to a fresh instance, as pytest does."""
    owner, _, name = qualname.rpartition(".")
    if not owner:
        return getattr(module, name)
    cls = module
    for part in owner.split("."):
        cls = getattr(cls, part)
    return getattr(cls(), name)


# ---------------------------------------------------------------- assertion explanations


class _AssertConfig:
    """The two things pytest's assertion comparison asks of a config, for use without one."""

    def __init__(self, verbosity: int):
        self._verbosity = verbosity
        self._highlight = lambda source, lexer="python": source

    def get_verbosity(self, kind=None) -> int:
        return self._verbosity

    def get_terminal_writer(self):
        return self


def _install_reprcompare(verbosity: int) -> None:
    """Give rewritten asserts pytest's rich comparisons (list/dict/str diffs) inside the rank."""
    from _pytest.assertion import util

    config = _AssertConfig(verbosity)

    def reprcompare(op, left, right):
        try:
            lines = util.assertrepr_compare(config, op, left, right)
        except Exception:  # noqa: BLE001 - a faulty __repr__ must not hide the assertion itself
            return None
        if not lines:
            return None
        return "\n~".join(line.replace("\n", "\\n") for line in lines).replace("%", "%%")

    util._reprcompare = reprcompare


# ---------------------------------------------------------------- per-rank fixtures


class RankCapture:
    """A per-rank stand-in for pytest's ``capsys``: ``readouterr()`` returns and clears the output."""

    def __init__(self):
        self.out, self.err = io.StringIO(), io.StringIO()
        self._out_pos = self._err_pos = 0

    def readouterr(self):
        from _pytest.capture import CaptureResult

        out = self.out.getvalue()[self._out_pos :]
        err = self.err.getvalue()[self._err_pos :]
        self._out_pos += len(out)
        self._err_pos += len(err)
        return CaptureResult(out, err)


def _build_per_rank(per_rank: tuple, rank: int, world_size: int, capture: RankCapture, cleanups: list) -> dict:
    """Build the per-rank fixture values: tmp_path/tmpdir under ``rank<r>``, a fresh monkeypatch..."""
    values = {}
    for argname, kind, payload in per_rank:
        if kind in ("tmp_path", "tmpdir"):
            path = Path(payload) / f"rank{rank}"
            path.mkdir(parents=True, exist_ok=True)
            if kind == "tmpdir":
                from _pytest.compat import legacy_path

                path = legacy_path(path)
            values[argname] = path
        elif kind == "monkeypatch":
            from _pytest.monkeypatch import MonkeyPatch

            patcher = MonkeyPatch()
            cleanups.append(patcher.undo)
            values[argname] = patcher
        elif kind == "capsys":
            values[argname] = capture
        elif kind == "rank":
            values[argname] = rank
        elif kind == "world_size":
            values[argname] = world_size
        else:
            raise ValueError(f"unknown per-rank fixture kind {kind!r} for {argname!r}")
    return values


# ---------------------------------------------------------------- running the body


def _rank_and_size() -> tuple[int, int]:
    """Return this process's rank and world size (from the process group, else the environment)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _reset_partial_state() -> None:
    """Start every test from a fresh PartialState (it adopts the world's process group again)."""
    try:
        from accelerate_lite.state import PartialState
    except ImportError:
        return
    PartialState._reset_state()


@contextlib.contextmanager
def _redirected(capture: RankCapture):
    """Send sys.stdout/sys.stderr to the rank's capture while the body runs."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = capture.out, capture.err
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def classify(exc: BaseException) -> tuple[str, str]:
    """Return ``(status, message)`` for an exception that ended a body: failed, skipped or xfailed."""
    import unittest

    from _pytest.outcomes import Failed, Skipped, XFailed

    if isinstance(exc, XFailed):
        return "xfailed", exc.msg or "xfail"
    if isinstance(exc, Skipped):
        return "skipped", exc.msg or "skipped"
    if isinstance(exc, unittest.SkipTest):
        return "skipped", str(exc)
    if isinstance(exc, Failed):
        return "failed", f"Failed: {exc.msg}"
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return "failed", f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def format_failure(exc: BaseException) -> str:
    """Format a traceback from the first frame outside the harness (its frames are noise here)."""
    if hasattr(exc, "__harness_failing_rank__"):  # its notes hold the failing rank's own traceback
        return "".join(traceback.format_exception_only(type(exc), exc))
    tb, harness_dir = exc.__traceback__, os.path.dirname(os.path.abspath(__file__))
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(harness_dir):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def pickled_exception(exc: BaseException) -> bytes | None:
    """Return the exception pickled (without its traceback), or None if it does not pickle."""
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)
    except Exception:  # noqa: BLE001 - any exception may fail to pickle; the text report remains
        return None
    return blob


def run_body(spec: BodySpec) -> dict:
    """Run one test body on this rank (the function the plugin hands to ``World.run``).

    Args:
        spec: what to run and with which arguments.

    Returns:
        The rank's outcome as a dict, when the body passed.

    Raises:
        RankLeftTest: the body failed, skipped or xfailed; the outcome is also in the outbox.
    """
    rank, world_size = _rank_and_size()
    _ensure_sys_path(spec.sys_path)
    _install_reprcompare(spec.verbosity)
    _reset_partial_state()
    capture, cleanups = RankCapture(), []
    status, message, longrepr, exc_blob = "passed", "", "", None
    try:
        module = load_test_module(spec.module_name, spec.module_path)
        kwargs = pickle.loads(spec.shared_blob)
        kwargs.update(_build_per_rank(spec.per_rank, rank, world_size, capture, cleanups))
        body = _resolve(module, spec.qualname)
        with _redirected(capture):
            if spec.hypothesis_seed is not None:
                from harness.lockstep import run_hypothesis_test

                per_rank = {name for name, _, _ in spec.per_rank}
                run_hypothesis_test(body, kwargs, per_rank, rank, spec.hypothesis_seed, spec.token)
            else:
                body(**kwargs)
    except BaseException as exc:  # noqa: BLE001 - every way out of a body is an outcome
        left_example = isinstance(exc, RankLeftExample)
        if left_example:
            exc = exc.args[0]
        status, message = classify(exc)
        if left_example and status == "failed":
            message += (
                " (in a hypothesis example, before a collective the other ranks were waiting in: "
                "they were stopped and shrinking ended here)"
            )
        if hasattr(exc, "__harness_failing_rank__"):
            message += f" (failed on rank {exc.__harness_failing_rank__}; hypothesis runs on rank 0)"
        longrepr = format_failure(exc) if status == "failed" else ""
        exc_blob = pickled_exception(exc) if status == "failed" else None
    finally:
        for undo in reversed(cleanups):
            undo()
    if status == "passed" and spec.hypothesis_seed is not None and rank != 0:
        message = "ran every example rank 0 drew"
    outcome = RankOutcome(
        rank, status, message, longrepr,
        capture.out.getvalue(), capture.err.getvalue(), time.time(), exc_blob,
    ).to_dict()
    if status == "passed":
        return outcome
    write_outcome(spec, outcome)
    raise RankLeftTest(outcome)


def outbox_file(outbox: str, token: str, rank: int) -> str:
    """Return the file where ``rank`` leaves its outcome of the test ``token``."""
    return os.path.join(outbox, f"{token}.rank{rank}.pickle")


def write_outcome(spec: BodySpec, outcome: dict) -> None:
    """Leave the outcome where the plugin finds it whatever the world reports (atomic rename)."""
    target = outbox_file(spec.outbox, spec.token, outcome["rank"])
    partial = f"{target}.{os.getpid()}.tmp"
    with open(partial, "wb") as fh:
        pickle.dump(outcome, fh)
    os.replace(partial, target)
