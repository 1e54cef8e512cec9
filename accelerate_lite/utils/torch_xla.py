"""install_xla: pip-install the torch_xla matching the installed torch, inside a Colab or Kaggle notebook."""

import importlib.metadata
import os
import subprocess
import sys
from typing import Optional

from ..errors import UnsupportedEnvironmentError

# torch_xla's TPU builds resolve libtpu from this index (torch_xla's own install instructions).
LIBTPU_INDEX = "https://storage.googleapis.com/libtpu-releases/index.html"


def notebook_environment() -> Optional[str]:
    """Return "colab" or "kaggle" when running in one of those notebooks, else None.

    Colab is recognised by its IPython kernel (google.colab), Kaggle by KAGGLE_KERNEL_RUN_TYPE, as upstream does.
    """
    ipython = sys.modules.get("IPython")
    if ipython is not None and hasattr(ipython, "get_ipython"):
        if "google.colab" in str(ipython.get_ipython()):
            return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
        return "kaggle"
    return None


def torch_xla_requirement(torch_version: str) -> str:
    """The pip requirement of the torch_xla release series matching a torch version.

    Example:
        >>> torch_xla_requirement("2.5.1+cu121")
        'torch_xla[tpu]~=2.5.0'
    """
    release = torch_version.split("+")[0]
    major, minor = release.split(".")[:2]
    return f"torch_xla[tpu]~={major}.{minor}.0"


def torch_upgrade_command() -> list:
    """The pip command that upgrades torch in the running interpreter."""
    return [sys.executable, "-m", "pip", "install", "-U", "torch"]


def torch_xla_install_command(torch_version: str) -> list:
    """The pip command that installs the torch_xla matching torch_version in the running interpreter."""
    return [sys.executable, "-m", "pip", "install", torch_xla_requirement(torch_version), "-f", LIBTPU_INDEX]


def install_xla(upgrade: bool = False):
    """Install the torch_xla wheels matching the installed torch, in a Colab or Kaggle notebook.

    Args:
        upgrade: upgrade torch first, then install the torch_xla matching the new version.

    Raises:
        UnsupportedEnvironmentError: outside a Colab/Kaggle notebook, saying why and the command to run.
        subprocess.CalledProcessError: when pip fails.

    Example:
        >>> from accelerate_lite.utils import install_xla
        >>> install_xla(upgrade=True)  # in a Colab TPU notebook
    """
    if notebook_environment() is None:
        requirement = torch_xla_requirement(importlib.metadata.version("torch"))
        raise UnsupportedEnvironmentError(
            "install_xla() only installs inside a Google Colab or Kaggle notebook, and none was detected (no "
            "google.colab IPython kernel, no KAGGLE_KERNEL_RUN_TYPE): it pip-installs into the running "
            "interpreter, which elsewhere belongs to you. Install it yourself with:\n"
            f"    {sys.executable} -m pip install '{requirement}' -f {LIBTPU_INDEX}"
        )
    if upgrade:
        subprocess.run(torch_upgrade_command(), check=True)
    # Read the version after any upgrade, so the wheel matches the torch now installed.
    subprocess.run(torch_xla_install_command(importlib.metadata.version("torch")), check=True)
