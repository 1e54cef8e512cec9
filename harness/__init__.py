"""harness: run distributed (SPMD) pytest tests on simulated worlds of ranks.

Mark a test ``@pytest.mark.world(n)`` and its body runs on every rank of an n-rank world
(see README "Writing distributed tests"). The plugin lives in ``harness.plugin``; hypothesis
strategies and single-process oracles live in ``harness.strategies`` and ``harness.oracles``.
"""

from harness.errors import (
    FixtureTransferError,
    HarnessError,
    LockstepError,
    MarkerError,
    WorldTestFailed,
)
from harness.markers import WorldSpec
from harness.outcomes import RankOutcome, Verdict

__all__ = [
    "FixtureTransferError",
    "HarnessError",
    "LockstepError",
    "MarkerError",
    "RankOutcome",
    "Verdict",
    "WorldSpec",
    "WorldTestFailed",
]
