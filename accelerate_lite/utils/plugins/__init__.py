"""The plugins an Accelerator takes: DeepSpeed, FSDP, Megatron-LM, TorchDynamo, gradient accumulation."""

from .deepspeed import DeepSpeedPlugin
from .dynamo import GradientAccumulationPlugin, TorchDynamoPlugin
from .fsdp import FullyShardedDataParallelPlugin
from .megatron_lm import MegatronLMPlugin

__all__ = [
    "DeepSpeedPlugin",
    "FullyShardedDataParallelPlugin",
    "GradientAccumulationPlugin",
    "MegatronLMPlugin",
    "TorchDynamoPlugin",
]
