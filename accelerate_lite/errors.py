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


# --- modeling / checkpoints / offload / quantization (issue 4) ------------------------------


class CheckpointNotFoundError(AccelerateLiteError, FileNotFoundError):
    """A checkpoint file, shard or folder named by the caller or by an index does not exist."""


class CorruptCheckpointError(AccelerateLiteError, ValueError):
    """A checkpoint file or index exists but cannot be read (truncated, corrupt, wrong format)."""


class CheckpointMismatchError(AccelerateLiteError, ValueError):
    """A checkpoint holds a key the model does not have, or a tensor of another shape than the model's."""


class DeviceMapError(AccelerateLiteError, ValueError):
    """A device map leaves a tensor without a device, or names a device that does not exist here."""


class OffloadFolderError(AccelerateLiteError, ValueError):
    """Weights must be offloaded to disk but no usable offload folder was given."""


class QuantizationUnavailableError(AccelerateLiteError, ImportError):
    """bitsandbytes quantization was asked for but bitsandbytes (or a version with it) is not installed."""


class QuantizationDeviceError(AccelerateLiteError, RuntimeError):
    """bitsandbytes quantization was asked for but no device it supports (a CUDA GPU) is available."""
