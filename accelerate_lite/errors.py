"""Exception classes of accelerate_lite (one place, each with a one-line docstring)."""


class AccelerateLiteError(Exception):
    """Base class of every error accelerate_lite raises on its own account."""


class ConfigurationError(AccelerateLiteError, ValueError):
    """A configuration dataclass, plugin or config file got a value outside what it accepts."""


class LaunchError(AccelerateLiteError, RuntimeError):
    """A rank started by debug_launcher failed, died or ran past its deadline (.failures: rank -> traceback)."""

    def __init__(self, message, failures=None, exitcodes=None):
        super().__init__(message)
        self.failures = dict(failures or {})
        self.exitcodes = dict(exitcodes or {})


class UnsupportedEnvironmentError(AccelerateLiteError, RuntimeError):
    """An operation refused because the environment it runs in cannot support it (e.g. not a notebook)."""


# --- data operations (issue 3) ---------------------------------------------------------------


class DistributedOperationException(AccelerateLiteError):
    """Ranks passed incompatible inputs to a collective data op (shapes, structures, dtypes, op order)."""
