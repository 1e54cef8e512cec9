"""The worlds of one pytest process: at most one alive at a time, reused while tests share its key.

Under ``pytest -n 8`` every world test is routed to one xdist worker (see ``harness.scheduling``),
so the whole session holds at most one world of ranks; without xdist the pytest process owns it.
A test needing a different size, profile or backend closes the current world and starts the next
(tests are ordered so that equal keys run back to back).
"""

from __future__ import annotations

import os
import shutil
import tempfile


class WorldPool:
    """Hands out the world for a key, keeping at most one alive.

    Args:
        factory: ``factory(size, profile=, backend=, standby=) -> world``; defaults to ``simulators.World``.
        standby: let the world keep a second, idle set of ranks so a rebuild after a hang or crash
            is a swap. It doubles the ranks, so the plugin turns it off under xdist, where the
            process budget is 2 x workers + 2.

    Example:
        >>> pool = WorldPool()
        >>> world = pool.get((8, "8xH100", "gloo"))
        >>> pool.close()
    """

    def __init__(self, factory=None, standby: bool = True):
        self._factory = factory
        self._standby = standby
        self._key = None
        self._world = None
        self.started = 0  # how many worlds this pool started (reported at the end of the session)
        self.outbox = tempfile.mkdtemp(prefix=f"harness-outbox-{os.getpid()}-")

    def get(self, key: tuple):
        """Return a live world for ``key`` (size, profile, backend), starting one if needed."""
        if self._world is not None and self._key == key and not _is_closed(self._world):
            return self._world
        self.discard()
        size, profile, backend = key
        factory = self._factory
        if factory is None:
            from simulators.world import World as factory
        self._world = factory(size, profile=profile, backend=backend, standby=self._standby)
        self._key = key
        self.started += 1
        return self._world

    def world(self, size: int, profile: str | None = None, backend: str = "gloo"):
        """Return the live world of that size/profile/backend (the one a world test would use).

        Example:
            >>> world_pool(config).world(4, "8xH100").run(torch.distributed.get_rank)
            [0, 1, 2, 3]
        """
        return self.get((size, profile, backend))

    def discard(self) -> None:
        """Close the current world (if any); the next ``get`` starts a fresh one."""
        world, self._world, self._key = self._world, None, None
        if world is not None:
            world.close()

    def close(self) -> None:
        """Close the world and remove the outbox directory."""
        try:
            self.discard()
        finally:
            shutil.rmtree(self.outbox, ignore_errors=True)


def _is_closed(world) -> bool:
    """True when the world reports itself closed (worlds without that attribute are assumed alive)."""
    closed = getattr(world, "closed", False)
    return bool(closed() if callable(closed) else closed)
