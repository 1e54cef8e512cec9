"""The is_*_available checks, their resettable caches, and version comparisons."""

import importlib.metadata
import inspect
import os
import sys
import types

import pytest
import torch

import accelerate_lite.utils as utils
from accelerate_lite.utils import (
    clear_import_caches,
    compare_versions,
    is_bf16_available,
    is_cuda_available,
    is_deepspeed_available,
    is_npu_available,
    is_rich_available,
    is_torch_version,
    is_torch_xla_available,
    is_tpu_available,
    is_xpu_available,
    patch_environment,
)
from accelerate_lite.utils.imports import _is_package_available

# Every check code relies on, with the parameters upstream gives it.
CHECKS = {
    "is_bf16_available": ["ignore_tpu"], "is_ipex_available": [], "is_mps_available": [],
    "is_npu_available": ["check_device"], "is_tpu_available": ["check_device"], "is_xpu_available": ["check_device"],
    "is_torch_xla_available": ["check_is_tpu", "check_is_gpu"], "is_cuda_available": [],
    "is_safetensors_available": [], "is_bnb_available": [], "is_4bit_bnb_available": [], "is_8bit_bnb_available": [],
    "is_deepspeed_available": [], "is_transformer_engine_available": [], "is_msamp_available": [],
    "is_fp8_available": [], "is_megatron_lm_available": [], "is_rich_available": [], "is_tqdm_available": [],
    "is_torch_distributed_available": [], "is_ccl_available": [], "is_transformers_available": [],
    "is_datasets_available": [], "is_peft_available": [], "is_timm_available": [], "is_aim_available": [],
    "is_tensorboard_available": [], "is_wandb_available": [], "is_comet_ml_available": [],
    "is_boto3_available": [], "is_sagemaker_available": [], "is_clearml_available": [], "is_pandas_available": [],
    "is_mlflow_available": [], "is_dvclive_available": [], "is_pippy_available": [],
}


@pytest.fixture(autouse=True)
def fresh_caches():
    clear_import_caches()
    yield
    clear_import_caches()


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_every_check_exists_with_upstream_parameters_and_answers_a_bool(name):
    check = getattr(utils, name)
    assert check.__name__ == name
    assert list(inspect.signature(check).parameters) == CHECKS[name]
    assert isinstance(check(), bool)


def test_answers_on_this_machine():
    assert utils.is_safetensors_available() and utils.is_tqdm_available()
    assert not is_cuda_available() and not is_npu_available() and not is_xpu_available()
    assert not is_tpu_available() and not is_torch_xla_available() and not utils.is_mps_available()
    assert is_bf16_available() and is_bf16_available(ignore_tpu=True)
    assert utils.is_torch_distributed_available()


def test_cuda_check_asks_nvml_and_restores_the_environment(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: seen.append(os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")))
    monkeypatch.delenv("PYTORCH_NVML_BASED_CUDA_CHECK", raising=False)
    is_cuda_available()
    assert seen == ["1"] and "PYTORCH_NVML_BASED_CUDA_CHECK" not in os.environ


def test_cached_device_checks_change_after_clear_import_caches(monkeypatch):
    # Mocked: there is no XPU or NPU here; torch is told there is one.
    assert not is_xpu_available() and not is_npu_available()
    monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
    monkeypatch.setattr(torch, "npu", types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 2),
                        raising=False)
    assert not is_xpu_available() and not is_npu_available(), "answers are cached until cleared"
    clear_import_caches()
    assert is_xpu_available() and is_xpu_available(check_device=True) and is_npu_available(check_device=True)
    with patch_environment(accelerate_use_xpu="false"):
        clear_import_caches()
        assert not is_xpu_available()


def test_a_vendor_module_put_in_sys_modules_counts_after_clearing(monkeypatch):
    assert not is_deepspeed_available()
    monkeypatch.setitem(sys.modules, "deepspeed", types.ModuleType("deepspeed"))
    assert not is_deepspeed_available()
    clear_import_caches()
    assert is_deepspeed_available() and utils.is_fp8_available() is False


def test_a_stray_folder_is_not_a_package(tmp_path, monkeypatch):
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    clear_import_caches()
    assert not _is_package_available("wandb")  # importable, but no installed distribution


def test_bf16_follows_the_cuda_device(monkeypatch):
    # Mocked: there is no GPU here.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    clear_import_caches()
    assert not is_bf16_available()


def test_rich_is_opt_in():
    with patch_environment(accelerate_enable_rich="1"):
        assert is_rich_available()
    with patch_environment(accelerate_enable_rich="0"):
        assert not is_rich_available()


VERSION_CASES = [
    (">=", "1.0", True), ("<", "1.0", False), ("==", "0.1", False), ("!=", "0.1", True),
    (">", "99.0", False), ("<=", "99.0", True),
]


@pytest.mark.parametrize("operation, version, expected", VERSION_CASES)
def test_is_torch_version(operation, version, expected):
    assert is_torch_version(operation, version) is expected


def test_compare_versions_by_name_or_version():
    installed = importlib.metadata.version("numpy")
    assert compare_versions("numpy", "==", installed)
    from packaging.version import Version

    assert compare_versions(Version("2.1.0"), ">", "2.0.9")
    assert is_torch_version("==", importlib.metadata.version("torch"))
