"""Sizes, tied weights, tensor placement and the memory query; with the invalid-argument table of this part."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from accelerate_lite.utils import (
    calculate_maximum_sizes,
    compute_module_sizes,
    convert_file_size_to_int,
    dtype_byte_size,
    find_tied_parameters,
    get_device_free_memory,
    get_max_layer_size,
    get_max_memory,
    named_module_tensors,
    retie_parameters,
    set_module_tensor_to_device,
)
from accelerate_lite.utils.enums import CustomDtype


@pytest.mark.parametrize(
    "size, expected",
    [(1024, 1024), ("1KB", 1000), ("1KiB", 1024), ("2.5MB", 2_500_000), ("1GiB", 2**30), ("8Mb", 1_000_000),
     ("3gb", 3 * 10**9 // 8)],  # a lower-case final "b" means bits, as upstream reads it
)
def test_convert_file_size_to_int(size, expected):
    assert convert_file_size_to_int(size) == expected


def test_dtype_byte_size():
    assert [dtype_byte_size(d) for d in (torch.float32, torch.bfloat16, torch.int8, torch.bool)] == [4, 2, 1, 0.125]
    assert dtype_byte_size(CustomDtype.INT4) == 0.5 and dtype_byte_size(torch.float8_e4m3fn) == 1


def test_compute_module_sizes_counts_params_and_buffers_once_per_tensor():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model[1].weight = model[0].bias  # a shared tensor is counted under its first name only
    sizes = compute_module_sizes(model)
    assert sizes["0"] == 80 and sizes["0.weight"] == 64
    # BatchNorm: bias + running_mean + running_var (float) + num_batches_tracked (int64)
    assert sizes["1"] == 16 * 3 + 8 and sizes[""] == 80 + 56
    assert compute_module_sizes(model, special_dtypes={"0.weight": "float16"})["0"] == 48


def test_get_max_layer_size_and_calculate_maximum_sizes():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)))
    sizes = compute_module_sizes(model)
    assert get_max_layer_size(list(model.named_children()), sizes, []) == (80, ["1.0", "1.1"])
    assert get_max_layer_size(list(model.named_children()), sizes, ["Sequential"]) == (160, ["1"])
    model._no_split_modules = ["Sequential"]
    assert calculate_maximum_sizes(model) == (184, (160, ["1"]))


def test_named_module_tensors_can_skip_non_persistent_buffers():
    module = nn.Linear(2, 2)
    module.register_buffer("kept", torch.ones(1))
    module.register_buffer("scratch", torch.ones(1), persistent=False)
    assert [n for n, _ in named_module_tensors(module)] == ["weight", "bias", "kept", "scratch"]
    assert [n for n, _ in named_module_tensors(module, remove_non_persistent=True)] == ["weight", "bias", "kept"]


def test_find_and_retie_parameters():
    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)))
    model[1][1].weight = model[0].weight
    model[1][0].weight = model[0].weight
    assert find_tied_parameters(model) == [["0.weight", "1.0.weight", "1.1.weight"]]
    assert find_tied_parameters(nn.Linear(2, 2)) == []
    model[1][1].weight = nn.Parameter(torch.zeros(3, 3))  # the tie is broken, e.g. by loading
    retie_parameters(model, [["0.weight", "1.0.weight", "1.1.weight"]])
    assert model[1][1].weight is model[0].weight


def test_set_module_tensor_to_device_from_meta_with_value_and_dtype():
    module = nn.Sequential(nn.Linear(2, 2, device="meta"))
    set_module_tensor_to_device(module, "0.weight", "cpu", value=torch.ones(2, 2, dtype=torch.float64))
    assert module[0].weight.dtype == torch.float32 and isinstance(module[0].weight, nn.Parameter)
    set_module_tensor_to_device(module, "0.bias", "cpu", value=torch.ones(2), dtype=torch.float16)
    assert module[0].bias.dtype == torch.float16
    module.register_buffer("ids", torch.zeros(2, dtype=torch.int64))
    set_module_tensor_to_device(module, "ids", "cpu", value=torch.ones(2, dtype=torch.int64), dtype=torch.float16)
    assert module.ids.dtype == torch.int64  # dtype never converts integer tensors


def test_set_module_tensor_to_device_reuses_tied_copies():
    first, second = nn.Linear(2, 2, device="meta"), nn.Linear(2, 2, device="meta")
    value = torch.ones(2, 2)
    tied_map = {value.data_ptr(): {}}
    set_module_tensor_to_device(first, "weight", "cpu", value=value, tied_params_map=tied_map)
    set_module_tensor_to_device(second, "weight", "cpu", value=value, tied_params_map=tied_map)
    assert second.weight is first.weight


def test_get_device_free_memory_answers_for_cpu():
    assert get_device_free_memory("cpu") > 0 and get_device_free_memory(torch.device("cpu")) > 0


INVALID_ARGUMENTS = {
    "convert_file_size_to_int('5 parsecs')": (lambda: convert_file_size_to_int("5 parsecs"), ValueError, "parsecs"),
    "convert_file_size_to_int('xGB')": (lambda: convert_file_size_to_int("xGB"), ValueError, "xGB"),
    "convert_file_size_to_int(0)": (lambda: convert_file_size_to_int(0), ValueError, "more than 0"),
    "convert_file_size_to_int(1.5)": (lambda: convert_file_size_to_int(1.5), ValueError, "float"),
    "dtype_byte_size('weird')": (lambda: dtype_byte_size("weird"), ValueError, "weird"),
    "compute_module_sizes(dtype='float17')": (
        lambda: compute_module_sizes(nn.Linear(1, 1), dtype="float17"), ValueError, "float17"),
    "get_max_memory({'gpu0': 1})": (lambda: get_max_memory({"gpu0": 1}), ValueError, "gpu0"),
    "get_device_free_memory('disk')": (lambda: get_device_free_memory("disk"), ValueError, "disk"),
    # No GPU exists on this machine, so asking one is an error that says so.
    "get_device_free_memory('cuda:0')": (lambda: get_device_free_memory("cuda:0"), RuntimeError, "no cuda"),
    "set_module_tensor_to_device(missing_tensor)": (
        lambda: set_module_tensor_to_device(nn.Linear(1, 1), "gamma", "cpu"), ValueError, "gamma"),
    "set_module_tensor_to_device(missing_submodule)": (
        lambda: set_module_tensor_to_device(nn.Sequential(nn.Linear(1, 1)), "3.weight", "cpu"), ValueError, "'3'"),
    "set_module_tensor_to_device(meta_without_value)": (
        lambda: set_module_tensor_to_device(nn.Linear(1, 1, device="meta"), "weight", "cpu"), ValueError, "meta"),
    "set_module_tensor_to_device(wrong_shape)": (
        lambda: set_module_tensor_to_device(nn.Linear(1, 1), "weight", "cpu", value=torch.ones(2)), ValueError, r"\(2,\)"),
}


@pytest.mark.parametrize("call, error, message", list(INVALID_ARGUMENTS.values()), ids=list(INVALID_ARGUMENTS))
def test_invalid_arguments_raise_errors_that_say_what_arrived(call, error, message):
    with pytest.raises(error, match=message):
        call()
