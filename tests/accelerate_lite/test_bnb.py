"""bitsandbytes quantization on a machine without it (and without a GPU): clear errors, and the planning helpers.

The quantized load itself needs a CUDA GPU; ci/gpu/bnb_check.py runs it there.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from accelerate_lite import init_empty_weights
from accelerate_lite.errors import QuantizationDeviceError, QuantizationUnavailableError
from accelerate_lite.utils import BnbQuantizationConfig, load_and_quantize_model
from accelerate_lite.utils import bnb as bnb_module
from accelerate_lite.utils.bnb import get_keys_to_not_convert, get_quantized_model_device_map

BNB_INSTALLED = importlib.util.find_spec("bitsandbytes") is not None


def small_model():
    with init_empty_weights():
        return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


@pytest.mark.skipif(BNB_INSTALLED, reason="bitsandbytes is installed here, so its absence cannot be observed")
@pytest.mark.parametrize("bits", ["load_in_8bit", "load_in_4bit"])
def test_missing_bitsandbytes_is_named_with_how_to_install_it(bits):
    with pytest.raises(QuantizationUnavailableError, match=r"bitsandbytes.*not installed.*pip install"):
        load_and_quantize_model(small_model(), BnbQuantizationConfig(**{bits: True}), weights_location="x")


def test_too_old_bitsandbytes_is_named_with_the_version_needed(monkeypatch):
    # Package metadata stands in for an old bitsandbytes install, which cannot exist here.
    monkeypatch.setattr(bnb_module.importlib.metadata, "version", lambda name: "0.38.0")
    with pytest.raises(QuantizationUnavailableError, match=r"0\.38\.0.*>= 0\.39\.0"):
        load_and_quantize_model(small_model(), BnbQuantizationConfig(load_in_4bit=True), weights_location="x")


def test_no_gpu_is_named_when_the_device_map_defaults_to_the_current_gpu():
    # This machine has no CUDA GPU: the default device map cannot be made.
    config = BnbQuantizationConfig(load_in_8bit=True, skip_modules=[])
    with pytest.raises(QuantizationDeviceError, match="no CUDA GPU"):
        get_quantized_model_device_map(small_model(), config, device_map=None)


def test_4bit_modules_offloaded_to_cpu_are_refused_by_name():
    config = BnbQuantizationConfig(load_in_4bit=True, skip_modules=["2"], keep_in_fp32_modules=[])
    assert get_quantized_model_device_map(small_model(), config, {"0": 0, "2": "cpu"}) == {"0": 0, "2": "cpu"}
    with pytest.raises(ValueError, match=r"\['0'\]"):
        get_quantized_model_device_map(small_model(), config, {"0": "cpu", "2": 0})
    with pytest.raises(ValueError, match="'everywhere'"):
        get_quantized_model_device_map(small_model(), config, "everywhere")


def test_get_keys_to_not_convert_keeps_the_head_and_tied_weights():
    assert get_keys_to_not_convert(small_model()) == ["2"]
    tied = nn.Sequential(nn.Embedding(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    assert set(get_keys_to_not_convert(tied)) == {"0", "1"}  # upstream may list the head twice

    class BaseModel(nn.Sequential):
        base_model_prefix = "transformer"  # no such child: a base model without a head

    assert get_keys_to_not_convert(BaseModel(nn.Linear(2, 2))) == []


def test_dispatch_records_the_map_and_refuses_disk_by_name():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    assert bnb_module._dispatch(model, {"0": "cpu", "1": "cpu"}, None).hf_device_map == {"0": "cpu", "1": "cpu"}
    with pytest.raises(NotImplementedError, match=r"\['1'\].*offload"):
        bnb_module._dispatch(model, {"0": "cpu", "1": "disk"}, "offload")


def test_dispatch_over_several_devices_moves_inputs_to_each_module():
    # Only the cpu and meta devices exist here: a meta module shows that its input was moved there first.
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2, device="meta"))
    bnb_module._dispatch(model, {"0": "cpu", "1": "meta"}, None)
    assert model(torch.ones(1, 2)).is_meta
