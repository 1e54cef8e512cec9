"""TorchDynamoPlugin: how the model is torch.compile-d, with ACCELERATE_DYNAMO_* environment defaults."""

import copy
from dataclasses import dataclass
from typing import Any

from ..config_fields import (
    EnvDefault,
    apply_env_defaults,
    as_flag,
    as_str,
    check_bool,
    check_choice,
    check_instance,
)
from ..constants import TORCH_DYNAMO_MODES
from ..enums import DynamoBackend
from ..kwargs_handlers import KwargsHandler

TORCH_DYNAMO_ENV = (
    EnvDefault("backend", "ACCELERATE_DYNAMO_BACKEND", as_str, "no"),
    EnvDefault("mode", "ACCELERATE_DYNAMO_MODE", as_str, "default"),
    EnvDefault("fullgraph", "ACCELERATE_DYNAMO_USE_FULLGRAPH", as_flag, "False"),
    EnvDefault("dynamic", "ACCELERATE_DYNAMO_USE_DYNAMIC", as_flag, "False"),
)


@dataclass
class TorchDynamoPlugin(KwargsHandler):
    """How to torch.compile the model: backend, mode, fullgraph, dynamic, options, disable.

    backend is a DynamoBackend or its name in any case; unset fields come from ACCELERATE_DYNAMO_*.

    Example:
        >>> TorchDynamoPlugin(backend="inductor", mode="max-autotune").to_dict()["backend"]
        'inductor'
    """

    backend: DynamoBackend = None
    mode: str = None
    fullgraph: bool = None
    dynamic: bool = None
    options: Any = None
    disable: bool = False

    def __post_init__(self):
        owner = "TorchDynamoPlugin"
        apply_env_defaults(self, TORCH_DYNAMO_ENV)
        names = [member.value for member in DynamoBackend]
        backend = self.backend.value if isinstance(self.backend, DynamoBackend) else self.backend
        self.backend = DynamoBackend(check_choice(owner, "backend", backend, names, normalize=str.upper))
        check_choice(owner, "mode", self.mode, TORCH_DYNAMO_MODES)
        check_bool(owner, "fullgraph", self.fullgraph)
        check_bool(owner, "dynamic", self.dynamic)
        check_bool(owner, "disable", self.disable)
        check_instance(owner, "options", self.options, dict, "a dict of backend options", optional=True)

    def to_dict(self):
        """The fields as a dict, with backend as its lower-case name (what torch.compile takes)."""
        config = copy.deepcopy(self.__dict__)
        config["backend"] = config["backend"].value.lower()
        return config
