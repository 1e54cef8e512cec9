"""DeepSpeedPlugin: the DeepSpeed settings of a run, merged with an optional DeepSpeed config.

Fields left None come from the ACCELERATE_* variables `accelerate launch` sets (table `DEEPSPEED_ENV`).
With a DeepSpeed config (dict, JSON path or base64), the plugin's values fill its "auto" entries and the
config's concrete values flow back into the plugin; without one, a config is built from the fields.
No deepspeed install is needed for any of this.
"""

import contextlib
import copy
import importlib.util
import os
import warnings
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigurationError
from ..config_fields import (
    EnvDefault,
    apply_env_defaults,
    as_flag,
    as_float_or_none,
    as_int,
    as_int_or_auto,
    as_str,
    check_bool,
    check_choice,
    check_number,
    current_environ,
)
from ..deepspeed import HfDeepSpeedConfig
from ..enums import PrecisionType

ZERO_STAGES = (0, 1, 2, 3)
OFFLOAD_DEVICE_CHOICES = ("none", "cpu", "nvme")

DEEPSPEED_ENV = (
    EnvDefault("gradient_accumulation_steps", "ACCELERATE_GRADIENT_ACCUMULATION_STEPS", as_int_or_auto, "auto"),
    EnvDefault("gradient_clipping", "ACCELERATE_GRADIENT_CLIPPING", as_float_or_none),
    EnvDefault("zero_stage", "ACCELERATE_DEEPSPEED_ZERO_STAGE", as_int, "2"),
    EnvDefault("offload_optimizer_device", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", as_str, "none"),
    EnvDefault("offload_param_device", "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", as_str, "none"),
    EnvDefault("offload_optimizer_nvme_path", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_NVME_PATH", as_str, "none"),
    EnvDefault("offload_param_nvme_path", "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_NVME_PATH", as_str, "none"),
    EnvDefault("zero3_save_16bit_model", "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL", as_flag, "false"),
    EnvDefault("hf_ds_config", "ACCELERATE_DEEPSPEED_CONFIG_FILE", as_str, "none"),
)
# Read after the config is known: its default depends on whether the config is ZeRO-3.
ZERO3_INIT_ENV = EnvDefault("zero3_init_flag", "ACCELERATE_DEEPSPEED_ZERO3_INIT", as_flag)

# Plugin field -> dotted key of the DeepSpeed config it corresponds to.
PLUGIN_TO_CONFIG_KEY = {
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "gradient_clipping": "gradient_clipping",
    "zero_stage": "zero_optimization.stage",
    "offload_optimizer_device": "zero_optimization.offload_optimizer.device",
    "offload_param_device": "zero_optimization.offload_param.device",
    "offload_param_nvme_path": "zero_optimization.offload_param.nvme_path",
    "offload_optimizer_nvme_path": "zero_optimization.offload_optimizer.nvme_path",
    "zero3_save_16bit_model": "zero_optimization.stage3_gather_16bit_weights_on_model_save",
}

# accelerate-config fields that a DeepSpeed config file overrides (ACCELERATE_CONFIG_DS_FIELDS must not name them).
FIELDS_IGNORED_WITH_CONFIG_FILE = (
    "gradient_accumulation_steps", "gradient_clipping", "zero_stage", "offload_optimizer_device",
    "offload_param_device", "offload_param_nvme_path", "offload_optimizer_nvme_path", "zero3_save_16bit_model",
    "mixed_precision",
)


@dataclass
class DeepSpeedPlugin:
    """The DeepSpeed settings of a run.

    Example:
        >>> plugin = DeepSpeedPlugin(hf_ds_config={"train_batch_size": "auto", "zero_optimization": {"stage": 3}})
        >>> plugin.deepspeed_config_process(train_batch_size=32)
        >>> plugin.deepspeed_config["train_batch_size"], plugin.zero_stage
        (32, 3)
    """

    hf_ds_config: Any = None
    gradient_accumulation_steps: int = None
    gradient_clipping: float = None
    zero_stage: int = None
    is_train_batch_min: bool = True
    offload_optimizer_device: str = None
    offload_param_device: str = None
    offload_optimizer_nvme_path: str = None
    offload_param_nvme_path: str = None
    zero3_init_flag: bool = None
    zero3_save_16bit_model: bool = None

    def __post_init__(self):
        apply_env_defaults(self, DEEPSPEED_ENV)
        self._check_fields()
        if self._has_config():
            self._merge_config()
        else:
            self.hf_ds_config = HfDeepSpeedConfig(self._config_from_fields())
        self.deepspeed_config = self.hf_ds_config.config
        self.deepspeed_config["steps_per_print"] = float("inf")  # keeps deepspeed from logging every step
        apply_env_defaults(self, (ZERO3_INIT_ENV,))
        if self.zero3_init_flag is None:
            self.zero3_init_flag = self.hf_ds_config.is_zero3()
        if self.zero3_init_flag and not self.hf_ds_config.is_zero3():
            warnings.warn("DeepSpeed zero3_init_flag only applies to ZeRO stage 3; setting it to False.")
            self.zero3_init_flag = False

    def _check_fields(self):
        owner = "DeepSpeedPlugin"
        if self.gradient_accumulation_steps != "auto":
            check_number(owner, "gradient_accumulation_steps", self.gradient_accumulation_steps, integer=True,
                         minimum=1)
        check_number(owner, "gradient_clipping", self.gradient_clipping, minimum=0, optional=True)
        check_choice(owner, "zero_stage", self.zero_stage, ZERO_STAGES)
        check_choice(owner, "offload_optimizer_device", self.offload_optimizer_device, OFFLOAD_DEVICE_CHOICES)
        check_choice(owner, "offload_param_device", self.offload_param_device, OFFLOAD_DEVICE_CHOICES)
        check_bool(owner, "is_train_batch_min", self.is_train_batch_min)
        check_bool(owner, "zero3_save_16bit_model", self.zero3_save_16bit_model)
        check_bool(owner, "zero3_init_flag", self.zero3_init_flag, optional=True)

    def _has_config(self) -> bool:
        return isinstance(self.hf_ds_config, (dict, HfDeepSpeedConfig, os.PathLike)) or (
            isinstance(self.hf_ds_config, str) and self.hf_ds_config != "none"
        )

    def _config_from_fields(self) -> dict:
        def offload(device, nvme_path):
            return {"device": device, "nvme_path": nvme_path if device == "nvme" else None}

        config = {
            "train_batch_size": "auto",
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "zero_optimization": {
                "stage": self.zero_stage,
                "offload_optimizer": offload(self.offload_optimizer_device, self.offload_optimizer_nvme_path),
                "offload_param": offload(self.offload_param_device, self.offload_param_nvme_path),
                "stage3_gather_16bit_weights_on_model_save": self.zero3_save_16bit_model,
            },
        }
        if self.gradient_clipping:
            config["gradient_clipping"] = self.gradient_clipping
        return config

    def _merge_config(self):
        if not isinstance(self.hf_ds_config, HfDeepSpeedConfig):
            try:
                self.hf_ds_config = HfDeepSpeedConfig(self.hf_ds_config)
            except ConfigurationError as error:
                raise ConfigurationError(f"DeepSpeedPlugin(hf_ds_config=...): {error}") from None
        config = self.hf_ds_config.config
        config.setdefault("gradient_accumulation_steps", 1)
        if "zero_optimization" not in config:
            raise ConfigurationError(
                "DeepSpeedPlugin(hf_ds_config=...): the DeepSpeed config has no 'zero_optimization' section; "
                "add one, e.g. {'zero_optimization': {'stage': 2}}"
            )
        self._check_no_ignored_accelerate_fields()
        values = {key: getattr(self, name) for name, key in PLUGIN_TO_CONFIG_KEY.items()
                  if getattr(self, name) is not None}
        for key in values:
            self.fill_match(key, must_match=False, **values)
        self.hf_ds_config.set_stage_and_offload()
        # The config's concrete values win over the plugin's (they are what DeepSpeed will run with).
        for name, key in PLUGIN_TO_CONFIG_KEY.items():
            value = self.hf_ds_config.get_value(key)
            if value is not None and value != "auto":
                setattr(self, name, value)

    def _check_no_ignored_accelerate_fields(self):
        named = current_environ().get("ACCELERATE_CONFIG_DS_FIELDS", "").split(",")
        clashing = [name for name in named if name in FIELDS_IGNORED_WITH_CONFIG_FILE]
        if clashing:
            raise ConfigurationError(
                f"DeepSpeedPlugin: the accelerate config sets {clashing} next to a DeepSpeed config file, which "
                f"overrides {list(FIELDS_IGNORED_WITH_CONFIG_FILE)}; set them in the DeepSpeed config file instead "
                "and remove them from the accelerate config"
            )

    def fill_match(self, ds_key_long, mismatches=None, must_match=True, **kwargs):
        """Fill an "auto" entry of the config from kwargs, or record a mismatch between config and kwargs.

        Raises:
            ConfigurationError: when the entry is "auto" and kwargs has no value for it.
        """
        mismatches = [] if mismatches is None else mismatches
        node, ds_key = self.hf_ds_config.find_config_node(ds_key_long)
        if node is None:
            return
        if node.get(ds_key) == "auto":
            if ds_key_long not in kwargs:
                raise ConfigurationError(
                    f"DeepSpeed config entry {ds_key_long!r} is 'auto' but no value was passed for it; set it "
                    f"in the DeepSpeed config, or pass {ds_key_long!r} in kwargs"
                )
            node[ds_key] = kwargs[ds_key_long]
            return
        if must_match and ds_key_long in kwargs and node.get(ds_key) is not None:
            if node[ds_key] != kwargs[ds_key_long]:
                mismatches.append(f"- ds {ds_key_long}={node[ds_key]} vs arg {ds_key_long}={kwargs[ds_key_long]}")

    def is_auto(self, ds_key_long):
        """Whether the config entry at a dotted key is "auto"."""
        return self.hf_ds_config.get_value(ds_key_long) == "auto"

    def get_value(self, ds_key_long, default=None):
        """The config value at a dotted key, or default."""
        return self.hf_ds_config.get_value(ds_key_long, default)

    def deepspeed_config_process(self, prefix="", mismatches=None, config=None, must_match=True, **kwargs):
        """Fill every "auto" entry of the DeepSpeed config from kwargs and report config/kwargs mismatches.

        Args:
            prefix: dotted path of `config` inside the whole config ("" at the top).
            mismatches: list collecting mismatch lines across the recursion.
            config: the (sub)config to walk; the plugin's whole config when None.
            must_match: whether a concrete config value differing from kwargs is a mismatch.
            **kwargs: values by dotted key, e.g. {"train_batch_size": 32, "optimizer.params.lr": 1e-3}.

        Raises:
            ConfigurationError: listing every mismatch (at the top level), or naming an "auto" entry
                kwargs does not fill.

        Example:
            >>> plugin = DeepSpeedPlugin(hf_ds_config={"zero_optimization": {"stage": 2}, "train_batch_size": 8})
            >>> plugin.deepspeed_config_process(train_batch_size=16)
            Traceback (most recent call last):
            ...
            accelerate_lite.errors.ConfigurationError: ... - ds train_batch_size=8 vs arg train_batch_size=16 ...
        """
        mismatches = [] if mismatches is None else mismatches
        config = self.deepspeed_config if config is None else config
        for key, value in config.items():
            if isinstance(value, dict):
                self.deepspeed_config_process(prefix=prefix + key + ".", mismatches=mismatches, config=value,
                                              must_match=must_match, **kwargs)
            else:
                self.fill_match(prefix + key, mismatches, must_match=must_match, **kwargs)
        if mismatches and prefix == "":
            lines = "\n".join(mismatches)
            raise ConfigurationError(
                f"these DeepSpeed config values mismatch the values passed:\n{lines}\n"
                "Set them to 'auto' in the DeepSpeed config (the simplest fix), or pass matching values."
            )

    def set_mixed_precision(self, mixed_precision):
        """Turn the config's fp16/bf16 sections on or off for mixed_precision (no/fp16/bf16/fp8)."""
        check_choice("DeepSpeedPlugin.set_mixed_precision", "mixed_precision", mixed_precision, PrecisionType.list())
        config = self.deepspeed_config
        if mixed_precision == "fp16" and "fp16" not in config:
            config["fp16"] = {"enabled": True, "auto_cast": True}
        elif mixed_precision == "bf16" and "bf16" not in config:
            config["bf16"] = {"enabled": True}
        if mixed_precision in ("fp16", "bf16"):
            other = "bf16" if mixed_precision == "fp16" else "fp16"
            if str(config.get(other, {}).get("enabled", "False")).lower() == "true":
                raise ConfigurationError(
                    f"mixed_precision={mixed_precision!r} clashes with '{other}' enabled in the DeepSpeed config; "
                    f"disable '{other}' there or pick mixed_precision={other!r}"
                )
        for dtype in ("fp16", "bf16"):
            config.setdefault(dtype, {"enabled": False})
        values = {"fp16.enabled": mixed_precision == "fp16", "bf16.enabled": mixed_precision == "bf16"}
        self.fill_match("fp16.enabled", must_match=False, **values)
        self.fill_match("bf16.enabled", must_match=False, **values)

    def set_deepspeed_weakref(self):
        """Register the config with transformers (needed for zero3 init); a clear error without transformers."""
        if not self.zero3_init_flag:
            return
        if importlib.util.find_spec("transformers") is None:
            raise ImportError("zero3_init_flag=True needs transformers installed: run `pip install transformers`")
        config = copy.deepcopy(self.deepspeed_config)
        for key in ("gradient_accumulation_steps", "train_micro_batch_size_per_gpu"):
            if config.get(key, "auto") == "auto":
                config[key] = 1
        if config.get("train_batch_size") == "auto":
            del config["train_batch_size"]
        try:
            from transformers.integrations import HfDeepSpeedConfig as TransformersDeepSpeedConfig
        except ImportError:  # transformers < 4.33
            from transformers.deepspeed import HfDeepSpeedConfig as TransformersDeepSpeedConfig
        self.dschf = TransformersDeepSpeedConfig(config)  # transformers keeps only a weakref: hold it here

    def is_zero3_init_enabled(self):
        """Whether models should be built under deepspeed.zero.Init."""
        return self.zero3_init_flag

    @contextlib.contextmanager
    def zero3_init_context_manager(self, enable=False):
        """Temporarily set zero3_init_flag to enable (re-registering with transformers on change)."""
        old = self.zero3_init_flag
        if old == enable:
            yield
            return
        self.zero3_init_flag = enable
        self.dschf = None
        self.set_deepspeed_weakref()
        try:
            yield
        finally:
            self.zero3_init_flag = old
            self.dschf = None
            self.set_deepspeed_weakref()
