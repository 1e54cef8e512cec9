"""FullyShardedDataParallelPlugin: the FSDP settings of a run, with FSDP_* environment defaults.

Enum-valued fields accept the torch enum, its name ("SHARD_GRAD_OP") or upstream's 1-based number;
fields still at their default are taken from the FSDP_* variables `accelerate launch` sets (table
`FSDP_ENV`). Constructs without any accelerator: `param_init_fn` then materialises on the CPU.
"""

import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch

from ...errors import ConfigurationError
from ..config_fields import EnvDefault, apply_env_defaults, as_flag, check_bool, current_environ, reject
from ..constants import FSDP_AUTO_WRAP_POLICY, FSDP_BACKWARD_PREFETCH, FSDP_SHARDING_STRATEGY, FSDP_STATE_DICT_TYPE

# Device modules asked, in upstream's order, for the device param_init_fn materialises on.
ACCELERATOR_MODULES = ("npu", "cuda", "xpu")


def _fsdp():
    from torch.distributed.fsdp import fully_sharded_data_parallel

    return fully_sharded_data_parallel


def _enum_from(owner, field, value, enum_class, names):
    """An enum member from a member, a name in `names`, or its 1-based position there (as a str or int)."""
    if isinstance(value, enum_class):
        return value
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, str) and value.upper() in names:
        return enum_class(names.index(value.upper()) + 1)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= len(names):
        return enum_class(value)
    choices = ", ".join(repr(name) for name in names)
    raise reject(owner, field, value, f"a {enum_class.__name__}, one of {choices}, or 1..{len(names)}")


def _sharding_strategy(raw):
    return _enum_from("FullyShardedDataParallelPlugin", "sharding_strategy", raw, _fsdp().ShardingStrategy,
                      FSDP_SHARDING_STRATEGY)


def _backward_prefetch(raw):
    if isinstance(raw, str) and raw.upper() == "NO_PREFETCH":
        return None
    return _enum_from("FullyShardedDataParallelPlugin", "backward_prefetch", raw, _fsdp().BackwardPrefetch,
                      FSDP_BACKWARD_PREFETCH[:-1])


def _state_dict_type(raw):
    return _enum_from("FullyShardedDataParallelPlugin", "state_dict_type", raw, _fsdp().StateDictType,
                      FSDP_STATE_DICT_TYPE)


def _cpu_offload(raw):
    return _fsdp().CPUOffload(offload_params=as_flag(raw))


FSDP_ENV = (
    EnvDefault("sharding_strategy", "FSDP_SHARDING_STRATEGY", _sharding_strategy, "FULL_SHARD"),
    EnvDefault("cpu_offload", "FSDP_OFFLOAD_PARAMS", _cpu_offload, "False"),
    EnvDefault("backward_prefetch", "FSDP_BACKWARD_PREFETCH", _backward_prefetch, "NO_PREFETCH"),
    EnvDefault("state_dict_type", "FSDP_STATE_DICT_TYPE", _state_dict_type, "FULL_STATE_DICT"),
    EnvDefault("use_orig_params", "FSDP_USE_ORIG_PARAMS", as_flag),
    EnvDefault("sync_module_states", "FSDP_SYNC_MODULE_STATES", as_flag),
    EnvDefault("forward_prefetch", "FSDP_FORWARD_PREFETCH", as_flag),
    EnvDefault("activation_checkpointing", "FSDP_ACTIVATION_CHECKPOINTING", as_flag),
)


def current_accelerator_device() -> torch.device:
    """The current npu/cuda/xpu device, or the CPU when none is available."""
    for name in ACCELERATOR_MODULES:
        module = getattr(torch, name, None)
        if module is not None and module.is_available():
            return torch.device(name, module.current_device())
    return torch.device("cpu")


@dataclass
class FullyShardedDataParallelPlugin:
    """The FSDP settings of a run.

    The boolean fields with a non-None default (use_orig_params, sync_module_states, forward_prefetch,
    activation_checkpointing) take their FSDP_* variable when it is set and the field is at its default.
    (Upstream 0.27.2 lets the variable, or its absence, override even an explicit argument, so there
    `use_orig_params` silently becomes False; here the signature's default holds.)

    Example:
        >>> with patch_environment(FSDP_SHARDING_STRATEGY="SHARD_GRAD_OP"):
        ...     FullyShardedDataParallelPlugin().sharding_strategy
        <ShardingStrategy.SHARD_GRAD_OP: 2>
    """

    sharding_strategy: Any = None
    backward_prefetch: Any = None
    mixed_precision_policy: Any = None
    auto_wrap_policy: Optional[Callable] = None
    cpu_offload: Any = None
    ignored_modules: Optional[Iterable[torch.nn.Module]] = None
    state_dict_type: Any = None
    state_dict_config: Any = None
    optim_state_dict_config: Any = None
    limit_all_gathers: bool = True
    use_orig_params: bool = True
    param_init_fn: Optional[Callable[[torch.nn.Module], None]] = None
    sync_module_states: bool = True
    forward_prefetch: bool = False
    activation_checkpointing: bool = False

    def __post_init__(self):
        backward_prefetch_given = self.backward_prefetch is not None
        apply_env_defaults(self, FSDP_ENV)
        self.sharding_strategy = _sharding_strategy(self.sharding_strategy)
        if backward_prefetch_given:
            self.backward_prefetch = _backward_prefetch(self.backward_prefetch)
        if not isinstance(self.cpu_offload, _fsdp().CPUOffload):
            raise reject("FullyShardedDataParallelPlugin", "cpu_offload", self.cpu_offload,
                         "a torch.distributed.fsdp.CPUOffload")
        for name in ("limit_all_gathers", "use_orig_params", "sync_module_states", "forward_prefetch",
                     "activation_checkpointing"):
            check_bool("FullyShardedDataParallelPlugin", name, getattr(self, name))
        self.set_state_dict_type(self.state_dict_type)
        if self.sync_module_states and self.param_init_fn is None:
            device = current_accelerator_device()
            self.param_init_fn = lambda module: module.to_empty(device=device, recurse=False)

    @staticmethod
    def get_module_class_from_name(module, name):
        """Return the class called `name` among module and its submodules (depth first), or None.

        Example:
            >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
            >>> FullyShardedDataParallelPlugin.get_module_class_from_name(model, "ReLU")
            <class 'torch.nn.modules.activation.ReLU'>
        """
        for submodule in module.modules():
            if type(submodule).__name__ == name:
                return type(submodule)
        return None

    def set_auto_wrap_policy(self, model):
        """Build auto_wrap_policy from FSDP_AUTO_WRAP_POLICY (transformer-layer or size based) when unset."""
        if self.auto_wrap_policy is not None:
            return
        from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy, transformer_auto_wrap_policy

        environ = current_environ()
        policy = environ.get("FSDP_AUTO_WRAP_POLICY", "NO_WRAP")
        if policy not in FSDP_AUTO_WRAP_POLICY:
            raise ConfigurationError(
                f"FSDP_AUTO_WRAP_POLICY={policy!r}: expected one of {FSDP_AUTO_WRAP_POLICY}")
        if policy == "TRANSFORMER_BASED_WRAP":
            default_names = ",".join(getattr(model, "_no_split_modules", None) or [])
            names = environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", default_names).split(",")
            classes = set()
            for class_name in names:
                layer_class = self.get_module_class_from_name(model, class_name)
                if layer_class is None:
                    present = sorted({type(sub).__name__ for sub in model.modules()})
                    raise ConfigurationError(
                        f"FSDP_TRANSFORMER_CLS_TO_WRAP names {class_name!r}, which is not a class in the model; "
                        f"classes present: {present}")
                classes.add(layer_class)
            self.auto_wrap_policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=classes)
        elif policy == "SIZE_BASED_WRAP":
            min_num_params = int(environ.get("FSDP_MIN_NUM_PARAMS", 0))
            if min_num_params > 0:
                self.auto_wrap_policy = functools.partial(size_based_auto_wrap_policy,
                                                          min_num_params=min_num_params)

    def set_mixed_precision(self, mixed_precision):
        """Set mixed_precision_policy (param, reduce and buffer dtypes) for "fp16" or "bf16" unless already set."""
        dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
        if mixed_precision not in dtypes:
            raise reject("FullyShardedDataParallelPlugin.set_mixed_precision", "mixed_precision", mixed_precision,
                         "'fp16' or 'bf16'")
        dtype = dtypes[mixed_precision]
        if self.mixed_precision_policy is None:
            self.mixed_precision_policy = _fsdp().MixedPrecision(param_dtype=dtype, reduce_dtype=dtype,
                                                                 buffer_dtype=dtype)

    def set_state_dict_type(self, state_dict_type_policy):
        """Set state_dict_type (enum, name or number); full state dicts get offload-to-CPU, rank-0-only configs."""
        fsdp = _fsdp()
        self.state_dict_type = _state_dict_type(state_dict_type_policy)
        if self.state_dict_type == fsdp.StateDictType.FULL_STATE_DICT:
            if self.state_dict_config is None:
                self.state_dict_config = fsdp.FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
            if self.optim_state_dict_config is None:
                self.optim_state_dict_config = fsdp.FullOptimStateDictConfig(offload_to_cpu=True, rank0_only=True)
