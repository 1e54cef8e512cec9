"""The XLA lane's checks: what every torch_xla replica runs (ci/xla/xla_ops.py drives them).

Each `check_*` runs on every replica, calls the same collectives in the same order everywhere (they
share one world, so order matters), and raises on a wrong result. Expected values are computed on the
host from all replicas' inputs: `_inputs(rank)` is deterministic, so every replica builds everyone's.
A replica prints one `XLA-RESULT {json}` line per check as it goes, so the driver still knows what
passed when XLA aborts the process (it does when a collective never meets).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import traceback

RESULT_PREFIX = "XLA-RESULT "
_lock = threading.Lock()
_shared: dict = {}  # replicas are threads of one process: a place to compare their host-side values


def _report(check: str, rank: int, error: str | None, **info) -> None:
    line = json.dumps({"check": check, "rank": rank, "ok": error is None, "error": error, **info})
    with _lock:
        print(RESULT_PREFIX + line, flush=True)


def _assert_equal(name: str, got, expected) -> None:
    """Compare nested structures of tensors (moved to the CPU) and plain values; AssertionError on a difference."""
    import torch

    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{name}: got {type(got).__name__}, expected a tensor"
        assert got.device.type == "xla", f"{name}: result on {got.device}, expected an xla device"
        got = got.cpu()
        assert got.dtype == expected.dtype, f"{name}: dtype {got.dtype}, expected {expected.dtype}"
        assert got.shape == expected.shape, f"{name}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        if expected.is_floating_point():
            ok = torch.allclose(
                got.double(),
                expected.double(),
                rtol=1e-2 if expected.dtype == torch.bfloat16 else 1e-5,
            )
        else:
            ok = torch.equal(got, expected)
        assert ok, f"{name}: got {got.tolist()}, expected {expected.tolist()}"
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), (
            f"{name}: got {got!r}, expected keys {list(expected)}"
        )
        for key in expected:
            _assert_equal(f"{name}[{key!r}]", got[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert type(got) is type(expected) and len(got) == len(expected), f"{name}: got {got!r}, expected {expected!r}"
        for index, (g, e) in enumerate(zip(got, expected)):
            _assert_equal(f"{name}[{index}]", g, e)
    else:
        assert got == expected, f"{name}: got {got!r}, expected {expected!r}"


def _to(structure, device):
    import torch

    if isinstance(structure, torch.Tensor):
        return structure.to(device)
    if isinstance(structure, dict):
        return {key: _to(value, device) for key, value in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(_to(value, device) for value in structure)
    return structure


def _inputs(rank: int) -> dict:
    """This replica's inputs, built on the host (rank-dependent values traced on the device would give
    each replica a different graph, whose collectives never meet: notes/xla.md)."""
    import torch

    return {
        "vector": torch.arange(4, dtype=torch.float32) + 10 * rank,
        "nested": {
            "a": torch.arange(6, dtype=torch.float32).view(2, 3) * (rank + 1),
            "b": [
                torch.tensor(rank, dtype=torch.int64),
                torch.tensor([rank, rank + 1], dtype=torch.int32),
            ],
            "c": (torch.full((3,), 0.5 + rank, dtype=torch.bfloat16),),
        },
        "dtypes": {  # every dtype a data op may meet, one collective per dtype on XLA
            name: (torch.arange(3) + rank).to(getattr(torch, name))
            for name in (
                "bool",
                "uint8",
                "int8",
                "int16",
                "int32",
                "int64",
                "float16",
                "bfloat16",
                "float64",
                "complex64",
            )
        },
        "ragged": torch.arange(3 * (rank + 1), dtype=torch.int64).view(rank + 1, 3) + 100 * rank,
        "ragged_last": torch.ones(2, rank + 1, dtype=torch.float32) * (rank + 1),
    }


def _cat(tensors):
    import torch

    return torch.cat([t.reshape(1) if t.ndim == 0 else t for t in tensors])


def _gathered(values: list):
    """What gather returns: each leaf concatenated over ranks on dim 0 (0-d leaves become 1-d)."""
    first = values[0]
    if isinstance(first, dict):
        return {key: _gathered([v[key] for v in values]) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_gathered([v[i] for v in values]) for i in range(len(first)))
    return _cat(values)


def _pad(tensor, dim, size, value, first):
    import torch

    if tensor.shape[dim] == size:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = size - tensor.shape[dim]
    filler = torch.full(shape, value, dtype=tensor.dtype)
    return torch.cat([filler, tensor] if first else [tensor, filler], dim=dim)


class Replica:
    """One replica's view: its rank, the world size, its device, and every replica's inputs."""

    def __init__(self, n: int):
        import torch_xla
        import torch_xla.runtime as xr

        self.n = n
        self.rank = xr.global_ordinal()
        self.device = torch_xla.device()
        self.all_inputs = [_inputs(r) for r in range(n)]
        self.mine = self.all_inputs[self.rank]

    def on_device(self, key):
        return _to(self.mine[key], self.device)

    def each(self, key):
        return [inputs[key] for inputs in self.all_inputs]


def check_state(r: Replica):
    import torch_xla.runtime as xr

    from accelerate_lite import PartialState
    from accelerate_lite.utils import DistributedType

    state = PartialState()
    assert state.distributed_type == DistributedType.TPU, f"distributed_type {state.distributed_type}, expected TPU"
    assert state.num_processes == r.n, f"num_processes {state.num_processes}, expected {r.n}"
    assert state.process_index == r.rank, (
        f"process_index {state.process_index}, expected {r.rank} (xr.global_ordinal())"
    )
    assert state.local_process_index == xr.local_ordinal(), f"local_process_index {state.local_process_index}"
    assert state.device.type == "xla" and state.device == r.device, f"device {state.device}, expected {r.device}"
    assert state.is_main_process == (r.rank == 0), f"is_main_process {state.is_main_process} on rank {r.rank}"
    return {"process_index": state.process_index}


def check_gather_tensor(r: Replica):
    from accelerate_lite.utils import gather

    _assert_equal("gather", gather(r.on_device("vector")), _gathered(r.each("vector")))


def check_gather_nested(r: Replica):
    from accelerate_lite.utils import gather

    _assert_equal("gather", gather(r.on_device("nested")), _gathered(r.each("nested")))


def _reduced(r: Replica, key: str, scale: float, mean: bool):
    import torch

    if r.n == 1:
        scale = 1.0  # xm.all_reduce is a no-op on one device, scale included (so upstream's reduce too)

    def combine(values):
        first = values[0]
        if isinstance(first, dict):
            return {k: combine([v[k] for v in values]) for k in first}
        if isinstance(first, (list, tuple)):
            return type(first)(combine([v[i] for v in values]) for i in range(len(first)))
        total = torch.stack(values).sum(0).to(first.dtype) * scale
        return (total / r.n if mean else total).to(first.dtype)

    return combine(r.each(key))


def check_reduce_sum(r: Replica):
    from accelerate_lite.utils import reduce

    _assert_equal(
        "reduce",
        reduce(r.on_device("vector"), reduction="sum"),
        _reduced(r, "vector", 1.0, False),
    )


def check_reduce_mean(r: Replica):
    from accelerate_lite.utils import reduce

    _assert_equal(
        "reduce",
        reduce(r.on_device("vector"), reduction="mean"),
        _reduced(r, "vector", 1.0, True),
    )


def check_reduce_sum_scale(r: Replica):
    from accelerate_lite.utils import reduce

    got = reduce(r.on_device("vector"), reduction="sum", scale=0.5)
    _assert_equal("reduce", got, _reduced(r, "vector", 0.5, False))


def check_reduce_mean_scale(r: Replica):
    from accelerate_lite.utils import reduce

    got = reduce(r.on_device("vector"), reduction="mean", scale=2.0)
    _assert_equal("reduce", got, _reduced(r, "vector", 2.0, True))


def check_reduce_nested_sum(r: Replica):
    from accelerate_lite.utils import reduce

    got = reduce(r.on_device("nested"), reduction="sum")
    _assert_equal("reduce", got, _reduced(r, "nested", 1.0, False))


def check_gather_dtypes(r: Replica):
    from accelerate_lite.utils import gather

    _assert_equal("gather", gather(r.on_device("dtypes")), _gathered(r.each("dtypes")))


def check_reduce_dtypes_sum(r: Replica):
    from accelerate_lite.utils import reduce

    _assert_equal(
        "reduce",
        reduce(r.on_device("dtypes"), reduction="sum"),
        _reduced(r, "dtypes", 1.0, False),
    )


def check_broadcast_dtypes(r: Replica):
    from accelerate_lite.utils import broadcast

    src = min(1, r.n - 1)
    _assert_equal(
        "broadcast",
        broadcast(r.on_device("dtypes"), from_process=src),
        r.each("dtypes")[src],
    )


def check_broadcast_from_first(r: Replica):
    from accelerate_lite.utils import broadcast

    _assert_equal(
        "broadcast",
        broadcast(r.on_device("nested"), from_process=0),
        r.each("nested")[0],
    )


def check_broadcast_from_last(r: Replica):
    from accelerate_lite.utils import broadcast

    value = r.on_device("vector")
    got = broadcast(value, from_process=r.n - 1)
    assert got is value, "broadcast must return the same tensor object, overwritten in place"
    _assert_equal("broadcast", got, r.each("vector")[-1])


def _check_pad(r: Replica, key: str, dim: int, value, first: bool):
    from accelerate_lite.utils import pad_across_processes

    got = pad_across_processes(r.on_device(key), dim=dim, pad_index=value, pad_first=first)
    size = max(t.shape[dim] for t in r.each(key))
    mine = r.mine[key]
    _assert_equal(
        "pad_across_processes",
        got,
        _pad(mine, dim, size, mine.new_full((), value).item(), first),
    )


def check_pad_end(r: Replica):
    _check_pad(r, "ragged", 0, -1, False)


def check_pad_first(r: Replica):
    _check_pad(r, "ragged", 0, -1, True)


def check_pad_last_dim_float_value(r: Replica):
    _check_pad(r, "ragged_last", -1, 2.5, False)


def check_pad_int_tensor_float_value(r: Replica):
    _check_pad(r, "ragged", 0, 7.9, True)  # truncated to 7, as Tensor.new_full does


def check_pad_then_gather(r: Replica):
    from accelerate_lite.utils import gather, pad_across_processes

    got = gather(pad_across_processes(r.on_device("ragged"), pad_index=-1))
    size = max(t.shape[0] for t in r.each("ragged"))
    _assert_equal(
        "gather(pad_across_processes)",
        got,
        _cat([_pad(t, 0, size, -1, False) for t in r.each("ragged")]),
    )


def check_gather_object(r: Replica):
    from accelerate_lite.utils import gather_object

    got = gather_object([f"rank {r.rank}", {"rank": r.rank}])
    _assert_equal(
        "gather_object",
        got,
        [item for k in range(r.n) for item in (f"rank {k}", {"rank": k})],
    )


def check_broadcast_object_list(r: Replica):
    from accelerate_lite.utils import broadcast_object_list

    objects = [r.rank, f"from {r.rank}", {"rank": r.rank}]
    got = broadcast_object_list(objects, from_process=r.n - 1)
    assert got is objects, "broadcast_object_list must return the list it was given, filled in place"
    k = r.n - 1
    _assert_equal("broadcast_object_list", got, [k, f"from {k}", {"rank": k}])


def check_wait_for_everyone(r: Replica):
    from accelerate_lite.utils import wait_for_everyone

    arrived = _shared.setdefault("arrived", set())
    time.sleep(0.1 * (r.n - 1 - r.rank))  # rank 0 comes last: the others must wait for it
    with _lock:
        arrived.add(r.rank)
    wait_for_everyone()
    with _lock:
        seen = sorted(arrived)
    assert seen == list(range(r.n)), f"left wait_for_everyone() when only replicas {seen} of {r.n} had arrived"


def check_synchronize_rng_states(r: Replica):
    import torch
    import torch_xla.core.xla_model as xm

    from accelerate_lite.utils import synchronize_rng_states

    # Each sync advances the xla seed (seed * a + b), so the value rank 0 sends is not 1000 any more by
    # the time "xla" is synchronized: the check is that all replicas end with one state and one stream.
    xm.set_rng_state(1000 + r.rank)
    generator = torch.Generator().manual_seed(r.rank)
    synchronize_rng_states(["torch", "xla", "generator"], generator=generator)
    xla_state = xm.get_rng_state()
    expected = torch.Generator().manual_seed(0).get_state()
    assert torch.equal(generator.get_state(), expected), "the generator's state is not rank 0's"
    draw = torch.rand(4, device=r.device).cpu()  # same state -> same numbers on every replica
    with _lock:
        _shared.setdefault("draws", {})[r.rank] = (xla_state, draw.tolist())


def check_rng_draws_agree(r: Replica):
    from accelerate_lite.utils import wait_for_everyone

    wait_for_everyone()  # every replica has stored its draw
    draws = _shared["draws"]
    for rank, (state, draw) in sorted(draws.items()):
        assert state == draws[0][0], f"replica {rank} has xla rng state {state}, replica 0 {draws[0][0]}"
        assert draw == draws[0][1], f"replica {rank} drew {draw}, replica 0 {draws[0][1]}"


def check_copy_tensor_to_devices(r: Replica):
    import torch

    from accelerate_lite.utils import copy_tensor_to_devices

    source = r.n - 1
    tensor = torch.arange(5, dtype=torch.int32).to(r.device) if r.rank == source else None
    _assert_equal(
        "copy_tensor_to_devices",
        copy_tensor_to_devices(tensor),
        torch.arange(5, dtype=torch.int32),
    )


def _debug_mode(on: bool) -> None:
    """Turn ACCELERATE_DEBUG_MODE on or off for this replica (the state reads the variable once)."""
    from accelerate_lite import PartialState

    PartialState().debug = on  # the replica's own shared state (one per thread under PJRT)


def check_debug_mode_agreeing_gather(r: Replica):
    from accelerate_lite.utils import gather

    _debug_mode(True)
    try:
        _assert_equal("gather", gather(r.on_device("nested")), _gathered(r.each("nested")))
    finally:
        _debug_mode(False)


def check_debug_mode_mismatch_raises_on_every_replica(r: Replica):
    import torch

    from accelerate_lite.utils import DistributedOperationException, gather

    if r.n == 1:
        return {"note": "one replica: nothing to disagree with"}
    _debug_mode(True)
    rows = 2 if r.rank == r.n - 1 else 1  # the last replica passes a different shape
    try:
        gather(torch.zeros(rows, 3).to(r.device))
    except DistributedOperationException as error:
        message = str(error)
        assert "[1, 3]" in message and "[2, 3]" in message, f"the message does not name both shapes: {message}"
    else:
        raise AssertionError("gather() of mismatched shapes in debug mode raised nothing on this replica")
    finally:
        _debug_mode(False)


def check_debug_mode_different_ops_raise_on_every_replica(r: Replica):
    from accelerate_lite.utils import DistributedOperationException, gather, reduce

    if r.n == 1:
        return {"note": "one replica: nothing to disagree with"}
    _debug_mode(True)
    value = r.on_device("vector")
    try:
        reduce(value, reduction="sum") if r.rank == r.n - 1 else gather(value)  # the last replica is out of step
    except DistributedOperationException as error:
        message = str(error)
        assert "gather" in message and "reduce" in message, f"the message does not name both ops: {message}"
    else:
        raise AssertionError("replicas calling gather() and reduce() at one point raised nothing on this replica")
    finally:
        _debug_mode(False)


def _check_save(r: Replica, safe: bool):
    import torch

    from accelerate_lite.utils import save, wait_for_everyone

    directory = os.environ.get("XLA_LANE_TMP") or tempfile.gettempdir()
    path = os.path.join(directory, f"xla-lane-save-{os.getpid()}-{int(safe)}.bin")
    # last: save() on XLA meets the other replicas (xm.save's rendezvous); a hang aborts the world
    save({"w": r.on_device("vector")}, path, safe_serialization=safe)
    wait_for_everyone()
    try:
        if safe:
            from safetensors.torch import load_file

            loaded = load_file(path)
        else:
            loaded = torch.load(path, weights_only=True)
        assert torch.equal(loaded["w"], r.each("vector")[0]), f"saved {loaded['w'].tolist()}, expected rank 0's tensor"
    finally:
        wait_for_everyone()
        if r.rank == 0 and os.path.exists(path):
            os.remove(path)


def check_save_pickle(r: Replica):
    _check_save(r, safe=False)


def check_save_safetensors(r: Replica):
    _check_save(r, safe=True)


CHECKS = [(name[len("check_") :], fn) for name, fn in list(globals().items()) if name.startswith("check_")]
if os.environ.get("XLA_LANE_ONLY"):  # e.g. XLA_LANE_ONLY=state,gather_tensor while debugging one op
    CHECKS = [(name, fn) for name, fn in CHECKS if name in os.environ["XLA_LANE_ONLY"].split(",")]


def _replica(index: int, n: int) -> None:
    rank = index
    if index == 0 and os.environ.get("XLA_LANE_STACKS_AFTER"):  # debugging a hang: every thread's stack
        import faulthandler

        faulthandler.dump_traceback_later(float(os.environ["XLA_LANE_STACKS_AFTER"]), exit=False)
    try:
        replica = Replica(n)
        rank = replica.rank
    except BaseException:
        _report("setup", rank, traceback.format_exc())
        raise
    for name, check in CHECKS:
        started = time.monotonic()
        try:
            info = check(replica) or {}
            _report(name, rank, None, seconds=round(time.monotonic() - started, 3), **info)
        except Exception:  # noqa: BLE001 (a failed check is a result; the replica goes on to the next)
            _report(
                name,
                rank,
                traceback.format_exc(limit=8),
                seconds=round(time.monotonic() - started, 3),
            )


def run_replicas(n: int) -> None:
    """Launch n replicas (threads of this process on PJRT CPU) and run every check on each."""
    import torch_xla

    torch_xla.launch(_replica, args=(n,))
