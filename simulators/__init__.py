"""simulators: fake hardware (profiles) and fake multi-rank worlds on one CPU machine.

Each block below re-exports one part; the modules hold the code.
"""

# --- hardware profiles ----------------------------------------------------------------------
from .apply import active_profile, apply_profile
from .profiles import PROFILES, HardwareProfile, get_profile, load_profiles, register_profile

# --- worlds ---------------------------------------------------------------------------------
from .errors import RankCrashed, RankError, WorldClosedError, WorldError, WorldStartError, WorldTimeout
from .world import World, shutdown as shutdown_worlds
