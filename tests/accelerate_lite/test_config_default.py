"""accelerate_lite.commands.config: write_basic_config, the default path, and loading a config back."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from accelerate_lite.commands.config import default
from accelerate_lite.commands.config.config_args import ClusterConfig, default_config_path, load_config_from_file
from accelerate_lite.commands.config.default import write_basic_config
from accelerate_lite.errors import ConfigurationError
from accelerate_lite.utils import DistributedType


def test_signature_matches_upstream():
    import inspect

    parameters = inspect.signature(write_basic_config).parameters
    assert list(parameters) == ["mixed_precision", "save_location", "use_xpu"]
    assert parameters["mixed_precision"].default == "no" and parameters["use_xpu"].default is False
    assert parameters["save_location"].default == default_config_path()


def test_writes_a_cpu_config_that_loads_back(tmp_path):
    target = tmp_path / "nested" / "dir" / "default_config.yaml"
    written = write_basic_config(mixed_precision="BF16", save_location=str(target))
    assert written == target and target.is_file()
    raw = yaml.safe_load(target.read_text())
    assert raw == json.loads(target.read_text())  # JSON content in a .yaml file, as upstream writes
    assert raw["mixed_precision"] == "bf16" and raw["use_cpu"] is True and raw["num_processes"] == 1
    loaded = load_config_from_file(str(target))
    assert isinstance(loaded, ClusterConfig)
    assert (loaded.distributed_type, loaded.mixed_precision, loaded.num_processes) == (DistributedType.NO, "bf16", 1)
    assert loaded.to_dict() == raw


def test_does_not_overwrite_an_existing_config(tmp_path, capsys):
    target = tmp_path / "default_config.yaml"
    target.write_text("mine: true\n")
    assert write_basic_config(mixed_precision="fp16", save_location=str(target)) is False
    assert target.read_text() == "mine: true\n"
    assert "already exists" in capsys.readouterr().out


@pytest.mark.parametrize("precision", ["fp32", "int8", "", "half"],
                         ids=lambda p: f"write_basic_config(mixed_precision={p!r})")
def test_invalid_mixed_precision_is_refused_and_nothing_written(tmp_path, precision):
    target = tmp_path / "default_config.yaml"
    with pytest.raises(ConfigurationError, match="'no', 'fp8', 'fp16', 'bf16'"):
        write_basic_config(mixed_precision=precision, save_location=str(target))
    assert not target.exists()


@pytest.mark.parametrize("precision", ["no", "fp16", "bf16", "fp8"])
def test_every_valid_mixed_precision_round_trips(tmp_path, precision):
    target = tmp_path / f"{precision}.yaml"
    write_basic_config(mixed_precision=precision, save_location=str(target))
    assert load_config_from_file(str(target)).mixed_precision == precision


# No accelerator exists here: the simulators' hardware profiles make torch see one.
MACHINES = [
    ("8xA100-80GB", False, ("MULTI_GPU", 8, False)),
    ("2xT4", False, ("MULTI_GPU", 2, False)),
    ("8xAscend910B", False, ("MULTI_NPU", 8, False)),
    ("4xMax1550", True, ("MULTI_XPU", 4, False)),
    ("4xMax1550", False, ("NO", 1, True)),  # XPUs count only when asked for, as upstream
    ("cpu", False, ("NO", 1, True)),
]


@pytest.mark.parametrize("profile, use_xpu, expected", MACHINES,
                         ids=[f"write_basic_config(use_xpu={x}) on {p}" for p, x, _ in MACHINES])
def test_config_describes_the_machine(tmp_path, profile, use_xpu, expected):
    from simulators import apply_profile

    with apply_profile(profile):
        target = write_basic_config(save_location=str(tmp_path / "c.yaml"), use_xpu=use_xpu)
    loaded = load_config_from_file(str(target))
    assert (loaded.distributed_type.value, loaded.num_processes, loaded.use_cpu) == expected


def test_one_gpu_is_not_distributed(tmp_path, monkeypatch):
    # No GPU exists here and no catalog profile has one GPU: torch.cuda is patched to report one.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    config = default.basic_config()
    assert (config.distributed_type, config.num_processes, config.use_cpu) == (DistributedType.NO, 1, False)


@pytest.mark.slow  # a fresh interpreter importing torch: 3-7 s on this machine
def test_default_location_follows_hf_home(tmp_path):
    # The default is fixed at import, so a fresh interpreter with HF_HOME set is what proves it.
    script = ("from accelerate_lite.commands.config.default import write_basic_config; "
              "print(write_basic_config(mixed_precision='fp16'))")
    environ = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True)
    expected = tmp_path / "hf" / "accelerate" / "default_config.yaml"
    assert out.stdout.strip() == str(expected) and expected.is_file()


@pytest.mark.parametrize("environ, expected", [
    ({"HF_HOME": "/data/hf"}, "/data/hf/accelerate/default_config.yaml"),
    ({"HF_HOME": "/data/hf", "XDG_CACHE_HOME": "/xdg"}, "/data/hf/accelerate/default_config.yaml"),
    ({"XDG_CACHE_HOME": "/xdg"}, "/xdg/huggingface/accelerate/default_config.yaml"),
    ({}, os.path.expanduser("~/.cache/huggingface/accelerate/default_config.yaml")),
])
def test_default_config_path(environ, expected):
    assert default_config_path(environ) == expected


def test_load_json_config_and_upstream_legacy_keys(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"distributed_type": "MULTI_CPU", "num_processes": 4, "fp16": True,
                                "dynamo_backend": "INDUCTOR"}))
    loaded = load_config_from_file(str(path))
    assert (loaded.distributed_type, loaded.mixed_precision, loaded.num_processes) == ("MULTI_CPU", "fp16", 4)
    assert loaded.dynamo_config == {"dynamo_backend": "INDUCTOR"} and loaded.use_cpu is False


@pytest.mark.parametrize("content, error, fragment", [
    ({"distributed_type": "NO", "num_processes": 1, "gpus": 2}, ConfigurationError, "unknown keys ['gpus']"),
    ({"distributed_type": "MULTI_TPU", "num_processes": 1}, ConfigurationError, "'MULTI_CPU'"),
    ({"distributed_type": "NO", "num_processes": 1, "mixed_precision": "fp64"}, ConfigurationError, "'bf16'"),
    ({"distributed_type": "NO"}, ConfigurationError, "num_processes"),
    ({"compute_environment": "AMAZON_SAGEMAKER", "distributed_type": "NO"}, ConfigurationError, "LOCAL_MACHINE"),
], ids=["load_config_from_file(<unknown key>)", "load_config_from_file(<bad distributed_type>)",
        "load_config_from_file(<bad mixed_precision>)", "load_config_from_file(<no num_processes>)",
        "load_config_from_file(<sagemaker>)"])
def test_load_rejects_bad_files(tmp_path, content, error, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(error) as caught:
        load_config_from_file(str(path))
    assert fragment in str(caught.value)


def test_load_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config_from_file(str(tmp_path / "nope.yaml"))


def test_yaml_round_trip(tmp_path):
    config = default.basic_config("fp8")
    config.to_yaml_file(tmp_path / "c.yaml")
    assert ClusterConfig.from_yaml_file(tmp_path / "c.yaml") == config
