"""GradientAccumulationPlugin: how many steps gradients accumulate over, and how that meets the scheduler."""

from dataclasses import dataclass

from ..config_fields import check_bool, check_number
from ..kwargs_handlers import KwargsHandler


@dataclass
class GradientAccumulationPlugin(KwargsHandler):
    """How gradients are accumulated: every num_steps steps, adjusting the scheduler, synced at loader end.

    Example:
        >>> GradientAccumulationPlugin(num_steps=4).to_kwargs()
        {'num_steps': 4}
    """

    num_steps: int = None
    adjust_scheduler: bool = True
    sync_with_dataloader: bool = True

    def __post_init__(self):
        owner = "GradientAccumulationPlugin"
        check_number(owner, "num_steps", self.num_steps, integer=True, minimum=1, optional=True)
        check_bool(owner, "adjust_scheduler", self.adjust_scheduler)
        check_bool(owner, "sync_with_dataloader", self.sync_with_dataloader)
