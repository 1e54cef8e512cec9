"""Hygiene between calls: what one call changes inside the ranks (environment, patched torch entry
points, torch switches, RNG state, PartialState, process groups) is gone before the next call, or
the world rebuilds itself.

Each test makes the change in one call and looks for it in the next, on the same world.
"""

import os
import random

import pytest
import torch
import torch.distributed as dist

from simulators import World

# These tests start their own worlds: under xdist the harness runs them on its world worker.
pytestmark = pytest.mark.owns_worlds


@pytest.fixture(scope="module")
def world():
    with World(4, timeout=60) as world:
        yield world


# --- functions the ranks run -------------------------------------------------------------


def set_environment():
    os.environ["WORLD_TEST_LEAK"] = "1"
    os.environ["RANK"] = "99"
    del os.environ["MASTER_ADDR"]


def read_environment():
    return os.environ.get("WORLD_TEST_LEAK"), os.environ["RANK"], os.environ.get("MASTER_ADDR")


def patch_torch_entry_points():
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 8
    torch.world_test_extra = "leak"
    dist.all_reduce = lambda *args, **kwargs: None


def read_torch_entry_points():
    tensor = torch.ones(1)
    dist.all_reduce(tensor)
    return torch.cuda.is_available(), torch.cuda.device_count(), hasattr(torch, "world_test_extra"), tensor.item()


def change_torch_switches():
    torch.set_default_dtype(torch.float64)
    torch.set_grad_enabled(False)
    torch.set_num_threads(3)
    torch.set_default_device("meta")


def read_torch_switches():
    return torch.get_default_dtype(), torch.is_grad_enabled(), torch.get_num_threads(), str(torch.ones(1).device)


def leave_import_hooks_and_warning_filters():
    import sys
    import warnings

    class Finder:
        def find_spec(self, *args):
            return None

    sys.meta_path.insert(0, Finder())
    warnings.simplefilter("error")


def import_hooks_and_warning_filters():
    import sys
    import warnings

    return [type(f).__name__ for f in sys.meta_path].count("Finder"), warnings.filters[0][0]


def draw_random_numbers():
    import numpy

    return torch.rand(3).tolist(), random.random(), float(numpy.random.rand())


def draw_after_reseeding():
    torch.manual_seed(1234)
    random.seed(1234)
    return draw_random_numbers()


def leave_partial_state_marked():
    from accelerate_lite.state import PartialState

    state = PartialState()
    state.world_test_marker = dist.get_rank()
    return state.world_test_marker


def read_partial_state():
    from accelerate_lite.state import PartialState

    return getattr(PartialState(), "world_test_marker", None)


def destroy_the_group():
    dist.destroy_process_group()


def create_a_subgroup():
    dist.new_group([0, 1])  # collective over all ranks; only members get a group object
    return len(dist.distributed_c10d._world.pg_map)


def count_groups():
    return len(dist.distributed_c10d._world.pg_map), dist.get_world_size()


def change_directory(path):
    os.chdir(path)


def read_directory():
    return os.getcwd()


def fake_vendor_module():
    import sys
    import types

    sys.modules["torch_npu"] = types.ModuleType("torch_npu")


def vendor_module_present():
    import sys

    return "torch_npu" in sys.modules


# --- tests --------------------------------------------------------------------------------------


def test_environment_changes_do_not_leak(world):
    world.run(set_environment)
    assert world.run(read_environment) == [(None, str(rank), "127.0.0.1") for rank in range(4)]


def test_patched_torch_entry_points_are_restored(world):
    world.run(patch_torch_entry_points)
    assert world.run(read_torch_entry_points) == [(False, 0, False, 4.0)] * 4


def test_torch_switches_are_restored(world):
    before = world.run(read_torch_switches)
    world.run(change_torch_switches)
    assert world.run(read_torch_switches) == before
    assert before[0] == (torch.float32, True, 1, "cpu")


def test_import_hooks_and_warning_filters_are_restored(world):
    before = world.run(import_hooks_and_warning_filters)
    world.run(leave_import_hooks_and_warning_filters)
    assert world.run(import_hooks_and_warning_filters) == before
    assert before[0][0] == 0 and before[0][1] != "error"


def test_every_call_starts_from_the_same_rng_state(world):
    first = world.run(draw_random_numbers)
    world.run(draw_after_reseeding)
    assert world.run(draw_random_numbers) == first
    # like fresh processes: torch's default generator agrees across ranks, Python's and NumPy's do not
    assert len({tuple(torch_draw) for torch_draw, _, _ in first}) == 1
    assert len({python_draw for _, python_draw, _ in first}) == 4
    assert len({numpy_draw for _, _, numpy_draw in first}) == 4


def test_partial_state_is_reset_before_each_call(world):
    pytest.importorskip("accelerate_lite.state")
    assert world.run(leave_partial_state_marked) == [0, 1, 2, 3]
    assert world.run(read_partial_state) == [None] * 4


def test_destroyed_process_group_recycles_the_world(world):
    incarnation = world.incarnation
    world.run(destroy_the_group)
    assert world.incarnation == incarnation + 1
    assert world.run(count_groups) == [(1, 4)] * 4


def test_subgroups_created_by_a_call_are_destroyed_after_it(world):
    incarnation = world.incarnation
    assert world.run(create_a_subgroup) == [2, 2, 1, 1]
    assert world.run(count_groups) == [(1, 4)] * 4
    assert world.incarnation == incarnation


def test_working_directory_is_restored(world, tmp_path):
    before = world.run(read_directory)
    world.run(change_directory, str(tmp_path))
    assert world.run(read_directory) == before == [os.getcwd()] * 4


def test_fake_vendor_modules_do_not_leak(world):
    world.run(fake_vendor_module)
    assert world.run(vendor_module_present) == [False] * 4
