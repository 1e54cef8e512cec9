"""The shipped property suite: one Property per operation, run in every rank of a cell's world.

`run_cell` (in entry.py) is the function a world runs; `PROPERTIES` maps an operation id to its
Property. Importing this package imports torch and hypothesis, so the CLI imports it lazily.
"""

from .collectives import PROPERTIES as _COLLECTIVE
from .local_ops import PROPERTIES as _LOCAL
from .modeling import PROPERTIES as _MODELING
from .spmd import Outcome, Property, run_property

PROPERTIES = {**_COLLECTIVE, **_LOCAL, **_MODELING}

__all__ = ["PROPERTIES", "Outcome", "Property", "run_property"]
