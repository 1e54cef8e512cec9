"""Route every world test to one xdist worker; spread the other tests as ``--dist`` says.

Why one worker: a world of n ranks is n processes. If every xdist worker owned a world, ``-n 8``
with world(8) tests would start 8 x 8 ranks. With all world tests in one work unit, the session
holds one world: 1 controller + 8 workers + 8 ranks (+ the world's zygote) processes.

The controller never collects, so it cannot see markers. Workers tell it which node ids are world
tests through a small file each writes before reporting its collection (``write_world_ids``);
the scheduler itself does no I/O: it takes a predicate, so it is unit-tested with fakes.
"""

from __future__ import annotations

import os

from xdist.scheduler import LoadScopeScheduling

WORLD_SCOPE = "harness-world"


def plain_scope(dist: str, nodeid: str) -> str:
    """Return the work-unit scope of a test that is not a world test, as ``--dist`` would group it.

    Args:
        dist: xdist's distribution mode ("load", "worksteal", "loadscope", "loadfile", "loadgroup").
        nodeid: the test's node id.

    Example:
        >>> plain_scope("loadfile", "tests/test_a.py::test_x[1]")
        'tests/test_a.py'
    """
    if dist == "loadfile":
        return nodeid.split("::", 1)[0]
    if dist == "loadscope":
        return nodeid.rsplit("::", 1)[0]
    if dist == "loadgroup" and nodeid.rfind("@") > nodeid.rfind("]"):
        return nodeid.rsplit("@", 1)[-1]
    return nodeid


class WorldRoutingScheduling(LoadScopeScheduling):
    """xdist scheduling: all world tests form one work unit (one worker), the rest follow ``dist``.

    Args:
        config: the pytest config.
        log: xdist's log producer.
        is_world: ``is_world(nodeid) -> bool``, asked only after every worker reported its collection.
        dist: the distribution mode the other tests follow.
    """

    def __init__(self, config, log=None, *, is_world, dist: str = "load"):
        super().__init__(config, log)
        self._is_world = is_world
        self._dist = dist

    def _split_scope(self, nodeid: str) -> str:
        if self._is_world(nodeid):
            return WORLD_SCOPE
        return plain_scope(self._dist, nodeid)


class WorldIds:
    """The set of world-test node ids, read lazily from the files the workers wrote.

    Args:
        directory: where workers wrote ``<workerid>.txt`` (one node id per line).
    """

    def __init__(self, directory: str):
        self.directory = directory
        self._ids = None

    def __call__(self, nodeid: str) -> bool:
        if self._ids is None:
            self._ids = read_world_ids(self.directory)
        return nodeid in self._ids


def write_world_ids(directory: str, worker_id: str, nodeids) -> None:
    """Write this worker's world-test node ids (atomically) for the controller's scheduler."""
    target = os.path.join(directory, f"{worker_id}.txt")
    partial = f"{target}.tmp"
    with open(partial, "w", encoding="utf-8") as fh:
        fh.write("\n".join(nodeids))
    os.replace(partial, target)


def read_world_ids(directory: str) -> frozenset:
    """Return the union of the node ids every worker wrote."""
    ids = set()
    for name in sorted(os.listdir(directory)):
        if name.endswith(".txt"):
            with open(os.path.join(directory, name), encoding="utf-8") as fh:
                ids.update(line for line in fh.read().splitlines() if line)
    return frozenset(ids)
