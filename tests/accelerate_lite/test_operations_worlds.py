"""Data operations on real gloo worlds of 1, 2, 4 and 8 ranks, checked against the harness oracles.

Each test starts few worlds and runs many checks per start: the SPMD functions in ops_spmd.py run a
derandomized hypothesis loop inside every rank (same examples everywhere) and compare each rank's
result with the oracle computed from all ranks' inputs. Worlds come from the session pool (`worlds`).
OPS_EXAMPLES_SCALE (a float, default 1) scales the number of examples.
"""

from __future__ import annotations

import os

import pytest

import ops_spmd

SCALE = float(os.environ.get("OPS_EXAMPLES_SCALE", "1"))
EXAMPLES = {1: 25, 2: 40, 4: 30, 8: 20}
CALL_TIMEOUT = 600.0  # generous: 8 ranks on a loaded 2-core machine


pytestmark = pytest.mark.owns_worlds  # run on the harness's world worker under xdist


@pytest.fixture
def run_world(worlds):
    """run_world(n, fn, *args, profile=None) -> each rank's return value, on an n-rank gloo world from the pool."""

    def run(n, fn, *args, profile=None):
        return worlds(n, profile=profile).run(fn, *args, timeout=CALL_TIMEOUT)

    return run


def _examples(n: int) -> int:
    return max(1, round(EXAMPLES[n] * SCALE))


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2, 4, 8], ids=lambda n: f"w{n}")
def test_every_op_matches_its_oracle_on_hypothesis_examples(run_world, n):
    counts = run_world(n, ops_spmd.check_collectives, _examples(n), "no")
    assert counts == [_examples(n)] * n


@pytest.mark.slow
@pytest.mark.parametrize("n, precision", [(2, "fp16"), (4, "bf16"), (2, "fp8")], ids=lambda v: f"w{v}" if isinstance(v, int) else v)
def test_half_precision_structures_match_their_oracle(run_world, n, precision):
    assert run_world(n, ops_spmd.check_collectives, _examples(n), precision) == [_examples(n)] * n


def test_a_one_rank_world_returns_upstreams_identities(run_world):
    (seen,) = run_world(1, ops_spmd.check_single_process_identities)
    assert seen.pop("distributed_type") == "NO"
    assert seen == {key: True for key in seen}


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 8], ids=lambda n: f"w{n}")
def test_debug_mode_mismatch_raises_on_every_rank_naming_the_shapes(run_world, n):
    bad = n - 1
    per_rank = run_world(n, ops_spmd.check_all_debug_cases, bad)
    for case in ops_spmd.DEBUG_CASES:
        seen = [rank_cases[case] for rank_cases in per_rank]
        assert [s["raised"] for s in seen] == ["DistributedOperationException"] * n, (case, seen)
        assert len({s["message"] for s in seen}) == 1, f"{case}: ranks raised different messages"
        message = seen[0]["message"]
        for rank in range(n):
            assert f"rank {rank} " in message, (case, message)
        assert "Input shapes:" in message
    gather_shape = per_rank[0]["gather/shape"]["message"]
    assert "rank 0 [4, 3]" in gather_shape and f"rank {bad} [5, 3]" in gather_shape
    assert "pad first with pad_across_processes()" in gather_shape


@pytest.mark.slow
def test_debug_mode_passes_agreeing_inputs(run_world):
    assert run_world(4, ops_spmd.check_debug_agreeing_inputs_pass) == [True] * 4


def test_nested_structures_use_fewer_collectives_than_tensors(run_world):
    counts = run_world(2, ops_spmd.check_collective_counts)[0]
    assert counts == {"gather": 1, "broadcast": 1, "reduce": 2, "tensors": 9}  # reduce: one per dtype


def test_bad_arguments_raise_on_every_rank_and_leave_the_world_usable(run_world):
    per_rank = run_world(2, ops_spmd.check_invalid_collective_arguments)
    assert per_rank[0] == {**per_rank[1], "afterwards": per_rank[0]["afterwards"]}  # same errors everywhere
    seen = per_rank[0]
    assert seen["gather([t, 'text'])"][0] == "TypeError"
    assert seen["reduce({'a': 'text'})"][0] == "TypeError"
    assert seen["reduce(int, 'mean')"][0] == "TypeError" and "reduction='sum'" in seen["reduce(int, 'mean')"][1]
    assert seen["broadcast(t, from_process=world_size)"][0] == "ValueError"
    assert seen["broadcast_object_list([1], from_process=-1)"][0] == "ValueError"
    assert seen["copy_tensor_to_devices(t on every rank)"][0] == "ValueError"
    assert seen["gather_object(5)"][0] == "TypeError"  # upstream flattens one level: the object must be iterable
    assert seen["afterwards"] == [0, 1]


# dtypes the simulated torch_xla runs on gloo (gloo has no int16/uint16 collectives; real XLA has)
XLA_SIMULATED_DTYPES = ("float32", "bfloat16", "float64", "int32", "int64", "uint8", "bool", "complex64")


@pytest.mark.slow
def test_the_xla_backend_matches_the_oracles_on_a_simulated_tpu(run_world):
    """The XLA path (xm.all_gather / all_reduce / mesh_reduce) against the oracles, through the simulator's torch_xla."""
    counts = run_world(2, ops_spmd.check_collectives, _examples(2), "no", 5, XLA_SIMULATED_DTYPES, profile="tpu-v4-8")
    assert counts == [_examples(2)] * 2


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["8xH100", "8xAscend910B"])
def test_simulated_device_profiles_take_the_torch_distributed_path(run_world, profile):
    assert run_world(2, ops_spmd.check_collectives, _examples(2) // 2, "bf16", profile=profile) == [_examples(2) // 2] * 2


def test_broadcast_writes_into_parameters_that_require_grad(run_world):
    for seen in run_world(2, ops_spmd.check_parameters_that_require_grad):
        assert seen == {"same_objects": True, "equal_to_rank_0": True, "gather_shape": (4, 3), "reduce_is_sum": True}
