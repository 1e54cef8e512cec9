"""PartialState: world detection from launcher environments (real processes for real worlds), hardware
selection, and the process-control helpers."""

import os
import types

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st
from launch_worlds import (  # noqa: F401 (fixture)
    free_port,
    fresh_state,
    run_ranks,
    run_ranks_each,
    torchrun_environments,
)

from accelerate_lite import PartialState, debug_launcher
from accelerate_lite.utils import (
    DistributedType,
    clear_environment,
    clear_import_caches,
    patch_environment,
)
from accelerate_lite.utils.launch_env import (
    HARDWARE,
    LaunchEnvironment,
    choose_backend,
    detect_hardware,
)

pytestmark = pytest.mark.usefixtures("fresh_state")


def describe_state(cpu=False):
    """A rank's view of itself, checked against a real collective."""
    state = PartialState(cpu=cpu)
    total = torch.tensor([state.process_index + 1])
    if state.use_distributed:
        dist.all_reduce(total)
    return {
        "type": str(state.distributed_type),
        "index": state.process_index,
        "local": state.local_process_index,
        "size": state.num_processes,
        "device": str(state.device),
        "backend": state.backend,
        "sum": int(total),
        "rank_env": os.environ.get("RANK"),
    }


def expect_world(results, size, kind="MULTI_CPU", backend="gloo", device="cpu"):
    assert [r["index"] for r in results] == list(range(size))
    assert {r["type"] for r in results} == {kind}
    assert {r["size"] for r in results} == {size}
    assert {r["backend"] for r in results} == {backend}
    assert {r["sum"] for r in results} == {size * (size + 1) // 2}, "the ranks did not form one world"
    if device is not None:
        assert {r["device"] for r in results} == {device}


# --- one process ------------------------------------------------------------------------------


def test_no_launcher_is_one_process_on_cpu():
    state = PartialState()
    assert (state.distributed_type, state.num_processes, state.process_index) == (DistributedType.NO, 1, 0)
    assert state.device == torch.device("cpu") and state.backend is None
    assert state.is_main_process and state.is_local_main_process and state.is_last_process
    assert not state.use_distributed


def test_state_is_shared_and_reset_forgets_it():
    first = PartialState()
    assert PartialState().__dict__ is first.__dict__
    with patch_environment(accelerate_debug_mode="1"):
        assert PartialState().debug is False  # already decided
        PartialState.reset()
        assert PartialState().debug is True
    assert first.debug is True  # every instance sees the shared state


def test_environment_device_and_deepspeed_flags():
    with patch_environment(accelerate_torch_device="meta", accelerate_use_deepspeed="true"):
        state = PartialState()
        assert state.device == torch.device("meta")
        assert state.distributed_type == DistributedType.DEEPSPEED and state.num_processes == 1


def test_failed_start_leaves_state_uninitialised():
    with patch_environment(world_size="two"):
        with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
            PartialState()
    assert not PartialState._shared_state
    assert PartialState().distributed_type == DistributedType.NO


def test_one_process_helpers_are_pass_through(capsys):
    state = PartialState()
    with state.split_between_processes([1, 2, 3], apply_padding=True) as share:
        assert share == [1, 2, 3]
    with state.main_process_first(), state.local_main_process_first():
        pass
    for decorator in (state.on_main_process, state.on_local_main_process, state.on_last_process):
        assert decorator(len)("abc") == 3
    assert state.on_process(process_index=5)(len)("ab") == 2
    assert state.on_local_process(local_process_index=5)(len)("a") == 1
    state.print("hello")
    state.wait_for_everyone()
    assert capsys.readouterr().out == "hello\n"
    assert "Num processes: 1" in repr(state)


# --- reading launcher environments (no processes needed) ------------------------------------------

LAUNCHERS = {
    "torchrun": dict(RANK="5", WORLD_SIZE="8", LOCAL_RANK="1", LOCAL_WORLD_SIZE="4"),
    "openmpi": dict(OMPI_COMM_WORLD_RANK="5", OMPI_COMM_WORLD_SIZE="8", OMPI_COMM_WORLD_LOCAL_RANK="1",
                    OMPI_COMM_WORLD_LOCAL_SIZE="4"),
    "intel-mpi": dict(PMI_RANK="5", PMI_SIZE="8", MPI_LOCALRANKID="1", MPI_LOCALNRANKS="4"),
    "mvapich": dict(MV2_COMM_WORLD_RANK="5", MV2_COMM_WORLD_SIZE="8", MV2_COMM_WORLD_LOCAL_RANK="1",
                    MV2_COMM_WORLD_LOCAL_SIZE="4"),
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_launch_environment_reads_each_launcher(launcher):
    with patch_environment(**LAUNCHERS[launcher]):
        launch = LaunchEnvironment.from_environ()
    assert (launch.rank, launch.world_size, launch.local_rank, launch.local_world_size) == (5, 8, 1, 4)
    assert launch.launched


def test_launch_environment_without_local_rank_assumes_one_node():
    with patch_environment(rank="3", world_size="8"):
        launch = LaunchEnvironment.from_environ()
    assert not launch.launched and launch.local_rank_of(3) == 3 and launch.local_world_size == 8
    with clear_environment():
        assert LaunchEnvironment.from_environ() == LaunchEnvironment(0, 1, None, 1)


# --- hardware table (torch's device entry points patched: there is no GPU/NPU/XPU here) ------------


def _fake_accelerator(monkeypatch, kind):
    """Make torch report one accelerator of `kind` (mocked: this machine has none)."""
    if kind == "npu":
        fake = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 8, set_device=lambda d: None)
        monkeypatch.setattr(torch, "npu", fake, raising=False)
    else:
        module = getattr(torch, kind)
        monkeypatch.setattr(module, "is_available", lambda: True)
        monkeypatch.setattr(module, "device_count", lambda: 8)
        monkeypatch.setattr(module, "set_device", lambda device: None)
    clear_import_caches()


@pytest.mark.parametrize("kind", ["cuda", "npu", "xpu"])
def test_detect_hardware_follows_what_torch_reports(monkeypatch, kind):
    assert detect_hardware().kind == "cpu"
    _fake_accelerator(monkeypatch, kind)
    try:
        assert detect_hardware() is HARDWARE[kind]
        assert detect_hardware(cpu=True) is HARDWARE["cpu"]
        if kind != "npu":  # torch.device("npu") needs a registered backend (the simulators' job)
            state = PartialState()
            assert state.distributed_type == DistributedType.NO
            assert state.device.type == kind
    finally:
        monkeypatch.undo()
        clear_import_caches()
    assert detect_hardware().kind == "cpu"


def test_choose_backend_prefers_request_then_table_order():
    assert choose_backend(HARDWARE["cpu"]) == "gloo"
    assert choose_backend(HARDWARE["cuda"]) == ("nccl" if dist.is_nccl_available() else "gloo")
    assert choose_backend(HARDWARE["cuda"], requested="gloo") == "gloo"
    assert choose_backend(HARDWARE["cpu"], requested="nccl") == "gloo"  # InitProcessGroupKwargs' default


# --- real worlds: one process per rank, started as each launcher starts them ----------------------


@pytest.mark.parametrize("size", [2, 4])
def test_torchrun_environment_makes_a_multi_cpu_world(size):
    results = run_ranks(describe_state, torchrun_environments(size))
    expect_world(results, size)
    assert [r["local"] for r in results] == list(range(size))


def test_eight_cpu_ranks_without_cpu_flag_are_multi_cpu():
    """Upstream's trap: WORLD_SIZE=8 on a CPU-only machine without cpu=True must not come up NO."""
    port = str(free_port())
    environments = [dict(RANK=str(r), WORLD_SIZE="8", MASTER_ADDR="127.0.0.1", MASTER_PORT=port) for r in range(8)]
    expect_world(run_ranks(describe_state, environments), 8)


def test_openmpi_environment_makes_a_world_and_exports_torch_variables():
    port = str(free_port())
    environments = [
        dict(OMPI_COMM_WORLD_RANK=str(r), OMPI_COMM_WORLD_SIZE="3", OMPI_COMM_WORLD_LOCAL_RANK=str(r),
             OMPI_COMM_WORLD_LOCAL_SIZE="3", MASTER_PORT=port)  # no MASTER_ADDR: one node, so localhost
        for r in range(3)
    ]
    results = run_ranks(describe_state, environments)
    expect_world(results, 3)
    assert [r["rank_env"] for r in results] == ["0", "1", "2"]


def test_intel_mpi_environment_makes_a_world():
    port = str(free_port())
    environments = [dict(PMI_RANK=str(r), PMI_SIZE="2", MPI_LOCALRANKID=str(r), MASTER_ADDR="127.0.0.1",
                         MASTER_PORT=port) for r in range(2)]
    expect_world(run_ranks(describe_state, environments), 2)


def test_accelerate_launch_cpu_flag_keeps_ranks_on_cpu():
    results = run_ranks(describe_state, torchrun_environments(2, ACCELERATE_USE_CPU="true"))
    expect_world(results, 2)


def _describe_on_fake_cuda():
    # Mocked: there is no GPU here; torch is told it has 8 so the state takes the CUDA row of the table.
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 8
    torch.cuda.set_device = lambda device: None
    return describe_state()


def test_cuda_world_gets_one_device_per_local_rank_and_falls_back_to_gloo():
    results = run_ranks(_describe_on_fake_cuda, torchrun_environments(2))
    expected_backend = "nccl" if dist.is_nccl_available() else "gloo"
    expect_world(results, 2, kind="MULTI_GPU", backend=expected_backend, device=None)
    assert [r["device"] for r in results] == ["cuda:0", "cuda:1"]


def _adopt_group(world_size, rank, store_path):
    dist.init_process_group("gloo", store=dist.FileStore(store_path, world_size), rank=rank, world_size=world_size)
    return describe_state()


def test_an_existing_group_is_adopted(tmp_path):
    store = str(tmp_path / "store")
    environments = [{} for _ in range(3)]  # no launcher variables at all: only the group knows the world
    results = run_ranks_each(_adopt_group, environments, [(3, rank, store) for rank in range(3)])
    expect_world(results, 3)
    assert [r["local"] for r in results] == [0, 1, 2]


# --- helpers across a real world (debug_launcher) -------------------------------------------------


def _split_everything():
    state = PartialState()
    shares = {}
    for name, inputs in {
        "list5": list(range(5)),
        "tuple7": tuple(range(7)),
        "list2": ["a", "b"],
        "dict": {"x": list(range(5)), "y": torch.arange(5)},
        "tensor": torch.arange(10).reshape(5, 2),
    }.items():
        for padding in (False, True):
            with state.split_between_processes(inputs, apply_padding=padding) as share:
                shares[f"{name}/{padding}"] = share
    return shares


def test_split_between_processes_on_three_ranks():
    results = debug_launcher(_split_everything, num_processes=3)
    assert [r["list5/False"] for r in results] == [[0, 1], [2, 3], [4]]
    assert [r["list5/True"] for r in results] == [[0, 1], [2, 3], [4, 4]]
    assert [r["tuple7/False"] for r in results] == [(0, 1, 2), (3, 4, 5), (6,)]
    assert [r["tuple7/True"] for r in results] == [(0, 1, 2), (3, 4, 5), (6, 6, 6)]
    assert [r["list2/False"] for r in results] == [["a"], ["b"], ["b"]]  # past the end: the last element
    assert [r["dict/False"]["x"] for r in results] == [[0, 1], [2, 3], [4]]
    assert [r["dict/True"]["y"].tolist() for r in results] == [[0, 1], [2, 3], [4, 4]]
    assert [r["tensor/True"].tolist() for r in results] == [[[0, 1], [2, 3]], [[4, 5], [6, 7]], [[8, 9], [8, 9]]]


def _order_of_entry(path, local):
    state = PartialState()
    block = state.local_main_process_first() if local else state.main_process_first()
    with block:
        with open(path, "a") as log:
            log.write(f"{state.process_index}\n")
    state.wait_for_everyone()
    with open(path) as log:
        return [int(line) for line in log]


@pytest.mark.parametrize("local", [False, True])
def test_main_process_goes_first(tmp_path, local):
    results = debug_launcher(_order_of_entry, (str(tmp_path / "log"), local), num_processes=4)
    assert results[0][0] == 0 and sorted(results[0]) == [0, 1, 2, 3]


def _who_runs_what():
    state = PartialState()
    return [
        state.on_main_process(lambda: "main")(),
        state.on_local_main_process(lambda: "local-main")(),
        state.on_last_process(lambda: "last")(),
        state.on_process(process_index=1)(lambda: "one")(),
        state.on_local_process(local_process_index=2)(lambda: "local-two")(),
    ]


def test_on_process_decorators_select_ranks():
    assert debug_launcher(_who_runs_what, num_processes=3) == [
        ["main", "local-main", None, None, None],
        [None, None, None, "one", None],
        [None, None, "last", None, "local-two"],
    ]


def _print_from_every_rank():
    PartialState().print(f"printed by {PartialState().process_index}", flush=True)


def test_print_only_on_local_main_process(capfd):
    debug_launcher(_print_from_every_rank, num_processes=3)
    assert capfd.readouterr().out.count("printed by") == 1


def _destroy():
    state = PartialState()
    state.destroy_process_group()  # the launcher's group (FORK_LAUNCHED) is kept
    kept = dist.is_initialized()
    os.environ["FORK_LAUNCHED"] = "0"
    PartialState().destroy_process_group()
    return kept, dist.is_initialized()


def test_destroy_process_group():
    assert debug_launcher(_destroy, num_processes=2) == [(True, False), (True, False)]


def _split_refusals():
    state = PartialState()
    messages = []
    for bad in ({"a": [1], "b": [1, 2]}, 42):
        try:
            with state.split_between_processes(bad):
                pass
        except (ValueError, TypeError) as error:
            messages.append(f"{type(error).__name__}: {error}")
    return messages


def test_split_between_processes_refuses_what_it_cannot_split():
    results = debug_launcher(_split_refusals, num_processes=2)
    assert results[0] == results[1] and len(results[0]) == 2
    assert results[0][0].startswith("ValueError") and "{'a': 1, 'b': 2}" in results[0][0]
    assert results[0][1].startswith("TypeError") and "got int" in results[0][1]


def test_thread_local_shared_dict_gives_each_thread_its_own_state():
    """With torch_xla installed (PJRT may run one replica per thread) the state is kept per thread."""
    import threading

    from accelerate_lite.state import ThreadLocalSharedDict

    class Borg:
        shared = ThreadLocalSharedDict()

    Borg.shared["rank"] = 0
    seen = []
    worker = threading.Thread(target=lambda: (seen.append(dict(Borg().shared)), Borg.shared.update(rank=1)))
    worker.start()
    worker.join()
    assert seen == [{}] and Borg.shared == {"rank": 0}


@settings(max_examples=150, deadline=None)
@given(length=st.integers(0, 40), num_processes=st.integers(2, 9))
def test_split_shares_cover_the_input_in_order_and_pad_to_one_length(length, num_processes):
    """Every world size and length: the shares of ranks that start inside the input are its pieces, in
    order; with padding every share has ceil(length / num_processes) elements (lists, tuples, tensors)."""
    inputs = list(range(length))
    per_process = -(-length // num_processes)
    for container in (list, tuple, torch.tensor):
        data = container(inputs) if inputs or container is not torch.tensor else torch.tensor([], dtype=torch.long)
        shares, padded = [], []
        for rank in range(num_processes):
            view = types.SimpleNamespace(num_processes=num_processes, process_index=rank)
            with PartialState.split_between_processes(view, data) as share:
                shares.append(list(share.tolist() if isinstance(share, torch.Tensor) else share))
            with PartialState.split_between_processes(view, data, apply_padding=True) as share:
                padded.append(list(share.tolist() if isinstance(share, torch.Tensor) else share))
        starting_inside = [share for rank, share in enumerate(shares) if rank * per_process < length]
        assert [item for share in starting_inside for item in share] == inputs
        assert all(share == inputs[-1:] for rank, share in enumerate(shares) if rank * per_process >= length)
        for share, padded_share in zip(shares, padded):
            assert len(padded_share) == per_process
            assert padded_share == share + share[-1:] * (per_process - len(share))
