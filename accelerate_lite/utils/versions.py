"""Comparing installed library versions against requirements."""

import importlib.metadata
import operator
from typing import Union

from packaging.version import Version, parse

from .constants import STR_OPERATION_TO_FUNC_NAMES

STR_OPERATION_TO_FUNC = dict(
    zip(STR_OPERATION_TO_FUNC_NAMES, (operator.gt, operator.ge, operator.eq, operator.ne, operator.le, operator.lt))
)


def _torch_version() -> Version:
    # The installed distribution's version, so a local build tag ("+cpu") compares like upstream's.
    return parse(importlib.metadata.version("torch"))


torch_version = _torch_version()


def compare_versions(library_or_version: Union[str, Version], operation: str, requirement_version: str) -> bool:
    """Compare a library's installed version (or a version) against a requirement.

    Args:
        library_or_version: a distribution name such as "torch", or a `packaging.version.Version`.
        operation: one of ">", ">=", "==", "!=", "<=", "<".
        requirement_version: the version to compare against, such as "2.1".

    Returns:
        Whether `version <operation> requirement_version` holds.

    Raises:
        ValueError: when operation is not one of the six comparison strings.
        importlib.metadata.PackageNotFoundError: when a named library is not installed.

    Example:
        >>> compare_versions("torch", ">=", "1.0")
        True
    """
    if operation not in STR_OPERATION_TO_FUNC:
        raise ValueError(
            f"compare_versions(): operation {operation!r} is not a comparison; "
            f"expected one of {list(STR_OPERATION_TO_FUNC)}"
        )
    if isinstance(library_or_version, str):
        library_or_version = parse(importlib.metadata.version(library_or_version))
    return STR_OPERATION_TO_FUNC[operation](library_or_version, parse(requirement_version))


def is_torch_version(operation: str, version: str) -> bool:
    """Compare the installed torch's version against `version` with `operation`.

    Example:
        >>> is_torch_version(">=", "2.1")
        True
    """
    return compare_versions(torch_version, operation, version)
