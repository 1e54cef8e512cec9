"""Exception classes of accelerate_lite (one place, each with a one-line docstring)."""


class AccelerateLiteError(Exception):
    """Base class of every error accelerate_lite raises on its own account."""
