"""Plain configuration dataclasses: ProjectConfiguration, BnbQuantizationConfig, TensorInformation."""

import os
import warnings
from dataclasses import dataclass
from typing import List

import torch

from .config_fields import check_bool, check_choice, check_instance, check_number, reject
from .enums import CustomDtype

# The dtype names BnbQuantizationConfig accepts for bnb_4bit_compute_dtype and torch_dtype.
DTYPE_NAMES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BNB_4BIT_QUANT_TYPES = ("fp4", "nf4")


@dataclass
class TensorInformation:
    """The shape and dtype of a tensor, sent ahead of it between processes."""

    shape: torch.Size
    dtype: torch.dtype


@dataclass
class ProjectConfiguration:
    """Where a project saves its state and logs, and how checkpoints are named and pruned.

    Example:
        >>> ProjectConfiguration(project_dir="runs/a").logging_dir
        'runs/a'
    """

    project_dir: str = None
    logging_dir: str = None
    automatic_checkpoint_naming: bool = False
    total_limit: int = None
    iteration: int = 0
    save_on_each_node: bool = False

    def __post_init__(self):
        owner = "ProjectConfiguration"
        for name in ("project_dir", "logging_dir"):
            check_instance(owner, name, getattr(self, name), (str, os.PathLike), "a path (str or os.PathLike)",
                           optional=True)
        check_bool(owner, "automatic_checkpoint_naming", self.automatic_checkpoint_naming)
        check_number(owner, "total_limit", self.total_limit, integer=True, minimum=1, optional=True)
        check_number(owner, "iteration", self.iteration, integer=True, minimum=0)
        check_bool(owner, "save_on_each_node", self.save_on_each_node)
        self.set_directories(self.project_dir)

    def set_directories(self, project_dir: str = None):
        """Set project_dir, and logging_dir to it as well unless logging_dir was given.

        Example:
            >>> config = ProjectConfiguration()
            >>> config.set_directories("runs/b")
            >>> config.project_dir, config.logging_dir
            ('runs/b', 'runs/b')
        """
        self.project_dir = project_dir
        if self.logging_dir is None:
            self.logging_dir = project_dir


def _dtype(owner, field, value):
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value in DTYPE_NAMES:
        return DTYPE_NAMES[value]
    raise reject(owner, field, value, "a torch.dtype or one of 'fp32', 'fp16', 'bf16'")


@dataclass
class BnbQuantizationConfig:
    """bitsandbytes quantization settings: exactly one of 8-bit or 4-bit, and how to quantize.

    Dtype names ("fp32", "fp16", "bf16") become torch dtypes; `target_dtype` is torch.int8 for 8-bit
    and CustomDtype.INT4 for 4-bit; torch_dtype defaults to fp16 (8-bit) or the compute dtype (4-bit).

    Example:
        >>> BnbQuantizationConfig(load_in_4bit=True, bnb_4bit_compute_dtype="bf16").torch_dtype
        torch.bfloat16
    """

    load_in_8bit: bool = False
    llm_int8_threshold: float = 6.0
    load_in_4bit: bool = False
    bnb_4bit_quant_type: str = "fp4"
    bnb_4bit_use_double_quant: bool = False
    bnb_4bit_compute_dtype: str = "fp16"
    torch_dtype: torch.dtype = None
    skip_modules: List[str] = None
    keep_in_fp32_modules: List[str] = None

    def __post_init__(self):
        owner = "BnbQuantizationConfig"
        check_bool(owner, "load_in_8bit", self.load_in_8bit)
        check_bool(owner, "load_in_4bit", self.load_in_4bit)
        if self.load_in_4bit == self.load_in_8bit:
            raise reject(owner, "load_in_4bit", self.load_in_4bit,
                         f"exactly one of load_in_4bit and load_in_8bit to be True (load_in_8bit={self.load_in_8bit})")
        check_number(owner, "llm_int8_threshold", self.llm_int8_threshold)
        check_choice(owner, "bnb_4bit_quant_type", self.bnb_4bit_quant_type, BNB_4BIT_QUANT_TYPES)
        check_bool(owner, "bnb_4bit_use_double_quant", self.bnb_4bit_use_double_quant)
        self.bnb_4bit_compute_dtype = _dtype(owner, "bnb_4bit_compute_dtype", self.bnb_4bit_compute_dtype)
        for name in ("skip_modules", "keep_in_fp32_modules"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
                raise reject(owner, name, value, "a list of module names (str) or None")
        self.target_dtype = CustomDtype.INT4 if self.load_in_4bit else torch.int8
        if self.load_in_4bit and self.llm_int8_threshold != 6.0:
            warnings.warn("llm_int8_threshold only applies to 8-bit quantization; it is ignored with load_in_4bit.")
        if self.torch_dtype is None:
            self.torch_dtype = torch.float16 if self.load_in_8bit else self.bnb_4bit_compute_dtype
        self.torch_dtype = _dtype(owner, "torch_dtype", self.torch_dtype)
