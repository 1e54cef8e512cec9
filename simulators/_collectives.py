"""Record, in shared memory, which torch.distributed collective each rank is blocked in.

The zygote wraps the collectives once, before anything else imports them, so every
rank inherits the wrappers (even ``from torch.distributed import all_reduce`` copies
taken later see them). Inside a rank, ``attach`` points the wrappers at that rank's
slot of a small shared file; the controller reads the slots when a call hangs. A
rank blocked in C++ cannot answer a message, but its slot is readable from outside.
"""

from __future__ import annotations

import functools
import mmap
import os

SLOT_SIZE = 64
_NAME_SIZE = SLOT_SIZE - 1  # the last byte flags "a collective raised"

COLLECTIVES = (
    "all_reduce", "all_reduce_coalesced", "all_gather", "all_gather_object", "all_gather_coalesced",
    "all_gather_into_tensor", "_all_gather_base", "all_to_all", "all_to_all_single", "barrier",
    "monitored_barrier", "broadcast", "broadcast_object_list", "gather", "gather_object", "reduce",
    "reduce_scatter", "reduce_scatter_tensor", "_reduce_scatter_base", "scatter", "scatter_object_list",
    "send", "recv", "send_object_list", "recv_object_list", "batch_isend_irecv", "new_group",
    "all_gather_single", "reduce_scatter_single", "new_subgroups", "new_subgroups_by_enumeration", "split_group",
)  # names this torch lacks are skipped


class _Slot:
    """This rank's view of the shared file: the current collective's name and a failure flag."""

    def __init__(self, view: mmap.mmap, offset: int):
        self.view = view
        self.offset = offset
        self.depth = 0  # nested collectives (all_gather_object calls all_gather): record the outer one

    def enter(self, name: str) -> None:
        data = name.encode()[:_NAME_SIZE]
        self.view[self.offset:self.offset + len(data)] = data
        self.view[self.offset + len(data)] = 0

    def leave(self) -> None:
        self.view[self.offset] = 0

    def mark_failed(self) -> None:
        self.view[self.offset + _NAME_SIZE] = 1

    def take_failed(self) -> bool:
        failed = self.view[self.offset + _NAME_SIZE] == 1
        self.view[self.offset + _NAME_SIZE] = 0
        return failed


_SLOT: _Slot | None = None


def _tracked(name, fn):
    @functools.wraps(fn)
    def tracked(*args, **kwargs):
        slot = _SLOT
        if slot is None or slot.depth:
            return fn(*args, **kwargs)
        slot.depth += 1
        slot.enter(name)
        try:
            return fn(*args, **kwargs)
        except BaseException:
            slot.mark_failed()
            raise
        finally:
            slot.leave()
            slot.depth -= 1

    tracked.__simulators_tracked__ = fn
    return tracked


def install() -> None:
    """Wrap torch.distributed's collectives in place (both public and c10d names); idempotent."""
    import torch.distributed as dist
    from torch.distributed import distributed_c10d as c10d

    for name in COLLECTIVES:
        original = getattr(c10d, name, None) or getattr(dist, name, None)
        if original is None or hasattr(original, "__simulators_tracked__"):
            continue
        wrapped = _tracked(name, original)
        for module in (dist, c10d):
            if getattr(module, name, None) is original:
                setattr(module, name, wrapped)


def create_file(path: str, size: int) -> None:
    """Create the shared file for a world of ``size`` ranks (controller side)."""
    with open(path, "wb") as f:
        f.write(b"\0" * (SLOT_SIZE * size))


def attach(path: str, rank: int) -> _Slot:
    """Point this process's wrappers at ``rank``'s slot (rank side)."""
    global _SLOT
    fd = os.open(path, os.O_RDWR)
    try:
        view = mmap.mmap(fd, 0)
    finally:
        os.close(fd)
    _SLOT = _Slot(view, rank * SLOT_SIZE)
    return _SLOT


def read_all(path: str, size: int) -> dict:
    """Return ``{rank: collective name}`` for each rank now inside a collective (controller side)."""
    try:
        with open(path, "rb") as f:
            data = f.read(SLOT_SIZE * size)
    except OSError:
        return {}
    current = {}
    for rank in range(size):
        raw = data[rank * SLOT_SIZE:rank * SLOT_SIZE + _NAME_SIZE].split(b"\0", 1)[0]
        if raw:
            current[rank] = raw.decode(errors="replace")
    return current


def from_stack(stack: str) -> str | None:
    """Guess the collective from a faulthandler stack: the outermost frame in distributed_c10d.py."""
    found = None
    for line in stack.splitlines():
        line = line.strip()
        if line.startswith("File ") and "distributed_c10d.py" in line and " in " in line:
            name = line.rsplit(" in ", 1)[1].strip()
            if name in COLLECTIVES:
                found = name  # faulthandler lists innermost first; keep the last (outermost)
    return found
