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

# --- big modeling ---------------------------------------------------------------------------
