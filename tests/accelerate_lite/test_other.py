"""extract_model_from_parallel, save and wait_for_everyone (wrappers and worlds are real)."""

import functools
import os
from types import MethodType

import pytest
import torch
from launch_worlds import fresh_state, run_ranks_each, torchrun_environments  # noqa: F401 (fixture)
from safetensors.torch import load_file, safe_open
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.nn.parallel import DistributedDataParallel

from accelerate_lite import PartialState, debug_launcher
from accelerate_lite.utils import extract_model_from_parallel, save, wait_for_everyone

pytestmark = pytest.mark.usefixtures("fresh_state")


def test_data_parallel_and_nesting_are_unwrapped():
    net = torch.nn.Linear(2, 2)
    assert extract_model_from_parallel(net) is net
    assert extract_model_from_parallel(torch.nn.DataParallel(torch.nn.DataParallel(net))) is net


def test_compiled_wrapper_is_kept_around_the_unwrapped_model():
    net = torch.nn.Linear(2, 2)
    compiled = torch.compile(torch.nn.DataParallel(net))  # compiles lazily: nothing runs here
    unwrapped = extract_model_from_parallel(compiled)
    assert unwrapped is compiled and unwrapped._orig_mod is net


def _fp32_outputs(forward):
    """What mixed precision does to forward: the same call, outputs cast to fp32."""

    @functools.wraps(forward)
    def wrapper(*args, **kwargs):
        return forward(*args, **kwargs).float()

    return wrapper


def _with_fp32_wrapper(net):
    net._original_forward = net.forward
    net.forward = MethodType(_fp32_outputs(net.forward.__func__), net)
    return net


def test_fp32_wrapper_kept_or_removed():
    net = _with_fp32_wrapper(torch.nn.Linear(2, 2).double())
    assert extract_model_from_parallel(net).forward(torch.ones(1, 2, dtype=torch.double)).dtype == torch.float32
    unwrapped = extract_model_from_parallel(torch.nn.DataParallel(net), keep_fp32_wrapper=False)
    assert unwrapped is net and "_original_forward" not in net.__dict__
    assert net(torch.ones(1, 2, dtype=torch.double)).dtype == torch.float64


def _unwrap_distributed_wrappers():
    net = torch.nn.Linear(4, 4)
    ddp = DistributedDataParallel(net)
    fsdp_inner = torch.nn.Linear(4, 4)
    fsdp = FullyShardedDataParallel(fsdp_inner, device_id=torch.device("cpu"))
    return extract_model_from_parallel(ddp) is net, extract_model_from_parallel(fsdp) is fsdp_inner


def test_ddp_and_fsdp_are_unwrapped_in_a_gloo_world():
    assert debug_launcher(_unwrap_distributed_wrappers, num_processes=2) == [(True, True), (True, True)]


def _save_from_every_rank(folder, save_on_each_node):
    state = PartialState()
    save({"rank": state.process_index}, os.path.join(folder, f"from-rank{state.process_index}.pt"),
         save_on_each_node=save_on_each_node)
    wait_for_everyone()
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("save_on_each_node, writers", [(False, [0]), (True, [0, 2])])
def test_save_writes_from_main_process_or_each_node(tmp_path, save_on_each_node, writers):
    folders = [str(tmp_path)] * 4
    environments = torchrun_environments(4, local_size=2)  # two "nodes" of two ranks
    results = run_ranks_each(_save_from_every_rank, environments, [(f, save_on_each_node) for f in folders])
    expected = [f"from-rank{rank}.pt" for rank in writers]
    assert results == [expected] * 4
    for rank in writers:
        assert torch.load(tmp_path / f"from-rank{rank}.pt") == {"rank": rank}


def test_safe_serialization_drops_shared_aliases_and_tags_the_format(tmp_path):
    weight = torch.arange(6.0).reshape(2, 3)
    state_dict = {"encoder.weight": weight, "decoder.weight": weight, "bias": torch.ones(3)[::2]}
    save(state_dict, tmp_path / "model.safetensors", safe_serialization=True)
    loaded = load_file(tmp_path / "model.safetensors")
    assert sorted(loaded) == ["bias", "encoder.weight"]
    assert torch.equal(loaded["encoder.weight"], weight) and torch.equal(loaded["bias"], torch.ones(2))
    with safe_open(tmp_path / "model.safetensors", "pt") as handle:
        assert handle.metadata() == {"format": "pt"}


def test_save_on_one_process_uses_torch_save(tmp_path):
    save([1, torch.ones(2)], tmp_path / "obj.pt")
    loaded = torch.load(tmp_path / "obj.pt")
    assert loaded[0] == 1 and torch.equal(loaded[1], torch.ones(2))


def test_safe_serialization_keeps_empty_tensors_which_share_no_storage(tmp_path):
    save({"a": torch.zeros(0), "b": torch.ones(0, 2)}, tmp_path / "empty.safetensors", safe_serialization=True)
    assert {k: tuple(v.shape) for k, v in load_file(tmp_path / "empty.safetensors").items()} == {"a": (0,), "b": (0, 2)}


def _tpu_state_dict(device):
    weight = torch.arange(6.0, device=device).reshape(2, 3)
    return {"encoder.weight": weight, "decoder.weight": weight, "bias": torch.ones(3, device=device)}


# Regression (quick matrix, save/*/tpu-v4-8): on TPU, save() wrote xm.save's pickle whatever safe_serialization said.
def test_safe_serialization_on_a_simulated_tpu_writes_safetensors(tmp_path):
    from simulators import apply_profile

    with apply_profile("tpu-v4-8") as host:
        PartialState._reset_state()
        assert PartialState().distributed_type == "TPU"
        state_dict = _tpu_state_dict(host.device)
        assert state_dict["bias"].device.type == "xla"
        save(state_dict, tmp_path / "model.safetensors", safe_serialization=True)
        save(state_dict, tmp_path / "model.pt")  # the pickle still goes through xm.save
        pickled = torch.load(tmp_path / "model.pt")
    with safe_open(tmp_path / "model.safetensors", "pt") as handle:
        assert handle.metadata() == {"format": "pt"} and sorted(handle.keys()) == ["bias", "encoder.weight"]
        assert torch.equal(handle.get_tensor("encoder.weight"), torch.arange(6.0).reshape(2, 3))
    assert sorted(pickled) == ["bias", "decoder.weight", "encoder.weight"]


def _save_on_tpu_rank(path, safe_serialization):
    state = PartialState()
    save({"w": torch.full((2,), float(state.process_index), device=state.device)}, path,
         safe_serialization=safe_serialization)
    return os.path.exists(path)  # save ends in a rendezvous, so every rank sees the main process's file


@pytest.mark.owns_worlds
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pickle"])
def test_save_on_a_simulated_tpu_world_writes_once_from_the_main_process(tmp_path, worlds, safe):
    path = str(tmp_path / f"w-{safe}.bin")
    assert worlds(2, profile="tpu-v4-8").run(_save_on_tpu_rank, path, safe) == [True, True]
    loaded = load_file(path) if safe else torch.load(path)
    assert torch.equal(loaded["w"], torch.zeros(2))


def _barrier_orders(path):
    state = PartialState()
    if state.is_main_process:
        with open(path, "w") as marker:
            marker.write("written before the barrier")
    wait_for_everyone()
    return os.path.exists(path)


def test_wait_for_everyone_is_a_barrier(tmp_path):
    assert debug_launcher(_barrier_orders, (str(tmp_path / "marker"),), num_processes=4) == [True] * 4
    wait_for_everyone()  # one process: returns at once
