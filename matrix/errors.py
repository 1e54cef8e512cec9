"""Exception classes of the matrix package."""


class MatrixError(Exception):
    """Base class of every error the matrix raises on purpose."""


class UnknownAxisValue(MatrixError, ValueError):
    """A selection or cell id named a value that is not on its axis."""


class BadCellId(MatrixError, ValueError):
    """A cell id did not have the form op/precision/plugin/wN/backend/hardware."""


class UnknownPreset(MatrixError, KeyError):
    """A preset name that is not registered."""

    def __str__(self):  # KeyError would quote the whole message
        return str(self.args[0])


class ResultsFileError(MatrixError):
    """A saved results.json could not be read back."""


class RunnerError(MatrixError):
    """A runner (local, docker) could not run the cells it was given."""


class PropertyFailed(MatrixError, AssertionError):
    """A property of an operation did not hold on one or more ranks."""
