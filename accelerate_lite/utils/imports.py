"""Checks for optional libraries and accelerator devices (upstream's `is_*_available`).

Device checks ask torch at call time (`torch.cuda.is_available()`, `torch.npu`, `torch.xpu`, ...), so
code that patches those entry points changes the answer. The few checks that are cached (package
metadata look-ups, the vendor-module imports) are cleared together by `clear_import_caches()`.
"""

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import warnings

import torch
from packaging.version import parse as _parse

from .environment import parse_flag_from_env
from .versions import compare_versions, is_torch_version

_CACHED_CHECKS = []


def _cached(function):
    """lru_cache a check and register it so clear_import_caches() reaches it."""
    cached = functools.lru_cache(maxsize=None)(function)
    _CACHED_CHECKS.append(cached)
    return cached


def clear_import_caches() -> None:
    """Forget every cached availability answer, so the next call looks again.

    Call it after installing a package, or after patching torch's device entry points or
    `sys.modules` (the hardware simulators do), when the answers must change.

    Example:
        >>> clear_import_caches()
        >>> is_npu_available()
        False
    """
    for check in _CACHED_CHECKS:
        check.cache_clear()


def is_module_importable(name: str) -> bool:
    """Whether `import name` would find a module (one already in sys.modules counts, even put there by hand)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@_cached
def _is_package_available(module_name: str, *distribution_names: str) -> bool:
    """Whether module_name imports and belongs to an installed distribution (not a stray folder)."""
    if not is_module_importable(module_name):
        return False
    if module_name in sys.modules:
        return True
    for distribution in distribution_names or (module_name,):
        try:
            importlib.metadata.metadata(distribution)
            return True
        except importlib.metadata.PackageNotFoundError:
            continue
    return False


def _installed_version(module_name: str, *distribution_names: str):
    """The version of an installed package, from its metadata or its module's __version__; None if unknown."""
    for distribution in distribution_names or (module_name,):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return getattr(sys.modules.get(module_name), "__version__", None)


def _package_check(module_name: str, *distribution_names: str, minimum: str = None):
    """Build an `is_<package>_available()` check (optionally with a minimum version)."""

    def check() -> bool:
        if not _is_package_available(module_name, *distribution_names):
            return False
        if minimum is None:
            return True
        found = _installed_version(module_name, *distribution_names)
        return found is not None and compare_versions(_parse(str(found)), ">=", minimum)

    check.__doc__ = f"Whether `{module_name}` is installed" + (f" at version >= {minimum}." if minimum else ".")
    return check


is_deepspeed_available = _package_check("deepspeed")
is_msamp_available = _package_check("msamp", "ms-amp")
is_transformer_engine_available = _package_check("transformer_engine", "transformer-engine", "transformer_engine")
is_bnb_available = _package_check("bitsandbytes")
is_4bit_bnb_available = _package_check("bitsandbytes", minimum="0.39.0")
is_8bit_bnb_available = _package_check("bitsandbytes", minimum="0.37.2")
is_safetensors_available = _package_check("safetensors")
is_transformers_available = _package_check("transformers")
is_datasets_available = _package_check("datasets")
is_peft_available = _package_check("peft")
is_timm_available = _package_check("timm")
is_wandb_available = _package_check("wandb")
is_comet_ml_available = _package_check("comet_ml", "comet-ml", "comet_ml")
is_boto3_available = _package_check("boto3")
is_sagemaker_available = _package_check("sagemaker")
is_tqdm_available = _package_check("tqdm")
is_clearml_available = _package_check("clearml")
is_pandas_available = _package_check("pandas")
is_dvclive_available = _package_check("dvclive")
is_mlflow_available = _package_check("mlflow", "mlflow", "mlflow-skinny")
is_pippy_available = _package_check("pippy", "torchpippy", minimum="0.1.1")
for _name, _check in list(globals().items()):  # the checks built above answer to their public names
    if _name.startswith("is_") and getattr(_check, "__name__", None) == "check":
        _check.__name__ = _check.__qualname__ = _name


def is_aim_available() -> bool:
    """Whether `aim` (before 4.0) is installed."""
    found = _is_package_available("aim") and _installed_version("aim")
    return bool(found) and compare_versions(_parse(str(found)), "<", "4.0.0")


def is_tensorboard_available() -> bool:
    """Whether tensorboard or tensorboardX is installed."""
    return _is_package_available("tensorboard") or _is_package_available("tensorboardX")


def is_fp8_available() -> bool:
    """Whether an fp8 backend (MS-AMP or TransformerEngine) is installed."""
    return is_msamp_available() or is_transformer_engine_available()


def is_rich_available() -> bool:
    """Whether rich is installed and enabled with ACCELERATE_ENABLE_RICH (upstream's opt-in)."""
    if not _is_package_available("rich"):
        return False
    if "ACCELERATE_DISABLE_RICH" in os.environ:
        return not parse_flag_from_env("ACCELERATE_DISABLE_RICH", False)
    return parse_flag_from_env("ACCELERATE_ENABLE_RICH", False)


def is_megatron_lm_available() -> bool:
    """Whether Megatron-LM (>= 2.2.0) is installed and enabled with ACCELERATE_USE_MEGATRON_LM."""
    if not parse_flag_from_env("ACCELERATE_USE_MEGATRON_LM", False) or not is_module_importable("megatron"):
        return False
    found = _installed_version("megatron", "megatron-lm", "megatron_core")
    return found is not None and compare_versions(_parse(str(found)), ">=", "2.2.0")


def is_torch_distributed_available() -> bool:
    """Whether this torch build has torch.distributed."""
    return torch.distributed.is_available()


def is_ccl_available() -> bool:
    """Whether Intel's oneCCL bindings for PyTorch are installed."""
    return is_module_importable("torch_ccl") or is_module_importable("oneccl_bindings_for_pytorch")


def get_ccl_version() -> str:
    """The installed oneCCL bindings' version."""
    return importlib.metadata.version("oneccl_bind_pt")


def is_cuda_available() -> bool:
    """Whether CUDA answers, asked through NVML where possible so CUDA itself stays uninitialised."""
    previous = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    try:
        return torch.cuda.is_available()
    finally:
        if previous is None:
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        else:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = previous


def is_mps_available() -> bool:
    """Whether Apple's MPS backend is built into torch and answers."""
    return is_torch_version(">=", "1.12") and torch.backends.mps.is_available() and torch.backends.mps.is_built()


@_cached
def _import_torch_xla() -> bool:
    if not is_module_importable("torch_xla"):
        return False
    try:
        importlib.import_module("torch_xla.core.xla_model")
    except ImportError:
        return False
    return True


def is_torch_xla_available(check_is_tpu: bool = False, check_is_gpu: bool = False) -> bool:
    """Whether torch_xla imports, and optionally whether its runtime device is a TPU or a GPU.

    Raises:
        ValueError: when both check_is_tpu and check_is_gpu are asked.
    """
    if check_is_tpu and check_is_gpu:
        raise ValueError("is_torch_xla_available(): pass at most one of check_is_tpu=True and check_is_gpu=True")
    if not _import_torch_xla():
        return False
    if check_is_tpu or check_is_gpu:
        device_type = _xla_device_type()
        return device_type in ("GPU", "CUDA") if check_is_gpu else device_type == "TPU"
    return True


def _xla_device_type():
    try:
        import torch_xla.runtime as xr

        return xr.device_type()
    except (ImportError, AttributeError, RuntimeError):
        return os.environ.get("PJRT_DEVICE")


@_cached
def is_tpu_available(check_device: bool = True) -> bool:
    """Whether torch_xla is installed and, with check_device, whether an XLA device answers.

    As upstream, False wherever CUDA is available.
    """
    if is_cuda_available() or not _import_torch_xla():
        return False
    if not check_device:
        return True
    import torch_xla.core.xla_model as xm

    try:
        xm.xla_device()
    except RuntimeError:
        return False
    return True


def is_ipex_available() -> bool:
    """Whether intel_extension_for_pytorch is installed in the version matching torch (major.minor)."""
    if not is_module_importable("intel_extension_for_pytorch"):
        return False
    ipex_version = _installed_version("intel_extension_for_pytorch")
    if ipex_version is None:
        return False
    torch_major_minor = _parse(importlib.metadata.version("torch")).release[:2]
    ipex_major_minor = _parse(str(ipex_version)).release[:2]
    if torch_major_minor != ipex_major_minor:
        warnings.warn(
            f"intel_extension_for_pytorch {ipex_version} needs torch {'.'.join(map(str, ipex_major_minor))}.*, "
            f"found torch {importlib.metadata.version('torch')}: install matching versions to use it"
        )
        return False
    return True


@_cached
def is_npu_available(check_device: bool = False) -> bool:
    """Whether an Ascend NPU is usable: torch_npu (or an already registered `torch.npu`) reports one."""
    if is_module_importable("torch_npu"):
        importlib.import_module("torch_npu")
    npu = getattr(torch, "npu", None)
    if npu is None:
        return False
    try:
        if check_device:
            npu.device_count()
        return bool(npu.is_available())
    except RuntimeError:
        return False


@_cached
def is_xpu_available(check_device: bool = False) -> bool:
    """Whether an Intel XPU is usable (ACCELERATE_USE_XPU=false turns the answer off)."""
    if not parse_flag_from_env("ACCELERATE_USE_XPU", default=True):
        return False
    if is_ipex_available():
        importlib.import_module("intel_extension_for_pytorch")
    elif is_torch_version("<", "2.4"):
        return False  # before 2.4, torch.xpu needs the Intel extension
    xpu = getattr(torch, "xpu", None)
    if xpu is None:
        return False
    try:
        if check_device:
            xpu.device_count()
        return bool(xpu.is_available())
    except RuntimeError:
        return False


def is_bf16_available(ignore_tpu: bool = False) -> bool:
    """Whether bf16 is supported here (on a TPU: `not ignore_tpu`; on CUDA/XPU: what the device says)."""
    if is_tpu_available():
        return not ignore_tpu
    if is_cuda_available():
        return torch.cuda.is_bf16_supported()
    if is_xpu_available() and hasattr(torch.xpu, "is_bf16_supported"):
        return bool(torch.xpu.is_bf16_supported())
    return True
