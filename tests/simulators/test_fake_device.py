"""Tensors on simulated devices: real fake-device tensors for npu, device tags for cuda/xpu/xla/mps.

No accelerator exists here; the point is that placement mistakes (a tensor left on the wrong device)
fail under the simulation the way they fail on the card.
"""

import pytest
import torch

from simulators import apply_profile, get_profile
from simulators.errors import FakeDeviceError
from simulators.fake_device import (
    FakeDeviceTensor,
    fake_backend_name,
    install_fake_backend,
    unwrap,
)

SAME_DEVICE = "Expected all tensors to be on the same device"


@pytest.fixture
def npu():
    with apply_profile("8xAscend910B", local_rank=3, world_size=8) as host:
        yield host


def test_factories_and_moves_carry_the_npu_device(npu):
    ones = torch.ones(2, device="npu:3")
    assert ones.device == torch.device("npu", 3) and isinstance(ones, FakeDeviceTensor)
    moved = torch.arange(4.0).to(npu.device)
    assert moved.device == npu.device and moved.tolist() == [0.0, 1.0, 2.0, 3.0]
    back = moved.cpu()
    assert type(back) is torch.Tensor and back.device.type == "cpu" and torch.equal(back, torch.arange(4.0))
    assert moved.to("npu:5").device.index == 5 and moved.device.index == 3
    assert moved.to(torch.float16).dtype == torch.float16 and moved.to(torch.float16).device == npu.device
    assert "device='npu:3'" in repr(ones)
    # A factory's "npu" without an index means the current device, as on the card. (.to("npu") from the
    # CPU gets index 0 from torch's C++ device guard, which Python cannot answer: see the README.)
    assert torch.zeros(1, device="npu").device == npu.device
    torch.npu.set_device(5)
    assert torch.zeros(1, device="npu").device == torch.device("npu", 5)


def test_ops_compute_on_the_cpu_and_stay_on_the_device(npu):
    a = torch.arange(6.0, device="npu:3").view(2, 3)
    b = torch.ones(3, 2, device="npu:3")
    product = a @ b
    assert product.device == npu.device and product.cpu().tolist() == [[3.0, 3.0], [12.0, 12.0]]
    assert (a * 2 + 1).device == npu.device and torch.cat([a, a]).shape == (4, 3)
    assert a[1].device == npu.device and torch.stack([a, a]).device == npu.device
    assert (a + torch.tensor(1.0)).device == npu.device  # CPU scalars mix, as on the card
    a.add_(1)
    assert unwrap(a).tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_out_arguments_resized_by_an_op_keep_their_shape(npu):
    # arange and out= ops resize their output after the wrapper exists; the shape must follow.
    steps = torch.arange(3, device="npu:3")
    assert steps.shape == (3,) and steps.tolist() == [0, 1, 2]
    out = torch.empty(0, device="npu:3")
    torch.add(torch.ones(2, 2, device="npu:3"), 1, out=out)
    assert out.shape == (2, 2) and out.stride() == (2, 1) and out.tolist() == [[2.0, 2.0], [2.0, 2.0]]
    padded = torch.zeros(4, dtype=torch.long, device="npu:3")
    padded[:3] = steps
    assert padded.tolist() == [0, 1, 2, 0] and torch.tensor(steps.shape, device=npu.device).tolist() == [3]
    assert not torch.randn(3, 4, device="npu:3").t().is_contiguous()


@pytest.mark.parametrize("other", ["npu:1", "cpu"])
def test_mixing_devices_fails_like_the_card(npu, other):
    with pytest.raises(RuntimeError, match=f"{SAME_DEVICE}.*npu:3 and {other}"):
        torch.ones(2, device="npu:3") + torch.ones(2, device=other)
    model = torch.nn.Linear(3, 1).to(npu.device)
    with pytest.raises(RuntimeError, match=SAME_DEVICE):
        model(torch.randn(4, 3))  # the classic bug: the batch was never moved


def test_training_step_on_a_device_above_zero(npu):
    model = torch.nn.Linear(3, 1).to("npu:3")
    optimizer = torch.optim.Adam(model.parameters())
    loss = model(torch.randn(4, 3, device="npu:3")).pow(2).mean()
    loss.backward()  # apply_profile runs autograd in-thread: its engine has no queue for PrivateUse1 index 3
    optimizer.step()
    assert model.weight.grad.device == torch.device("npu", 3) and model.weight.device == torch.device("npu", 3)


def test_autocast_on_npu_runs_but_does_not_cast(npu):
    # torch has no autocast rules for PrivateUse1; the simulation lets autocast("npu") through unchanged.
    a = torch.ones(2, 2, device="npu:3")
    with torch.autocast("npu", dtype=torch.float16):
        product = a @ a
    assert product.device == npu.device and product.dtype == torch.float32


def test_copies_between_devices_and_deepcopy(npu):
    source = torch.arange(3.0, device="npu:1")
    target = torch.zeros(3, device="npu:3")
    target.copy_(source)  # copies move data between devices, as on the card
    assert target.device.index == 3 and target.tolist() == [0.0, 1.0, 2.0]
    import copy

    model = copy.deepcopy(torch.nn.Linear(2, 2).to("npu:3"))
    assert model.weight.device == npu.device


def test_numpy_needs_cpu_first_as_on_the_card(npu):
    with pytest.raises(TypeError, match="cpu"):
        torch.ones(2, device="npu:3").numpy()


def test_install_is_once_per_process_and_keeps_its_name():
    assert install_fake_backend("npu") == "npu" == fake_backend_name()
    with pytest.raises(FakeDeviceError, match="already named 'npu'"):
        install_fake_backend("gaudi")


def test_no_npu_is_left_for_torch_after_the_profile():
    # The PrivateUse1 name outlives the profile; torch.accelerator and DataLoader must still see no device.
    with apply_profile("8xAscend910B", local_rank=2, world_size=4):
        assert torch.accelerator.is_available() and torch.accelerator.device_count() == 8
    assert not torch.accelerator.is_available() and torch.accelerator.device_count() == 0
    with pytest.warns(UserWarning, match="no accelerator is found"):
        batches = list(torch.utils.data.DataLoader(torch.arange(4.0), batch_size=2, pin_memory=True))
    assert [batch.tolist() for batch in batches] == [[0.0, 1.0], [2.0, 3.0]]


def test_npu_flags_only_without_fake_tensors():
    with apply_profile("8xAscend910B", fake_tensors=False):
        assert torch.npu.is_available() and torch.npu.device_count() == 8


# -- device tags (cuda, xpu, xla, mps) -------------------------------------------------------------------


@pytest.fixture
def cuda():
    with apply_profile("8xH100", local_rank=3, world_size=8, device_tags=True) as host:
        yield host


def test_tags_report_the_simulated_cuda_device(cuda):
    placed = torch.ones(2, device="cuda:3")
    assert (placed.device, placed.is_cuda, placed.is_cpu, placed.get_device()) == (torch.device("cuda", 3), True, False, 3)
    plain = torch.randn(2)
    moved = plain.to(cuda.device)
    assert moved.device == cuda.device and plain.device.type == "cpu" and moved is not plain
    assert moved.to("cuda:3") is moved and moved.cuda(1).device.index == 1 and moved.cpu().device.type == "cpu"
    assert moved.to(torch.float16).device == cuda.device and moved.to(plain).device.type == "cpu"
    assert (placed + moved).device == cuda.device and torch.zeros_like(placed).device == cuda.device
    assert repr(placed.half()) == "tensor([1., 1.], device='cuda:3', dtype=torch.float16)"
    assert str(torch.ones(1)) == "tensor([1.])"


def test_tags_catch_mixed_devices(cuda):
    with pytest.raises(RuntimeError, match=f"{SAME_DEVICE}.*cuda:3 and cpu"):
        torch.ones(2, device="cuda:3") * torch.ones(2)
    with pytest.raises(RuntimeError, match=f"{SAME_DEVICE}.*cuda:3 and cuda:1"):
        torch.ones(2, device="cuda:3") - torch.ones(2, device="cuda:1")
    model = torch.nn.Linear(2, 2).to(cuda.device)
    with pytest.raises(RuntimeError, match=SAME_DEVICE):
        model(torch.randn(4, 2))


def test_tags_follow_a_module_through_training(cuda):
    model = torch.nn.Linear(2, 2).to(cuda.device)
    assert model.weight.device == cuda.device and model.bias.is_cuda
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 2, device=cuda.device)).sum().backward()
    optimizer.step()
    assert model.weight.grad.device == cuda.device and model.weight.device == cuda.device


def test_tags_survive_deepcopy(cuda):
    import copy

    model = copy.deepcopy(torch.nn.Linear(2, 2).to(cuda.device))
    assert model.weight.device == cuda.device
    assert torch.nn.Parameter(torch.zeros(2, device=cuda.device)).device == cuda.device


def test_tags_end_with_the_profile():
    with apply_profile("tpu-v4-8", device_tags=True) as host:
        placed = torch.ones(2, device=host.device)
        assert placed.device == torch.device("xla", 0)
    assert placed.device.type == "cpu"


def test_device_tags_refused_for_kinds_without_them():
    with pytest.raises(ValueError, match="tags exist for cuda"), apply_profile("cpu", device_tags=True):
        pass


# -- inside worlds (real gloo ranks) --------------------------------------------------------------------

TAGGED_H100 = get_profile("8xH100").replace(name="8xH100-tagged", device_tags=True)


def _npu_rank_body():
    import torch.distributed as dist

    from accelerate_lite.state import PartialState

    state = PartialState()
    tensor = torch.full((2,), float(state.process_index + 1), device=state.device)
    dist.all_reduce(tensor)
    model = torch.nn.Linear(3, 1).to(state.device)
    model(torch.randn(4, 3, device=state.device)).sum().backward()
    try:
        model(torch.randn(4, 3))
        mixed = None
    except RuntimeError as error:
        mixed = str(error)
    return str(state.device), str(tensor.device), tensor.tolist(), str(model.weight.grad.device), mixed


def _ddp_rank_body():
    import torch.distributed as dist

    from accelerate_lite.state import PartialState

    state = PartialState()
    model = torch.nn.Linear(3, 1).to(state.device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[state.local_process_index])
    ddp(torch.randn(4, 3, device=state.device) * (state.process_index + 1)).sum().backward()
    grads = [torch.empty_like(model.weight.grad) for _ in range(state.num_processes)]
    dist.all_gather(grads, model.weight.grad)
    return str(model.weight.grad.device), all(torch.equal(grads[0], grad) for grad in grads)


@pytest.mark.slow
def test_npu_tensors_in_a_world(worlds):
    results = worlds(2, "8xAscend910B").run(_npu_rank_body, timeout=120)
    for rank, (device, tensor_device, values, grad_device, mixed) in enumerate(results):
        assert device == tensor_device == grad_device == f"npu:{rank}"
        assert values == [3.0, 3.0]
        assert mixed is not None and f"npu:{rank} and cpu" in mixed


@pytest.mark.slow
def test_ddp_on_tagged_cuda_in_a_world(worlds):
    # The profile carries device_tags=True, so a World (which takes only a profile) applies it tagged.
    results = worlds(2, TAGGED_H100).run(_ddp_rank_body, timeout=120)
    assert results == [("cuda:0", True), ("cuda:1", True)]  # DDP averaged the gradients across ranks
