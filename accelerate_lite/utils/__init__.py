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

# --- imports / versions ---------------------------------------------------------------------

# --- operations -----------------------------------------------------------------------------

# --- memory ---------------------------------------------------------------------------------

# --- random ---------------------------------------------------------------------------------

# --- other (parallelism helpers) ------------------------------------------------------------

# --- modeling / offload / bnb ---------------------------------------------------------------

# --- torch_xla ------------------------------------------------------------------------------
