"""accelerate_lite.utils: drop-in for accelerate.utils (v0.27.2), see shared/spec/API.md.

Each block below re-exports one module; the modules hold the code.
"""

# --- constants ------------------------------------------------------------------------------
from .constants import (
    MODEL_NAME,
    OPTIMIZER_NAME,
    RNG_STATE_NAME,
    SAFE_MODEL_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    SAMPLER_NAME,
    SCALER_NAME,
    SCHEDULER_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
)

# --- enums ----------------------------------------------------------------------------------
from .enums import (
    ComputeEnvironment,
    CustomDtype,
    DistributedType,
    DynamoBackend,
    LoggerType,
    PrecisionType,
    RNGType,
    SageMakerDistributedType,
)

# --- environment ----------------------------------------------------------------------------
from .environment import (
    clear_environment,
    get_int_from_env,
    parse_choice_from_env,
    parse_flag_from_env,
    patch_environment,
    str_to_bool,
)

# --- dataclasses (kwargs handlers, plugins, configurations) ---------------------------------
from .dataclasses import (
    AutocastKwargs,
    BaseEnum,
    BnbQuantizationConfig,
    DeepSpeedPlugin,
    DistributedDataParallelKwargs,
    FP8RecipeKwargs,
    FullyShardedDataParallelPlugin,
    GradientAccumulationPlugin,
    GradScalerKwargs,
    InitProcessGroupKwargs,
    KwargsHandler,
    MegatronLMPlugin,
    ProjectConfiguration,
    TensorInformation,
    TorchDynamoPlugin,
)
from .deepspeed import HfDeepSpeedConfig

# --- imports / versions ---------------------------------------------------------------------
from .imports import (
    clear_import_caches,
    get_ccl_version,
    is_4bit_bnb_available,
    is_8bit_bnb_available,
    is_aim_available,
    is_bf16_available,
    is_bnb_available,
    is_boto3_available,
    is_ccl_available,
    is_clearml_available,
    is_comet_ml_available,
    is_cuda_available,
    is_datasets_available,
    is_deepspeed_available,
    is_dvclive_available,
    is_fp8_available,
    is_ipex_available,
    is_megatron_lm_available,
    is_mlflow_available,
    is_mps_available,
    is_msamp_available,
    is_npu_available,
    is_pandas_available,
    is_peft_available,
    is_pippy_available,
    is_rich_available,
    is_safetensors_available,
    is_sagemaker_available,
    is_tensorboard_available,
    is_timm_available,
    is_torch_distributed_available,
    is_torch_xla_available,
    is_tpu_available,
    is_tqdm_available,
    is_transformer_engine_available,
    is_transformers_available,
    is_wandb_available,
    is_xpu_available,
)
from .versions import (
    compare_versions,
    is_torch_version,
)

# --- operations -----------------------------------------------------------------------------
from .operations import (
    CannotPadNestedTensorWarning,
    ConvertOutputsToFp32,
    DistributedOperationException,
    broadcast,
    broadcast_object_list,
    concatenate,
    convert_outputs_to_fp32,
    convert_to_fp32,
    copy_tensor_to_devices,
    find_batch_size,
    find_device,
    gather,
    gather_object,
    get_data_structure,
    get_shape,
    honor_type,
    ignorant_find_batch_size,
    initialize_tensors,
    is_namedtuple,
    is_tensor_information,
    is_torch_tensor,
    listify,
    pad_across_processes,
    pad_input_tensors,
    recursively_apply,
    reduce,
    send_to_device,
    slice_tensors,
)

# --- memory ---------------------------------------------------------------------------------
from .memory import (
    clear_device_cache,
    find_executable_batch_size,
    release_memory,
    should_reduce_batch_size,
)

# --- random ---------------------------------------------------------------------------------
from .random import (
    set_seed,
    synchronize_rng_state,
    synchronize_rng_states,
)

# --- other (parallelism helpers) ------------------------------------------------------------
from .other import (
    clean_state_dict_for_safetensors,
    extract_model_from_parallel,
    is_compiled_module,
    save,
    wait_for_everyone,
)

# --- modeling / offload / bnb ---------------------------------------------------------------
from ..big_modeling import init_empty_weights, init_on_device
from .bnb import has_4bit_bnb_layers, load_and_quantize_model
from .modeling import (
    calculate_maximum_sizes,
    check_device_map,
    check_device_same,
    check_tied_parameters_in_config,
    check_tied_parameters_on_same_device,
    clean_device_map,
    compute_module_sizes,
    convert_file_size_to_int,
    dtype_byte_size,
    find_tied_parameters,
    get_balanced_memory,
    get_device_free_memory,
    get_max_layer_size,
    get_max_memory,
    id_tensor_storage,
    infer_auto_device_map,
    load_checkpoint_in_model,
    load_offloaded_weights,
    load_state_dict,
    named_module_tensors,
    retie_parameters,
    set_module_tensor_to_device,
    shard_checkpoint,
)
from .offload import (
    OffloadedWeightsLoader,
    PrefixedDataset,
    extract_submodules_state_dict,
    load_offloaded_weight,
    offload_state_dict,
    offload_weight,
    save_offload_index,
)

# --- torch_xla ------------------------------------------------------------------------------
from .torch_xla import install_xla
