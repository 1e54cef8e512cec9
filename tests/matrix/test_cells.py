"""Cells, selections and presets: ids, parsing, slicing, registry."""

import dataclasses

import pytest

from matrix import axes
from matrix.cells import Cell, Selection, Slice, sort_cells
from matrix.presets import PRESETS, Preset, get_preset, register_preset


def test_cell_id_is_the_documented_form_and_parses_back():
    cell = Cell("gather", "bf16", "fsdp", 8, "gloo", "8xH100")
    assert cell.id == "gather/bf16/fsdp/w8/gloo/8xH100"
    assert Cell.parse(cell.id) == cell


def test_every_cell_of_the_product_round_trips_through_its_id():
    cells = Selection().full_product()
    assert len(cells) == 19 * 4 * 6 * 4 * 5 * 8
    assert len({cell.id for cell in cells}) == len(cells)
    assert all(Cell.parse(cell.id) == cell for cell in cells[::97])


def test_cells_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Cell.parse("reduce/no/none/w2/gloo/cpu").world = 4


def test_sort_follows_axis_order_not_the_alphabet():
    cells = [Cell.parse("gather/fp8/none/w2/gloo/cpu"), Cell.parse("gather/no/none/w2/gloo/cpu"),
             Cell.parse("gather/bf16/none/w2/gloo/cpu")]
    assert [c.precision for c in sort_cells(cells)] == ["no", "bf16", "fp8"]


def test_selection_narrows_by_every_axis():
    sel = Selection.from_options(op="gather,reduce", precision="bf16", world="2,w8", plugin=None, hardware="8xH100")
    cells = sel.apply(Selection().full_product())
    assert {c.op for c in cells} == {"gather", "reduce"}
    assert {c.world for c in cells} == {2, 8}
    assert {c.precision for c in cells} == {"bf16"} and {c.hardware for c in cells} == {"8xH100"}
    assert len(cells) == 2 * 1 * 6 * 2 * 5 * 1


def test_cell_environment_is_what_the_launcher_sets():
    env = Cell.parse("gather/bf16/fsdp/w8/gloo/8xH100").environment()
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
    assert Cell.parse("gather/no/deepspeed/w2/gloo/cpu").environment()["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert Cell.parse("gather/no/megatron/w4/gloo/8xH100").environment()["MEGATRON_LM_TP_DEGREE"] == "2"
    assert "ACCELERATE_USE_FSDP" not in Cell.parse("gather/no/none/w2/gloo/cpu").environment()


def test_presets_are_registered_immutable_and_inherit():
    quick = get_preset("quick")
    assert set(PRESETS) >= {"quick", "thorough", "ci", "smoke"}
    assert quick.examples is None and quick.resolved("examples") == get_preset("default").examples
    assert "slices" in str(quick) and "examples" not in str(quick)  # shows only what it overrides
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.examples = 1
    with pytest.raises(TypeError):
        PRESETS["mine"] = quick


def test_quick_covers_every_op_precision_and_plugin_at_w2():
    cells = get_preset("quick").cells()
    at_w2 = {(c.op, c.precision, c.plugin) for c in cells if c.world == 2 and c.hardware == "8xH100"}
    assert len(at_w2) == len(axes.OPERATIONS) * len(axes.PRECISIONS) * len(axes.PLUGINS)
    assert {c.world for c in cells} == {1, 2, 4, 8}
    assert {c.op for c in cells if c.world == 8} == set(axes.axis_values("op"))


def test_ci_preset_is_a_few_cells_per_op():
    cells = get_preset("ci").cells()
    per_op = {op: sum(1 for c in cells if c.op == op) for op in axes.axis_values("op")}
    assert set(per_op.values()) == {5}


def test_register_preset_refuses_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        register_preset(Preset("quick"))


def test_slice_defaults_to_w2_gloo_cpu_without_plugin():
    cells = Slice(op=("gather",)).cells()
    assert [c.id for c in cells] == ["gather/no/none/w2/gloo/cpu"]
