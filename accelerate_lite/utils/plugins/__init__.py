"""The plugins an Accelerator takes: DeepSpeed, FSDP, Megatron-LM, TorchDynamo, gradient accumulation."""

from .deepspeed import DeepSpeedPlugin
from .dynamo import TorchDynamoPlugin
from .fsdp import FullyShardedDataParallelPlugin
from .gradient_accumulation import GradientAccumulationPlugin
from .megatron_lm import MegatronLMPlugin

__all__ = [
    "DeepSpeedPlugin",
    "FullyShardedDataParallelPlugin",
    "GradientAccumulationPlugin",
    "MegatronLMPlugin",
    "TorchDynamoPlugin",
]
