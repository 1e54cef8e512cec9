"""World basics: results in rank order, arguments, the launcher environment, lookup of functions,
output forwarding, invalid arguments, sizes 1 and 16, profiles and PartialState inside ranks.

Every test runs real rank processes in a real gloo group; nothing is mocked.
"""

import importlib.util
import os
import sys
import textwrap

import psutil
import pytest
import torch
import torch.distributed as dist

from simulators import World, WorldClosedError
from simulators.errors import RankError

# These tests start their own worlds: under xdist the harness runs them on its world worker.
pytestmark = pytest.mark.owns_worlds

# --- functions the ranks run (module level, so the ranks can find them) --------------------


def rank_and_size():
    return dist.get_rank(), dist.get_world_size()


def echo(*args, **kwargs):
    return dist.get_rank(), args, kwargs


def all_reduce_sum(value):
    tensor = torch.tensor([float(value * (dist.get_rank() + 1))])
    dist.all_reduce(tensor)
    return tensor.item()


def launcher_environment():
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return {key: os.environ.get(key) for key in keys}


def shout(word):
    print(f"{word} from {dist.get_rank()}")
    print(f"warning {dist.get_rank()}", file=sys.stderr)


def returns_unpicklable():
    return lambda: None


def partial_state_view():
    from accelerate_lite.state import PartialState

    state = PartialState()
    return str(state.distributed_type), state.num_processes, state.process_index, state.local_process_index


def profile_view():
    from accelerate_lite.state import PartialState

    state = PartialState()
    return torch.cuda.is_available(), torch.cuda.device_count(), os.environ["LOCAL_RANK"], str(state.distributed_type)


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world():
    with World(8, timeout=60) as world:
        yield world


# --- tests --------------------------------------------------------------------------------


def test_results_come_back_in_rank_order(world):
    assert world.run(rank_and_size) == [(rank, 8) for rank in range(8)]


def test_arguments_reach_every_rank(world):
    results = world.run(echo, 1, [2, 3], key={"a": torch.ones(2)})
    for rank, (seen_rank, args, kwargs) in enumerate(results):
        assert seen_rank == rank
        assert args == (1, [2, 3])
        assert torch.equal(kwargs["key"]["a"], torch.ones(2))


def test_a_keyword_argument_named_fn_reaches_the_function(world):
    assert world.run(echo, fn="mine")[1] == (1, (), {"fn": "mine"})


def test_collectives_run_on_the_group(world):
    assert world.run(all_reduce_sum, 2) == [2.0 * sum(range(1, 9))] * 8


def test_ranks_see_launcher_environment(world):
    envs = world.run(launcher_environment)
    for rank, env in enumerate(envs):
        assert env["RANK"] == env["LOCAL_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == "8"
        assert env["MASTER_ADDR"] == "127.0.0.1"
        assert int(env["MASTER_PORT"]) > 0
    assert len({env["MASTER_PORT"] for env in envs}) == 1


def test_calls_reuse_the_same_ranks(world):
    pids = world.pids
    for _ in range(3):
        world.run(rank_and_size)
    assert world.pids == pids
    assert len(set(pids)) == 8 and all(psutil.pid_exists(pid) for pid in pids)


def test_function_found_by_file_path_when_its_module_name_does_not_import(world, tmp_path):
    source = tmp_path / "spmd_body.py"
    source.write_text(textwrap.dedent("""
        import torch.distributed as dist

        def doubled_rank():
            return 2 * dist.get_rank()
    """))
    spec = importlib.util.spec_from_file_location("not_on_any_path.spmd_body", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert world.run(module.doubled_rank) == [2 * rank for rank in range(8)]


def test_rank_output_is_forwarded_with_rank_prefix(world, capsys):
    world.run(shout, "hello")
    captured = capsys.readouterr()
    for rank in range(8):
        assert f"[rank {rank}] hello from {rank}" in captured.out
        assert f"[rank {rank}] warning {rank}" in captured.err


def test_unpicklable_result_is_a_rank_error(world):
    with pytest.raises(RankError, match="cannot be pickled") as info:
        world.run(returns_unpicklable)
    assert sorted(info.value.failures) == list(range(8))
    assert world.run(rank_and_size)[0] == (0, 8)


def _nested():
    def inner():
        return 1

    return inner


# run() on a live world; the constructor's refusals are in the package's table
# (test_simulators_invalid_arguments.py), which needs no ranks.
INVALID_RUN = [
    pytest.param(lambda w: w.run(lambda: 1), TypeError, "module-level", id="run(lambda)"),
    pytest.param(lambda w: w.run(_nested()), TypeError, "module-level", id="run(nested_function)"),
    pytest.param(lambda w: w.run(42), TypeError, "module-level function", id="run(42)"),
    pytest.param(lambda w: w.run(rank_and_size, timeout=-1), ValueError, "positive", id="run(fn, timeout=-1)"),
    pytest.param(lambda w: w.run(echo, lambda: 1), TypeError, "cannot be pickled", id="run(fn, <lambda arg>)"),
    pytest.param(lambda w: w.run(echo, w), TypeError, "owns processes and sockets", id="run(fn, world)"),
]


@pytest.mark.parametrize("call, error, message", INVALID_RUN)
def test_invalid_run_arguments_are_refused_and_the_world_survives(world, call, error, message):
    incarnation = world.incarnation
    with pytest.raises(error, match=message):
        call(world)
    assert world.incarnation == incarnation
    assert world.run(rank_and_size)[7] == (7, 8)


def test_closed_world_refuses_calls_and_leaves_no_rank():
    world = World(2)
    pids = world.pids
    world.close()
    world.close()  # idempotent
    assert not any(psutil.pid_exists(pid) for pid in pids)
    with pytest.raises(WorldClosedError, match="closed"):
        world.run(rank_and_size)


def test_one_rank_world():
    with World(1) as world:
        assert world.run(rank_and_size) == [(0, 1)]
        assert world.run(all_reduce_sum, 3) == [3.0]


@pytest.mark.slow
def test_sixteen_rank_world():
    with World(16, timeout=120) as world:
        assert world.run(rank_and_size) == [(rank, 16) for rank in range(16)]
        assert world.run(all_reduce_sum, 1) == [float(sum(range(1, 17)))] * 16


def test_partial_state_adopts_the_world_group(world):
    pytest.importorskip("accelerate_lite.state")
    views = world.run(partial_state_view)
    for rank, (distributed_type, num, index, local) in enumerate(views):
        assert distributed_type.endswith("MULTI_CPU")
        assert (num, index, local) == (8, rank, rank)


def test_profile_applies_per_rank():
    import simulators

    if not hasattr(simulators, "get_profile"):
        pytest.skip("hardware profiles not available in this checkout")
    with World(4, profile="8xH100", timeout=60) as world:
        views = world.run(profile_view)
    for rank, (available, count, local_rank, distributed_type) in enumerate(views):
        assert available is True and count == 8
        assert local_rank == str(rank)
        assert distributed_type.endswith("MULTI_GPU")


def test_unknown_event_is_a_protocol_error():
    from simulators._protocol import Ready, Shutdown, dispatch
    from simulators.errors import ProtocolError

    assert dispatch(Ready(0, 1), {Ready: lambda event: event.rank}, "rank 0") == 0
    with pytest.raises(ProtocolError, match="rank 0 sent an event of type 'Shutdown'; expected one of Ready"):
        dispatch(Shutdown(), {Ready: lambda event: None}, "rank 0")


def test_library_functions_run_by_reference(world):
    assert world.run(dist.get_rank) == list(range(8))
    assert len(set(world.run(os.getpid))) == 8


def has_path(path):
    return path in sys.path


def test_ranks_follow_the_callers_sys_path_even_after_a_rebuild(tmp_path):
    with World(2, standby=True) as world:
        world.run(rank_and_size)  # the standby was forked with the old sys.path
        sys.path.insert(0, str(tmp_path))
        try:
            assert world.run(has_path, str(tmp_path)) == [True, True]
            world.recycle()  # promotes the standby
            assert world.run(has_path, str(tmp_path)) == [True, True]
        finally:
            sys.path.remove(str(tmp_path))
        assert world.run(has_path, str(tmp_path)) == [False, False]


def npu_all_reduce():
    from accelerate_lite.state import PartialState

    state = PartialState()
    tensor = torch.ones(2, device=state.device) * (dist.get_rank() + 1)
    dist.all_reduce(tensor)
    return str(state.distributed_type), str(tensor.device), tensor.cpu().tolist()


def npu_tensor():
    return torch.ones(2, device=f"npu:{dist.get_rank()}")


def test_npu_profile_world_reduces_tensors_on_each_ranks_fake_device():
    pytest.importorskip("accelerate_lite.state")
    with World(2, profile="8xAscend910B", timeout=60) as world:
        results = world.run(npu_all_reduce)
        assert world.run(npu_all_reduce) == results  # the fake device survives the hygiene between calls
        if torch._C._get_privateuse1_backend_name() == "npu":  # another test installed npu in this process
            assert [str(t.device) for t in world.run(npu_tensor)] == ["npu:0", "npu:1"]
        else:
            with pytest.raises(RankError, match=r"cannot unpickle .*needs \.cpu\(\)"):
                world.run(npu_tensor)  # the caller has no npu device to rebuild it on
    for rank, (distributed_type, device, values) in enumerate(results):
        assert distributed_type.endswith("MULTI_NPU")
        assert (device, values) == (f"npu:{rank}", [3.0, 3.0])


def test_prestart_starts_the_zygote_that_worlds_then_use():
    import simulators.world

    simulators.world.prestart()
    zygote = simulators.world._zygote_handle.process.pid
    with World(1) as world:
        assert psutil.Process(world.pids[0]).ppid() == zygote


def untracked_collectives():
    from simulators._collectives import COLLECTIVES

    return [name for name in COLLECTIVES if hasattr(dist, name) and not hasattr(getattr(dist, name), "__simulators_tracked__")]


def test_every_blocking_collective_is_tracked_inside_the_ranks(world):
    assert world.run(untracked_collectives) == [[]] * 8
