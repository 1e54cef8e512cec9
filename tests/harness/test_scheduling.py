"""Routing world tests to one xdist worker, driven with fake worker nodes (no processes)."""

import pytest

from harness.scheduling import (
    WorldIds,
    WorldRoutingScheduling,
    plain_scope,
    read_world_ids,
    write_world_ids,
)

COLLECTION = [
    "t.py::test_plain[0]",
    "t.py::test_w8[0]",
    "t.py::test_plain[1]",
    "t.py::test_w8[1]",
    "t.py::test_w2",
    "t.py::test_plain[2]",
    "u.py::test_plain[3]",
]
WORLD = {"t.py::test_w8[0]", "t.py::test_w8[1]", "t.py::test_w2"}


class FakeNode:
    """What the scheduler asks of an xdist WorkerController: send indices, shut down."""

    def __init__(self, name):
        self.gateway = type("Gateway", (), {"id": name})()
        self.sent = []
        self.shutting_down = False

    def send_runtest_some(self, indices):
        self.sent.extend(indices)

    def send_runtest_all(self):
        self.sent.extend(range(len(COLLECTION)))

    def shutdown(self):
        self.shutting_down = True


def schedule(pytester, dist, workers=3):
    config = pytester.parseconfig(f"--tx={workers}*popen")
    sched = WorldRoutingScheduling(config, is_world=WORLD.__contains__, dist=dist)
    nodes = [FakeNode(f"gw{i}") for i in range(workers)]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, COLLECTION)
    sched.schedule()
    return {node.gateway.id: [COLLECTION[i] for i in node.sent] for node in nodes}


@pytest.mark.parametrize("dist", ["load", "worksteal", "loadscope", "loadfile", "loadgroup"])
def test_every_world_test_goes_to_one_worker_in_collection_order(pytester, dist):
    sent = schedule(pytester, dist)
    holders = [name for name, ids in sent.items() if WORLD & set(ids)]
    assert len(holders) == 1
    assert [i for i in sent[holders[0]] if i in WORLD] == [i for i in COLLECTION if i in WORLD]


def test_plain_tests_spread_over_the_other_workers(pytester):
    sent = schedule(pytester, "load")
    assert sorted(i for ids in sent.values() for i in ids) == sorted(COLLECTION)
    assert sum(1 for ids in sent.values() if set(ids) - WORLD) >= 2


def test_plain_scope_follows_dist():
    nodeid = "tests/test_a.py::TestX::test_y[1]"
    assert plain_scope("load", nodeid) == nodeid
    assert plain_scope("loadfile", nodeid) == "tests/test_a.py"
    assert plain_scope("loadscope", nodeid) == "tests/test_a.py::TestX"
    assert plain_scope("loadgroup", "t.py::test_z@db") == "db"
    assert plain_scope("loadgroup", "t.py::test_z[a@b]") == "t.py::test_z[a@b]"


def test_world_ids_travel_through_files_written_by_workers(tmp_path):
    write_world_ids(str(tmp_path), "gw0", ["a::x", "a::y"])
    write_world_ids(str(tmp_path), "gw1", ["a::x"])
    assert read_world_ids(str(tmp_path)) == {"a::x", "a::y"}
    is_world = WorldIds(str(tmp_path))
    assert is_world("a::y") and not is_world("a::z")
