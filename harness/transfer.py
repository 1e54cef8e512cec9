"""Turn a collected pytest item into a ``BodySpec`` the ranks can run (controller side).

Fixtures are set up by pytest in the pytest process as usual. Their values then travel to the
ranks: most are *shared* (pickled once, every rank gets an equal copy; teardown happens in the
pytest process after the test), and a few are *per rank* (built inside each rank: ``tmp_path`` and
``tmpdir`` become ``<tmp_path>/rank<r>``, ``monkeypatch`` and ``capsys`` are fresh per rank, and
the harness's ``rank``/``world_size`` fixtures hold the rank's own values).
"""

from __future__ import annotations

import pickle
import sys

from harness.errors import FixtureTransferError
from harness.rankside import PER_RANK_FIXTURES, BodySpec

# Fixtures that describe the pytest process itself; they mean nothing inside a rank.
NOT_TRANSFERABLE = {
    "request": "read what you need from request in a fixture and return it",
    "pytestconfig": "read the option in a fixture and return its value",
    "caplog": "assert on logs through capsys, or log to a file under tmp_path",
    "capfd": "use capsys (per rank) instead",
    "capsysbinary": "use capsys (per rank) instead",
    "capfdbinary": "use capsys (per rank) instead",
    "recwarn": "use pytest.warns() inside the body instead",
}


def _is_builtin_fixture(item, name: str) -> bool:
    """True when ``name`` resolves to pytest's (or the harness's) own fixture, not a user override."""
    defs = item._fixtureinfo.name2fixturedefs.get(name)
    if not defs:
        return False
    module = getattr(defs[-1].func, "__module__", "") or ""
    return module.startswith(("_pytest.", "harness."))


def split_arguments(item) -> tuple[dict, tuple]:
    """Return ``(shared_values, per_rank_recipes)`` for the test function's arguments.

    Args:
        item: a set-up pytest Function item (its ``funcargs`` are filled).

    Returns:
        ``{argname: value}`` to pickle once, and ``(argname, kind, payload)`` recipes.

    Raises:
        FixtureTransferError: a fixture has no meaning inside a rank.
    """
    shared, per_rank = {}, []
    for name in item._fixtureinfo.argnames:
        value = item.funcargs[name]
        if name in PER_RANK_FIXTURES and _is_builtin_fixture(item, name):
            payload = str(value) if name in ("tmp_path", "tmpdir") else None
            per_rank.append((name, name, payload))
        elif name in NOT_TRANSFERABLE and (name == "request" or _is_builtin_fixture(item, name)):
            raise FixtureTransferError(
                f"{item.nodeid}: fixture {name!r} belongs to the pytest process and cannot be used in "
                f"a world test body that runs on the ranks; {NOT_TRANSFERABLE[name]}"
            )
        else:
            shared[name] = value
    return shared, tuple(per_rank)


def pickle_shared(nodeid: str, shared: dict) -> bytes:
    """Pickle the shared arguments, naming the one that does not pickle."""
    try:
        return pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001, S110 - find which argument below, to name it
        pass
    for name, value in shared.items():
        try:
            pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - pickle raises many types
            raise FixtureTransferError(
                f"{nodeid}: argument {name!r} ({type(value).__name__}) cannot be sent to the ranks: {exc}. "
                "Every rank gets a pickled copy of shared fixtures; return picklable data from the fixture, "
                "or build the object inside the test body"
            ) from None
    raise FixtureTransferError(f"{nodeid}: the test's arguments cannot be pickled together")


def qualname_of(item) -> str:
    """Return ``test_x`` or ``TestClass.test_x`` for a pytest Function (parameters stripped)."""
    name = getattr(item, "originalname", None) or item.name.split("[")[0]
    cls = getattr(item, "cls", None)
    return f"{cls.__qualname__}.{name}" if cls is not None else name


def build_spec(item, outbox: str, token: str, hypothesis_seed: int | None) -> BodySpec:
    """Build the spec every rank of a world runs for ``item``.

    Args:
        item: a set-up pytest Function item.
        outbox: directory where ranks that do not pass leave their outcome.
        token: unique name of this run of the test.
        hypothesis_seed: seed for a ``@given`` test, else None.

    Returns:
        The spec.

    Raises:
        FixtureTransferError: an argument cannot reach the ranks.
    """
    shared, per_rank = split_arguments(item)
    module = item.module
    return BodySpec(
        nodeid=item.nodeid,
        module_name=module.__name__,
        module_path=module.__file__,
        qualname=qualname_of(item),
        sys_path=tuple(sys.path),
        shared_blob=pickle_shared(item.nodeid, shared),
        per_rank=per_rank,
        outbox=outbox,
        token=token,
        verbosity=item.config.get_verbosity("assertions") if hasattr(item.config, "get_verbosity") else 0,
        hypothesis_seed=hypothesis_seed,
    )
