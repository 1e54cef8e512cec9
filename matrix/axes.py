"""The six axes of the matrix, as immutable data.

A cell is one value from each axis (see cells.py). Values are small frozen dataclasses so that a
preset, an exclusion rule or a report can name them without importing torch or the suite.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .errors import UnknownAxisValue


@dataclass(frozen=True)
class Operation:
    """One library function whose properties the suite checks.

    Args:
        name: the id used in cell ids (the library's function name).
        group: "collective" (talks to other ranks), "data" (local structure op), "modeling"
            or "checkpoint" (model/state-dict utilities), "random" (RNG state).
        summary: what the property suite checks, in one line (shown by `matrix list`).
    """

    name: str
    group: str
    summary: str


@dataclass(frozen=True)
class Precision:
    """A mixed-precision mode: the value of ACCELERATE_MIXED_PRECISION and the dtype it computes in."""

    name: str
    dtype: str  # the torch dtype tensors flowing through the ops have (fp8 computes matmuls only in fp8)


@dataclass(frozen=True)
class Plugin:
    """A training plugin, as the configuration and environment variables a launcher puts in force.

    `env` is what `accelerate launch` would export for it (the precision and world-size dependent
    parts are added by `plugin_environment`).
    """

    name: str
    label: str
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Backend:
    """A torch.distributed backend and the device kinds (profile kinds) it can drive."""

    name: str
    device_kinds: tuple[str, ...]  # empty: any kind (gloo runs every simulated profile on CPU)


OPERATIONS: tuple[Operation, ...] = (
    Operation("gather", "collective", "every rank gets all ranks' tensors concatenated in rank order; dtypes kept"),
    Operation("gather_object", "collective", "every rank gets the list of all ranks' objects (lists flattened once)"),
    Operation("reduce", "collective", "sum/mean/none across ranks matches the oracle within the precision's tolerance"),
    Operation("broadcast", "collective", "every rank ends with the source rank's tensors; structure and dtypes kept"),
    Operation("broadcast_object_list", "collective", "the list is replaced in place by the source rank's objects"),
    Operation("pad_across_processes", "collective", "each tensor padded on dim to the largest size of any rank"),
    Operation("synchronize_rng_states", "random", "after it, every rank draws the same numbers as rank 0"),
    Operation("wait_for_everyone", "collective", "no rank leaves the barrier before every rank arrived"),
    Operation("concatenate", "data", "a list of same-shaped structures becomes one structure of concatenated tensors"),
    Operation("send_to_device", "data", "every tensor moves to the device, skip_keys untouched, structure kept"),
    Operation("convert_to_fp32", "data", "fp16/bf16 leaves become fp32 with equal values; other leaves untouched"),
    Operation("convert_outputs_to_fp32", "data", "a wrapped forward returns fp32 where it returned half precision"),
    Operation("slice_tensors", "data", "the slice is applied to every tensor leaf"),
    Operation("listify", "data", "tensors become nested Python numbers with the same values"),
    Operation("compute_module_sizes", "modeling", "sizes add up: parent = sum of children, bytes = numel x dtype size"),
    Operation("infer_auto_device_map", "modeling", "no device gets more than its profile memory; every module placed"),
    Operation("shard_checkpoint", "checkpoint", "shards reassemble the state dict; no shard over max size unless a lone tensor"),
    Operation("load_checkpoint_in_model", "checkpoint", "saved then loaded weights are equal, in the requested dtype"),
    Operation("save", "checkpoint", "only the main process writes (unless save_on_each_node); the file loads back"),
)

PRECISIONS: tuple[Precision, ...] = (
    Precision("no", "float32"),
    Precision("fp16", "float16"),
    Precision("bf16", "bfloat16"),
    Precision("fp8", "bfloat16"),
)

PLUGINS: tuple[Plugin, ...] = (
    Plugin("none", "no plugin"),
    Plugin(
        "deepspeed",
        "DeepSpeed ZeRO-2",
        {
            "ACCELERATE_USE_DEEPSPEED": "true",
            "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2",
            "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "none",
            "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": "none",
            "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "1",
            "ACCELERATE_GRADIENT_CLIPPING": "1.0",
        },
    ),
    Plugin(
        "fsdp",
        "FSDP full shard",
        {
            "ACCELERATE_USE_FSDP": "true",
            "FSDP_SHARDING_STRATEGY": "FULL_SHARD",
            "FSDP_BACKWARD_PREFETCH": "BACKWARD_PRE",
            "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
            "FSDP_OFFLOAD_PARAMS": "false",
            "FSDP_USE_ORIG_PARAMS": "true",
            "FSDP_SYNC_MODULE_STATES": "true",
            "FSDP_AUTO_WRAP_POLICY": "NO_WRAP",
        },
    ),
    Plugin(
        "megatron",
        "Megatron-LM",
        {
            "ACCELERATE_USE_MEGATRON_LM": "true",
            "MEGATRON_LM_PP_DEGREE": "1",
            "MEGATRON_LM_NUM_MICRO_BATCHES": "1",
            "MEGATRON_LM_GRADIENT_CLIPPING": "1.0",
            "MEGATRON_LM_RECOMPUTE_ACTIVATIONS": "false",
            "MEGATRON_LM_USE_DISTRIBUTED_OPTIMIZER": "false",
        },
    ),
    Plugin(
        "dynamo",
        "TorchDynamo (eager backend)",
        {
            "ACCELERATE_DYNAMO_BACKEND": "EAGER",
            "ACCELERATE_DYNAMO_MODE": "default",
            "ACCELERATE_DYNAMO_USE_FULLGRAPH": "false",
            "ACCELERATE_DYNAMO_USE_DYNAMIC": "false",
        },
    ),
    Plugin("gradacc", "gradient accumulation (4 steps)", {"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4"}),
)

WORLD_SIZES: tuple[int, ...] = (1, 2, 4, 8)

BACKENDS: tuple[Backend, ...] = (
    Backend("gloo", ()),
    Backend("nccl", ("cuda",)),
    Backend("xla", ("xla",)),
    Backend("hccl", ("npu",)),
    Backend("ccl", ("xpu",)),
)

# The simulators catalog ids, in the order reports show them.
HARDWARE: tuple[str, ...] = ("cpu", "8xA100-80GB", "8xH100", "2xT4", "8xAscend910B", "4xMax1550", "tpu-v4-8", "mps-m2")

AXIS_NAMES: tuple[str, ...] = ("op", "precision", "plugin", "world", "backend", "hardware")


def _index(values, key) -> Mapping:
    return MappingProxyType({key(value): value for value in values})


OPERATION_BY_NAME = _index(OPERATIONS, lambda op: op.name)
PRECISION_BY_NAME = _index(PRECISIONS, lambda p: p.name)
PLUGIN_BY_NAME = _index(PLUGINS, lambda p: p.name)
BACKEND_BY_NAME = _index(BACKENDS, lambda b: b.name)


def axis_values(axis: str) -> tuple:
    """Every value's id on one axis, in canonical order.

    Args:
        axis: one of AXIS_NAMES.

    Returns:
        A tuple of str (ints for "world").

    Raises:
        UnknownAxisValue: axis is not an axis name.

    Example:
        >>> axis_values("precision")
        ('no', 'fp16', 'bf16', 'fp8')
    """
    if axis not in _AXIS_VALUES:
        raise UnknownAxisValue(f"unknown axis {axis!r}; expected one of {', '.join(AXIS_NAMES)}")
    return _AXIS_VALUES[axis]


def check_axis_value(axis: str, value) -> None:
    """Raise UnknownAxisValue naming the valid values when `value` is not on `axis`."""
    if value in _AXIS_SETS.get(axis, ()):
        return
    values = axis_values(axis)
    if value not in values:
        shown = ", ".join(str(v) for v in values)
        raise UnknownAxisValue(f"{axis} {value!r} is not on the {axis} axis; expected one of: {shown}")


_AXIS_VALUES = MappingProxyType({
    "op": tuple(OPERATION_BY_NAME),
    "precision": tuple(PRECISION_BY_NAME),
    "plugin": tuple(PLUGIN_BY_NAME),
    "world": WORLD_SIZES,
    "backend": tuple(BACKEND_BY_NAME),
    "hardware": HARDWARE,
})
_AXIS_SETS = {axis: frozenset(values) for axis, values in _AXIS_VALUES.items()}  # cells are checked often


def plugin_environment(plugin: str, precision: str, world: int) -> dict[str, str]:
    """The environment variables a launcher sets for `plugin` at `precision` on `world` processes.

    Args:
        plugin: a plugin id ("fsdp", ...).
        precision: a precision id ("bf16", ...); exported as ACCELERATE_MIXED_PRECISION.
        world: the number of processes (Megatron's tensor-parallel degree divides it).

    Returns:
        A new dict of str to str.

    Example:
        >>> plugin_environment("fsdp", "bf16", 8)["ACCELERATE_USE_FSDP"]
        'true'
    """
    check_axis_value("plugin", plugin)
    check_axis_value("precision", precision)
    env = dict(PLUGIN_BY_NAME[plugin].env)
    env["ACCELERATE_MIXED_PRECISION"] = precision
    if plugin == "megatron":
        env["MEGATRON_LM_TP_DEGREE"] = str(2 if world % 2 == 0 else 1)
    if plugin == "deepspeed":
        env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] = "false"
    return env
