"""Reading world markers into a WorldSpec, and the table of invalid marker/option values."""

import pytest

from harness.errors import MarkerError
from harness.markers import (
    WorldSpec,
    check_size,
    check_timeout,
    read_profile_only,
    read_world_spec,
)


class Node:
    """The one thing read_world_spec asks of a pytest item: its closest marker by name."""

    def __init__(self, *decorators):
        self.marks = {d.mark.name: d.mark for d in decorators}

    def get_closest_marker(self, name):
        return self.marks.get(name)


def read(*decorators):
    return read_world_spec(Node(*decorators), 2, 60.0)


def test_unmarked_test_is_not_a_world_test():
    assert read() is None


def test_bare_world_marker_takes_the_default_size():
    assert read(pytest.mark.world) == WorldSpec(size=2, timeout=60.0)


def test_every_marker_is_read():
    spec = read(pytest.mark.world(8), pytest.mark.hardware("8xH100"), pytest.mark.backend("gloo"),
                pytest.mark.world_timeout(5))
    assert spec == WorldSpec(size=8, profile="8xH100", backend="gloo", timeout=5.0)
    assert spec.key == (8, "8xH100", "gloo")
    assert spec.label() == "w8/gloo/8xH100"


def test_keyword_arguments_are_accepted():
    assert read(pytest.mark.world(n=4), pytest.mark.world_timeout(seconds=1.5)).size == 4


def test_hardware_alone_runs_in_process_under_the_profile():
    node = Node(pytest.mark.hardware("2xT4"))
    assert read_world_spec(node, 2, 60.0) is None
    assert read_profile_only(node) == "2xT4"


INVALID = [
    pytest.param(lambda: read(pytest.mark.world(0)), "world size must be an int >= 1", id="world(0)"),
    pytest.param(lambda: read(pytest.mark.world("8")), "got '8' (type=str)", id="world('8')"),
    pytest.param(lambda: read(pytest.mark.world(True)), "got True", id="world(True)"),
    pytest.param(lambda: read(pytest.mark.world(2, 4)), "takes one argument", id="world(2, 4)"),
    pytest.param(lambda: read(pytest.mark.world(size=2)), "has no argument 'size'", id="world(size=2)"),
    pytest.param(lambda: read(pytest.mark.world(2), pytest.mark.hardware("9xB200")),
                 "unknown hardware profile '9xB200'; known:", id="hardware('9xB200')"),
    pytest.param(lambda: read(pytest.mark.world(2), pytest.mark.backend("nccl")),
                 "backend 'nccl' is not simulated here", id="backend('nccl')"),
    pytest.param(lambda: read(pytest.mark.world(2), pytest.mark.world_timeout(0)),
                 "timeout must be a number of seconds > 0", id="world_timeout(0)"),
    pytest.param(lambda: read(pytest.mark.world(2), pytest.mark.world_timeout(float("inf"))),
                 "got inf", id="world_timeout(inf)"),
    pytest.param(lambda: read(pytest.mark.backend("gloo")), "only applies to world tests", id="backend('gloo')-without-world"),
    pytest.param(lambda: read(pytest.mark.world_timeout(3)), "add @pytest.mark.world(n)",
                 id="world_timeout(3)-without-world"),
    pytest.param(lambda: check_size(-1, "--world-size"), "--world-size: world size must be", id="--world-size=-1"),
    pytest.param(lambda: check_timeout("soon", "--world-timeout"), "--world-timeout: timeout", id="--world-timeout=soon"),
]


@pytest.mark.parametrize("call, message", INVALID)
def test_invalid_arguments_raise_marker_error(call, message):
    with pytest.raises(MarkerError, match=None) as info:
        call()
    assert message in str(info.value)
