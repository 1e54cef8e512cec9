"""The accelerate config file: where it lives by default, ClusterConfig, and load_config_from_file.

A config file is YAML (the default, `default_config.yaml`) or JSON (by extension); `write_basic_config`
writes JSON into the .yaml path, as upstream does, which YAML reads back unchanged.
"""

import dataclasses
import json
import os
from dataclasses import dataclass
from enum import Enum
from typing import List, Mapping, Optional

import yaml

from ...errors import ConfigurationError
from ...utils.config_fields import check_bool, check_choice, check_number, reject
from ...utils.enums import ComputeEnvironment, DistributedType, PrecisionType

CONFIG_FILE_NAME = "default_config.yaml"


def hf_cache_home_from(environ: Mapping[str, str]) -> str:
    """$HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface (user-expanded)."""
    default = os.path.join(environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.expanduser(environ.get("HF_HOME", default))


def default_config_path(environ: Optional[Mapping[str, str]] = None) -> str:
    """The default config file for an environment: <hf cache home>/accelerate/default_config.yaml.

    Example:
        >>> default_config_path({"HF_HOME": "/data/hf"})
        '/data/hf/accelerate/default_config.yaml'
    """
    environ = os.environ if environ is None else environ
    return os.path.join(hf_cache_home_from(environ), "accelerate", CONFIG_FILE_NAME)


# Upstream's module-level names, fixed when the module is imported (as upstream's are).
hf_cache_home = hf_cache_home_from(os.environ)
cache_dir = os.path.join(hf_cache_home, "accelerate")
default_json_config_file = default_config_path()
default_yaml_config_file = default_json_config_file
default_config_file = default_yaml_config_file


@dataclass
class ClusterConfig:
    """A local-machine accelerate config (upstream's ClusterConfig fields).

    Example:
        >>> ClusterConfig(compute_environment="LOCAL_MACHINE", distributed_type="NO", mixed_precision="no",
        ...               use_cpu=True, debug=False, num_processes=1).distributed_type
        <DistributedType.NO: 'NO'>
    """

    compute_environment: ComputeEnvironment
    distributed_type: DistributedType
    mixed_precision: str
    use_cpu: bool
    debug: bool
    num_processes: int
    machine_rank: int = 0
    num_machines: int = 1
    gpu_ids: Optional[str] = None
    main_process_ip: Optional[str] = None
    main_process_port: Optional[int] = None
    rdzv_backend: Optional[str] = "static"
    same_network: Optional[bool] = False
    main_training_function: str = "main"
    deepspeed_config: dict = None
    fsdp_config: dict = None
    megatron_lm_config: dict = None
    ipex_config: dict = None
    downcast_bf16: bool = False
    tpu_name: str = None
    tpu_zone: str = None
    tpu_use_cluster: bool = False
    tpu_use_sudo: bool = False
    command_file: str = None
    commands: List[str] = None
    tpu_vm: List[str] = None
    tpu_env: List[str] = None
    dynamo_config: dict = None

    def __post_init__(self):
        owner = "ClusterConfig"
        self.compute_environment = ComputeEnvironment(check_choice(
            owner, "compute_environment", str(self.compute_environment), ["LOCAL_MACHINE"]))
        self.distributed_type = DistributedType(check_choice(
            owner, "distributed_type", str(self.distributed_type), DistributedType.list()))
        self.mixed_precision = check_choice(owner, "mixed_precision", self.mixed_precision, PrecisionType.list(),
                                            normalize=str.lower)
        check_bool(owner, "use_cpu", self.use_cpu)
        check_bool(owner, "debug", self.debug)
        check_number(owner, "num_processes", self.num_processes, integer=True, minimum=0)
        check_number(owner, "num_machines", self.num_machines, integer=True, minimum=1)
        check_number(owner, "machine_rank", self.machine_rank, integer=True, minimum=0,
                     maximum=self.num_machines - 1)
        for name in ("deepspeed_config", "fsdp_config", "megatron_lm_config", "ipex_config", "dynamo_config"):
            if getattr(self, name) is None:
                setattr(self, name, {})
            elif not isinstance(getattr(self, name), dict):
                raise reject(owner, name, getattr(self, name), "a mapping of settings or None")

    def to_dict(self) -> dict:
        """The fields as plain data: enums as their values, None and empty sections left out."""
        result = {}
        for name, value in dataclasses.asdict(self).items():
            if isinstance(value, Enum):
                value = value.value
            if value is None or value == {}:
                continue
            result[name] = value
        return result

    @classmethod
    def from_dict(cls, config: dict, source: str = "<dict>") -> "ClusterConfig":
        """Build from a loaded file's mapping, upgrading upstream's older keys (fp16, dynamo_backend).

        Raises:
            ConfigurationError: for unknown keys (naming them and the file) or invalid values.
        """
        config = dict(config)
        config.setdefault("compute_environment", ComputeEnvironment.LOCAL_MACHINE.value)
        if "mixed_precision" not in config or config["mixed_precision"] is False:
            config["mixed_precision"] = "fp16" if config.get("fp16") else "no"
        config.pop("fp16", None)
        if "dynamo_backend" in config:
            backend = config.pop("dynamo_backend")
            config["dynamo_config"] = {} if backend == "NO" else {"dynamo_backend": backend}
        config.setdefault("use_cpu", False)
        config.setdefault("debug", False)
        unknown = sorted(set(config) - {spec.name for spec in dataclasses.fields(cls)})
        if unknown:
            raise ConfigurationError(
                f"the config file {source} has unknown keys {unknown}; remove them or rewrite the file with "
                "write_basic_config()")
        if "num_processes" not in config:
            raise ConfigurationError(f"the config file {source} has no num_processes; add it (1 for one process)")
        return cls(**config)

    @classmethod
    def from_yaml_file(cls, yaml_file=None) -> "ClusterConfig":
        """Load a YAML (or JSON, which YAML reads) config file; the default file when None."""
        yaml_file = default_yaml_config_file if yaml_file is None else yaml_file
        with open(yaml_file, encoding="utf-8") as handle:
            return cls.from_dict(yaml.safe_load(handle) or {}, source=str(yaml_file))

    @classmethod
    def from_json_file(cls, json_file=None) -> "ClusterConfig":
        """Load a JSON config file; the default file when None."""
        json_file = default_json_config_file if json_file is None else json_file
        with open(json_file, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle), source=str(json_file))

    def to_json_file(self, json_file):
        """Write the config as sorted, indented JSON."""
        with open(json_file, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def to_yaml_file(self, yaml_file):
        """Write the config as YAML."""
        with open(yaml_file, "w", encoding="utf-8") as handle:
            yaml.safe_dump(self.to_dict(), handle)


def load_config_from_file(config_file=None) -> ClusterConfig:
    """Load an accelerate config file (JSON by its .json extension, else YAML); the default file when None.

    Raises:
        FileNotFoundError: when config_file is given but does not exist.
        ConfigurationError: for a SageMaker config (not supported here), unknown keys or invalid values.

    Example:
        >>> path = write_basic_config(save_location="/tmp/demo/default_config.yaml")
        >>> load_config_from_file(path).mixed_precision
        'no'
    """
    if config_file is None:
        config_file = default_config_file
    elif not os.path.isfile(config_file):
        raise FileNotFoundError(
            f"the config file {config_file} does not exist; pass an existing file, or create one with "
            "write_basic_config()")
    with open(config_file, encoding="utf-8") as handle:
        content = json.load(handle) if str(config_file).endswith(".json") else yaml.safe_load(handle)
    content = content or {}
    if not isinstance(content, dict):
        raise ConfigurationError(f"the config file {config_file} holds {type(content).__name__}, not a mapping")
    if content.get("compute_environment", "LOCAL_MACHINE") != ComputeEnvironment.LOCAL_MACHINE.value:
        raise ConfigurationError(
            f"the config file {config_file} is for compute_environment={content['compute_environment']!r}; "
            "only LOCAL_MACHINE configs are supported by accelerate_lite")
    return ClusterConfig.from_dict(content, source=str(config_file))
