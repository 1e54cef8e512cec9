"""KwargsHandler and the five kwargs dataclasses an Accelerator takes (upstream's names and defaults).

Each validates its fields on construction; `to_kwargs()` returns only the fields that differ from a
default-constructed instance (built without reading the environment), which is what gets forwarded
to torch (DDP, GradScaler, init_process_group, autocast) or to the FP8 engine.
"""

import copy
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional, Tuple

from .config_fields import check_bool, check_choice, check_instance, check_number, environment_source, reject

# Backends init_process_group accepts here or on vendor builds (torch's own list is added at check time,
# so a backend registered with dist.Backend.register_backend is accepted too).
KNOWN_PROCESS_GROUP_BACKENDS = ("nccl", "gloo", "mpi", "ucc", "xccl", "xla", "hccl", "ccl", "cncl", "smddp", "fake")

FP8_BACKENDS = ("MSAMP", "TE")
FP8_OPT_LEVELS = ("O1", "O2")
FP8_FORMATS = ("E4M3", "HYBRID")
FP8_AMAX_COMPUTE_ALGOS = ("max", "most_recent")


class KwargsHandler:
    """Mixin giving a dataclass `to_dict()` and `to_kwargs()` (the fields that differ from the defaults)."""

    def to_dict(self) -> dict:
        """A deep copy of every attribute."""
        return copy.deepcopy(self.__dict__)

    def to_kwargs(self) -> dict:
        """Return the attributes whose value differs from a default-constructed instance.

        The reference instance is built as if the environment were empty, so environment defaults
        (for plugins that read any) count as changes, as upstream does.

        Example:
            >>> DistributedDataParallelKwargs(find_unused_parameters=True).to_kwargs()
            {'find_unused_parameters': True}
        """
        with environment_source({}):
            defaults = self.__class__().to_dict()
        missing = object()
        return {key: value for key, value in self.to_dict().items() if defaults.get(key, missing) != value}


@dataclass
class AutocastKwargs(KwargsHandler):
    """Arguments for `torch.autocast` (enabled, cache_enabled).

    Example:
        >>> AutocastKwargs(cache_enabled=True).to_kwargs()
        {'cache_enabled': True}
    """

    enabled: bool = True
    cache_enabled: bool = None

    def __post_init__(self):
        check_bool("AutocastKwargs", "enabled", self.enabled)
        check_bool("AutocastKwargs", "cache_enabled", self.cache_enabled, optional=True)


@dataclass
class DistributedDataParallelKwargs(KwargsHandler):
    """Arguments for `torch.nn.parallel.DistributedDataParallel`.

    Example:
        >>> DistributedDataParallelKwargs(bucket_cap_mb=50).to_kwargs()
        {'bucket_cap_mb': 50}
    """

    dim: int = 0
    broadcast_buffers: bool = True
    bucket_cap_mb: int = 25
    find_unused_parameters: bool = False
    check_reduction: bool = False
    gradient_as_bucket_view: bool = False
    static_graph: bool = False

    def __post_init__(self):
        owner = "DistributedDataParallelKwargs"
        check_number(owner, "dim", self.dim, integer=True)
        check_number(owner, "bucket_cap_mb", self.bucket_cap_mb, exclusive_minimum=0)
        for name in ("broadcast_buffers", "find_unused_parameters", "check_reduction",
                     "gradient_as_bucket_view", "static_graph"):
            check_bool(owner, name, getattr(self, name))


@dataclass
class GradScalerKwargs(KwargsHandler):
    """Arguments for `torch.cuda.amp.GradScaler` (torch.amp.GradScaler).

    Example:
        >>> GradScalerKwargs(backoff_factor=0.25).to_kwargs()
        {'backoff_factor': 0.25}
    """

    init_scale: float = 65536.0
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    enabled: bool = True

    def __post_init__(self):
        owner = "GradScalerKwargs"
        # The same bounds GradScaler itself asserts, reported before any scaler exists.
        check_number(owner, "init_scale", self.init_scale, exclusive_minimum=0)
        check_number(owner, "growth_factor", self.growth_factor, exclusive_minimum=1.0)
        check_number(owner, "backoff_factor", self.backoff_factor, exclusive_minimum=0, exclusive_maximum=1.0)
        check_number(owner, "growth_interval", self.growth_interval, integer=True, minimum=1)
        check_bool(owner, "enabled", self.enabled)


def _process_group_backends() -> tuple:
    import torch.distributed as dist

    registered = tuple(name for name in getattr(dist.Backend, "backend_list", ()) if name != "undefined")
    return tuple(dict.fromkeys(KNOWN_PROCESS_GROUP_BACKENDS + registered))


@dataclass
class InitProcessGroupKwargs(KwargsHandler):
    """Arguments for `torch.distributed.init_process_group` (backend, init_method, timeout).

    `backend` may also be a device map such as "cpu:gloo,cuda:nccl", as torch accepts.

    Example:
        >>> from datetime import timedelta
        >>> InitProcessGroupKwargs(timeout=timedelta(seconds=800)).to_kwargs()
        {'timeout': datetime.timedelta(seconds=800)}
    """

    backend: Optional[str] = "nccl"
    init_method: Optional[str] = None
    timeout: timedelta = timedelta(seconds=1800)

    def __post_init__(self):
        owner = "InitProcessGroupKwargs"
        if self.backend is not None:
            check_instance(owner, "backend", self.backend, str, "a backend name string", optional=True)
            allowed = _process_group_backends()
            for part in self.backend.split(","):
                name = part.split(":")[-1].strip().lower()
                check_choice(owner, "backend", name if name in allowed else self.backend, allowed)
        check_instance(owner, "init_method", self.init_method, str, "a URL string such as 'tcp://host:port'",
                       optional=True)
        check_instance(owner, "timeout", self.timeout, timedelta, "a datetime.timedelta")
        if self.timeout <= timedelta(0):
            raise reject(owner, "timeout", self.timeout, "a positive datetime.timedelta")


@dataclass
class FP8RecipeKwargs(KwargsHandler):
    """The FP8 recipe for TransformerEngine ("te") or MS-AMP ("msamp") mixed precision.

    backend is case-insensitive and stored upper-case; fp8_format is stored upper-case.

    Example:
        >>> FP8RecipeKwargs(backend="te", fp8_format="hybrid").to_kwargs()
        {'backend': 'TE', 'fp8_format': 'HYBRID'}
    """

    backend: str = "MSAMP"
    opt_level: str = "O2"
    margin: int = 0
    interval: int = 1
    fp8_format: str = "E4M3"
    amax_history_len: int = 1
    amax_compute_algo: str = "most_recent"
    override_linear_precision: Tuple[bool, bool, bool] = (False, False, False)

    def __post_init__(self):
        owner = "FP8RecipeKwargs"
        self.backend = check_choice(owner, "backend", self.backend, FP8_BACKENDS, normalize=str.upper)
        self.opt_level = check_choice(owner, "opt_level", self.opt_level, FP8_OPT_LEVELS, normalize=str.upper)
        self.fp8_format = check_choice(owner, "fp8_format", self.fp8_format, FP8_FORMATS, normalize=str.upper)
        self.amax_compute_algo = check_choice(owner, "amax_compute_algo", self.amax_compute_algo,
                                              FP8_AMAX_COMPUTE_ALGOS)
        check_number(owner, "margin", self.margin, integer=True, minimum=0)
        check_number(owner, "interval", self.interval, integer=True, minimum=1)
        check_number(owner, "amax_history_len", self.amax_history_len, integer=True, minimum=1)
        precision = self.override_linear_precision
        if not (isinstance(precision, (tuple, list)) and len(precision) == 3
                and all(isinstance(flag, bool) for flag in precision)):
            raise reject(owner, "override_linear_precision", precision, "a tuple of three bools (fprop, dgrad, wgrad)")
        self.override_linear_precision = tuple(precision)
