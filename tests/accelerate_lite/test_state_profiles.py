"""PartialState on every simulated hardware profile: what it reports follows what torch is made to see."""

import pytest
import torch

import simulators
from accelerate_lite import PartialState
from accelerate_lite.utils import wait_for_everyone
from accelerate_lite.utils.launch_env import HARDWARE


@pytest.mark.parametrize("name", sorted(simulators.PROFILES))
def test_hardware_table_agrees_with_the_profile(name):
    profile = simulators.get_profile(name)
    assert HARDWARE[profile.kind].distributed_type == profile.distributed_type


@pytest.mark.parametrize("name", sorted(simulators.PROFILES))
def test_one_process_takes_the_profile_device(name):
    profile = simulators.get_profile(name)
    PartialState._reset_state()
    try:
        with simulators.apply_profile(profile):
            state = PartialState()
            expected_type = "TPU" if profile.kind == "xla" else "NO"
            assert (str(state.distributed_type), state.num_processes) == (expected_type, 1)
            assert state.device.type == profile.kind
        assert PartialState().device == torch.device("cpu"), "the profile's answers outlived it"
    finally:
        PartialState._reset_state()


def describe_rank():
    state = PartialState()
    wait_for_everyone()
    return state.distributed_type, state.process_index, state.num_processes, str(state.device)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(simulators.PROFILES))
def test_two_ranks_report_the_profile_distributed_type_and_their_devices(worlds, name):
    profile = simulators.get_profile(name)
    results = worlds(2, profile=name).run(describe_rank)
    expected_devices = {
        "cpu": ["cpu", "cpu"], "mps": ["mps", "mps"], "xla": ["xla:0", "xla:0"],  # PJRT: one device per process
    }.get(profile.kind, [f"{profile.kind}:0", f"{profile.kind}:1"])
    assert results == [
        (profile.distributed_type, rank, 2, expected_devices[rank]) for rank in range(2)
    ]
