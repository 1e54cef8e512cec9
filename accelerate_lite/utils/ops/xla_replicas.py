"""torch_xla collectives that also work when the replicas are threads of one process.

PJRT runs the replicas of `torch_xla.launch` / `xmp.spawn` as threads of ONE process on the CPU
device (and on TPU v2/v3). Measured with torch_xla 2.9 on PJRT CPU (shared/notes/xla.md), plain
`xm` calls then hang until XLA aborts the process ("Expected 4 threads to join the rendezvous, but
only 1 of them arrived on time"), because:

- replicas compiling the same graph at the same moment get different module ids, so their
  collectives wait in different rendezvous: `sync` lets one replica compile at a time (the others
  find the graph in the compilation cache);
- `pin_layout=True` (the default of `xm.all_gather`/`all_reduce`, also used inside `xm.rendezvous`
  and `xm.mesh_reduce`) gives each replica a different graph: every collective here passes False;
- a rank-dependent value traced on the device also changes the graph: such values are built on the
  host and copied to the device as data.

With one replica per process (TPU VMs) the lock is never contended and everything behaves as plain `xm`.
"""

from __future__ import annotations

import functools
import pickle
import threading
from typing import Any

import torch

_SYNC_LOCK = threading.Lock()


def _xm():
    import torch_xla.core.xla_model as xm  # imported late: only XLA machines have it

    return xm


@functools.cache
def _replicas_are_threads() -> bool:
    """Whether this process drives several devices, i.e. its replicas are threads (PJRT CPU, TPU v2/v3)."""
    import torch_xla.runtime as xr

    return xr.addressable_device_count() > 1


def sync() -> None:
    """Compile and launch this replica's pending graph, one replica at a time, then wait for it.

    Waiting (outside the lock) keeps the device idle when the replica next takes the lock, so a
    replica never holds it while its device waits for a collective that another replica must launch.
    With one replica per process (TPU v4 and later) this is a plain asynchronous `xm.mark_step()`.
    """
    xm = _xm()
    if not _replicas_are_threads():
        xm.mark_step()
        return
    device = xm.xla_device()
    with _SYNC_LOCK:
        # never an empty graph: an empty sync waited for the other replicas' devices, which were waiting
        # in a collective for this replica (a deadlock XLA ends by aborting the process)
        not_empty = torch.zeros(1, device=device) + 1  # noqa: F841 (alive until the sync has run)
        xm.mark_step()
    xm.wait_device_ops(xm.xla_real_devices([device]))  # "CPU:0", "TPU:3": it does not know "xla:0"


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every replica's `tensor` concatenated on dim 0 in replica order, on this replica's device.

    Args:
        tensor: a tensor of the same shape and dtype on every replica (on the host or the device).
    """
    xm = _xm()
    sync()  # cut the pending graph: what each replica computed before must not fuse into the collective
    gathered = xm.all_gather(tensor.to(xm.xla_device()), pin_layout=False)
    sync()
    return gathered


def all_reduce_sum(tensors: list, scale: float = 1.0) -> list:
    """Sum `tensors` (on the device) over the replicas in place, times `scale`; returns them."""
    xm = _xm()
    sync()
    xm.all_reduce(xm.REDUCE_SUM, tensors, scale=scale, pin_layout=False)
    sync()
    return tensors


def barrier() -> None:
    """Return once every replica has called `barrier` (one tiny all_gather)."""
    all_gather(torch.zeros(1, dtype=torch.int32)).cpu()


def _to_host(obj):
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return type(obj)((key, _to_host(value)) for key, value in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_to_host(value) for value in obj)
    return obj


def _sizes(length: int) -> list:
    return all_gather(torch.tensor([length], dtype=torch.int64)).cpu().tolist()


def all_gather_objects(obj: Any) -> list:
    """Every replica's picklable `obj`, in replica order (tensors inside come back on the host)."""
    payload = pickle.dumps(_to_host(obj))
    sizes = _sizes(len(payload))
    padded = torch.zeros(max(sizes), dtype=torch.uint8)  # the same shape everywhere: one graph
    padded[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    rows = all_gather(padded).cpu().view(len(sizes), -1)
    return [pickle.loads(rows[rank, :size].numpy().tobytes()) for rank, size in enumerate(sizes)]


def broadcast_object(obj: Any, src: int, rank: int) -> Any:
    """Replica `src`'s picklable `obj` on every replica (the others' `obj` is ignored; they send None).

    An all_reduce of `src`'s bytes with zeros from the others would move less, but on PJRT CPU it hung
    (XLA aborted with some replicas missing from the rendezvous) where this all_gather works.
    """
    return all_gather_objects(obj if rank == src else None)[src]
