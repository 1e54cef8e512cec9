"""apply_profile: what the library sees inside, and the exact restore of the process outside.

There is no accelerator here: these tests check the simulated answers against the profile data and
that nothing of the simulation survives the block.
"""

import importlib
import importlib.metadata
import importlib.util
import os
import sys

import pytest
import torch

from accelerate_lite.utils import imports
from simulators import PROFILES, active_profile, apply_profile, get_profile
from simulators.apply import HARDWARE_ENV_VARS, PATCHED_FUNCTIONS
from simulators.errors import ProfileActiveError
from simulators.fake_device import fake_backend_name

WATCHED_MODULES = ["torch", "torch.cuda", "torch.cuda.memory", "torch.xpu", "torch.mps", "torch.backends.mps",
                   "accelerate_lite.utils.imports"]
CHECKS = ["is_cuda_available", "is_npu_available", "is_xpu_available", "is_tpu_available", "is_mps_available",
          "is_ipex_available", "is_torch_xla_available", "is_bf16_available"]


def availability():
    imports.clear_import_caches()
    return {name: getattr(imports, name)() for name in CHECKS}


def snapshot():
    """Everything a profile touches: environment, attribute identities, modules, finders, cached answers."""
    return {
        "environ": dict(os.environ),
        "attributes": {
            (module, name): id(value)
            for module in WATCHED_MODULES
            for name, value in vars(importlib.import_module(module)).items()
        },
        "parameter_new": id(torch.nn.Parameter.__dict__["__new__"]),
        "modules": set(sys.modules),
        "meta_path": list(sys.meta_path),
        "answers": {name: getattr(imports, name)() for name in CHECKS},
        "multithreading": torch._C._is_multithreading_enabled(),
        "npu_module": id(torch.get_device_module("npu")) if fake_backend_name() else None,
        "accelerator": (torch.accelerator.is_available(), torch.accelerator.device_count()),
        "active": active_profile(),
    }


@pytest.fixture(scope="module", autouse=True)
def warmed_up():
    # First use imports modules for good (torch internals, the fake npu backend); later uses must add nothing.
    for name in PROFILES:
        with apply_profile(name, device_tags=get_profile(name).kind in ("cuda", "xpu", "xla", "mps")):
            availability()


def test_every_profile_restores_the_process_exactly():
    imports.clear_import_caches()
    before = snapshot()
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"  # a host variable the profile hides, restored afterwards
    before["environ"]["CUDA_VISIBLE_DEVICES"] = "0"
    try:
        for name in PROFILES:
            tags = get_profile(name).kind in ("cuda", "xpu", "xla", "mps")
            with apply_profile(name, local_rank=0, world_size=1, launcher_env=True, device_tags=tags):
                assert "CUDA_VISIBLE_DEVICES" not in os.environ
                os.environ["SET_INSIDE"] = "1"
                availability()
                if get_profile(name).kind == "xla":
                    importlib.import_module("torch_xla.core.xla_model")
            # Leaving cleared the cached answers taken inside (they would be stale outside).
            assert [check.cache_info().currsize for check in imports._CACHED_CHECKS] == [0] * len(imports._CACHED_CHECKS)
            after = snapshot()
            for key in before:
                assert after[key] == before[key], f"{name}: {key} differs after the profile"
    finally:
        del os.environ["CUDA_VISIBLE_DEVICES"]


def test_restores_when_the_block_raises():
    before = snapshot()
    with pytest.raises(ZeroDivisionError), apply_profile("8xAscend910B", local_rank=3, world_size=8):
        torch.npu.set_device(5)
        raise ZeroDivisionError("the block fails")
    assert snapshot() == before


# name -> what is_{cuda,npu,xpu,tpu,mps,bf16}_available() answer inside the profile
KEYS = ("cuda", "npu", "xpu", "tpu", "mps", "bf16")
EXPECTED_ANSWERS = {
    name: dict(zip(KEYS, answers))
    for name, answers in {
        "cpu": (False, False, False, False, False, True),
        "8xA100-80GB": (True, False, False, False, False, True),
        "8xH100": (True, False, False, False, False, True),
        "2xT4": (True, False, False, False, False, False),
        "8xAscend910B": (False, True, False, False, False, True),
        "4xMax1550": (False, False, True, False, False, True),
        "tpu-v4-8": (False, False, False, True, False, True),
        "mps-m2": (False, False, False, False, True, True),
    }.items()
}


@pytest.mark.parametrize("name", sorted(EXPECTED_ANSWERS))
def test_is_available_answers_change_inside_and_revert(name):
    outside = availability()
    assert not (outside["is_npu_available"] or outside["is_tpu_available"] or outside["is_ipex_available"])
    with apply_profile(name):
        inside = {key.split("_")[1]: value for key, value in availability().items()}
    answers = {key: inside[key] for key in EXPECTED_ANSWERS[name]}
    assert answers == EXPECTED_ANSWERS[name]
    assert inside["ipex"] == (name == "4xMax1550") and inside["torch"] == (name == "tpu-v4-8")
    assert availability() == outside


def test_cuda_entry_points_answer_from_the_profile():
    profile = get_profile("2xT4")
    with apply_profile("2xT4", local_rank=1, world_size=2) as host:
        assert host.device == torch.device("cuda", 1)
        assert (torch.cuda.is_available(), torch.cuda.device_count(), torch.cuda.current_device()) == (True, 2, 1)
        assert torch.cuda.get_device_name() == "Tesla T4" and torch.cuda.get_device_capability(0) == (7, 5)
        properties = torch.cuda.get_device_properties("cuda:0")
        assert (properties.name, properties.total_memory, properties.major, properties.minor) == (
            "Tesla T4", profile.memory, 7, 5)
        assert torch.cuda.mem_get_info() == torch.cuda.memory.mem_get_info() == (profile.memory, profile.memory)
        assert torch.cuda.is_bf16_supported() is False
        torch.cuda.set_device(torch.device("cuda", 0))
        assert torch.cuda.current_device() == 0
        with torch.cuda.device(1):
            assert torch.cuda.current_device() == 1
        assert torch.cuda.current_device() == 0
        with pytest.raises(RuntimeError, match="invalid device ordinal 2"):
            torch.cuda.set_device(2)
        with pytest.raises(ValueError, match="Expected a cuda device"):
            torch.cuda.get_device_properties("npu:0")
        assert torch.get_device_module("cuda").device_count() == 2


def test_device_rngs_follow_torch_manual_seed():
    with apply_profile("8xH100"):
        torch.manual_seed(1234)  # torch seeds every device's generator through torch.cuda.manual_seed_all
        first = torch.cuda.get_rng_state(3)
        torch.cuda.manual_seed_all(1234)
        assert torch.equal(torch.cuda.get_rng_state(3), first)
        torch.cuda.set_rng_state(torch.cuda.get_rng_state(0), device=5)
        assert len(torch.cuda.get_rng_state_all()) == 8


def test_each_rank_sees_its_own_local_device():
    for rank in range(4):
        with apply_profile("4xMax1550", local_rank=rank, world_size=4) as host:
            assert torch.xpu.current_device() == rank and host.device == torch.device("xpu", rank)
        with apply_profile("8xAscend910B", local_rank=rank, world_size=4):
            assert torch.npu.current_device() == rank and torch.npu.device_count() == 8


def test_other_device_kinds_report_nothing():
    with apply_profile("8xAscend910B"):
        assert (torch.cuda.is_available(), torch.cuda.device_count(), torch.xpu.is_available()) == (False, 0, False)
        assert torch.backends.mps.is_available() is False


def test_mps_profile():
    with apply_profile("mps-m2"):
        assert torch.backends.mps.is_available() and torch.backends.mps.is_built()
        assert torch.mps.device_count() == 1 and torch.mps.recommended_max_memory() == 16 * 2**30


def test_environment_inside():
    with apply_profile("tpu-v4-8", local_rank=2, world_size=4, launcher_env=True):
        assert os.environ["PJRT_DEVICE"] == "TPU"
        assert [os.environ[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")] == ["2", "2", "4", "4"]
    outside_rank = os.environ.get("LOCAL_RANK")
    with apply_profile("8xH100", local_rank=5, world_size=8):
        assert not set(HARDWARE_ENV_VARS) & set(os.environ)
        assert os.environ.get("LOCAL_RANK") == outside_rank  # launcher variables only when asked


def test_host_variables_other_than_hardware_ones_stay_visible_inside(monkeypatch):
    monkeypatch.setenv("ACCELERATE_LITE_PROBE", "kept")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # a hardware variable: the profile decides it
    path = os.environ["PATH"]
    with apply_profile("8xH100"):
        assert os.environ["ACCELERATE_LITE_PROBE"] == "kept" and os.environ["PATH"] == path
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_vendor_modules_are_found_imported_and_have_metadata():
    torch_version = torch.__version__.split("+")[0]
    for name, package in (("8xAscend910B", "torch_npu"), ("4xMax1550", "intel_extension_for_pytorch"),
                          ("tpu-v4-8", "torch_xla")):
        assert importlib.util.find_spec(package) is None
        with apply_profile(name):
            assert importlib.util.find_spec(package) is not None
            module = importlib.import_module(package)
            assert module.__version__ == torch_version == importlib.metadata.version(package)
        assert package not in sys.modules and importlib.util.find_spec(package) is None


def test_torch_xla_stand_in_on_one_process():
    with apply_profile("tpu-v4-8", local_rank=1, world_size=4):
        import torch_xla.core.xla_model as xm
        import torch_xla.runtime as xr

        assert xm.xla_device() == torch.device("xla", 0)
        assert (xm.xrt_world_size(), xm.get_ordinal(), xm.get_local_ordinal()) == (4, 1, 1)
        assert xr.device_type() == "TPU" and xr.world_size() == 4
        tensor = torch.arange(3.0)
        assert torch.equal(xm.all_reduce(xm.REDUCE_SUM, tensor, scale=2.0), tensor * 2)
        assert torch.equal(xm.all_gather(tensor), tensor)
        assert xm.mesh_reduce("tag", 5, sum) == 5 and xm.rendezvous("tag") == [b""]
        with pytest.raises(ValueError, match="reduce_type"):
            xm.all_reduce("median", tensor)
        assert xm.xla_real_devices([xm.xla_device()]) == ["TPU:1"]
        import torch_xla

        assert torch_xla.launch(lambda a, b: a + b, args=(2, 3)) == 5
        # The catalog applies the TPU with device tags: the library moves tensors to xm.xla_device().
        placed = torch.ones(2).to(xm.xla_device())
        assert placed.device == torch.device("xla", 0) and placed.tolist() == [1.0, 1.0]


def test_profiles_do_not_nest():
    with apply_profile("cpu"):
        with pytest.raises(ProfileActiveError, match="already applied"), apply_profile("8xH100"):
            pass
        assert active_profile() == get_profile("cpu")
    assert active_profile() is None


def test_patched_functions_table_names_real_attributes():
    with apply_profile("8xH100"):
        assert all(callable(getattr(torch.cuda, name)) for name in PATCHED_FUNCTIONS["torch.cuda"])
    assert {"is_available", "device_count", "current_device", "set_device", "get_device_properties",
            "mem_get_info", "is_bf16_supported"} <= set(PATCHED_FUNCTIONS["torch.npu"])


# -- what PartialState reports under each profile ----------------------------------------------------

TAGGED_KINDS = ("cuda", "xpu", "xla", "mps")


@pytest.mark.parametrize("name", sorted(EXPECTED_ANSWERS))
def test_partial_state_on_one_process(name):
    from accelerate_lite.state import PartialState

    profile = get_profile(name)
    with apply_profile(name) as host:
        state = PartialState()
        assert (state.num_processes, state.process_index) == (1, 0)
        expected = "TPU" if profile.kind == "xla" else "NO"
        assert str(state.distributed_type) == expected and state.device.type == host.device.type
    assert PartialState._shared_state == {}  # leaving reset the state for whoever comes next


def _every_profile_on_this_rank():
    """Body of each rank: apply every catalog profile, ask PartialState, all_reduce on its device."""
    import torch.distributed as dist

    from accelerate_lite.state import PartialState

    rank = dist.get_rank() if dist.is_initialized() else int(os.environ["RANK"])
    seen = {}
    for name in sorted(EXPECTED_ANSWERS):
        kind = get_profile(name).kind
        with apply_profile(name, local_rank=rank, world_size=2, device_tags=kind in TAGGED_KINDS):
            state = PartialState()
            tensor = torch.full((2,), float(rank + 1), device=state.device)
            if kind == "xla":
                import torch_xla.core.xla_model as xm

                tensor = xm.all_reduce(xm.REDUCE_SUM, tensor)
            else:
                dist.all_reduce(tensor)
            seen[name] = (state.distributed_type, state.num_processes, state.process_index, str(state.device),
                          str(tensor.device), tensor.tolist())
    return seen


@pytest.mark.slow
def test_partial_state_reports_each_profiles_distributed_type_on_two_ranks():
    from accelerate_lite.launchers import debug_launcher

    results = debug_launcher(_every_profile_on_this_rank, num_processes=2)
    for rank, seen in enumerate(results):
        for name, (distributed_type, size, index, device, tensor_device, values) in seen.items():
            profile = get_profile(name)
            assert (distributed_type, size, index) == (profile.distributed_type, 2, rank), name
            per_rank = profile.kind in ("cuda", "npu", "xpu")
            assert device == (f"{profile.kind}:{rank}" if per_rank else {"xla": "xla:0"}.get(profile.kind, profile.kind))
            assert values == [3.0, 3.0], name
            if profile.kind in ("cuda", "npu", "xpu"):
                assert tensor_device == device, name
