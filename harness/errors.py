"""Exceptions raised by the harness package (the pytest plugin and hypothesis across ranks)."""


class HarnessError(Exception):
    """Base class of every error the harness raises."""


class MarkerError(HarnessError, ValueError):
    """A world marker (world, hardware, backend, world_timeout) or option has an invalid value."""


class FixtureTransferError(HarnessError, TypeError):
    """A fixture value cannot be handed to the ranks of a world test."""


class WorldTestFailed(HarnessError, AssertionError):
    """A world test failed on at least one rank (the report shows every rank's outcome)."""


class RankLeftTest(BaseException):
    """Raised inside a rank to end its part of a test early with a structured outcome.

    It derives from BaseException, like pytest's own outcomes, so a test body's
    ``except Exception`` cannot swallow it. ``args[0]`` is a plain dict (picklable) that
    the plugin turns back into a ``RankOutcome``.
    """

    def __str__(self):
        outcome = self.args[0] if self.args else {}
        return f"rank {outcome.get('rank')} {outcome.get('status')}: {outcome.get('message', '')}"


class RankLeftExample(BaseException):
    """Raised inside a rank that left a hypothesis run because its peers never reached the agreement.

    ``args[0]`` is the exception the rank's example ended with (a skip, a failure...). It derives
    from BaseException so hypothesis lets it through instead of shrinking a run that is over.
    """


class LockstepError(HarnessError, RuntimeError):
    """Ranks running a hypothesis test disagreed on the protocol (a desynchronisation)."""
