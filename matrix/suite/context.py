"""A cell's context inside a rank: its plugin/precision environment, and the checks that it took effect.

Runs inside a rank of a world that already applied the cell's hardware profile. `cell_context`
exports what the launcher would for the plugin and precision, resets PartialState so it re-reads
everything, and hands the property a `Context`. `check_preconditions` is the first property of
every cell: PartialState reports what the profile and world imply, the plugin reads its
configuration from the environment, and the precision is usable on this hardware.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..cells import Cell
from .compare import fail


@dataclass
class Context:
    """What a property needs to know about where it runs."""

    cell: Cell
    rank: int
    world: int
    dtype: torch.dtype
    profile: object  # simulators.HardwareProfile
    state: object  # accelerate_lite.PartialState
    shared_dir: str  # the same temporary directory on every rank, removed after the cell
    notes_dir: str | None = None  # where each rank notes its first error (read by the controller on a hang)
    real: bool = False  # real devices: inputs go to the rank's device (NCCL needs CUDA tensors)

    @property
    def is_half(self) -> bool:
        return self.dtype in (torch.float16, torch.bfloat16)

    def local(self, structure):
        """This rank's input where the operation needs it: on the rank's real device, or as drawn
        (CPU) in a simulated world, whose profile only changes what the code sees."""
        if not self.real:
            return structure
        from .compare import tree_map

        return tree_map(lambda t: t.to(self.state.device), structure)


def _get_profile(name: str):
    from ..exclusions import get_profile

    return get_profile(name)


def _shared_directory(rank: int) -> str:
    """A temporary directory created by rank 0 whose path every rank receives."""
    box = [tempfile.mkdtemp(prefix="matrix-cell-") if rank == 0 else None]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def cell_context(cell: Cell, notes_dir: str | None = None, real: bool = False):
    """Put the cell's plugin and precision environment in force and yield a Context.

    Raises:
        PropertyFailed: the library has no PartialState/patch_environment to set it up with.
    """
    from accelerate_lite.utils import patch_environment

    try:
        from accelerate_lite import PartialState
    except ImportError:
        fail("accelerate_lite.PartialState is missing: the state module has not landed")

    rank = dist.get_rank() if dist.is_initialized() else 0
    from .. import axes

    dtype = getattr(torch, axes.PRECISION_BY_NAME[cell.precision].dtype)
    shared = _shared_directory(rank)
    try:
        with patch_environment(**cell.environment()):
            PartialState._reset_state()
            state = PartialState()
            yield Context(cell, rank, cell.world, dtype, _get_profile(cell.hardware), state, shared, notes_dir, real)
    finally:
        PartialState._reset_state()
        if rank == 0:
            if dist.is_initialized() and dist.get_world_size() > 1:
                dist.barrier()  # no rank may still be reading the directory
            shutil.rmtree(shared, ignore_errors=True)
        elif dist.is_initialized():
            dist.barrier()


def expected_distributed_types(ctx: Context) -> tuple[str, ...]:
    """What PartialState may report: DeepSpeed wins where the launcher says so (not on TPU, which
    always reports TPU); otherwise the profile's multi-process type, or NO/it for a single process."""
    hardware = str(ctx.profile.distributed_type)
    if ctx.profile.kind == "xla":
        return ("TPU",)
    if ctx.cell.plugin == "deepspeed":
        return ("DEEPSPEED",)
    return (hardware,) if ctx.world > 1 else ("NO", hardware)


def check_state(ctx: Context) -> None:
    """PartialState reports the world and the profile's device and distributed type."""
    state = ctx.state
    if state.num_processes != ctx.world:
        fail(f"PartialState.num_processes is {state.num_processes}, expected {ctx.world} (the world size)")
    if state.process_index != ctx.rank:
        fail(f"PartialState.process_index is {state.process_index}, expected this rank, {ctx.rank}")
    expected = expected_distributed_types(ctx)
    if str(state.distributed_type) not in expected:
        fail(f"PartialState.distributed_type is {state.distributed_type}, expected {' or '.join(expected)} "
             f"for {ctx.world} process(es) on {ctx.profile.name} with plugin {ctx.cell.plugin}")
    device_type = getattr(ctx.profile, "device_type", ctx.profile.kind)
    if torch.device(state.device).type != device_type:
        fail(f"PartialState.device is {state.device}, expected a {device_type} device on {ctx.profile.name}")


def check_precision(ctx: Context) -> None:
    """The cell's mixed precision is usable here, as an Accelerator would require."""
    from accelerate_lite import utils

    precision = ctx.cell.precision
    if os.environ.get("ACCELERATE_MIXED_PRECISION") != precision:
        fail(f"ACCELERATE_MIXED_PRECISION is {os.environ.get('ACCELERATE_MIXED_PRECISION')!r}, expected {precision!r}")
    if precision == "bf16" and not utils.is_bf16_available():
        fail(f"bf16 requested but is_bf16_available() is False on {ctx.profile.name}")
    if precision == "fp8":
        if not utils.is_fp8_available():
            fail("fp8 requested but is_fp8_available() is False: install transformer-engine or ms-amp")
        capability = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
        if capability is None or tuple(capability) < (8, 9):
            fail(f"fp8 requested but the device capability is {capability}; fp8 needs >= (8, 9)")


def _plugin_class(name: str):
    from accelerate_lite import utils

    cls = getattr(utils, name, None)
    if cls is None:
        fail(f"accelerate_lite.utils.{name} is missing")
    return cls


def _name_of(value) -> str:
    return str(getattr(value, "name", value)).upper()


def check_plugin(ctx: Context) -> None:
    """The plugin built with no arguments reads the configuration the environment puts in force."""
    plugin = ctx.cell.plugin
    env = ctx.cell.environment()
    if plugin == "deepspeed":
        ds = _plugin_class("DeepSpeedPlugin")()
        if int(ds.zero_stage) != 2:
            fail(f"DeepSpeedPlugin().zero_stage is {ds.zero_stage!r}, expected 2 from ACCELERATE_DEEPSPEED_ZERO_STAGE")
    elif plugin == "fsdp":
        fsdp = _plugin_class("FullyShardedDataParallelPlugin")()
        if _name_of(fsdp.sharding_strategy) != "FULL_SHARD":
            fail(f"FullyShardedDataParallelPlugin().sharding_strategy is {fsdp.sharding_strategy!r}, "
                 "expected FULL_SHARD from FSDP_SHARDING_STRATEGY")
        if _name_of(fsdp.backward_prefetch) != "BACKWARD_PRE":
            fail(f"FullyShardedDataParallelPlugin().backward_prefetch is {fsdp.backward_prefetch!r}, "
                 "expected BACKWARD_PRE from FSDP_BACKWARD_PREFETCH")
    elif plugin == "megatron":
        megatron = _plugin_class("MegatronLMPlugin")()
        if int(megatron.tp_degree) != int(env["MEGATRON_LM_TP_DEGREE"]):
            fail(f"MegatronLMPlugin().tp_degree is {megatron.tp_degree!r}, expected {env['MEGATRON_LM_TP_DEGREE']}")
        if ctx.world % int(megatron.tp_degree):
            fail(f"Megatron tp_degree {megatron.tp_degree} does not divide the world size {ctx.world}")
    elif plugin == "dynamo":
        dynamo = _plugin_class("TorchDynamoPlugin")()
        if _name_of(dynamo.backend) != "EAGER":
            fail(f"TorchDynamoPlugin().backend is {dynamo.backend!r}, expected EAGER from ACCELERATE_DYNAMO_BACKEND")
    elif plugin == "gradacc":
        from accelerate_lite.utils import get_int_from_env

        steps = get_int_from_env(["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"], 1)
        accumulation = _plugin_class("GradientAccumulationPlugin")(num_steps=steps)
        if accumulation.num_steps != 4:
            fail(f"GradientAccumulationPlugin(num_steps=<env>).num_steps is {accumulation.num_steps}, expected 4")


def check_preconditions(ctx: Context) -> None:
    """Every cell's first property: state, precision and plugin as the cell says."""
    check_state(ctx)
    check_precision(ctx)
    check_plugin(ctx)
