"""accelerate_lite.utils.install_xla: installs only in a Colab/Kaggle notebook, refuses clearly elsewhere."""

import importlib.metadata
import sys
import types

import pytest

from accelerate_lite.errors import UnsupportedEnvironmentError
from accelerate_lite.utils import install_xla, patch_environment
from accelerate_lite.utils import torch_xla as torch_xla_module
from accelerate_lite.utils.torch_xla import LIBTPU_INDEX, notebook_environment, torch_xla_requirement


@pytest.fixture
def no_notebook(monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.delitem(sys.modules, "IPython", raising=False)


@pytest.fixture
def pip_calls(monkeypatch):
    """Records the commands install_xla runs instead of running pip (no TPU wheel can be installed here)."""
    calls = []
    monkeypatch.setattr(torch_xla_module.subprocess, "run", lambda command, check: calls.append((command, check)))
    return calls


@pytest.fixture
def colab(monkeypatch, no_notebook):
    # A Colab kernel cannot exist here: a stand-in IPython module whose shell prints as Colab's does.
    shell = type("Shell", (), {"__str__": lambda self: "<google.colab._shell.Shell object at 0x7f>"})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def test_refuses_outside_a_notebook_saying_why_and_what_to_run(no_notebook, pip_calls):
    with pytest.raises(UnsupportedEnvironmentError) as caught:
        install_xla()
    message = str(caught.value)
    requirement = torch_xla_requirement(importlib.metadata.version("torch"))
    assert "Colab" in message and "Kaggle" in message
    assert f"-m pip install '{requirement}' -f {LIBTPU_INDEX}" in message
    assert isinstance(caught.value, RuntimeError)  # upstream raises RuntimeError
    assert pip_calls == []


def test_plain_ipython_is_not_a_notebook(monkeypatch, no_notebook, pip_calls):
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert notebook_environment() is None
    with pytest.raises(UnsupportedEnvironmentError):
        install_xla(upgrade=True)
    assert pip_calls == []


def test_installs_the_matching_wheel_in_colab(colab, pip_calls):
    assert notebook_environment() == "colab"
    install_xla()
    requirement = torch_xla_requirement(importlib.metadata.version("torch"))
    assert pip_calls == [([sys.executable, "-m", "pip", "install", requirement, "-f", LIBTPU_INDEX], True)]


def test_upgrade_installs_torch_first_in_kaggle(no_notebook, pip_calls):
    with patch_environment(KAGGLE_KERNEL_RUN_TYPE="Interactive"):
        assert notebook_environment() == "kaggle"
        install_xla(upgrade=True)
    assert [command[4:] for command, _ in pip_calls] == [
        ["-U", "torch"], [torch_xla_requirement(importlib.metadata.version("torch")), "-f", LIBTPU_INDEX]]


@pytest.mark.parametrize("torch_version, requirement", [
    ("2.13.0+cpu", "torch_xla[tpu]~=2.13.0"),
    ("2.5.1+cu121", "torch_xla[tpu]~=2.5.0"),
    ("2.9.0", "torch_xla[tpu]~=2.9.0"),
])
def test_requirement_matches_the_torch_release(torch_version, requirement):
    assert torch_xla_requirement(torch_version) == requirement
