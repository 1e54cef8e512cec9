"""Field checks and environment-variable defaults shared by the configuration dataclasses.

Each plugin declares its environment defaults as a table of `EnvDefault` rows (field, variable,
parser, fallback) and applies them with one call to `apply_env_defaults`, instead of reading
`os.environ` field by field in `__post_init__`. The table is also what the tests and the docs read.
"""

import contextlib
import contextvars
import dataclasses
import os
from typing import Any, Callable, Iterable, Mapping, Optional

from ..errors import ConfigurationError
from .environment import str_to_bool

# Where env defaults are read from: os.environ unless a block substitutes a mapping. KwargsHandler.to_kwargs
# builds its reference instance with an empty mapping, so the environment never leaks into "the defaults"
# and os.environ itself is never emptied (which would race with other threads).
_ENV_SOURCE: contextvars.ContextVar = contextvars.ContextVar("accelerate_lite_env_source", default=None)


def current_environ() -> Mapping[str, str]:
    """Return the mapping environment defaults are read from (os.environ unless substituted)."""
    source = _ENV_SOURCE.get()
    return os.environ if source is None else source


@contextlib.contextmanager
def environment_source(mapping: Mapping[str, str]):
    """Read environment defaults from `mapping` instead of os.environ inside the block (this context only)."""
    token = _ENV_SOURCE.set(mapping)
    try:
        yield
    finally:
        _ENV_SOURCE.reset(token)


# --- parsers: raw environment string -> field value -------------------------------------------


def as_int(raw: str) -> int:
    """Parse an integer."""
    return int(raw)


def as_float(raw: str) -> float:
    """Parse a float."""
    return float(raw)


def as_str(raw: str) -> str:
    """Keep the string as it is."""
    return raw


def as_flag(raw: str) -> bool:
    """Parse a truth value the way str_to_bool does (yes/no, true/false, 1/0, on/off)."""
    return str_to_bool(raw) == 1


def as_int_or_auto(raw: str):
    """Digits become an int; anything else (normally "auto") stays a string."""
    return int(raw) if raw.isdigit() else raw


def as_float_or_none(raw: str) -> Optional[float]:
    """"none" means unset; anything else is a float."""
    return None if raw.lower() == "none" else float(raw)


@dataclasses.dataclass(frozen=True)
class EnvDefault:
    """One row of a plugin's environment table.

    Attributes:
        field: the dataclass field it fills.
        var: the environment variable read.
        parse: turns the variable's string into the field's value.
        fallback: the string parsed when the variable is unset; None leaves the field as it is.
    """

    field: str
    var: str
    parse: Callable[[str], Any]
    fallback: Optional[str] = None


def _field_default(obj, name):
    for spec in dataclasses.fields(obj):
        if spec.name == name:
            if spec.default is not dataclasses.MISSING:
                return spec.default
            return None
    raise AttributeError(f"{type(obj).__name__} has no field {name!r}")


def _is_unset(value, default) -> bool:
    # A field counts as unset while it still holds its signature default (None for most fields).
    if value is None or value is default:
        return True
    if isinstance(default, (bool, int, float, str)) and type(value) is type(default):
        return value == default
    return False


def apply_env_defaults(obj, table: Iterable[EnvDefault]) -> None:
    """Fill every field of `obj` that is still at its default from the environment, per `table`.

    Args:
        obj: a dataclass instance (normally `self` in `__post_init__`).
        table: its EnvDefault rows.

    Raises:
        ConfigurationError: when a variable is set to something its parser refuses, naming the
            variable, the value and the field.
    """
    environ = current_environ()
    owner = type(obj).__name__
    for row in table:
        if not _is_unset(getattr(obj, row.field), _field_default(obj, row.field)):
            continue
        raw = environ.get(row.var, row.fallback)
        if raw is None:
            continue
        try:
            value = row.parse(raw)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(
                f"{owner}.{row.field}: environment variable {row.var}={raw!r} could not be read "
                f"({error}); set it to a valid value or unset it"
            ) from None
        setattr(obj, row.field, value)


# --- checks: each names the class, the field, what arrived and what is accepted ----------------


def reject(owner: str, field: str, value, expected: str) -> ConfigurationError:
    """Build the error for `owner(field=value)`, saying what was expected; the caller raises it.

    Example:
        >>> str(reject("GradScalerKwargs", "growth_factor", 0.5, "a number > 1.0"))
        'GradScalerKwargs(growth_factor=0.5): expected a number > 1.0'
    """
    return ConfigurationError(f"{owner}({field}={value!r}): expected {expected}")


def check_choice(owner: str, field: str, value, allowed, *, normalize=None):
    """Return value (normalized) when it is one of `allowed`, else raise ConfigurationError.

    Example:
        >>> check_choice("FP8RecipeKwargs", "backend", "te", ("MSAMP", "TE"), normalize=str.upper)
        'TE'
    """
    candidate = value
    if normalize is not None and isinstance(value, str):
        candidate = normalize(value)
    if candidate not in allowed:
        choices = ", ".join(repr(choice) for choice in allowed)
        raise reject(owner, field, value, f"one of {choices}")
    return candidate


def check_bool(owner: str, field: str, value, *, optional: bool = False):
    """Raise ConfigurationError unless value is a bool (or None when optional)."""
    if value is None and optional:
        return value
    if not isinstance(value, bool):
        raise reject(owner, field, value, "True or False" + (" or None" if optional else ""))
    return value


def check_number(owner: str, field: str, value, *, integer=False, minimum=None, maximum=None,
                 exclusive_minimum=None, exclusive_maximum=None, optional=False):
    """Raise ConfigurationError unless value is a number (an int when integer) within the bounds."""
    if value is None and optional:
        return value
    kinds = (int,) if integer else (int, float)
    bounds = []
    if minimum is not None:
        bounds.append(f">= {minimum}")
    if exclusive_minimum is not None:
        bounds.append(f"> {exclusive_minimum}")
    if maximum is not None:
        bounds.append(f"<= {maximum}")
    if exclusive_maximum is not None:
        bounds.append(f"< {exclusive_maximum}")
    expected = ("an int" if integer else "a number") + (" " + " and ".join(bounds) if bounds else "")
    if optional:
        expected += " or None"
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise reject(owner, field, value, expected)
    out_of_range = (
        (minimum is not None and value < minimum)
        or (exclusive_minimum is not None and value <= exclusive_minimum)
        or (maximum is not None and value > maximum)
        or (exclusive_maximum is not None and value >= exclusive_maximum)
    )
    if out_of_range:
        raise reject(owner, field, value, expected)
    return value


def check_instance(owner: str, field: str, value, kinds, description: str, *, optional=False):
    """Raise ConfigurationError unless value is an instance of kinds (or None when optional)."""
    if value is None and optional:
        return value
    if not isinstance(value, kinds):
        raise reject(owner, field, value, description + (" or None" if optional else ""))
    return value
