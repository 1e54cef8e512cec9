"""Invalid arguments to state, launchers, memory, random, imports/versions: each is refused with a clear error.

One row per case; the id reads like the call. (The dataclasses' table lives in test_dataclasses.py.)
"""

import importlib.metadata

import pytest
from launch_worlds import fresh_state  # noqa: F401 (fixture)

from accelerate_lite import PartialState, debug_launcher, find_executable_batch_size
from accelerate_lite.utils import (
    DistributedType,
    compare_versions,
    is_torch_version,
    is_torch_xla_available,
    patch_environment,
    set_seed,
    synchronize_rng_state,
)
from accelerate_lite.utils.launch_env import Hardware, choose_backend

pytestmark = pytest.mark.usefixtures("fresh_state")


def _train(batch_size, model):
    return batch_size


def _state_after_reset():
    state = PartialState()
    PartialState.reset()
    return state


def case(call_id, call, error, match, **environment):
    return pytest.param(call, error, match, environment, id=call_id)


CASES = [
    # launchers
    case("debug_launcher(42)", lambda: debug_launcher(42), TypeError, "function must be callable, got int"),
    case("debug_launcher(print, args=5)", lambda: debug_launcher(print, args=5), TypeError, "args must be a tuple"),
    case("debug_launcher(print, num_processes=0)", lambda: debug_launcher(print, num_processes=0), ValueError,
         "num_processes must be >= 1, got 0"),
    case("debug_launcher(print, num_processes=2.0)", lambda: debug_launcher(print, num_processes=2.0), TypeError,
         "num_processes must be an int, got float"),
    case("debug_launcher(print, num_processes=True)", lambda: debug_launcher(print, num_processes=True), TypeError,
         "got bool"),
    case("debug_launcher(print) with ACCELERATE_DEBUG_LAUNCHER_TIMEOUT=soon", lambda: debug_launcher(print),
         ValueError, "ACCELERATE_DEBUG_LAUNCHER_TIMEOUT='soon' is not a number",
         ACCELERATE_DEBUG_LAUNCHER_TIMEOUT="soon"),
    # state: launcher variables that disagree
    case("PartialState() with WORLD_SIZE=eight", PartialState, ValueError, "WORLD_SIZE='eight' is not an integer",
         WORLD_SIZE="eight"),
    case("PartialState() with WORLD_SIZE=0", PartialState, ValueError, "world size 0 .*expected >= 1", WORLD_SIZE="0"),
    case("PartialState() with RANK=4, WORLD_SIZE=4", PartialState, ValueError,
         r"rank 4 \(RANK=4\) is outside the world of 4", RANK="4", WORLD_SIZE="4"),
    case("PartialState() with OMPI_COMM_WORLD_RANK=-2", PartialState, ValueError, "OMPI_COMM_WORLD_RANK=-2",
         OMPI_COMM_WORLD_RANK="-2", OMPI_COMM_WORLD_SIZE="2"),
    case("PartialState() on 2 nodes without MASTER_ADDR", PartialState, ValueError, "needs MASTER_ADDR",
         RANK="0", WORLD_SIZE="4", LOCAL_RANK="0", LOCAL_WORLD_SIZE="2", MASTER_PORT="1"),
    case("state.on_main_process(print) after PartialState.reset()", lambda: _state_after_reset().on_main_process(print),
         ValueError, "construct PartialState"),
    case("choose_backend(Hardware('abacus', ..., backends=('quill',)))",
         lambda: choose_backend(Hardware("abacus", DistributedType.MULTI_CPU, ("quill",))), RuntimeError,
         r"none of the torch.distributed backends \['quill'\] for abacus"),
    # memory
    case("train(64, 'model') under find_executable_batch_size",
         lambda: find_executable_batch_size(_train)(64, "model"), TypeError, "passed into `_train`"),
    case("train('model', batch_size=64) under find_executable_batch_size",
         lambda: find_executable_batch_size(_train)("model", batch_size=64), TypeError, "`_train` was called with batch_size=64"),
    # random
    case("set_seed('7')", lambda: set_seed("7"), TypeError, "seed must be an int, got str"),
    case("set_seed(True)", lambda: set_seed(True), TypeError, "got bool"),
    case("set_seed(-1)", lambda: set_seed(-1), ValueError, "outside 0 <= seed < 2\\*\\*32"),
    case("set_seed(2**32)", lambda: set_seed(2**32), ValueError, "seed 4294967296 is outside"),
    case("synchronize_rng_state('mersenne')", lambda: synchronize_rng_state("mersenne"), ValueError,
         "unknown rng_type 'mersenne'; expected one of \\['torch', 'cuda'"),
    case("synchronize_rng_state('generator')", lambda: synchronize_rng_state("generator"), ValueError,
         "needs generator="),
    case("synchronize_rng_state('cuda') without CUDA", lambda: synchronize_rng_state("cuda"), RuntimeError,
         "CUDA is not available here"),
    case("synchronize_rng_state('xla') without XLA", lambda: synchronize_rng_state("xla"), RuntimeError,
         "no TPU/XLA device"),
    # imports / versions
    case("compare_versions('torch', '=>', '2.0')", lambda: compare_versions("torch", "=>", "2.0"), ValueError,
         "operation '=>' is not a comparison"),
    case("is_torch_version('~=', '2.0')", lambda: is_torch_version("~=", "2.0"), ValueError, "expected one of"),
    case("compare_versions('no-such-distribution', '>', '1')",
         lambda: compare_versions("no-such-distribution", ">", "1"), importlib.metadata.PackageNotFoundError,
         "no-such-distribution"),
    case("is_torch_xla_available(check_is_tpu=True, check_is_gpu=True)",
         lambda: is_torch_xla_available(check_is_tpu=True, check_is_gpu=True), ValueError, "at most one"),
]


@pytest.mark.parametrize("call, error, match, environment", CASES)
def test_invalid_argument_is_refused_clearly(call, error, match, environment):
    with patch_environment(**environment):
        with pytest.raises(error, match=match):
            call()
    assert not PartialState._shared_state or PartialState().num_processes == 1
