"""Hardware profiles as data: the shipped catalog, adding profiles by data, how a profile shows itself."""

import pickle
from importlib import resources

import pytest
import yaml

from accelerate_lite.utils.enums import DistributedType
from simulators import (
    PROFILES,
    HardwareProfile,
    get_profile,
    load_profiles,
    register_profile,
)
from simulators import profiles as profiles_module
from simulators.errors import ProfileError, UnknownProfileError

CATALOG_IDS = ["cpu", "8xA100-80GB", "8xH100", "2xT4", "8xAscend910B", "4xMax1550", "tpu-v4-8", "mps-m2"]


@pytest.fixture
def registry():
    """The profile registry, restored after the test (tests add profiles)."""
    saved = dict(profiles_module._registry)
    yield profiles_module._registry
    profiles_module._registry.clear()
    profiles_module._registry.update(saved)


def test_catalog_ships_the_agreed_ids_in_the_package_data():
    text = resources.files("simulators").joinpath("catalog.yaml").read_text()
    assert list(yaml.safe_load(text)) == CATALOG_IDS
    assert profiles_module.CATALOG == tuple(CATALOG_IDS)
    assert set(CATALOG_IDS) <= set(PROFILES)


@pytest.mark.parametrize(
    "name, kind, count, distributed_type",
    [
        ("cpu", "cpu", 1, DistributedType.MULTI_CPU),
        ("8xA100-80GB", "cuda", 8, DistributedType.MULTI_GPU),
        ("8xH100", "cuda", 8, DistributedType.MULTI_GPU),
        ("2xT4", "cuda", 2, DistributedType.MULTI_GPU),
        ("8xAscend910B", "npu", 8, DistributedType.MULTI_NPU),
        ("4xMax1550", "xpu", 4, DistributedType.MULTI_XPU),
        ("tpu-v4-8", "xla", 4, DistributedType.TPU),
        ("mps-m2", "mps", 1, DistributedType.MULTI_CPU),
    ],
)
def test_catalog_entries(name, kind, count, distributed_type):
    profile = get_profile(name)
    assert (profile.name, profile.kind, profile.count, profile.distributed_type) == (name, kind, count, distributed_type)
    assert profile.device_name


def test_catalog_facts_the_library_asks_about():
    assert get_profile("2xT4").bf16 is False and get_profile("2xT4").capability == (7, 5)
    assert get_profile("8xH100").capability == (9, 0)
    assert get_profile("8xA100-80GB").memory == 80 * 2**30
    assert dict(get_profile("tpu-v4-8").env) == {"PJRT_DEVICE": "TPU"}


def test_a_profile_shows_only_what_it_sets():
    assert repr(get_profile("cpu")) == "HardwareProfile('cpu')"
    assert repr(HardwareProfile("1xL4", kind="cuda", memory="24GiB", capability=(8, 9), bf16=True)) == (
        "HardwareProfile('1xL4', kind='cuda', memory='24GiB', capability=(8, 9))"
    )
    assert "bf16=False" in repr(get_profile("2xT4"))


def test_profiles_are_immutable_hashable_and_pickle():
    profile = get_profile("tpu-v4-8")
    with pytest.raises(AttributeError):
        profile.count = 8
    with pytest.raises(TypeError):
        profile.env["PJRT_DEVICE"] = "CPU"
    assert pickle.loads(pickle.dumps(profile)) == profile
    assert len({profile, get_profile("tpu-v4-8"), get_profile("cpu")}) == 2


def test_add_a_profile_by_writing_yaml(tmp_path, registry):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "1xL4:\n  kind: cuda\n  count: 1\n  memory: 24GB\n  capability: [8, 9]\n  device_name: NVIDIA L4\n"
        "4xA100-40GB:\n  parent: 8xA100-80GB\n  count: 4\n  memory: 40GiB\n"
    )
    added = load_profiles(path)
    assert [p.name for p in added] == ["1xL4", "4xA100-40GB"]
    assert get_profile("1xL4").memory == 24 * 10**9
    derived = get_profile("4xA100-40GB")
    assert (derived.count, derived.memory, derived.device_name) == (4, 40 * 2**30, "NVIDIA A100-SXM4-80GB")
    assert derived.to_dict()["capability"] == [8, 0]


def test_add_a_profile_by_dict_and_replace_it(registry):
    register_profile(name="2xA10", kind="cuda", count=2, memory=24 * 2**30, capability=(8, 6))
    assert PROFILES["2xA10"].capability == (8, 6)
    register_profile(name="2xA10", kind="cuda", count=2, memory=24 * 2**30, capability=(8, 6))  # same: fine
    with pytest.raises(ProfileError, match="replace=True"):
        register_profile(name="2xA10", kind="cuda", count=4)
    register_profile(get_profile("2xA10").replace(count=4), replace=True)
    assert PROFILES["2xA10"].count == 4


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownProfileError) as error:
        get_profile("8xB200")
    message = str(error.value)
    assert "8xB200" in message and all(name in message for name in CATALOG_IDS)
    assert isinstance(error.value, KeyError)
