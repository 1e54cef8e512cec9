"""Data operations on one process: the local helpers, packing, debug-mode comparison, identities, bad arguments.

The multi-process behaviour (real gloo worlds of 1-8 ranks) is in test_operations_worlds.py.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict, defaultdict, namedtuple

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import accelerate_lite.utils as utils
from accelerate_lite.state import PartialState
from accelerate_lite.utils import operations as ops
from accelerate_lite.utils.ops import debug, packing
from harness import oracles, strategies

Point = namedtuple("Point", "x y")


@pytest.fixture
def one_process(monkeypatch):
    """A fresh single-process PartialState (no launcher variables), reset again afterwards."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "ACCELERATE_DEBUG_MODE"):
        monkeypatch.delenv(key, raising=False)
    PartialState._reset_state()
    state = PartialState(cpu=True)
    assert state.distributed_type == "NO"
    yield state
    PartialState._reset_state()


# --- traversal ------------------------------------------------------------------------------


def test_recursively_apply_keeps_namedtuples_mapping_subclasses_and_defaultdicts():
    data = {
        "point": Point(torch.ones(1), torch.zeros(1)),
        "batch": strategies.BatchLike(ids=torch.ones(2)),
        "counts": defaultdict(list, {"a": torch.ones(1)}),
        "ordered": OrderedDict(b=[torch.ones(1), (torch.ones(1),)]),
        "text": "kept",
    }
    out = ops.recursively_apply(lambda t: t + 1, data)
    assert type(out["point"]) is Point and torch.equal(out["point"].y, torch.ones(1))
    assert type(out["batch"]) is strategies.BatchLike and torch.equal(out["batch"]["ids"], torch.full((2,), 2.0))
    assert type(out["counts"]) is defaultdict and out["counts"].default_factory is list
    assert type(out["ordered"]) is OrderedDict and type(out["ordered"]["b"][1]) is tuple
    assert out["text"] == "kept"


def test_recursively_apply_error_on_other_type_names_the_function_and_type():
    def double(t):
        return t * 2

    with pytest.raises(TypeError, match=r"<class 'str'>.*double"):
        ops.recursively_apply(double, [torch.ones(1), "x"], error_on_other_type=True)


def test_honor_type_and_is_namedtuple():
    assert ops.honor_type(Point(1, 2), iter([3, 4])) == Point(3, 4)
    assert ops.honor_type([1], iter([2])) == [2]
    assert ops.is_namedtuple(Point(1, 2)) and not ops.is_namedtuple((1, 2))


def test_send_to_device_moves_tensors_and_honours_skip_keys():
    class Movable:
        def to(self, device):  # a `.to` without non_blocking
            return f"moved to {device}"

    data = {"a": torch.ones(1, dtype=torch.float64), "skip": Movable(), "m": Movable(), "s": "text"}
    out = ops.send_to_device(data, "cpu", skip_keys="skip")
    assert out["skip"] is data["skip"] and out["m"] == "moved to cpu" and out["s"] == "text"
    assert torch.equal(out["a"], data["a"])


def test_get_data_structure_and_initialize_tensors_round_trip():
    data = {"x": [torch.ones(2, 3, dtype=torch.int16)], "y": torch.zeros(())}
    structure = ops.get_data_structure(data)
    assert ops.is_tensor_information(structure["x"][0]) and structure["x"][0].dtype == torch.int16
    fresh = ops.initialize_tensors(structure)
    assert fresh["x"][0].shape == (2, 3) and fresh["x"][0].dtype == torch.int16 and fresh["y"].shape == ()
    assert ops.get_shape(data) == {"x": [[2, 3]], "y": []}


def test_find_batch_size_and_its_errors():
    assert ops.find_batch_size({"a": [torch.ones(5, 2)], "b": torch.ones(3)}) == 5
    assert ops.ignorant_find_batch_size(["text"]) is None
    with pytest.raises(ValueError, match="empty"):
        ops.find_batch_size({"a": []})
    with pytest.raises(TypeError, match="str"):
        ops.find_batch_size(["text"])


def test_listify_converts_bfloat16_and_keeps_structure():
    data = Point(torch.tensor([1.5], dtype=torch.bfloat16), {"n": torch.tensor(3)})
    assert ops.listify(data) == Point([1.5], {"n": 3})


def test_slice_tensors_and_concatenate():
    data = {"a": torch.arange(6).reshape(3, 2), "b": (torch.arange(3),)}
    sliced = ops.slice_tensors(data, slice(0, 2))
    assert torch.equal(sliced["a"], torch.arange(4).reshape(2, 2)) and torch.equal(sliced["b"][0], torch.arange(2))
    joined = ops.concatenate([sliced, ops.slice_tensors(data, slice(2, 3))])
    assert torch.equal(joined["a"], data["a"]) and type(joined["b"]) is tuple


def test_find_device_and_convert_to_fp32():
    assert ops.find_device({"a": "x", "b": [torch.ones(1)]}) == torch.device("cpu")
    assert ops.find_device(["no tensor"]) is None
    out = ops.convert_to_fp32({"h": torch.ones(1, dtype=torch.half), "b": torch.ones(1, dtype=torch.bfloat16), "i": torch.ones(1, dtype=torch.int8)})
    assert (out["h"].dtype, out["b"].dtype, out["i"].dtype) == (torch.float32, torch.float32, torch.int8)


def test_convert_outputs_to_fp32_wraps_and_refuses_pickling():
    forward = ops.convert_outputs_to_fp32(lambda x: {"y": x.half()})
    assert forward(torch.ones(1))["y"].dtype == torch.float32
    assert isinstance(forward.__wrapped__, ops.ConvertOutputsToFp32)
    with pytest.raises(pickle.PicklingError, match="unwrap"):
        pickle.dumps(forward.__wrapped__)


def test_every_operations_name_is_exported_from_utils_too():
    missing = [name for name in ops.__all__ if getattr(utils, name, None) is not getattr(ops, name)]
    assert missing == []


@settings(max_examples=40, deadline=None)
@given(
    data=strategies.tensor_structures(max_leaves=4),
    batch_size=st.integers(0, 9),
    num_processes=st.integers(1, 5),
)
def test_pad_input_tensors_matches_its_oracle(data, batch_size, num_processes):
    try:
        expected = oracles.expected_pad_input_tensors(data, batch_size, num_processes)
    except TypeError:
        with pytest.raises(TypeError):
            ops.pad_input_tensors(data, batch_size, num_processes)
        return
    oracles.assert_same(ops.pad_input_tensors(data, batch_size, num_processes), expected)


def test_pad_input_tensors_follows_the_documented_example():
    padded = ops.pad_input_tensors(torch.arange(3 * 4 * 4).reshape(3, 4, 4), batch_size=3, num_processes=4)
    assert padded.shape == (4, 4, 4) and torch.equal(padded[3], padded[2])


# --- packing (coalescing) -------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(leaves=st.lists(strategies.leaf_specs(), min_size=1, max_size=6), world_size=st.integers(1, 3))
def test_packing_round_trips_every_dtype_and_layout(leaves, world_size):
    tensors = [strategies.make_tensor(spec) for spec in leaves]
    packs = packing.pack_groups(tensors, as_bytes=True, fresh=False)
    assert len(packs) == 1  # one device: one buffer, whatever the dtypes
    rows = [packs[0].buffer] * world_size  # what an all_gather of identical ranks returns
    for gathered in (rows, torch.cat(rows)):
        for index, merged in packing.unpack_gathered(packs[0], gathered, world_size):
            original = tensors[index].reshape(1) if tensors[index].ndim == 0 else tensors[index]
            oracles.assert_same(merged, torch.cat([original] * world_size))


def test_packing_groups_reduce_buffers_by_dtype_and_never_shares_input_when_fresh():
    tensors = [torch.ones(2), torch.ones(3, dtype=torch.int64), torch.zeros(1)]
    packs = packing.pack_groups(tensors, as_bytes=False, fresh=True)
    assert sorted(len(p.slots) for p in packs) == [1, 2]
    for pack in packs:
        pack.buffer.add_(1)
    assert torch.equal(tensors[0], torch.ones(2))  # inputs untouched


# --- debug-mode comparison (pure) -----------------------------------------------------------


def _signatures(*inputs, op="gather", params=None):
    return [debug.describe(op, data, params) for data in inputs]


@pytest.mark.parametrize(
    "inputs, agreement, expected",
    [
        pytest.param(({"x": torch.ones(4, 3)}, {"x": torch.ones(5, 3)}), debug.GATHER, r"rank 0 \[4, 3\], rank 1 \[5, 3\]", id="shape"),
        pytest.param(([torch.ones(2)], [torch.ones(2, dtype=torch.int8)]), debug.GATHER, "dtype mismatch", id="dtype"),
        pytest.param(([torch.ones(2)], (torch.ones(2),)), debug.GATHER, "different structures", id="structure"),
        pytest.param((torch.ones(1, 2), torch.ones(1, 2, 1)), debug.NDIM_ONLY, "number of dimensions", id="ndim"),
    ],
)
def test_find_disagreement_names_each_ranks_input(inputs, agreement, expected):
    assert re.search(expected, debug.find_disagreement(_signatures(*inputs), agreement))


def test_find_disagreement_accepts_agreeing_and_ragged_pad_inputs():
    assert debug.find_disagreement(_signatures(torch.ones(2, 3), torch.ones(2, 3)), debug.GATHER) == ""
    assert debug.find_disagreement(_signatures(torch.ones(2, 3), torch.ones(5, 3)), debug.NDIM_ONLY) == ""


def test_find_disagreement_reports_op_desync_and_device_type():
    mixed = [debug.describe("gather", torch.ones(1)), debug.describe("reduce", torch.ones(1))]
    assert "rank 0 gather(), rank 1 reduce()" in debug.find_disagreement(mixed, debug.GATHER)
    assert "needs cuda tensors" in debug.find_disagreement(_signatures(torch.ones(1), torch.ones(1)), debug.GATHER, "cuda")


# --- one process: upstream's identities -----------------------------------------------------


def test_single_process_ops_are_upstreams_identities(one_process):
    scalar = torch.tensor(2.0)
    data = {"x": scalar, "meta": "text"}
    assert ops.gather(data) is data and ops.gather(scalar).ndim == 0
    assert ops.broadcast(data) is data
    assert ops.gather_object(data) is data
    objects = [data]
    assert ops.broadcast_object_list(objects) is objects
    reduced = ops.reduce(scalar, reduction="sum")
    assert reduced is not scalar and torch.equal(reduced, scalar)
    assert torch.equal(ops.reduce(torch.tensor([3]), reduction="mean"), torch.tensor([3]))  # no division on one process
    assert ops.pad_across_processes({"x": scalar})["x"] is scalar
    assert torch.equal(ops.copy_tensor_to_devices(torch.ones(2)), torch.ones(2))


def test_single_process_debug_mode_changes_nothing(one_process):
    one_process.debug = True
    data = {"x": torch.ones(2)}
    assert ops.gather(data) is data


# --- invalid arguments: one table -----------------------------------------------------------

INVALID_CALLS = [
    pytest.param(lambda: ops.reduce(torch.ones(1), reduction="max"), ValueError, "reduction='max'", id="reduce(t, reduction='max')"),
    pytest.param(lambda: ops.reduce([torch.ones(1), "x"]), TypeError, "str", id="reduce([t, 'x'])"),
    pytest.param(lambda: ops.pad_across_processes({"a": 1}), TypeError, "int", id="pad_across_processes({'a': 1})"),
    pytest.param(lambda: ops.copy_tensor_to_devices(None), ValueError, "pass the tensor", id="copy_tensor_to_devices(None)"),
    pytest.param(lambda: ops.pad_input_tensors(torch.ones(2), 2, 0), ValueError, "num_processes", id="pad_input_tensors(t, 2, 0)"),
    pytest.param(lambda: ops.pad_input_tensors(["x"], 2, 2), TypeError, "str", id="pad_input_tensors(['x'], 2, 2)"),
    pytest.param(lambda: ops.find_batch_size([]), ValueError, "empty", id="find_batch_size([])"),
    pytest.param(lambda: ops.concatenate([1, 2]), TypeError, "int", id="concatenate([1, 2])"),
    pytest.param(lambda: strategies.dtypes("fp4"), ValueError, "precision='fp4'", id="strategies.dtypes('fp4')"),
    pytest.param(lambda: strategies.world_inputs(0), ValueError, "world_size=0", id="strategies.world_inputs(0)"),
    pytest.param(lambda: strategies.shapes(min_dims=3, max_dims=1), ValueError, "min_dims=3", id="strategies.shapes(min_dims=3, max_dims=1)"),
]


@pytest.mark.parametrize("call, error, match", INVALID_CALLS)
def test_invalid_arguments_raise_clear_errors(one_process, call, error, match):
    with pytest.raises(error, match=match):
        call()
