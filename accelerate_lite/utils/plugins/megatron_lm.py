"""MegatronLMPlugin: tensor/pipeline/sequence parallel settings for Megatron-LM, with MEGATRON_LM_* defaults.

Constructing the plugin needs no Megatron-LM install; it builds `megatron_lm_default_args`, the argument
dict handed to Megatron-LM's initialisation, and the `set_*` methods add to it as the Accelerator learns
the model, optimizer, scheduler and batch sizes.
"""

import argparse
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from ...errors import ConfigurationError
from ..config_fields import (
    EnvDefault,
    apply_env_defaults,
    as_flag,
    as_float,
    as_int,
    check_bool,
    check_choice,
    check_number,
    reject,
)

WEIGHT_DECAY_INCR_STYLES = ("constant", "linear", "cosine")
LR_DECAY_STYLES = ("constant", "linear", "cosine", "inverse-square-root")

MEGATRON_LM_ENV = (
    EnvDefault("tp_degree", "MEGATRON_LM_TP_DEGREE", as_int, "1"),
    EnvDefault("pp_degree", "MEGATRON_LM_PP_DEGREE", as_int, "1"),
    EnvDefault("num_micro_batches", "MEGATRON_LM_NUM_MICRO_BATCHES", as_int, "1"),
    EnvDefault("gradient_clipping", "MEGATRON_LM_GRADIENT_CLIPPING", as_float, "1.0"),
    EnvDefault("recompute_activations", "MEGATRON_LM_RECOMPUTE_ACTIVATIONS", as_flag, "False"),
    EnvDefault("use_distributed_optimizer", "MEGATRON_LM_USE_DISTRIBUTED_OPTIMIZER", as_flag, "False"),
    EnvDefault("sequence_parallelism", "MEGATRON_LM_SEQUENCE_PARALLELISM", as_flag, "False"),
)


@dataclass(frozen=True)
class _ModelShape:
    """Where a model family keeps its size in `model.config` (attribute names), and how it is trained."""

    name: str
    num_layers: str
    hidden_size: str
    num_attention_heads: str
    max_position_embeddings: str


# model_type substring -> how to read its network size (Megatron-LM supports these three families).
MODEL_SHAPES = {
    "megatron-bert": _ModelShape("bert", "num_hidden_layers", "hidden_size", "num_attention_heads",
                                 "max_position_embeddings"),
    "gpt2": _ModelShape("gpt", "n_layer", "n_embd", "n_head", "n_positions"),
    "t5": _ModelShape("t5", "num_layers", "d_model", "num_heads", "n_positions"),
}


@dataclass
class MegatronLMPlugin:
    """Megatron-LM settings: tensor, pipeline, sequence and data parallelism, recomputation, schedules.

    Example:
        >>> plugin = MegatronLMPlugin(tp_degree=2, pp_degree=2)
        >>> plugin.megatron_lm_default_args["tensor_model_parallel_size"], plugin.DDP_impl
        (2, 'local')
    """

    tp_degree: int = None
    pp_degree: int = None
    num_micro_batches: int = None
    gradient_clipping: float = None
    sequence_parallelism: bool = None
    recompute_activations: bool = None
    use_distributed_optimizer: bool = None
    pipeline_model_parallel_split_rank: int = None
    num_layers_per_virtual_pipeline_stage: int = None
    is_train_batch_min: bool = True
    train_iters: int = None
    train_samples: int = None
    weight_decay_incr_style: str = "constant"
    start_weight_decay: float = None
    end_weight_decay: float = None
    lr_decay_style: str = "linear"
    lr_decay_iters: int = None
    lr_decay_samples: int = None
    lr_warmup_iters: int = None
    lr_warmup_samples: int = None
    lr_warmup_fraction: float = None
    min_lr: float = 0
    consumed_samples: List[int] = None
    no_wd_decay_cond: Optional[Callable] = None
    scale_lr_cond: Optional[Callable] = None
    lr_mult: float = 1.0
    megatron_dataset_flag: bool = False
    seq_length: int = None
    encoder_seq_length: int = None
    decoder_seq_length: int = None
    tensorboard_dir: str = None
    set_all_logging_options: bool = False
    eval_iters: int = 100
    eval_interval: int = 1000
    return_logits: bool = False
    custom_train_step_class: Optional[Any] = None
    custom_train_step_kwargs: Optional[Dict[str, Any]] = None
    custom_model_provider_function: Optional[Callable] = None
    custom_prepare_model_function: Optional[Callable] = None
    other_megatron_args: Optional[Dict[str, Any]] = None

    def __post_init__(self):
        apply_env_defaults(self, MEGATRON_LM_ENV)
        self._check_fields()
        self.DDP_impl = "local" if self.pp_degree > 1 or self.use_distributed_optimizer else "torch"
        if self.consumed_samples is not None:
            # One counter per dataloader (train, eval, test): missing ones start at 0.
            self.consumed_samples = list(self.consumed_samples) + [0] * (3 - len(self.consumed_samples))
        self.megatron_lm_default_args = {
            "tensor_model_parallel_size": self.tp_degree,
            "pipeline_model_parallel_size": self.pp_degree,
            "pipeline_model_parallel_split_rank": self.pipeline_model_parallel_split_rank,
            "num_layers_per_virtual_pipeline_stage": self.num_layers_per_virtual_pipeline_stage,
            "DDP_impl": self.DDP_impl,
            "use_distributed_optimizer": self.use_distributed_optimizer,
            "sequence_parallel": self.sequence_parallelism,
            "clip_grad": self.gradient_clipping,
            "num_micro_batches": self.num_micro_batches,
            "consumed_samples": self.consumed_samples,
            "no_wd_decay_cond": self.no_wd_decay_cond,
            "scale_lr_cond": self.scale_lr_cond,
            "lr_mult": self.lr_mult,
            "megatron_dataset_flag": self.megatron_dataset_flag,
            "eval_iters": self.eval_iters,
            "eval_interval": self.eval_interval,
        }
        if self.recompute_activations:
            self.megatron_lm_default_args["recompute_granularity"] = "selective"
        if self.tensorboard_dir is not None:
            self.megatron_lm_default_args["tensorboard_dir"] = self.tensorboard_dir
            if self.set_all_logging_options:
                self.set_tensorboard_logging_options()
        if self.other_megatron_args is not None:
            self.megatron_lm_default_args.update(self.other_megatron_args)

    def _check_fields(self):
        owner = "MegatronLMPlugin"
        for name in ("tp_degree", "pp_degree", "num_micro_batches", "eval_iters", "eval_interval"):
            check_number(owner, name, getattr(self, name), integer=True, minimum=1)
        check_number(owner, "gradient_clipping", self.gradient_clipping, minimum=0)
        for name in ("sequence_parallelism", "recompute_activations", "use_distributed_optimizer",
                     "is_train_batch_min", "megatron_dataset_flag", "set_all_logging_options", "return_logits"):
            check_bool(owner, name, getattr(self, name))
        check_choice(owner, "weight_decay_incr_style", self.weight_decay_incr_style, WEIGHT_DECAY_INCR_STYLES)
        check_choice(owner, "lr_decay_style", self.lr_decay_style, LR_DECAY_STYLES)
        if self.consumed_samples is not None and (
                not isinstance(self.consumed_samples, (list, tuple)) or not 1 <= len(self.consumed_samples) <= 3):
            raise reject(owner, "consumed_samples", self.consumed_samples, "a list of 1 to 3 ints or None")

    def set_network_size_args(self, model, batch_data=None):
        """Record the model's size (layers, hidden size, heads, positions, vocab) and sequence lengths.

        Raises:
            ConfigurationError: for a model that is not BERT (megatron-bert), GPT-2 or T5.
        """
        model_type = model.config.model_type.lower()
        family = next((key for key in MODEL_SHAPES if key in model_type), None)
        if family is None:
            raise ConfigurationError(
                f"Megatron-LM supports BERT (megatron-bert), GPT-2 and T5 models; got model_type={model_type!r}")
        shape, config, args = MODEL_SHAPES[family], model.config, self.megatron_lm_default_args
        max_positions = getattr(config, shape.max_position_embeddings, 1024)
        if shape.name == "t5":
            if self.encoder_seq_length is None:
                self.encoder_seq_length = batch_data["input_ids"].shape[1] if batch_data else max_positions
            if self.decoder_seq_length is None:
                self.decoder_seq_length = batch_data["labels"].shape[1] if batch_data else max_positions
            args["encoder_seq_length"] = self.encoder_seq_length
            args["decoder_seq_length"] = self.decoder_seq_length
        else:
            override = self.encoder_seq_length if shape.name == "bert" else self.decoder_seq_length
            if self.seq_length is not None and override is not None:
                warnings.warn(f"Both seq_length and the {shape.name} specific sequence length are set; using the latter.")
            if override is not None:
                self.seq_length = override
            elif self.seq_length is None:
                self.seq_length = batch_data["input_ids"].shape[1] if batch_data else max_positions
            args["seq_length"] = self.seq_length
        if shape.name == "gpt":
            args["return_logits"] = self.return_logits
            args["tokenizer_type"] = "GPT2BPETokenizer"
        if shape.name == "bert":
            args["num_labels"] = config.num_labels
        args.update({
            "model_type_name": shape.name,
            "num_layers": getattr(config, shape.num_layers),
            "hidden_size": getattr(config, shape.hidden_size),
            "num_attention_heads": getattr(config, shape.num_attention_heads),
            "max_position_embeddings": max_positions,
            "pretraining_flag": shape.name != "bert" or "maskedlm" in type(model).__name__.lower(),
            "orig_vocab_size": config.vocab_size,
            "model_return_dict": config.return_dict,
        })

    def set_mixed_precision(self, mixed_precision):
        """Switch Megatron-LM to fp16 or bf16 (bf16 needs the local DDP implementation)."""
        if mixed_precision == "fp16":
            self.megatron_lm_default_args["fp16"] = True
        elif mixed_precision == "bf16":
            self.megatron_lm_default_args["bf16"] = True
            self.DDP_impl = "local"
            self.megatron_lm_default_args["DDP_impl"] = self.DDP_impl

    def set_training_args(self, micro_batch_size, dp_degree):
        """Record data-parallel size, micro batch size and the resulting global batch size."""
        self.data_parallel_size = dp_degree
        self.micro_batch_size = micro_batch_size
        self.global_batch_size = dp_degree * micro_batch_size * self.num_micro_batches
        self.megatron_lm_default_args.update({
            "data_parallel_size": self.data_parallel_size,
            "micro_batch_size": self.micro_batch_size,
            "global_batch_size": self.global_batch_size,
        })

    def set_optimizer_type(self, optimizer):
        """Record the optimizer (Adam-like or SGD) and its hyper-parameters.

        Raises:
            ConfigurationError: for any other optimizer.
        """
        name, defaults, args = type(optimizer).__name__.lower(), optimizer.defaults, self.megatron_lm_default_args
        if "adam" in name:
            args.update({"optimizer": "adam", "adam_beta1": defaults["betas"][0], "adam_beta2": defaults["betas"][1],
                         "adam_eps": defaults["eps"]})
        elif "sgd" in name:
            args.update({"optimizer": "sgd", "sgd_momentum": defaults["momentum"]})
        else:
            raise ConfigurationError(f"Megatron-LM supports Adam-like and SGD optimizers; got {type(optimizer).__name__}")
        args["lr"] = defaults["lr"]
        args["weight_decay"] = defaults["weight_decay"]

    def set_scheduler_args(self, scheduler):
        """Record the schedule; iterations come from the scheduler unless train_iters/lr_warmup_iters are set."""
        dp_degree = self.megatron_lm_default_args["data_parallel_size"]
        if self.train_iters is None:
            self.train_iters = scheduler.total_num_steps // dp_degree
            if self.train_samples is not None:
                self.train_samples = None
                warnings.warn("Ignoring train_samples: train_iters comes from the scheduler.")
        if self.lr_warmup_iters is None:
            self.lr_warmup_iters = scheduler.warmup_num_steps // dp_degree
            if self.lr_warmup_samples is not None:
                warnings.warn("Ignoring lr_warmup_samples: lr_warmup_iters comes from the scheduler.")
            self.lr_warmup_samples = 0
        for name in ("train_iters", "lr_warmup_iters", "train_samples", "lr_warmup_samples", "lr_decay_iters",
                     "lr_decay_samples", "lr_warmup_fraction", "lr_decay_style", "weight_decay_incr_style",
                     "start_weight_decay", "end_weight_decay", "min_lr"):
            self.megatron_lm_default_args[name] = getattr(self, name)

    def set_tensorboard_logging_options(self):
        """Turn on every log_* option Megatron-LM's argument parser knows (needs megatron installed)."""
        try:
            from megatron.arguments import _add_logging_args
        except ImportError as error:
            raise ImportError(
                "set_all_logging_options=True needs Megatron-LM importable as `megatron`; install it or "
                "leave set_all_logging_options=False") from error
        parsed, _ = _add_logging_args(argparse.ArgumentParser()).parse_known_args()
        self.dataset_args = vars(parsed)
        for key in self.dataset_args:
            if key.startswith("log_"):
                self.megatron_lm_default_args[key] = True
            elif key.startswith("no_log_"):
                self.megatron_lm_default_args[key.replace("no_", "")] = True
