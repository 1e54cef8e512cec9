"""``--world-rank-view=R``: run a world test's body inside the pytest process as rank R, for debugging.

The pytest process joins a fresh gloo group as rank R; the other ranks are helper processes
(``python -m harness.rankview``) that run the same ``BodySpec`` as world ranks do. Rank R gets
pytest's real fixtures, capture, ``--pdb`` and ``breakpoint()``. There is no deadline in this mode:
the helpers are stopped once rank R is done, and their failures are reported after it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import subprocess
import sys
import tempfile

import pytest

from harness.outcomes import RankOutcome, merge
from harness.rankside import (
    BodySpec,
    _reset_partial_state,
    outbox_file,
    run_body,
    write_outcome,
)

HELPER_GRACE = 5.0  # seconds the helpers get to finish after rank R is done


@contextlib.contextmanager
def _rank_environment(rank: int, size: int, port: int):
    """Set the variables a launcher sets for ``rank``, and restore the previous values after."""
    values = {
        "RANK": str(rank), "WORLD_SIZE": str(size), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(size),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
    }
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _profile_context(profile: str | None, rank: int, size: int):
    if profile is None:
        return contextlib.nullcontext()
    from simulators import apply_profile

    return apply_profile(profile, local_rank=rank, world_size=size)


def _start_helpers(spec_file: str, view: int, size: int, port: int, profile: str | None) -> dict:
    helpers = {}
    for rank in range(size):
        if rank == view:
            continue
        cmd = [sys.executable, "-m", "harness.rankview", spec_file, str(rank), str(size), str(port), profile or ""]
        helpers[rank] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return helpers


def _stop_helpers(helpers: dict, grace: float) -> dict:
    """Wait up to ``grace`` s for the helpers, kill the rest; return {rank: output of killed ones}."""
    killed = {}
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=grace)
    for rank, proc in helpers.items():
        remaining = max(0.0, (deadline - datetime.datetime.now()).total_seconds())
        try:
            proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed[rank] = proc.stdout.read().decode(errors="replace")[-4000:] if proc.stdout else ""
    return killed


def _helper_outcomes(spec: BodySpec, helpers: dict, killed: dict) -> list:
    outcomes = []
    for rank, proc in helpers.items():
        path = outbox_file(spec.outbox, spec.token, rank)
        if os.path.exists(path):
            with open(path, "rb") as fh:
                outcomes.append(RankOutcome.from_dict(pickle.load(fh)))
        elif rank in killed:
            outcomes.append(RankOutcome(rank, "stuck", "still running after the viewed rank finished", killed[rank]))
        else:
            outcomes.append(RankOutcome(rank, "crashed", f"exited with code {proc.returncode}"))
    return outcomes


def _call_in_process(item, spec: BodySpec, view: int, size: int) -> None:
    """Call the test function here, as rank ``view``, with pytest's own fixture values."""
    kwargs = {name: item.funcargs[name] for name in item._fixtureinfo.argnames}
    per_rank = {name for name, _, _ in spec.per_rank}
    for name, kind, _ in spec.per_rank:
        if kind == "rank":
            kwargs[name] = view
        elif kind == "world_size":
            kwargs[name] = size
    if spec.hypothesis_seed is not None:
        from harness.lockstep import run_hypothesis_test

        run_hypothesis_test(item.obj, kwargs, per_rank, view, spec.hypothesis_seed, spec.token)
    else:
        item.obj(**kwargs)


def run_rank_view(item, world_spec, view: int) -> None:
    """Run ``item`` as rank ``view`` of its world inside this process (the plugin's debug mode).

    Args:
        item: the set-up pytest item of a world test.
        world_spec: its ``WorldSpec``.
        view: the rank to run here.

    Raises:
        Whatever the body raises here (pytest reports it as usual), else the failure of another rank.
    """
    import torch.distributed as dist

    from harness.runner import failure_exception
    from harness.transfer import build_spec

    size = world_spec.size
    if view >= size:
        pytest.skip(f"--world-rank-view={view}: this test's world has {size} ranks")
    if dist.is_initialized():
        pytest.fail("--world-rank-view: this pytest process already has a process group; run the test alone")
    outbox = tempfile.mkdtemp(prefix="harness-rankview-")
    seed = None
    if getattr(item.obj, "is_hypothesis_test", False):
        from harness.plugin import _hypothesis_seed

        seed = _hypothesis_seed(item)
    spec = build_spec(item, outbox, "view", seed)
    spec_file = os.path.join(outbox, "spec.pickle")
    with open(spec_file, "wb") as fh:
        pickle.dump(spec, fh)
    store = dist.TCPStore("127.0.0.1", 0, world_size=size, is_master=True, wait_for_workers=False)
    helpers = _start_helpers(spec_file, view, size, store.port, world_spec.profile)
    try:
        with _rank_environment(view, size, store.port), _profile_context(world_spec.profile, view, size):
            dist.init_process_group("gloo", store=store, rank=view, world_size=size)
            _reset_partial_state()
            try:
                _call_in_process(item, spec, view, size)
            finally:
                dist.destroy_process_group()
                _reset_partial_state()
    finally:
        killed = _stop_helpers(helpers, HELPER_GRACE)
    verdict = merge([RankOutcome(view, "passed"), *_helper_outcomes(spec, helpers, killed)], size)
    if verdict.status == "failed":
        raise failure_exception(verdict)
    if verdict.status in ("skipped", "xfailed"):
        getattr(pytest, "skip" if verdict.status == "skipped" else "xfail")(verdict.reason)


def _helper_main(spec_file: str, rank: int, size: int, port: int, profile: str) -> None:
    """A helper rank: join the group, run the body like a world rank, leave the outcome in the outbox."""
    import torch.distributed as dist

    from harness.errors import RankLeftTest

    with open(spec_file, "rb") as fh:
        spec = pickle.load(fh)
    with _rank_environment(rank, size, port), _profile_context(profile or None, rank, size):
        store = dist.TCPStore("127.0.0.1", port, world_size=size, is_master=False)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=size)
        try:
            write_outcome(spec, run_body(spec))
        except RankLeftTest:
            pass  # run_body already wrote the outcome


if __name__ == "__main__":
    _helper_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
