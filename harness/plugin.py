"""pytest plugin entry point (registered as pytest11 'accelerate_lite_harness').

This file holds the options, markers, fixtures and hook registration; the behaviour lives in
the modules it calls: ``markers`` (reading a test's world), ``transfer`` (its arguments),
``runner`` (running it on a world), ``outcomes`` (one verdict), ``scheduling`` (xdist routing),
``pool`` (the world of this process) and ``rankview`` (one rank in-process, for debugging).
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import tempfile

import pytest

from harness import markers
from harness.errors import MarkerError

WORLD_SPEC = pytest.StashKey()  # item -> WorldSpec
MARKER_ERROR = pytest.StashKey()  # item -> MarkerError found at collection
VERDICT = pytest.StashKey()  # item -> Verdict of its call
ROUTING_DIR = "harness_routing_dir"  # workerinput key


def pytest_addoption(parser):
    group = parser.getgroup("harness", "simulated worlds (accelerate-lite harness)")
    group.addoption(
        "--world-size", type=int, default=markers.DEFAULT_WORLD_SIZE, metavar="N",
        help="ranks of a bare @pytest.mark.world (default: %(default)s)",
    )
    group.addoption(
        "--world-timeout", type=float, default=markers.DEFAULT_WORLD_TIMEOUT, metavar="SECONDS",
        help="deadline of one world test; a hang becomes a failure with every rank's stack "
        "(default: %(default)s; @pytest.mark.world_timeout overrides)",
    )
    group.addoption(
        "--world-rank-view", type=int, default=None, metavar="R",
        help="debug: run world test bodies inside this pytest process as rank R (so --pdb, "
        "breakpoint() and -s work for that rank); the other ranks run in helper processes",
    )
    parser.addini(
        "world_fixtures", type="linelist", default=["worlds"],
        help="fixtures whose tests own worlds themselves: routed to the world worker under xdist",
    )


def pytest_configure(config):
    for name, text in markers.MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    markers.check_size(config.getoption("world_size"), "--world-size")
    markers.check_timeout(config.getoption("world_timeout"), "--world-timeout")
    view = config.getoption("world_rank_view")
    if view is not None and (isinstance(view, bool) or view < 0):
        raise pytest.UsageError(f"--world-rank-view: expected a rank >= 0, got {view!r}")
    config.pluginmanager.register(WorldSession(config), "harness-world-session")


class WorldSession:
    """The plugin's per-session state and hooks: the world pool, routing, running and reports."""

    def __init__(self, config):
        self.config = config
        self._pool = None
        self._tokens = itertools.count()
        self._routing_dir = None
        workerinput = getattr(config, "workerinput", None)
        if workerinput is not None:
            self._routing_dir = workerinput.get(ROUTING_DIR)
        elif _is_xdist_controller(config):
            self._routing_dir = tempfile.mkdtemp(prefix="harness-routing-")

    # ------------------------------------------------------------------ the world of this process

    @property
    def pool(self):
        if self._pool is None:
            from harness.pool import WorldPool

            # A standby set of ranks makes rebuilds a swap but doubles the ranks: not under xdist.
            self._pool = WorldPool(standby=getattr(self.config, "workerinput", None) is None)
        return self._pool

    def pytest_sessionfinish(self, session):
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._routing_dir and getattr(self.config, "workerinput", None) is None:
            shutil.rmtree(self._routing_dir, ignore_errors=True)

    def pytest_report_header(self, config):
        return (
            f"harness: world tests on simulated ranks (--world-size={config.getoption('world_size')}, "
            f"--world-timeout={config.getoption('world_timeout'):g})"
        )

    # ------------------------------------------------------------------ collection

    @pytest.hookimpl(trylast=True)  # group after any reordering plugin (e.g. pytest-randomly) ran
    def pytest_collection_modifyitems(self, session, config, items):
        default_size = config.getoption("world_size")
        default_timeout = config.getoption("world_timeout")
        for item in items:
            try:
                spec = markers.read_world_spec(item, default_size, default_timeout)
                if spec is None:
                    markers.read_profile_only(item)
            except MarkerError as err:
                item.stash[MARKER_ERROR] = err
                continue
            if spec is not None:
                item.stash[WORLD_SPEC] = spec
        _group_by_world(items)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session):
        # Runs before xdist reports the collection to the controller, whose scheduler reads this.
        workerinput = getattr(self.config, "workerinput", None)
        if workerinput is None or not self._routing_dir:
            return
        from harness.scheduling import write_world_ids

        fixtures = set(self.config.getini("world_fixtures"))
        ids = [item.nodeid for item in session.items if _owns_world(item, fixtures)]
        write_world_ids(self._routing_dir, workerinput["workerid"], ids)

    # ------------------------------------------------------------------ xdist (controller side)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node):
        node.workerinput[ROUTING_DIR] = self._routing_dir

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config, log):
        dist = config.getvalue("dist")
        if dist == "each" or not self._routing_dir:
            return None  # 'each' runs everything everywhere by request: leave it to xdist
        from harness.scheduling import WorldIds, WorldRoutingScheduling

        return WorldRoutingScheduling(config, log, is_world=WorldIds(self._routing_dir), dist=dist)

    # ------------------------------------------------------------------ running

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        err = item.stash.get(MARKER_ERROR, None)
        if err is not None:
            raise err
        if self._pool is not None and item.get_closest_marker("owns_worlds") is not None:
            self._pool.discard()  # the test starts its own worlds: do not hold ranks beside them

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem):
        spec = pyfuncitem.stash.get(WORLD_SPEC, None)
        if spec is not None:
            view = self.config.getoption("world_rank_view")
            if view is not None:
                from harness.rankview import run_rank_view

                run_rank_view(pyfuncitem, spec, view)
                return True
            self._run_world_test(pyfuncitem, spec)
            return True
        profile = markers.read_profile_only(pyfuncitem)
        if profile is not None:
            _call_under_profile(pyfuncitem, profile)
            return True
        return None

    def _run_world_test(self, item, spec):
        from harness.runner import failure_exception, run_on_world
        from harness.transfer import build_spec

        seed = _hypothesis_seed(item) if getattr(item.obj, "is_hypothesis_test", False) else None
        token = f"{os.getpid()}-{next(self._tokens)}"
        body = build_spec(item, self.pool.outbox, token, seed)
        world = self.pool.get(spec.key)
        try:
            verdict = run_on_world(world, body, spec.size, spec.timeout)
        except BaseException:  # the world itself broke (not the test): the next test gets a fresh one
            self.pool.discard()
            raise
        item.stash[VERDICT] = verdict
        for title, text in verdict.sections:  # "Captured stdout rank 3" -> terminal, JUnit system-out
            item.add_report_section("call", title.removeprefix("Captured "), text)
        if verdict.status == "skipped":
            pytest.skip(verdict.reason)
        if verdict.status == "xfailed":
            pytest.xfail(verdict.reason)
        if verdict.status == "failed":
            raise failure_exception(verdict)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if call.when == "call" and call.excinfo is not None and report.failed:
            longrepr = getattr(call.excinfo.value, "__harness_longrepr__", None)
            if longrepr:  # the merged report of every rank replaces this process's traceback
                report.longrepr = longrepr
        return report


def world_pool(config):
    """Return this pytest process's ``WorldPool``: fixtures that need a world share the tests' one.

    Example (a conftest fixture; mark its tests ``owns_worlds`` or list it in ``world_fixtures``):
        >>> @pytest.fixture
        ... def worlds(request):
        ...     return world_pool(request.config).world
    """
    return config.pluginmanager.get_plugin("harness-world-session").pool


# ---------------------------------------------------------------------- fixtures


# Session scope: the value is built per rank anyway, and hypothesis accepts non-function fixtures.
@pytest.fixture(scope="session")
def rank():
    """This rank's index inside a world test body (0 in an ordinary test)."""
    return 0


@pytest.fixture(scope="session")
def world_size():
    """The number of ranks inside a world test body (1 in an ordinary test)."""
    return 1


# ---------------------------------------------------------------------- helpers


def _is_xdist_controller(config) -> bool:
    """True in the process that drives xdist workers (it collects nothing itself)."""
    try:
        return config.getoption("dist") != "no" and bool(config.getoption("tx"))
    except ValueError:  # xdist not installed
        return False


def _owns_world(item, world_fixtures: set) -> bool:
    """True for tests that need the world worker: world tests and users of world-owning fixtures."""
    if WORLD_SPEC in item.stash or item.get_closest_marker("owns_worlds") is not None:
        return True
    return bool(world_fixtures.intersection(getattr(item, "fixturenames", ())))


def _group_by_world(items: list) -> None:
    """Reorder world tests in place so tests sharing a world run back to back.

    Only the world tests move, among the positions world tests already hold; ordinary tests keep
    their places. Keys keep the order of their first appearance, tests within a key their order.
    The order is deterministic, so every xdist worker collects the same list.
    """
    slots = [i for i, item in enumerate(items) if WORLD_SPEC in item.stash]
    first_seen = {}
    for i in slots:
        first_seen.setdefault(items[i].stash[WORLD_SPEC].key, len(first_seen))
    ordered = sorted((items[i] for i in slots), key=lambda item: first_seen[item.stash[WORLD_SPEC].key])
    for i, item in zip(slots, ordered):
        items[i] = item


def _hypothesis_seed(item) -> int:
    """The seed for a ``@given`` world test: ``--hypothesis-seed`` if given, else a fresh one."""
    given = item.config.getoption("hypothesis_seed", None)
    if given is not None:
        try:
            return int(given)
        except ValueError:
            return int.from_bytes(str(given).encode()[:8].ljust(8, b"\0"), "little")
    return random.SystemRandom().getrandbits(32)


def _call_under_profile(item, profile: str) -> None:
    """Run an ordinary (one-process) test body with a hardware profile applied around it."""
    from harness.rankside import _reset_partial_state
    from simulators import apply_profile

    kwargs = {name: item.funcargs[name] for name in item._fixtureinfo.argnames}
    with apply_profile(profile):
        _reset_partial_state()
        try:
            item.obj(**kwargs)
        finally:
            _reset_partial_state()
