"""accelerate_lite: Hugging Face Accelerate 0.27.2's utility library, reimplemented and tested on simulated worlds."""

__version__ = "0.1.0"

from .utils.enums import DistributedType

# --- dataclasses ----------------------------------------------------------------------------
from .utils.dataclasses import (
    AutocastKwargs,
    DeepSpeedPlugin,
    DistributedDataParallelKwargs,
    FullyShardedDataParallelPlugin,
    GradScalerKwargs,
    InitProcessGroupKwargs,
)

# --- state / launchers ----------------------------------------------------------------------
from .launchers import debug_launcher
from .state import PartialState
from .utils.imports import is_rich_available
from .utils.memory import find_executable_batch_size
from .utils.random import synchronize_rng_states

# --- big modeling ---------------------------------------------------------------------------
from .big_modeling import init_empty_weights, init_on_device
from .utils.modeling import infer_auto_device_map, load_checkpoint_in_model
