"""accelerate_lite.utils.dataclasses: kwargs handlers, plugins, configurations, their env defaults and checks."""

import base64
import json
import os
import warnings
from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch

from accelerate_lite.errors import ConfigurationError
from accelerate_lite.utils import patch_environment
from accelerate_lite.utils.config_fields import apply_env_defaults
from accelerate_lite.utils.dataclasses import (
    AutocastKwargs,
    BnbQuantizationConfig,
    CustomDtype,
    DeepSpeedPlugin,
    DistributedDataParallelKwargs,
    DistributedType,
    DynamoBackend,
    FP8RecipeKwargs,
    FullyShardedDataParallelPlugin,
    GradientAccumulationPlugin,
    GradScalerKwargs,
    InitProcessGroupKwargs,
    MegatronLMPlugin,
    ProjectConfiguration,
    TorchDynamoPlugin,
)
from accelerate_lite.utils.plugins.deepspeed import DEEPSPEED_ENV
from accelerate_lite.utils.plugins.dynamo import TORCH_DYNAMO_ENV
from accelerate_lite.utils.plugins.fsdp import FSDP_ENV
from accelerate_lite.utils.plugins.megatron_lm import MEGATRON_LM_ENV
from torch.distributed.fsdp import BackwardPrefetch, CPUOffload, ShardingStrategy, StateDictType

ALL_ENV_VARS = sorted({row.var for table in (DEEPSPEED_ENV, FSDP_ENV, MEGATRON_LM_ENV, TORCH_DYNAMO_ENV)
                       for row in table} | {"ACCELERATE_DEEPSPEED_ZERO3_INIT", "ACCELERATE_CONFIG_DS_FIELDS",
                                             "FSDP_AUTO_WRAP_POLICY", "FSDP_TRANSFORMER_CLS_TO_WRAP",
                                             "FSDP_MIN_NUM_PARAMS"})


@pytest.fixture(autouse=True)
def no_plugin_env(monkeypatch):
    """Every test starts without the plugin variables a launcher may have left in this environment."""
    for var in ALL_ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def test_upstream_import_path_reexports_the_enums():
    from accelerate_lite.utils.dataclasses import DistributedType as from_dataclasses
    from accelerate_lite.utils.enums import DistributedType as from_enums

    assert from_dataclasses is from_enums is DistributedType


# --- kwargs handlers: to_kwargs() is only what differs from the defaults --------------------------

TO_KWARGS = [
    (AutocastKwargs(), {}),
    (AutocastKwargs(cache_enabled=True), {"cache_enabled": True}),
    (AutocastKwargs(enabled=False, cache_enabled=False), {"enabled": False, "cache_enabled": False}),
    (DistributedDataParallelKwargs(), {}),
    (DistributedDataParallelKwargs(find_unused_parameters=True, bucket_cap_mb=50, dim=0),
     {"find_unused_parameters": True, "bucket_cap_mb": 50}),
    (DistributedDataParallelKwargs(static_graph=True, gradient_as_bucket_view=True, broadcast_buffers=False),
     {"static_graph": True, "gradient_as_bucket_view": True, "broadcast_buffers": False}),
    (GradScalerKwargs(), {}),
    (GradScalerKwargs(init_scale=1024.0, growth_interval=100), {"init_scale": 1024.0, "growth_interval": 100}),
    (GradScalerKwargs(backoff_factor=0.25, enabled=False), {"backoff_factor": 0.25, "enabled": False}),
    (InitProcessGroupKwargs(), {}),
    (InitProcessGroupKwargs(backend="gloo", timeout=timedelta(seconds=60)),
     {"backend": "gloo", "timeout": timedelta(seconds=60)}),
    (InitProcessGroupKwargs(init_method="tcp://127.0.0.1:1234"), {"init_method": "tcp://127.0.0.1:1234"}),
    (FP8RecipeKwargs(), {}),
    (FP8RecipeKwargs(backend="te", fp8_format="hybrid", amax_history_len=16, amax_compute_algo="max"),
     {"backend": "TE", "fp8_format": "HYBRID", "amax_history_len": 16, "amax_compute_algo": "max"}),
    (FP8RecipeKwargs(backend="msamp", opt_level="O1", margin=2, interval=3),
     {"opt_level": "O1", "margin": 2, "interval": 3}),
    (FP8RecipeKwargs(override_linear_precision=(True, False, True)), {"override_linear_precision": (True, False, True)}),
    (GradientAccumulationPlugin(), {}),
    (GradientAccumulationPlugin(num_steps=4, sync_with_dataloader=False), {"num_steps": 4, "sync_with_dataloader": False}),
    (TorchDynamoPlugin(), {}),
    (TorchDynamoPlugin(backend="INDUCTOR", mode="max-autotune", fullgraph=True),
     {"backend": "inductor", "mode": "max-autotune", "fullgraph": True}),
]


@pytest.mark.parametrize("handler, expected", TO_KWARGS, ids=lambda value: repr(value) if isinstance(value, dict) else None)
def test_to_kwargs_returns_only_changed_fields(handler, expected):
    assert handler.to_kwargs() == expected


def test_to_kwargs_counts_environment_defaults_as_changes():
    # The reference instance is built as if the environment were empty (upstream builds it under
    # clear_environment); ours never empties os.environ to do so.
    with patch_environment(ACCELERATE_DYNAMO_BACKEND="aot_eager", ACCELERATE_DYNAMO_USE_DYNAMIC="yes"):
        kwargs = TorchDynamoPlugin().to_kwargs()
        assert os.environ["ACCELERATE_DYNAMO_BACKEND"] == "aot_eager"
    assert kwargs == {"backend": "aot_eager", "dynamic": True}


def test_kwargs_are_accepted_by_the_torch_calls_they_configure(tmp_path):
    # A real one-rank gloo group, a real DDP wrapper, a real GradScaler and autocast on the CPU.
    import torch.distributed as dist

    group_kwargs = InitProcessGroupKwargs(backend="gloo", init_method=f"file://{tmp_path / 'store'}",
                                          timeout=timedelta(seconds=60)).to_kwargs()
    if dist.is_initialized():
        pytest.skip("another test in this worker left a process group initialised; this test needs its own")
    dist.init_process_group(rank=0, world_size=1, **group_kwargs)
    try:
        ddp_kwargs = DistributedDataParallelKwargs(find_unused_parameters=True, bucket_cap_mb=1).to_kwargs()
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2), **ddp_kwargs)
        model(torch.ones(4, 3)).sum().backward()
    finally:
        dist.destroy_process_group()
    scaler = torch.amp.GradScaler("cpu", **GradScalerKwargs(init_scale=8.0, growth_interval=7).to_kwargs())
    assert scaler.get_scale() == 8.0 and scaler.get_growth_interval() == 7
    with torch.autocast("cpu", dtype=torch.bfloat16, **AutocastKwargs(cache_enabled=False).to_kwargs()):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16


def test_init_process_group_kwargs_accepts_a_device_backend_map():
    assert InitProcessGroupKwargs(backend="cpu:gloo,cuda:nccl").backend == "cpu:gloo,cuda:nccl"


# --- environment defaults, plugin by plugin ----------------------------------------------------------

ENV_DEFAULTS = [
    pytest.param(DeepSpeedPlugin, {}, {"gradient_accumulation_steps": "auto", "gradient_clipping": None,
                                       "zero_stage": 2, "offload_optimizer_device": "none",
                                       "offload_param_device": "none", "zero3_save_16bit_model": False,
                                       "zero3_init_flag": False}, id="DeepSpeedPlugin()"),
    pytest.param(DeepSpeedPlugin, {"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4", "ACCELERATE_GRADIENT_CLIPPING": "1.5",
                                   "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
                                   "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu",
                                   "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": "nvme",
                                   "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_NVME_PATH": "/nvme",
                                   "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": "true"},
                 {"gradient_accumulation_steps": 4, "gradient_clipping": 1.5, "zero_stage": 3,
                  "offload_optimizer_device": "cpu", "offload_param_device": "nvme", "offload_param_nvme_path": "/nvme",
                  "zero3_save_16bit_model": True, "zero3_init_flag": True}, id="DeepSpeedPlugin(ACCELERATE_*)"),
    pytest.param(DeepSpeedPlugin, {"ACCELERATE_DEEPSPEED_ZERO_STAGE": "3", "ACCELERATE_DEEPSPEED_ZERO3_INIT": "false"},
                 {"zero_stage": 3, "zero3_init_flag": False}, id="DeepSpeedPlugin(ZERO3_INIT=false)"),
    pytest.param(FullyShardedDataParallelPlugin, {},
                 {"sharding_strategy": ShardingStrategy.FULL_SHARD, "cpu_offload": CPUOffload(offload_params=False),
                  "backward_prefetch": None, "state_dict_type": StateDictType.FULL_STATE_DICT, "use_orig_params": True,
                  "sync_module_states": True, "forward_prefetch": False, "activation_checkpointing": False},
                 id="FullyShardedDataParallelPlugin()"),
    pytest.param(FullyShardedDataParallelPlugin,
                 {"FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP", "FSDP_OFFLOAD_PARAMS": "true",
                  "FSDP_BACKWARD_PREFETCH": "BACKWARD_PRE", "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
                  "FSDP_USE_ORIG_PARAMS": "false", "FSDP_SYNC_MODULE_STATES": "false", "FSDP_FORWARD_PREFETCH": "true",
                  "FSDP_ACTIVATION_CHECKPOINTING": "true"},
                 {"sharding_strategy": ShardingStrategy.SHARD_GRAD_OP, "cpu_offload": CPUOffload(offload_params=True),
                  "backward_prefetch": BackwardPrefetch.BACKWARD_PRE, "state_dict_type": StateDictType.SHARDED_STATE_DICT,
                  "state_dict_config": None, "use_orig_params": False, "sync_module_states": False,
                  "param_init_fn": None, "forward_prefetch": True, "activation_checkpointing": True},
                 id="FullyShardedDataParallelPlugin(FSDP_*)"),
    pytest.param(FullyShardedDataParallelPlugin, {"FSDP_SHARDING_STRATEGY": "3"},
                 {"sharding_strategy": ShardingStrategy.NO_SHARD}, id="FullyShardedDataParallelPlugin(FSDP_SHARDING_STRATEGY=3)"),
    pytest.param(MegatronLMPlugin, {},
                 {"tp_degree": 1, "pp_degree": 1, "num_micro_batches": 1, "gradient_clipping": 1.0,
                  "recompute_activations": False, "use_distributed_optimizer": False, "sequence_parallelism": False,
                  "DDP_impl": "torch"}, id="MegatronLMPlugin()"),
    pytest.param(MegatronLMPlugin, {"MEGATRON_LM_TP_DEGREE": "2", "MEGATRON_LM_PP_DEGREE": "4",
                                    "MEGATRON_LM_NUM_MICRO_BATCHES": "8", "MEGATRON_LM_GRADIENT_CLIPPING": "0.5",
                                    "MEGATRON_LM_RECOMPUTE_ACTIVATIONS": "true",
                                    "MEGATRON_LM_USE_DISTRIBUTED_OPTIMIZER": "true",
                                    "MEGATRON_LM_SEQUENCE_PARALLELISM": "true"},
                 {"tp_degree": 2, "pp_degree": 4, "num_micro_batches": 8, "gradient_clipping": 0.5,
                  "recompute_activations": True, "use_distributed_optimizer": True, "sequence_parallelism": True,
                  "DDP_impl": "local"}, id="MegatronLMPlugin(MEGATRON_LM_*)"),
    pytest.param(TorchDynamoPlugin, {},
                 {"backend": DynamoBackend.NO, "mode": "default", "fullgraph": False, "dynamic": False},
                 id="TorchDynamoPlugin()"),
    pytest.param(TorchDynamoPlugin, {"ACCELERATE_DYNAMO_BACKEND": "inductor", "ACCELERATE_DYNAMO_MODE": "reduce-overhead",
                                     "ACCELERATE_DYNAMO_USE_FULLGRAPH": "1", "ACCELERATE_DYNAMO_USE_DYNAMIC": "True"},
                 {"backend": DynamoBackend.INDUCTOR, "mode": "reduce-overhead", "fullgraph": True, "dynamic": True},
                 id="TorchDynamoPlugin(ACCELERATE_DYNAMO_*)"),
]


@pytest.mark.parametrize("plugin, environ, expected", ENV_DEFAULTS)
def test_plugin_reads_its_environment_defaults(plugin, environ, expected):
    with patch_environment(**environ):
        instance = plugin()
    assert {name: getattr(instance, name) for name in expected} == expected


@pytest.mark.parametrize("plugin, table", [(DeepSpeedPlugin, DEEPSPEED_ENV), (FullyShardedDataParallelPlugin, FSDP_ENV),
                                           (MegatronLMPlugin, MEGATRON_LM_ENV), (TorchDynamoPlugin, TORCH_DYNAMO_ENV)],
                         ids=lambda value: getattr(value, "__name__", None))
def test_every_table_row_reaches_its_field(plugin, table):
    samples = {"ACCELERATE_DEEPSPEED_CONFIG_FILE": None, "ACCELERATE_GRADIENT_CLIPPING": "2.0",
               "ACCELERATE_DEEPSPEED_ZERO_STAGE": "1", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu",
               "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": "cpu", "FSDP_SHARDING_STRATEGY": "NO_SHARD",
               "FSDP_BACKWARD_PREFETCH": "BACKWARD_POST", "FSDP_STATE_DICT_TYPE": "LOCAL_STATE_DICT",
               "ACCELERATE_DYNAMO_BACKEND": "eager", "ACCELERATE_DYNAMO_MODE": "max-autotune",
               "MEGATRON_LM_GRADIENT_CLIPPING": "0.25", "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "3"}
    for row in table:
        raw = samples.get(row.var, "7" if row.parse.__name__ == "as_int" else "true")
        if raw is None:
            continue  # the config-file variable has its own tests below
        with patch_environment(**{row.var: raw}):
            value = getattr(plugin(), row.field)
        expected = row.parse(raw)
        if row.field == "backend":
            expected = DynamoBackend(expected.upper())
        assert value == expected, f"{row.var}={raw} gave {row.field}={value!r}"


def test_explicit_arguments_win_over_the_environment():
    environ = {"ACCELERATE_DEEPSPEED_ZERO_STAGE": "3", "MEGATRON_LM_TP_DEGREE": "4", "FSDP_SHARDING_STRATEGY": "NO_SHARD",
               "ACCELERATE_DYNAMO_BACKEND": "inductor", "FSDP_FORWARD_PREFETCH": "true"}
    with patch_environment(**environ):
        assert DeepSpeedPlugin(zero_stage=1).zero_stage == 1
        assert MegatronLMPlugin(tp_degree=2).tp_degree == 2
        fsdp = FullyShardedDataParallelPlugin(sharding_strategy="HYBRID_SHARD", forward_prefetch=True)
        assert fsdp.sharding_strategy == ShardingStrategy.HYBRID_SHARD and fsdp.forward_prefetch is True
        assert TorchDynamoPlugin(backend=DynamoBackend.EAGER).backend == DynamoBackend.EAGER


INVALID_ENVIRONMENT = [
    ("FSDP_SHARDING_STRATEGY", "HALF_SHARD", FullyShardedDataParallelPlugin, "FULL_SHARD"),
    ("FSDP_OFFLOAD_PARAMS", "sometimes", FullyShardedDataParallelPlugin, "sometimes"),
    ("ACCELERATE_DEEPSPEED_ZERO_STAGE", "two", DeepSpeedPlugin, "two"),
    ("ACCELERATE_DEEPSPEED_ZERO_STAGE", "4", DeepSpeedPlugin, "0, 1, 2, 3"),
    ("MEGATRON_LM_TP_DEGREE", "x", MegatronLMPlugin, "x"),
    ("ACCELERATE_DYNAMO_BACKEND", "turbo", TorchDynamoPlugin, "INDUCTOR"),
    ("ACCELERATE_DYNAMO_MODE", "fast", TorchDynamoPlugin, "max-autotune"),
]


@pytest.mark.parametrize("var, raw, plugin, hint", INVALID_ENVIRONMENT,
                         ids=[f"{plugin.__name__}() with {var}={raw!r}" for var, raw, plugin, _ in INVALID_ENVIRONMENT])
def test_invalid_environment_value_is_named(var, raw, plugin, hint):
    with patch_environment(**{var: raw}), pytest.raises(ConfigurationError) as caught:
        plugin()
    assert raw in str(caught.value) and hint in str(caught.value)


def test_env_defaults_apply_only_to_fields_still_at_their_default():
    plugin = TorchDynamoPlugin(mode="max-autotune")
    with patch_environment(ACCELERATE_DYNAMO_MODE="reduce-overhead"):
        apply_env_defaults(plugin, TORCH_DYNAMO_ENV)
    assert plugin.mode == "max-autotune"


# --- DeepSpeedPlugin: config sources, "auto" filling, mismatches ------------------------------------

DS_CONFIG = {
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": 2,
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "weight_decay": 0.01}},
    "zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}, "reduce_bucket_size": "auto"},
}


def test_deepspeed_config_process_fills_auto_entries_at_every_depth():
    plugin = DeepSpeedPlugin(hf_ds_config=DS_CONFIG)
    plugin.deepspeed_config_process(must_match=True, train_batch_size=64, train_micro_batch_size_per_gpu=8,
                                    **{"optimizer.params.lr": 1e-3, "zero_optimization.reduce_bucket_size": 1024,
                                       "gradient_accumulation_steps": 2})
    config = plugin.deepspeed_config
    assert (config["train_batch_size"], config["train_micro_batch_size_per_gpu"]) == (64, 8)
    assert config["optimizer"]["params"] == {"lr": 1e-3, "weight_decay": 0.01}
    assert config["zero_optimization"]["reduce_bucket_size"] == 1024
    assert DS_CONFIG["train_batch_size"] == "auto"  # the caller's dict is never modified
    assert (plugin.zero_stage, plugin.offload_param_device, plugin.hf_ds_config.is_offload()) == (3, "cpu", True)


def test_deepspeed_config_process_reports_every_mismatch():
    plugin = DeepSpeedPlugin(hf_ds_config=DS_CONFIG)
    with pytest.raises(ConfigurationError) as caught:
        plugin.deepspeed_config_process(train_batch_size=64, train_micro_batch_size_per_gpu=8, gradient_accumulation_steps=4,
                                        **{"optimizer.params.lr": 1e-3, "optimizer.params.weight_decay": 0.1,
                                           "zero_optimization.reduce_bucket_size": 1})
    message = str(caught.value)
    assert "- ds gradient_accumulation_steps=2 vs arg gradient_accumulation_steps=4" in message
    assert "- ds optimizer.params.weight_decay=0.01 vs arg optimizer.params.weight_decay=0.1" in message
    assert "'auto'" in message


def test_deepspeed_config_process_without_must_match_ignores_differences():
    plugin = DeepSpeedPlugin(hf_ds_config=DS_CONFIG)
    plugin.deepspeed_config_process(must_match=False, train_batch_size=1, train_micro_batch_size_per_gpu=1,
                                    gradient_accumulation_steps=99,
                                    **{"optimizer.params.lr": 0.1, "zero_optimization.reduce_bucket_size": 1})
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == 2


def test_deepspeed_config_process_names_an_auto_entry_nobody_filled():
    plugin = DeepSpeedPlugin(hf_ds_config=DS_CONFIG)
    with pytest.raises(ConfigurationError, match="optimizer.params.lr"):
        plugin.deepspeed_config_process(train_batch_size=1, train_micro_batch_size_per_gpu=1,
                                        **{"zero_optimization.reduce_bucket_size": 1})


def test_deepspeed_plugin_values_fill_the_config_autos():
    config = {"gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "zero_optimization": {"stage": "auto"}}
    plugin = DeepSpeedPlugin(hf_ds_config=config, gradient_accumulation_steps=4, gradient_clipping=1.0, zero_stage=1)
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == 4
    assert plugin.deepspeed_config["gradient_clipping"] == 1.0
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == 1


def test_deepspeed_config_from_json_file_base64_and_environment(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(DS_CONFIG))
    encoded = base64.urlsafe_b64encode(json.dumps(DS_CONFIG).encode()).decode()
    for source in (str(path), path, encoded):
        assert DeepSpeedPlugin(hf_ds_config=source).zero_stage == 3
    with patch_environment(ACCELERATE_DEEPSPEED_CONFIG_FILE=str(path)):
        assert DeepSpeedPlugin().deepspeed_config["optimizer"]["type"] == "AdamW"


def test_deepspeed_config_built_from_fields():
    plugin = DeepSpeedPlugin(zero_stage=3, offload_optimizer_device="nvme", offload_optimizer_nvme_path="/nvme",
                             gradient_clipping=1.0, gradient_accumulation_steps=2)
    config = plugin.deepspeed_config
    assert config["zero_optimization"]["offload_optimizer"] == {"device": "nvme", "nvme_path": "/nvme"}
    assert config["zero_optimization"]["offload_param"] == {"device": "none", "nvme_path": None}
    assert (config["gradient_clipping"], config["gradient_accumulation_steps"]) == (1.0, 2)
    assert config["steps_per_print"] == float("inf") and plugin.zero3_init_flag is True


@pytest.mark.parametrize("source, fragment", [
    ({"train_batch_size": 8}, "zero_optimization"),
    ("/no/such/ds_config.json", "/no/such/ds_config.json"),
], ids=["DeepSpeedPlugin(hf_ds_config={'train_batch_size': 8})", "DeepSpeedPlugin(hf_ds_config='/no/such/ds_config.json')"])
def test_deepspeed_bad_config_sources(source, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        DeepSpeedPlugin(hf_ds_config=source)


def test_deepspeed_config_file_clashing_with_accelerate_fields():
    with patch_environment(ACCELERATE_CONFIG_DS_FIELDS="zero_stage,gradient_clipping"):
        with pytest.raises(ConfigurationError, match="zero_stage"):
            DeepSpeedPlugin(hf_ds_config=DS_CONFIG)


def test_zero3_init_flag_is_dropped_below_stage_3():
    with pytest.warns(UserWarning, match="ZeRO stage 3"):
        plugin = DeepSpeedPlugin(zero_stage=2, zero3_init_flag=True)
    assert plugin.is_zero3_init_enabled() is False


def test_deepspeed_set_mixed_precision():
    plugin = DeepSpeedPlugin(hf_ds_config={"zero_optimization": {"stage": 2}, "fp16": {"enabled": "auto"}})
    plugin.set_mixed_precision("fp16")
    assert plugin.deepspeed_config["fp16"] == {"enabled": True}
    assert plugin.deepspeed_config["bf16"] == {"enabled": False}
    other = DeepSpeedPlugin(hf_ds_config={"zero_optimization": {"stage": 2}, "fp16": {"enabled": True}})
    with pytest.raises(ConfigurationError, match="fp16"):
        other.set_mixed_precision("bf16")
    fresh = DeepSpeedPlugin()
    fresh.set_mixed_precision("bf16")
    assert fresh.deepspeed_config["bf16"] == {"enabled": True} and fresh.is_auto("train_batch_size")


# --- FullyShardedDataParallelPlugin -----------------------------------------------------------------


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)


def test_get_module_class_from_name_searches_submodules():
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Sequential(Block(), torch.nn.ReLU()))
    find = FullyShardedDataParallelPlugin.get_module_class_from_name
    assert find(model, "Block") is Block
    assert find(model, "ReLU") is torch.nn.ReLU
    assert find(model, "Sequential") is torch.nn.Sequential
    assert find(model, "Conv2d") is None


def test_fsdp_constructs_without_an_accelerator_and_materialises_on_cpu():
    plugin = FullyShardedDataParallelPlugin()
    with torch.device("meta"):
        layer = torch.nn.Linear(3, 3)
    plugin.param_init_fn(layer)
    assert layer.weight.device.type == "cpu"
    assert plugin.state_dict_config.offload_to_cpu and plugin.optim_state_dict_config.rank0_only


@pytest.mark.parametrize("profile, local_rank, expected", [
    ("8xH100", 3, "cuda:3"),
    ("8xAscend910B", 2, "npu:2"),  # a string: torch knows "npu" only once the profile registers it
    ("4xMax1550", 1, "xpu:1"),
    ("cpu", 0, "cpu"),
])
def test_fsdp_param_init_fn_targets_the_current_device(profile, local_rank, expected):
    # No accelerator exists here: a simulated profile makes torch report one (current device = local rank).
    from simulators import apply_profile

    captured = {}

    class Recorder(torch.nn.Module):
        def to_empty(self, *, device, recurse=True):
            captured["device"] = device

    with apply_profile(profile, local_rank=local_rank, world_size=8):
        FullyShardedDataParallelPlugin().param_init_fn(Recorder())
    assert str(captured["device"]) == expected


def test_fsdp_auto_wrap_policy_from_the_environment():
    model = torch.nn.Sequential(Block(), Block())
    with patch_environment(FSDP_AUTO_WRAP_POLICY="TRANSFORMER_BASED_WRAP", FSDP_TRANSFORMER_CLS_TO_WRAP="Block"):
        plugin = FullyShardedDataParallelPlugin()
        plugin.set_auto_wrap_policy(model)
    assert plugin.auto_wrap_policy.keywords["transformer_layer_cls"] == {Block}
    with patch_environment(FSDP_AUTO_WRAP_POLICY="SIZE_BASED_WRAP", FSDP_MIN_NUM_PARAMS="100"):
        sized = FullyShardedDataParallelPlugin()
        sized.set_auto_wrap_policy(model)
    assert sized.auto_wrap_policy.keywords["min_num_params"] == 100
    with patch_environment(FSDP_AUTO_WRAP_POLICY="TRANSFORMER_BASED_WRAP", FSDP_TRANSFORMER_CLS_TO_WRAP="GPT2Block"):
        with pytest.raises(ConfigurationError, match="GPT2Block.*Block"):
            FullyShardedDataParallelPlugin().set_auto_wrap_policy(model)


def test_fsdp_set_mixed_precision():
    plugin = FullyShardedDataParallelPlugin()
    plugin.set_mixed_precision("bf16")
    assert plugin.mixed_precision_policy.param_dtype == torch.bfloat16
    with pytest.raises(ConfigurationError, match="'fp16' or 'bf16'"):
        FullyShardedDataParallelPlugin().set_mixed_precision("fp8")


# --- MegatronLMPlugin ---------------------------------------------------------------------------------


def test_megatron_default_args_and_training_setup():
    plugin = MegatronLMPlugin(num_micro_batches=2, consumed_samples=[5], recompute_activations=True,
                              other_megatron_args={"use_rotary_position_embeddings": True})
    args = plugin.megatron_lm_default_args
    assert args["consumed_samples"] == [5, 0, 0] and args["recompute_granularity"] == "selective"
    assert args["use_rotary_position_embeddings"] is True
    plugin.set_training_args(micro_batch_size=4, dp_degree=3)
    assert args["global_batch_size"] == 24
    plugin.set_optimizer_type(torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))], lr=0.1, weight_decay=0.2))
    assert (args["optimizer"], args["lr"], args["weight_decay"]) == ("adam", 0.1, 0.2)
    plugin.set_optimizer_type(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.5, momentum=0.9))
    assert (args["optimizer"], args["sgd_momentum"]) == ("sgd", 0.9)
    with pytest.raises(ConfigurationError, match="Adagrad"):
        plugin.set_optimizer_type(torch.optim.Adagrad([torch.nn.Parameter(torch.ones(1))]))
    plugin.set_scheduler_args(SimpleNamespace(total_num_steps=300, warmup_num_steps=30))
    assert (args["train_iters"], args["lr_warmup_iters"]) == (100, 10)
    plugin.set_mixed_precision("bf16")
    assert args["bf16"] is True and plugin.DDP_impl == "local"


def test_megatron_network_size_from_a_gpt2_config():
    config = SimpleNamespace(model_type="gpt2", n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=1000,
                             return_dict=True)
    plugin = MegatronLMPlugin()
    plugin.set_network_size_args(SimpleNamespace(config=config), batch_data={"input_ids": torch.zeros(2, 32)})
    args = plugin.megatron_lm_default_args
    assert (args["model_type_name"], args["num_layers"], args["hidden_size"], args["seq_length"]) == ("gpt", 2, 64, 32)
    with pytest.raises(ConfigurationError, match="llama"):
        plugin.set_network_size_args(SimpleNamespace(config=SimpleNamespace(model_type="llama")))


# --- configurations -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, compute, torch_dtype, target", [
    ({"load_in_8bit": True}, torch.float16, torch.float16, torch.int8),
    ({"load_in_4bit": True}, torch.float16, torch.float16, CustomDtype.INT4),
    ({"load_in_4bit": True, "bnb_4bit_compute_dtype": "bf16"}, torch.bfloat16, torch.bfloat16, CustomDtype.INT4),
    ({"load_in_4bit": True, "bnb_4bit_compute_dtype": "fp32", "torch_dtype": "fp16"}, torch.float32, torch.float16,
     CustomDtype.INT4),
    ({"load_in_8bit": True, "torch_dtype": torch.bfloat16}, torch.float16, torch.bfloat16, torch.int8),
])
def test_bnb_quantization_config_dtypes(kwargs, compute, torch_dtype, target):
    config = BnbQuantizationConfig(**kwargs)
    assert (config.bnb_4bit_compute_dtype, config.torch_dtype, config.target_dtype) == (compute, torch_dtype, target)


def test_bnb_threshold_with_4bit_warns():
    with pytest.warns(UserWarning, match="llm_int8_threshold"):
        BnbQuantizationConfig(load_in_4bit=True, llm_int8_threshold=3.0)


def test_project_configuration_set_directories():
    config = ProjectConfiguration(project_dir="runs/a")
    assert (config.project_dir, config.logging_dir) == ("runs/a", "runs/a")
    config.set_directories("runs/b")
    assert (config.project_dir, config.logging_dir) == ("runs/b", "runs/a")  # an existing logging_dir stays
    separate = ProjectConfiguration(logging_dir="logs")
    separate.set_directories("runs/c")
    assert (separate.project_dir, separate.logging_dir) == ("runs/c", "logs")
    empty = ProjectConfiguration()
    empty.set_directories("runs/d")
    assert empty.logging_dir == "runs/d"


# --- every dataclass rejects invalid values, naming the field and what it accepts ------------------------

INVALID = [
    (AutocastKwargs, {"enabled": "yes"}, "True or False"),
    (AutocastKwargs, {"cache_enabled": 1}, "True or False or None"),
    (DistributedDataParallelKwargs, {"bucket_cap_mb": 0}, "> 0"),
    (DistributedDataParallelKwargs, {"dim": 1.5}, "an int"),
    (DistributedDataParallelKwargs, {"static_graph": "true"}, "True or False"),
    (GradScalerKwargs, {"growth_factor": 0.5}, "> 1.0"),
    (GradScalerKwargs, {"backoff_factor": 1.5}, "< 1.0"),
    (GradScalerKwargs, {"init_scale": -1.0}, "> 0"),
    (GradScalerKwargs, {"growth_interval": 0}, ">= 1"),
    (InitProcessGroupKwargs, {"backend": "tcp"}, "'gloo'"),
    (InitProcessGroupKwargs, {"timeout": 30}, "timedelta"),
    (InitProcessGroupKwargs, {"timeout": timedelta(seconds=-1)}, "positive"),
    (FP8RecipeKwargs, {"backend": "apex"}, "'MSAMP', 'TE'"),
    (FP8RecipeKwargs, {"opt_level": "O3"}, "'O1', 'O2'"),
    (FP8RecipeKwargs, {"fp8_format": "E5M2"}, "'E4M3', 'HYBRID'"),
    (FP8RecipeKwargs, {"amax_compute_algo": "mean"}, "'max', 'most_recent'"),
    (FP8RecipeKwargs, {"interval": 0}, ">= 1"),
    (FP8RecipeKwargs, {"override_linear_precision": (True, False)}, "three bools"),
    (GradientAccumulationPlugin, {"num_steps": 0}, ">= 1"),
    (GradientAccumulationPlugin, {"adjust_scheduler": None}, "True or False"),
    (TorchDynamoPlugin, {"backend": "jit"}, "'INDUCTOR'"),
    (TorchDynamoPlugin, {"mode": "fastest"}, "'default', 'reduce-overhead', 'max-autotune'"),
    (TorchDynamoPlugin, {"options": ["x"]}, "a dict"),
    (DeepSpeedPlugin, {"zero_stage": 4}, "0, 1, 2, 3"),
    (DeepSpeedPlugin, {"offload_optimizer_device": "gpu"}, "'none', 'cpu', 'nvme'"),
    (DeepSpeedPlugin, {"offload_param_device": "disk"}, "'none', 'cpu', 'nvme'"),
    (DeepSpeedPlugin, {"gradient_accumulation_steps": 0}, ">= 1"),
    (DeepSpeedPlugin, {"gradient_clipping": -1.0}, ">= 0"),
    (FullyShardedDataParallelPlugin, {"sharding_strategy": "SHARD_EVERYTHING"}, "'FULL_SHARD', 'SHARD_GRAD_OP'"),
    (FullyShardedDataParallelPlugin, {"sharding_strategy": 9}, "1..5"),
    (FullyShardedDataParallelPlugin, {"backward_prefetch": "BACKWARD_SIDEWAYS"}, "'BACKWARD_PRE', 'BACKWARD_POST'"),
    (FullyShardedDataParallelPlugin, {"state_dict_type": "PICKLED"}, "'FULL_STATE_DICT'"),
    (FullyShardedDataParallelPlugin, {"cpu_offload": True}, "CPUOffload"),
    (FullyShardedDataParallelPlugin, {"use_orig_params": "no"}, "True or False"),
    (MegatronLMPlugin, {"tp_degree": 0}, ">= 1"),
    (MegatronLMPlugin, {"lr_decay_style": "step"}, "'constant', 'linear', 'cosine'"),
    (MegatronLMPlugin, {"weight_decay_incr_style": "exponential"}, "'constant', 'linear', 'cosine'"),
    (MegatronLMPlugin, {"consumed_samples": [1, 2, 3, 4]}, "1 to 3"),
    (BnbQuantizationConfig, {}, "exactly one of load_in_4bit and load_in_8bit"),
    (BnbQuantizationConfig, {"load_in_4bit": True, "load_in_8bit": True}, "exactly one of"),
    (BnbQuantizationConfig, {"load_in_8bit": "yes"}, "True or False"),
    (BnbQuantizationConfig, {"load_in_4bit": True, "bnb_4bit_quant_type": "int4"}, "'fp4', 'nf4'"),
    (BnbQuantizationConfig, {"load_in_4bit": True, "bnb_4bit_compute_dtype": "fp64"}, "'fp32', 'fp16', 'bf16'"),
    (BnbQuantizationConfig, {"load_in_8bit": True, "torch_dtype": "int8"}, "'fp32', 'fp16', 'bf16'"),
    (BnbQuantizationConfig, {"load_in_8bit": True, "skip_modules": "lm_head"}, "a list of module names"),
    (BnbQuantizationConfig, {"load_in_8bit": True, "llm_int8_threshold": "6"}, "a number"),
    (ProjectConfiguration, {"total_limit": 0}, ">= 1"),
    (ProjectConfiguration, {"iteration": -1}, ">= 0"),
    (ProjectConfiguration, {"project_dir": 3}, "a path"),
]


def call_id(cls, kwargs):
    return f"{cls.__name__}({', '.join(f'{key}={value!r}' for key, value in kwargs.items())})"


@pytest.mark.parametrize("cls, kwargs, allowed", INVALID, ids=[call_id(cls, kwargs) for cls, kwargs, _ in INVALID])
def test_invalid_values_are_rejected_naming_field_and_allowed_values(cls, kwargs, allowed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigurationError) as caught:
            cls(**kwargs)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)  # upstream raises ValueError: callers catching it still do
    assert cls.__name__ in message and allowed in message
    field = list(kwargs)[-1] if kwargs else "load_in_4bit"  # the offending field comes last
    assert f"{field}=" in message
