"""What a rank runs for one cell: set up the cell's context, check its preconditions, then its property."""

from __future__ import annotations

import time
import traceback
import zlib

from ..cells import Cell
from .spmd import Outcome, run_once, run_property


def cell_seed(cell_id: str, seed: int) -> int:
    """The hypothesis seed of one cell: the run's seed mixed with the cell id (stable across machines)."""
    return (seed * 1_000_003 + zlib.crc32(cell_id.encode())) % (2**32)


def run_cell(cell_id: str, examples: int, seed: int) -> dict:
    """Run one cell on this rank and return the outcome every rank agreed on.

    Args:
        cell_id: e.g. "gather/bf16/fsdp/w8/gloo/8xH100".
        examples: hypothesis examples for the operation's property.
        seed: the run's seed (mixed with the cell id by cell_seed).

    Returns:
        A dict: Outcome fields plus "stage" ("setup", "preconditions" or "property") and "seconds".
    """
    from . import PROPERTIES
    from .context import cell_context, check_preconditions

    started = time.perf_counter()
    cell = Cell.parse(cell_id)
    stage = "setup"
    try:
        with cell_context(cell) as ctx:
            stage = "preconditions"
            outcome = run_once(ctx, check_preconditions)
            if outcome.ok:
                stage = "property"
                outcome = run_property(ctx, PROPERTIES[cell.op], examples, cell_seed(cell_id, seed))
    except Exception as exc:  # setup failed the same way on every rank (a missing library piece)
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_initialized() else 0
        outcome = Outcome(ok=False, rank=rank, ranks=(rank,), error_type=type(exc).__name__,
                          message=str(exc), traceback=traceback.format_exc())
    result = outcome.to_dict()
    result.update(stage=stage, seconds=time.perf_counter() - started)
    return result
