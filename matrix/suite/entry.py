"""What a rank runs for one cell: set up the cell's context, check its preconditions, then its property."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
import traceback
import zlib

from ..cells import Cell
from .spmd import Outcome, run_once, run_property


def cell_seed(cell_id: str, seed: int) -> int:
    """The hypothesis seed of one cell: the run's seed mixed with the cell id (stable across machines)."""
    return (seed * 1_000_003 + zlib.crc32(cell_id.encode())) % (2**32)


def function_reference(function) -> tuple[str, str, str]:
    """(module, file, name) of a module-level function, so a rank can import it (by file if need be)."""
    module = sys.modules.get(function.__module__)
    return function.__module__, getattr(module, "__file__", "") or "", function.__qualname__


def resolve_function(reference: tuple[str, str, str]):
    """The function a function_reference names: imported by module name, else from its file."""
    module_name, path, name = reference
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        spec = importlib.util.spec_from_file_location(f"_matrix_setup_{abs(hash(path))}", path)
        if spec is None:
            raise
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # so function_reference() finds it again
        spec.loader.exec_module(module)
    return getattr(module, name)


def warm_up() -> float:
    """Import what every cell needs (torch.distributed, hypothesis, the library, the suite) once per
    rank, so the first cell's time is the cell's and not the imports'. Returns the seconds it took."""
    started = time.perf_counter()
    import accelerate_lite.utils  # noqa: F401
    from accelerate_lite import PartialState

    from . import PROPERTIES  # noqa: F401 - imports hypothesis and the properties

    PartialState._reset_state()
    PartialState()
    PartialState._reset_state()
    return time.perf_counter() - started


def run_cell(cell_id: str, examples: int, seed: int, notes_dir: str | None = None,
             setup: tuple[str, str, str] | None = None, real: bool = False) -> dict:
    """Run one cell on this rank and return the outcome every rank agreed on.

    Args:
        cell_id: e.g. "gather/bf16/fsdp/w8/gloo/8xH100".
        examples: hypothesis examples for the operation's property.
        seed: the run's seed (mixed with the cell id by cell_seed).
        notes_dir: a directory (on this machine) where each rank writes its first error, so the
            controller can still report it if the world hangs afterwards.
        setup: a function_reference run first on every rank (fault injection: the world undoes
            module patches after every call, so they are made again for each cell).
        real: the world runs on real devices; inputs are moved to each rank's device.

    Returns:
        A dict: Outcome fields plus "stage" ("setup", "preconditions" or "property") and "seconds".
    """
    from . import PROPERTIES
    from .context import cell_context, check_preconditions

    started = time.perf_counter()
    cell = Cell.parse(cell_id)
    stage = "setup"
    try:
        if setup is not None:
            resolve_function(setup)()
        with cell_context(cell, notes_dir, real) as ctx:
            stage = "preconditions"
            outcome = run_once(ctx, check_preconditions)
            if outcome.ok:
                stage = "property"
                outcome = run_property(ctx, PROPERTIES[cell.op], examples, cell_seed(cell_id, seed))
    except Exception as exc:  # noqa: BLE001 - setup failed the same way on every rank (a missing library piece)
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_initialized() else 0
        outcome = Outcome(ok=False, rank=rank, ranks=(rank,), error_type=type(exc).__name__,
                          message=str(exc), traceback=traceback.format_exc())
    result = outcome.to_dict()
    result.update(stage=stage, seconds=time.perf_counter() - started)
    return result
