"""The world markers and options: what they mean, and reading them off a test into a ``WorldSpec``.

``@pytest.mark.world(n)`` makes a test a world test (its body runs on n ranks);
``@pytest.mark.hardware(name)`` picks a profile from the catalog (alone, it runs the test in the
pytest process under that profile); ``@pytest.mark.backend(name)`` picks the process-group backend;
``@pytest.mark.world_timeout(seconds)`` overrides ``--world-timeout`` for one test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.errors import MarkerError

MARKERS = {
    "world": "world(n=None): run the test body on every rank of an n-rank simulated world "
    "(n defaults to --world-size)",
    "hardware": "hardware(name): the hardware profile the ranks see, from simulators.PROFILES (e.g. '8xH100')",
    "backend": "backend(name): the process-group backend of the world (default 'gloo')",
    "world_timeout": "world_timeout(seconds): deadline of this world test (overrides --world-timeout)",
    "owns_worlds": "owns_worlds: the test starts worlds itself (simulators.World, a pytest subprocess); "
    "under xdist it runs on the world worker, so the session never holds two worlds at once",
}

BACKENDS = ("gloo",)
DEFAULT_WORLD_SIZE = 2
DEFAULT_WORLD_TIMEOUT = 60.0


@dataclass(frozen=True)
class WorldSpec:
    """Which world a test runs on and how long it may take.

    Args:
        size: number of ranks.
        profile: hardware profile name, or None for plain CPU.
        backend: process-group backend.
        timeout: seconds before a hang becomes a failure.
    """

    size: int
    profile: str | None = None
    backend: str = "gloo"
    timeout: float = DEFAULT_WORLD_TIMEOUT

    @property
    def key(self) -> tuple:
        """The worlds this spec can share: tests with equal keys reuse one world."""
        return (self.size, self.profile, self.backend)

    def label(self) -> str:
        """Return a short name such as ``w8/gloo/8xH100``."""
        return "/".join(filter(None, (f"w{self.size}", self.backend, self.profile)))


def _one_arg(mark, name: str):
    """Return the single argument of a marker (positional or keyword), or None when bare."""
    if len(mark.args) > 1 or (mark.args and mark.kwargs) or len(mark.kwargs) > 1:
        raise MarkerError(
            f"@pytest.mark.{mark.name} takes one argument, got args={mark.args!r} kwargs={mark.kwargs!r}; "
            f"write @pytest.mark.{mark.name}({name})"
        )
    if mark.args:
        return mark.args[0]
    if mark.kwargs:
        (key, value), = mark.kwargs.items()
        if key != name:
            raise MarkerError(f"@pytest.mark.{mark.name} has no argument {key!r}; expected {name}=")
        return value
    return None


def check_size(value, source: str) -> int:
    """Return a valid world size, or raise MarkerError naming where the bad value came from."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MarkerError(f"{source}: world size must be an int >= 1, got {value!r} (type={type(value).__name__})")
    return value


def check_timeout(value, source: str) -> float:
    """Return a valid timeout in seconds, or raise MarkerError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise MarkerError(f"{source}: timeout must be a number of seconds > 0, got {value!r}")
    return float(value)


def check_profile(value, source: str) -> str:
    """Return a profile name from the catalog, or raise MarkerError listing the known ones."""
    try:
        from simulators import PROFILES
    except ImportError:  # the catalog is not importable: let the world report the name
        PROFILES = None
    if not isinstance(value, str) or (PROFILES is not None and value not in PROFILES):
        raise MarkerError(f"{source}: unknown hardware profile {value!r}; known: {', '.join(sorted(PROFILES or ()))}")
    return value


def check_backend(value, source: str) -> str:
    """Return a supported backend name, or raise MarkerError."""
    if value not in BACKENDS:
        raise MarkerError(f"{source}: backend {value!r} is not simulated here; use one of {BACKENDS}")
    return value


def read_world_spec(node, default_size: int, default_timeout: float) -> WorldSpec | None:
    """Read a test's world markers; None for a test that is not a world test.

    Args:
        node: a pytest item (anything with ``get_closest_marker``).
        default_size: the size of a bare ``@pytest.mark.world``.
        default_timeout: the deadline when no ``world_timeout`` marker is present.

    Returns:
        The spec, or None when the test has no ``world`` marker.

    Raises:
        MarkerError: a marker has a bad value, or backend/world_timeout is used without world.

    Example:
        >>> read_world_spec(item, 2, 60.0)
        WorldSpec(size=8, profile='8xH100', backend='gloo', timeout=60.0)
    """
    world = node.get_closest_marker("world")
    hardware = node.get_closest_marker("hardware")
    backend = node.get_closest_marker("backend")
    timeout = node.get_closest_marker("world_timeout")
    if world is None:
        for mark in (backend, timeout):
            if mark is not None:
                raise MarkerError(
                    f"@pytest.mark.{mark.name} only applies to world tests; add @pytest.mark.world(n)"
                )
        return None
    size = _one_arg(world, "n")
    return WorldSpec(
        size=check_size(default_size if size is None else size, "@pytest.mark.world"),
        profile=None if hardware is None else check_profile(_one_arg(hardware, "name"), "@pytest.mark.hardware"),
        backend="gloo" if backend is None else check_backend(_one_arg(backend, "name"), "@pytest.mark.backend"),
        timeout=default_timeout if timeout is None else check_timeout(
            _one_arg(timeout, "seconds"), "@pytest.mark.world_timeout"
        ),
    )


def read_profile_only(node) -> str | None:
    """Return the profile of a test marked ``hardware`` but not ``world`` (run in-process), else None."""
    hardware = node.get_closest_marker("hardware")
    if hardware is None or node.get_closest_marker("world") is not None:
        return None
    return check_profile(_one_arg(hardware, "name"), "@pytest.mark.hardware")
