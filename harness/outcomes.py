"""What one rank did in a world test, and how the ranks' outcomes merge into one pytest verdict.

Both sides use this module: ranks build ``RankOutcome`` values, the plugin merges them. It imports
nothing from pytest, so the merge rules are unit-tested with plain values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# A rank's status. "stuck": still running when the test ended (another rank left early, or the
# deadline passed); "crashed": its process died; "missing": nothing is known about it.
STATUSES = ("passed", "failed", "skipped", "xfailed", "stuck", "crashed", "missing")


@dataclass(frozen=True)
class RankOutcome:
    """One rank's part of one world test.

    Args:
        rank: the rank index.
        status: one of ``STATUSES``.
        message: one line, e.g. ``"AssertionError: assert 3 == 4"`` or a skip reason.
        longrepr: the full text to show (a traceback, or a stack for stuck ranks).
        stdout: what the body printed on this rank.
        stderr: what the body wrote to stderr on this rank.
        finished_at: ``time.time()`` when the rank left the body (orders "first failing rank").
        exc_blob: the pickled exception, when the rank failed and the exception pickles.
        collective: the collective a stuck rank was blocked in, if known.
    """

    rank: int
    status: str
    message: str = ""
    longrepr: str = ""
    stdout: str = ""
    stderr: str = ""
    finished_at: float = 0.0
    exc_blob: bytes | None = None
    collective: str | None = None

    def to_dict(self) -> dict:
        """Return a plain dict (what crosses process boundaries)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RankOutcome:
        """Rebuild an outcome from ``to_dict()``'s output."""
        return cls(**data)

    def summary(self) -> str:
        """Return one line: ``rank 3: failed: AssertionError: ...``."""
        text = f"rank {self.rank}: {self.status}"
        if self.collective and self.status == "stuck":
            text += f" (in {self.collective})"
        if self.message:
            text += f": {self.message}"
        return text


@dataclass(frozen=True)
class Verdict:
    """The one result pytest reports for a world test.

    Args:
        status: "passed", "failed", "skipped" or "xfailed".
        reason: one line (the skip/xfail reason, or the failure headline).
        longrepr: the text of the failure report ("" unless failed).
        deciding_rank: the rank whose outcome decided the verdict, or None.
        sections: (title, text) pairs, e.g. each rank's captured output.
        exc_blob: the deciding rank's pickled exception, when it failed and the exception pickled.
    """

    status: str
    reason: str = ""
    longrepr: str = ""
    deciding_rank: int | None = None
    sections: tuple = field(default_factory=tuple)
    exc_blob: bytes | None = None


def _first(outcomes: list[RankOutcome], status: str) -> RankOutcome | None:
    """Return the outcome of the given status that finished first (lowest rank breaks ties)."""
    matching = [o for o in outcomes if o.status == status]
    if not matching:
        return None
    return min(matching, key=lambda o: (o.finished_at or float("inf"), o.rank))


def _others_block(outcomes: list[RankOutcome], deciding: RankOutcome) -> str:
    """Return the 'other ranks' part of a failure report: one line each, then stuck ranks' stacks."""
    lines = ["", "other ranks:"]
    lines += [f"  {o.summary()}" for o in outcomes if o.rank != deciding.rank]
    for o in outcomes:
        if o.rank != deciding.rank and o.status in ("stuck", "crashed") and o.longrepr:
            lines += ["", f"---- rank {o.rank} ({o.status}) ----", o.longrepr.rstrip()]
    return "\n".join(lines)


def _output_sections(outcomes: list[RankOutcome]) -> tuple:
    """Return pytest report sections with each rank's captured stdout and stderr."""
    sections = []
    for o in outcomes:
        if o.stdout:
            sections.append((f"Captured stdout rank {o.rank}", o.stdout))
        if o.stderr:
            sections.append((f"Captured stderr rank {o.rank}", o.stderr))
    return tuple(sections)


def merge(outcomes: list[RankOutcome], world_size: int) -> Verdict:
    """Merge every rank's outcome into one verdict.

    Rules: a crash or a failure fails the test, reported from the crashed rank, else from the rank
    that failed first;
    otherwise a skip on any rank skips the test and an imperative xfail xfails it; ranks still
    running only because another rank left early do not count as failures; a world where some
    rank is stuck and nobody left early is a hang, and fails. Ranks absent from ``outcomes``
    count as "missing".

    Args:
        outcomes: what is known, at most one per rank.
        world_size: the number of ranks.

    Returns:
        The verdict.

    Example:
        >>> merge([RankOutcome(0, "passed"), RankOutcome(1, "skipped", "no data")], 2).status
        'skipped'
    """
    by_rank = {o.rank: o for o in outcomes}
    full = [by_rank.get(r, RankOutcome(r, "missing")) for r in range(world_size)]
    sections = _output_sections(full)
    deciding = _first(full, "crashed") or _first(full, "failed")  # a crash explains its peers' errors
    if deciding is None:
        for status in ("skipped", "xfailed"):
            left = _first(full, status)
            if left is not None:
                return Verdict(status, f"rank {left.rank}: {left.message}", "", left.rank, sections)
        stuck = [o for o in full if o.status in ("stuck", "missing")]
        if not stuck:
            return Verdict("passed", "", "", None, sections)
        deciding = stuck[0]
    headline = f"rank {deciding.rank} {deciding.status}"
    if deciding.message:
        headline += f": {deciding.message}"
    body = f"{headline}\n\n{deciding.longrepr.rstrip()}\n{_others_block(full, deciding)}"
    return Verdict("failed", headline, body, deciding.rank, sections, deciding.exc_blob)
