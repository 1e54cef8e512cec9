"""write_basic_config: write an accelerate config for this machine's devices (unless one exists)."""

from pathlib import Path

import torch

from ...utils.config_fields import check_choice
from ...utils.enums import PrecisionType
from ...utils.imports import is_npu_available, is_xpu_available
from .config_args import ClusterConfig, default_json_config_file, load_config_from_file  # noqa: F401

description = "Create a default config file for accelerate_lite with only a few flags set."


def detect_devices(use_xpu: bool = False):
    """(device kind, count) of this machine, in upstream's order: cuda, xpu (only when use_xpu), npu, else cpu."""
    if torch.cuda.is_available():
        return "cuda", torch.cuda.device_count()
    if use_xpu and is_xpu_available():
        return "xpu", torch.xpu.device_count()
    if is_npu_available():
        return "npu", torch.npu.device_count()
    return "cpu", 1


# Device kind -> the distributed type of a config with more than one such device.
MULTI_DEVICE_TYPES = {"cuda": "MULTI_GPU", "xpu": "MULTI_XPU", "npu": "MULTI_NPU"}


def basic_config(mixed_precision: str = "no", use_xpu: bool = False) -> ClusterConfig:
    """The config write_basic_config writes for this machine, without writing it."""
    mixed_precision = check_choice("write_basic_config", "mixed_precision", mixed_precision, PrecisionType.list(),
                                   normalize=str.lower)
    kind, count = detect_devices(use_xpu)
    multi = kind != "cpu" and count > 1
    return ClusterConfig(
        compute_environment="LOCAL_MACHINE",
        mixed_precision=mixed_precision,
        num_processes=count,
        use_cpu=kind == "cpu",
        distributed_type=MULTI_DEVICE_TYPES[kind] if multi else "NO",
        debug=False,
    )


def write_basic_config(mixed_precision="no", save_location: str = default_json_config_file, use_xpu: bool = False):
    """Write a basic config for this machine (GPU count, XPU, NPU, or CPU only) unless one exists there.

    Args:
        mixed_precision: "no", "fp16", "bf16" or "fp8" (any case).
        save_location: the file to write; by default <HF_HOME or ~/.cache/huggingface>/accelerate/default_config.yaml
            (fixed when this module is imported, as upstream's is).
        use_xpu: count Intel XPUs when present (they are skipped otherwise).

    Returns:
        The Path written, or False when a config already exists there (it is left untouched).

    Raises:
        ConfigurationError: for any other mixed_precision, naming the allowed values.

    Example:
        >>> write_basic_config(mixed_precision="bf16", save_location="/tmp/acc/default_config.yaml")
        PosixPath('/tmp/acc/default_config.yaml')
    """
    config = basic_config(mixed_precision, use_xpu=use_xpu)
    path = Path(save_location)
    if path.exists():
        print(f"Configuration already exists at {save_location}, will not override. Pass a different "
              "save_location, or delete the file first.")
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    config.to_json_file(path)
    return path
