"""Project-wide fixtures for the test suite.

`worlds` hands out persistent simulated worlds from the harness's per-process pool, so tests that
drive `simulators.World` directly share the one world the session keeps alive (the harness routes
every test using this fixture to the single world worker under `pytest -n 8`).
"""

import os

import pytest
from hypothesis import settings

from harness.plugin import world_pool

# CI replays the same examples on every run (a red CI then means a change broke something, not that a
# new random example turned up); local runs keep exploring new examples each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def worlds(pytestconfig):
    """worlds(n, profile=None, backend="gloo") -> a live World of n ranks from the session pool.

    Example:
        def test_sum(worlds):
            assert worlds(4).run(my_module_level_fn) == [...]
    """
    return world_pool(pytestconfig).world
