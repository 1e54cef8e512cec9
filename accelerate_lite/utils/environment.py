"""Reading flags from, and temporarily changing, the process environment."""

import contextlib
import os


def str_to_bool(value) -> int:
    """Convert a string meaning true or false to 1 or 0.

    Args:
        value: one of y/yes/t/true/on/1 or n/no/f/false/off/0, any case.

    Returns:
        1 for a true value, 0 for a false one.

    Raises:
        ValueError: for any other string, naming it.

    Example:
        >>> str_to_bool("Yes")
        1
    """
    lowered = str(value).lower()
    if lowered in ("y", "yes", "t", "true", "on", "1"):
        return 1
    if lowered in ("n", "no", "f", "false", "off", "0"):
        return 0
    raise ValueError(f"invalid truth value {value!r}: expected one of y/yes/t/true/on/1 or n/no/f/false/off/0")


def get_int_from_env(env_keys, default):
    """Return the first non-negative integer found among env_keys, else default."""
    for key in env_keys:
        value = int(os.environ.get(key, -1))
        if value >= 0:
            return value
    return default


def parse_flag_from_env(key, default=False) -> bool:
    """Return the boolean value of environment variable key, or default when it is unset.

    Example:
        >>> with patch_environment(ACCELERATE_DEBUG_MODE="1"):
        ...     parse_flag_from_env("ACCELERATE_DEBUG_MODE")
        True
    """
    value = os.environ.get(key, str(default))
    return str_to_bool(value) == 1


def parse_choice_from_env(key, default="no"):
    """Return environment variable key's value, or default when it is unset."""
    return os.environ.get(key, str(default))


@contextlib.contextmanager
def patch_environment(**kwargs):
    """Set environment variables for the duration of a block, then restore each exactly.

    Keys are upper-cased and values str()-ed, as upstream does. On exit every key is put back to the
    value it had before, or removed if it did not exist, also when the block raises.

    Example:
        >>> with patch_environment(master_port=29501):
        ...     os.environ["MASTER_PORT"]
        '29501'
    """
    existing = {}
    for key, value in kwargs.items():
        key = key.upper()
        if key in os.environ and key not in existing:
            existing[key] = os.environ[key]
        os.environ[key] = str(value)
    try:
        yield
    finally:
        for key in kwargs:
            key = key.upper()
            if key in existing:
                os.environ[key] = existing[key]
            else:
                os.environ.pop(key, None)


@contextlib.contextmanager
def clear_environment():
    """Empty os.environ for the duration of a block, then restore the original exactly.

    Whatever the block sets or removes is discarded on exit, also when the block raises. Child
    processes started inside the block see an empty environment (os.environ.clear() unsets the
    variables at the C level too).

    Example:
        >>> with clear_environment():
        ...     len(os.environ)
        0
    """
    saved = dict(os.environ)
    os.environ.clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
