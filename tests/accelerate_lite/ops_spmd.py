"""SPMD check functions for the data ops: every rank of a world runs one, with the same arguments.

They are plain module-level functions (not tests) so that simulators.World, debug_launcher and the
NCCL script (ci/gpu/nccl_ops.py) can all run them. Hypothesis runs inside each rank with the same
derandomized seed and no shrinking, so every rank draws the same examples: a draw holds ALL ranks'
inputs, each rank feeds its own to the op and checks its result against the oracle computed from all
of them. After each example the ranks exchange their outcomes once, so a failure on any rank fails
every rank at the same example (and names it) instead of desynchronising the world.
"""

from __future__ import annotations

import contextlib

import time
import traceback

import torch
import torch.distributed as dist
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from accelerate_lite.state import PartialState
from accelerate_lite.utils import operations as ops
from harness import oracles, strategies

ALL_HEALTH_CHECKS = list(HealthCheck)


def _world():
    state = PartialState()
    return state, state.process_index, state.num_processes


def _tensor_device(state) -> torch.device:
    """The state's device where tensors can live there, else the CPU (a simulated profile without tags)."""
    try:
        torch.empty(0, device=state.device)
        return state.device
    except (RuntimeError, NotImplementedError):
        return torch.device("cpu")


def _to_device(data, device):
    if device.type == "cpu":
        return data
    return ops.send_to_device(data, device)


def _agree(failures: list, label: str, world_size: int) -> None:
    """Exchange this example's failures; raise the same AssertionError on every rank if any rank failed."""
    if world_size > 1:
        everyone = [None] * world_size
        dist.all_gather_object(everyone, failures)
    else:
        everyone = [failures]
    lines = [f"rank {rank}: {failure}" for rank, rank_failures in enumerate(everyone) for failure in rank_failures]
    if lines:
        raise AssertionError(f"{label}: {len(lines)} failure(s)\n" + "\n".join(lines))


def _check(failures: list, name: str, expected_fn, actual_fn) -> None:
    """Compare an op against its oracle (both may raise: then the exception types must match)."""
    try:
        expected, expected_error = expected_fn(), None
    except (TypeError, ValueError) as error:
        expected, expected_error = None, error
    try:
        actual, actual_error = actual_fn(), None
    except Exception as error:  # noqa: BLE001 - recorded, compared, reported
        actual, actual_error = None, error
    if expected_error is not None or actual_error is not None:
        if type(expected_error) is not type(actual_error):
            detail = "".join(traceback.format_exception_only(type(actual_error), actual_error)).strip() if actual_error else "no error"
            failures.append(f"{name}: expected {type(expected_error).__name__ if expected_error else 'a result'}, got {detail}")
        return
    try:
        oracles.assert_same(_cpu(actual), expected)
    except AssertionError as error:
        failures.append(f"{name}: {error}")


def _cpu(data):
    return ops.send_to_device(data, "cpu")


def _clone(data):
    return ops.recursively_apply(lambda t: t.clone(), data)


def check_collectives(examples: int = 20, precision: str = "no", max_leaves: int = 5, dtype_names: tuple = None) -> int:
    """Run gather/broadcast/reduce/pad/object ops on `examples` drawn world inputs; return the count run.

    `dtype_names` (e.g. ("float32", "int64")) restricts the dtypes drawn.

    Raises:
        AssertionError: on every rank, naming the example and each rank's failures.
    """
    state, rank, world_size = _world()
    distributed = state.distributed_type != "NO"
    device = _tensor_device(state)
    count = [0]
    dtype_strategy = st.sampled_from([getattr(torch, name) for name in dtype_names]) if dtype_names else None

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=ALL_HEALTH_CHECKS,
    )
    @given(
        inputs=strategies.world_inputs(world_size, precision, max_leaves=max_leaves, dtype_strategy=dtype_strategy),
        ragged=st.integers(-3, 2).flatmap(
            lambda dim: st.tuples(st.just(dim), strategies.world_inputs(world_size, precision, ragged=True, dim=dim, max_leaves=max_leaves, dtype_strategy=dtype_strategy))
        ),
        pad_index=st.one_of(st.integers(-8, 8), st.sampled_from([-1.5, 0.5, 2.0])),
        pad_first=st.booleans(),
        source=st.integers(0, world_size - 1),
        reduction=st.sampled_from(["mean", "sum", "none"]),
    )
    def run(inputs, ragged, pad_index, pad_first, source, reduction):
        count[0] += 1
        failures: list = []
        mine = _to_device(inputs[rank], device)
        untouched = _clone(mine)
        _check(failures, "gather", lambda: oracles.expected_gather(inputs, distributed=distributed)[rank], lambda: ops.gather(mine))
        _check(failures, "gather leaves its input alone", lambda: inputs[rank], lambda: mine)
        _check(
            failures,
            f"reduce({reduction!r})",
            lambda: oracles.expected_reduce(inputs, reduction, distributed=distributed)[rank],
            lambda: ops.reduce(mine, reduction=reduction),
        )
        target = _clone(mine)
        _check(
            failures,
            f"broadcast(from_process={source})",
            lambda: oracles.expected_broadcast(inputs, source, distributed=distributed)[rank],
            lambda: ops.broadcast(target, from_process=source),
        )
        _check(  # in place: the tensors passed in now hold the source's values
            failures,
            "broadcast writes in place",
            lambda: oracles.expected_broadcast(inputs, source, distributed=distributed)[rank],
            lambda: target,
        )
        dim, ragged_inputs = ragged
        _check(
            failures,
            f"pad_across_processes(dim={dim}, pad_index={pad_index!r}, pad_first={pad_first})",
            lambda: oracles.expected_pad_across_processes(ragged_inputs, dim, pad_index, pad_first, distributed=distributed)[rank],
            lambda: ops.pad_across_processes(_to_device(ragged_inputs[rank], device), dim=dim, pad_index=pad_index, pad_first=pad_first),
        )
        objects = [[rank, f"r{rank}"], [{"rank": rank}]]
        _check(
            failures,
            "gather_object",
            lambda: oracles.expected_gather_object([[r, f"r{r}"] for r in range(world_size)], distributed=distributed)[rank],
            lambda: ops.gather_object(objects[0]),
        )
        _check(
            failures,
            "broadcast_object_list",
            lambda: oracles.expected_broadcast_object_list([[{"rank": r}] for r in range(world_size)], source, distributed=distributed)[rank],
            lambda: ops.broadcast_object_list(objects[1], from_process=source),
        )
        leaf = ops.recursively_apply(lambda t: t, inputs[source])
        first_tensor = _first_tensor(leaf)
        if first_tensor is not None:
            sent = [first_tensor if r == source else None for r in range(world_size)]
            _check(
                failures,
                f"copy_tensor_to_devices(from rank {source})",
                lambda: oracles.expected_copy_tensor_to_devices(sent)[rank],
                lambda: ops.copy_tensor_to_devices(_to_device(sent[rank], device) if sent[rank] is not None else None),
            )
        _check(failures, "ops leave their inputs alone", lambda: untouched, lambda: mine)
        _agree(failures, f"example {count[0]} (world of {world_size}, precision {precision})", world_size)

    run()
    return count[0]


def _first_tensor(data):
    leaves = []
    ops.recursively_apply(lambda t: leaves.append(t), data)
    return leaves[0] if leaves else None


def check_single_process_identities() -> dict:
    """On a world of one process that is not distributed, the ops return what upstream returns."""
    state, rank, world_size = _world()
    scalar = torch.tensor(3.0)
    data = {"x": scalar, "meta": "kept"}
    out = {
        "distributed_type": str(state.distributed_type),
        "gather_is_input": ops.gather(data) is data,
        "gather_0d_stays_0d": ops.gather(scalar).ndim == 0,
        "gather_object_is_input": ops.gather_object(data) is data,
        "broadcast_is_input": ops.broadcast(data) is data,
        "broadcast_object_list_is_input": ops.broadcast_object_list([data]) == [data],
    }
    reduced = ops.reduce({"x": scalar}, reduction="sum")
    out["reduce_copies"] = reduced["x"] is not scalar and torch.equal(reduced["x"], scalar)
    out["reduce_int_mean_ok"] = torch.equal(ops.reduce(torch.tensor([3])), torch.tensor([3]))
    padded = ops.pad_across_processes({"x": torch.ones(2)})
    out["pad_unchanged"] = torch.equal(padded["x"], torch.ones(2))
    out["copy_tensor_to_devices"] = torch.equal(ops.copy_tensor_to_devices(torch.ones(2)), torch.ones(2))
    return out


def check_debug_mismatch(case: str, bad_rank: int) -> dict:
    """Run one debug-mode mismatch `case` with `bad_rank` passing the odd input; report what each rank saw.

    Returns:
        {"raised": exception type name or None, "message": str, "seconds": float}
    """
    state, rank, world_size = _world()
    state.debug = True
    device = _tensor_device(state)
    odd = rank == bad_rank
    start = time.perf_counter()
    try:
        _DEBUG_CASES[case](odd, device)
        raised, message = None, ""
    except Exception as error:  # noqa: BLE001 - reported to the test
        raised, message = type(error).__name__, str(error)
    finally:
        state.debug = False
    return {"raised": raised, "message": message, "seconds": time.perf_counter() - start}


def _t(*shape, dtype=torch.float32, device="cpu"):
    return torch.zeros(*shape, dtype=dtype, device=device)


_DEBUG_CASES = {
    "gather/shape": lambda odd, d: ops.gather({"x": _t(5 if odd else 4, 3, device=d)}),
    "gather/dtype": lambda odd, d: ops.gather([_t(2, dtype=torch.int64 if odd else torch.float32, device=d)]),
    "gather/structure": lambda odd, d: ops.gather([_t(2, device=d)] if odd else {"x": _t(2, device=d)}),
    "reduce/shape": lambda odd, d: ops.reduce({"t": _t(1, 2 if odd else 5, device=d)}),
    "reduce/reduction": lambda odd, d: ops.reduce(_t(2, device=d), reduction="sum" if odd else "mean"),
    "broadcast/shape": lambda odd, d: ops.broadcast((_t(3 if odd else 2, device=d),)),
    "broadcast/from_process": lambda odd, d: ops.broadcast(_t(2, device=d), from_process=1 if odd else 0),
    "pad_across_processes/ndim": lambda odd, d: ops.pad_across_processes({"t": _t(1, 1, 6, device=d) if odd else _t(1, 5, device=d)}),
    "gather_object/op": lambda odd, d: ops.gather(_t(2, device=d)) if odd else ops.gather_object([1]),
    "broadcast_object_list/length": lambda odd, d: ops.broadcast_object_list([1, 2, 3] if odd else [1, 2]),
    "copy_tensor_to_devices/op": lambda odd, d: ops.reduce(_t(2, device=d)) if odd else ops.copy_tensor_to_devices(None),
}
DEBUG_CASES = tuple(_DEBUG_CASES)


def check_debug_agreeing_inputs_pass() -> bool:
    """In debug mode, agreeing inputs run every op normally (the checks add no false alarms)."""
    state, rank, world_size = _world()
    state.debug = True
    try:
        device = _tensor_device(state)
        data = {"x": _t(2, 3, device=device) + rank}
        assert ops.gather(data)["x"].shape == (2 * world_size, 3)
        assert torch.equal(ops.reduce(data, reduction="sum")["x"].cpu(), torch.full((2, 3), float(sum(range(world_size)))))
        assert torch.equal(ops.broadcast(data, from_process=world_size - 1)["x"].cpu(), torch.full((2, 3), float(world_size - 1)))
        assert ops.pad_across_processes(_t(rank + 1, device=device)).shape == (world_size,)
        assert ops.gather_object([rank]) == list(range(world_size))
        assert ops.broadcast_object_list([rank]) == [0]
        assert torch.equal(ops.copy_tensor_to_devices(_t(2, device=device) + 1 if rank == 0 else None).cpu(), torch.ones(2))
    finally:
        state.debug = False
    return True


def check_collective_counts() -> dict:
    """Count the collectives a nested gather/broadcast/reduce issues (the coalescing claim), per op."""
    state, rank, world_size = _world()
    data = {f"t{i}": torch.full((4, 2), float(rank + i), device=_tensor_device(state)) for i in range(8)}
    data["ids"] = torch.arange(3, device=_tensor_device(state)) + rank  # a second dtype
    counts = {}
    originals = {name: getattr(dist, name) for name in ("all_gather", "all_gather_into_tensor", "all_reduce", "broadcast")}
    if hasattr(dist, "all_gather_single"):
        originals["all_gather_single"] = dist.all_gather_single
    calls = {"n": 0, "grouped": False}

    def counting(function):
        def wrapper(*args, **kwargs):
            calls["n"] += 0 if calls["grouped"] else 1
            return function(*args, **kwargs)

        return wrapper

    c10d = dist.distributed_c10d
    coalescing_manager = c10d._coalescing_manager

    @contextlib.contextmanager
    def counting_group(*args, **kwargs):
        # NCCL runs the calls of one coalescing group as a single launch: count the group once
        calls["n"] += 1
        calls["grouped"] = True
        try:
            with coalescing_manager(*args, **kwargs) as group:
                yield group
        finally:
            calls["grouped"] = False

    from accelerate_lite.utils.ops import backends

    try:
        c10d._coalescing_manager = counting_group
        for name, function in originals.items():
            setattr(dist, name, counting(function))
        backends._cache = (None, None)  # rebuild so the backend binds the counting functions
        for op, call in (("gather", ops.gather), ("broadcast", ops.broadcast), ("reduce", lambda d: ops.reduce(d, "sum"))):
            calls["n"] = 0
            call(data)
            counts[op] = calls["n"]
    finally:
        c10d._coalescing_manager = coalescing_manager
        for name, function in originals.items():
            setattr(dist, name, function)
        backends._cache = (None, None)
    counts["tensors"] = len(data)
    return counts


def check_all_debug_cases(bad_rank: int) -> dict:
    """Run every debug-mode mismatch case in turn on this world; {case: what this rank saw}."""
    return {case: check_debug_mismatch(case, bad_rank) for case in DEBUG_CASES}


def check_invalid_collective_arguments() -> dict:
    """Bad arguments raise the same error on every rank before any collective (so nothing hangs after)."""
    state, rank, world_size = _world()
    calls = {
        "gather([t, 'text'])": lambda: ops.gather([torch.ones(1), "text"]),
        "reduce({'a': 'text'})": lambda: ops.reduce({"a": "text"}),
        "reduce(int, 'mean')": lambda: ops.reduce(torch.ones(2, dtype=torch.int64, device=_tensor_device(state))),
        "broadcast(t, from_process=world_size)": lambda: ops.broadcast(torch.ones(1, device=_tensor_device(state)), from_process=world_size),
        "broadcast_object_list([1], from_process=-1)": lambda: ops.broadcast_object_list([1], from_process=-1),
        "copy_tensor_to_devices(t on every rank)": lambda: ops.copy_tensor_to_devices(torch.ones(1, device=_tensor_device(state))),
        "gather_object(5)": lambda: ops.gather_object(5),
    }
    seen = {}
    for name, call in calls.items():
        try:
            call()
            seen[name] = None
        except Exception as error:  # noqa: BLE001 - reported to the test
            seen[name] = (type(error).__name__, str(error))
    # the world still works afterwards: nothing was left half-way through a collective
    seen["afterwards"] = ops.gather(torch.tensor([rank], device=_tensor_device(state))).tolist()
    return seen


def check_parameters_that_require_grad() -> dict:
    """broadcast writes into parameters (leaves requiring grad) in place; gather/reduce accept them."""
    state, rank, world_size = _world()
    torch.manual_seed(rank)
    model = torch.nn.Linear(3, 2).to(_tensor_device(state))
    params = list(model.parameters())
    returned = ops.broadcast(params, from_process=0)
    everyone = ops.gather_object([[p.detach().cpu() for p in params]])
    gathered = ops.gather({"w": model.weight, "b": model.bias})
    reduced = ops.reduce({"w": model.weight, "b": model.bias}, reduction="sum")
    return {
        "same_objects": all(a is b for a, b in zip(returned, params)),
        "equal_to_rank_0": all(torch.equal(p, q) for other in everyone for p, q in zip(other, everyone[0])),
        "gather_shape": tuple(gathered["w"].shape),
        "reduce_is_sum": torch.equal(reduced["w"].detach().cpu(), (model.weight.detach() * world_size).cpu()),
    }
