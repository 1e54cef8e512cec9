"""The simulators' table of invalid arguments (hardware profiles): each id reads like the call, each error says what to do."""

import re

import pytest

from simulators import (
    HardwareProfile,
    World,
    apply_profile,
    get_profile,
    load_profiles,
    register_profile,
)
from simulators import profiles as profiles_module
from simulators.errors import FakeDeviceError, ProfileError, UnknownProfileError
from simulators.fake_device import install_fake_backend


def _enter(*args, **kwargs):
    with apply_profile(*args, **kwargs):
        pass


CASES = [
    ("get_profile('8xB200')", lambda: get_profile("8xB200"), UnknownProfileError, "known: 2xT4, 4xMax1550"),
    ("get_profile(None)", lambda: get_profile(None), ProfileError, "expected a profile name"),
    ("HardwareProfile('x', kind='gpu')", lambda: HardwareProfile("x", kind="gpu"), ProfileError,
     "kind: expected one of cpu, cuda, npu, xpu, xla, mps, got 'gpu'"),
    ("HardwareProfile('x', count=0)", lambda: HardwareProfile("x", count=0), ProfileError, "count: expected an int >= 1"),
    ("HardwareProfile('x', count=True)", lambda: HardwareProfile("x", count=True), ProfileError, "count"),
    ("HardwareProfile('x', memory='lots')", lambda: HardwareProfile("x", memory="lots"), ProfileError,
     "'lots' is not a size; write bytes or e.g. '80GiB'"),
    ("HardwareProfile('x', memory=-1)", lambda: HardwareProfile("x", memory=-1), ProfileError, "non-negative"),
    ("HardwareProfile('x', capability=(8,))", lambda: HardwareProfile("x", capability=(8,)), ProfileError,
     "(major, minor) of two ints"),
    ("HardwareProfile('x', bf16='yes')", lambda: HardwareProfile("x", bf16="yes"), ProfileError, "bf16: expected True or False"),
    ("HardwareProfile('x', env={'A': 1})", lambda: HardwareProfile("x", env={"A": 1}), ProfileError, "mapping of str to str"),
    ("HardwareProfile('x', kind='cpu', device_tags=True)", lambda: HardwareProfile("x", kind="cpu", device_tags=True),
     ProfileError, "device_tags: expected False for kind 'cpu' (tags exist for cuda, xpu, xla, mps)"),
    ("HardwareProfile('')", lambda: HardwareProfile(""), ProfileError, "name: expected a non-empty string"),
    ("register_profile(name='cpu', kind='cuda')", lambda: register_profile(name="cpu", kind="cuda"), ProfileError,
     "pass replace=True"),
    ("register_profile(name='x', colour='red')", lambda: register_profile(name="x", colour="red"), ProfileError,
     "unknown field(s) ['colour']"),
    ("register_profile(name='x', parent='nope')", lambda: register_profile(name="x", parent="nope"), UnknownProfileError,
     "known:"),
    ("register_profile(get_profile('cpu'), count=2)", lambda: register_profile(get_profile("cpu"), count=2), ProfileError,
     "not both"),
    ("load_profiles(['cpu'])", lambda: load_profiles(["cpu"]), ProfileError, "expected a mapping of profile name -> fields"),
    ("load_profiles({'x': 3})", lambda: load_profiles({"x": 3}), ProfileError, "expected a mapping of fields, got 3"),
    ("apply_profile('nope')", lambda: _enter("nope"), UnknownProfileError, "no such hardware profile"),
    ("apply_profile(8)", lambda: _enter(8), ProfileError, "expected a profile name or a HardwareProfile, got 8"),
    ("apply_profile('2xT4', local_rank=2, world_size=4)", lambda: _enter("2xT4", local_rank=2, world_size=4),
     ProfileError, "the profile has 2 cuda device(s); run at most 2 ranks per host"),
    ("apply_profile('cpu', local_rank=-1)", lambda: _enter("cpu", local_rank=-1), ProfileError, "local_rank must be an int >= 0"),
    ("apply_profile('cpu', world_size=0)", lambda: _enter("cpu", world_size=0), ProfileError, "world_size must be an int >= 1"),
    ("apply_profile('cpu', local_rank=1, world_size=1)", lambda: _enter("cpu", local_rank=1, world_size=1), ProfileError,
     "local_rank=1 must be < world_size=1"),
    ("apply_profile('8xH100', device_tags='yes')", lambda: _enter("8xH100", device_tags="yes"), ProfileError,
     "must be True or False"),
    ("apply_profile('cpu', device_tags=True)", lambda: _enter("cpu", device_tags=True), ValueError, "tags exist for cuda"),
    ("install_fake_backend('cuda')", lambda: install_fake_backend("cuda"), FakeDeviceError, "one rename per process"),
    # worlds: refused before any rank starts (run() on a live world: tests/simulators/test_world.py)
    ("World(0)", lambda: World(0), ValueError, "size must be between 1 and 64"),
    ("World('8')", lambda: World("8"), TypeError, "size must be an int, got str"),
    ("World(2, backend='nccl')", lambda: World(2, backend="nccl"), ValueError, "only 'gloo' runs on CPU-only machines"),
    ("World(2, timeout=0)", lambda: World(2, timeout=0), ValueError, "expected a positive number of seconds, got 0"),
    ("World(2, timeout='5')", lambda: World(2, timeout="5"), TypeError, "expected a number of seconds, got '5'"),
    ("World(2, profile='8xNoSuchGPU')", lambda: World(2, profile="8xNoSuchGPU"), UnknownProfileError, "8xNoSuchGPU"),
    ("World(2, standby='yes')", lambda: World(2, standby="yes"), TypeError, "expected True, False or None"),
]


@pytest.fixture(autouse=True)
def registry():
    saved = dict(profiles_module._registry)
    install_fake_backend("npu")  # the process's one rename, so the 'cuda' row meets an installed backend
    yield
    profiles_module._registry.clear()
    profiles_module._registry.update(saved)


@pytest.mark.parametrize("call, error, match", [(c, e, m) for c, _, e, m in CASES], ids=[c[0] for c in CASES])
def test_invalid_argument(call, error, match):
    function = {c: f for c, f, _, _ in CASES}[call]
    with pytest.raises(error, match=re.escape(match)):
        function()
