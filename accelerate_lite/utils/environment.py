"""Reading flags from, and temporarily changing, the process environment."""

import contextlib
import ctypes
import functools
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
    # Record each key's original value before the first write, inside the try: a key given twice
    # (foo= and FOO=) or a value that cannot be set (a NUL byte) must not leak past the block.
    original = {}
    try:
        for key, value in kwargs.items():
            key = key.upper()
            original.setdefault(key, os.environ.get(key))
            os.environ[key] = str(value)
        yield
    finally:
        for key, value in original.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@functools.lru_cache(maxsize=None)
def _environ_block():
    """The C library's `environ` array, or None where it cannot be reached."""
    try:
        return ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), "environ")
    except (OSError, ValueError, AttributeError):
        return None


def _process_environ():
    """The process's real (C-level) environment as {name: value}, or None where it cannot be read.

    It can differ from os.environ: C code may set variables directly (GNU readline, imported by pytest,
    exports LINES and COLUMNS), and children inherit the C-level block, not the mapping.
    """
    block = _environ_block()
    if block is None:
        return None
    entries, index = {}, 0
    while block[index] is not None:
        name, _, value = os.fsdecode(block[index]).partition("=")
        entries[name] = value
        index += 1
    return entries


def _unset_process_environ():
    for name in _process_environ() or ():
        os.unsetenv(name)


@contextlib.contextmanager
def clear_environment():
    """Empty os.environ for the duration of a block, then restore the original exactly.

    Whatever the block sets or removes is discarded on exit, also when the block raises. Child
    processes started inside the block see an empty environment: the C-level environment is emptied
    too, including variables set there behind os.environ's back, and put back exactly on exit.

    Example:
        >>> with clear_environment():
        ...     len(os.environ)
        0
    """
    saved = dict(os.environ)
    saved_process = _process_environ()
    os.environ.clear()
    _unset_process_environ()
    try:
        yield
    finally:
        os.environ.clear()
        _unset_process_environ()
        os.environ.update(saved)
        if saved_process is not None:
            # Put the C-level block back exactly too, including variables os.environ never knew.
            for name in set(_process_environ()) - set(saved_process):
                os.unsetenv(name)
            current = _process_environ()
            for name, value in saved_process.items():
                if current.get(name) != value:
                    os.putenv(name, value)
