"""accelerate_lite.utils.environment: patch_environment, clear_environment, str_to_bool, parse_flag_from_env."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accelerate_lite.utils import (
    clear_environment,
    get_int_from_env,
    parse_choice_from_env,
    parse_flag_from_env,
    patch_environment,
    str_to_bool,
)

PREFIX = "ACCEL_LITE_TEST_"


class Boom(Exception):
    pass


def environ_now() -> dict:
    """os.environ as a dict, less PYTEST_CURRENT_TEST (pytest rewrites it between test phases)."""
    return {key: value for key, value in os.environ.items() if key != "PYTEST_CURRENT_TEST"}


@pytest.fixture
def preset(monkeypatch):
    """Two variables that exist before the test (monkeypatch restores them after, whatever happens)."""
    monkeypatch.setenv(PREFIX + "OLD", "before")
    monkeypatch.setenv(PREFIX + "KEPT", "untouched")
    monkeypatch.delenv(PREFIX + "NEW", raising=False)
    return environ_now()


# --- patch_environment ------------------------------------------------------------------------------


def test_patch_environment_sets_upper_cased_keys_and_str_values(preset):
    with patch_environment(accel_lite_test_new=29501, ACCEL_LITE_TEST_OLD=True):
        assert os.environ[PREFIX + "NEW"] == "29501"
        assert os.environ[PREFIX + "OLD"] == "True"
        assert "accel_lite_test_new" not in os.environ
    assert environ_now() == preset


def test_patch_environment_restores_after_the_body_changes_the_keys(preset):
    with patch_environment(**{PREFIX + "OLD": "patched", PREFIX + "NEW": "patched"}):
        os.environ[PREFIX + "OLD"] = "changed in body"
        del os.environ[PREFIX + "NEW"]
    assert environ_now() == preset


def test_patch_environment_restores_when_the_body_raises(preset):
    with pytest.raises(Boom):
        with patch_environment(**{PREFIX + "OLD": "patched", PREFIX + "NEW": "patched"}):
            raise Boom()
    assert os.environ[PREFIX + "OLD"] == "before"
    assert PREFIX + "NEW" not in os.environ
    assert environ_now() == preset


def test_patch_environment_nested(preset):
    with patch_environment(**{PREFIX + "OLD": "outer", PREFIX + "NEW": "outer"}):
        with patch_environment(**{PREFIX + "OLD": "inner", PREFIX + "NEW": "inner"}):
            assert os.environ[PREFIX + "OLD"] == os.environ[PREFIX + "NEW"] == "inner"
        assert os.environ[PREFIX + "OLD"] == os.environ[PREFIX + "NEW"] == "outer"
        with pytest.raises(Boom):
            with patch_environment(**{PREFIX + "NEW": "inner again"}):
                raise Boom()
        assert os.environ[PREFIX + "NEW"] == "outer"
    assert environ_now() == preset


def test_patch_environment_same_key_in_two_cases_is_removed_after(preset):
    # Both spellings name one variable; it did not exist before, so it must not exist after.
    with patch_environment(**{"accel_lite_test_new": "1", PREFIX + "NEW": "2"}):
        assert os.environ[PREFIX + "NEW"] == "2"
    assert environ_now() == preset


def test_patch_environment_value_that_cannot_be_set_leaks_nothing(preset):
    with pytest.raises(ValueError):
        with patch_environment(**{PREFIX + "NEW": "fine", PREFIX + "OLD": "nul\x00byte"}):
            pass  # pragma: no cover - never reached
    assert environ_now() == preset


def test_patched_value_is_seen_by_a_child_process(preset):
    with patch_environment(**{PREFIX + "NEW": "seen"}):
        out = subprocess.run([sys.executable, "-c", f"import os; print(os.environ['{PREFIX}NEW'])"],
                             capture_output=True, text=True, check=True).stdout
    assert out.strip() == "seen"


# --- clear_environment -------------------------------------------------------------------------------


def test_clear_environment_empties_os_environ_and_restores_exactly(preset):
    with clear_environment():
        assert dict(os.environ) == {}
        os.environ[PREFIX + "NEW"] = "set inside"
    assert environ_now() == preset


def test_clear_environment_restores_when_the_body_raises(preset):
    with pytest.raises(Boom):
        with clear_environment():
            os.environ[PREFIX + "OLD"] = "overwritten inside"
            raise Boom()
    assert environ_now() == preset


def child_environ() -> dict:
    """The environment a child process started now receives."""
    script = "import os, json; print(json.dumps(dict(os.environ)))"
    out = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


# Python may add LC_CTYPE in the child itself (PEP 538 locale coercion), so that one name is tolerated.
ADDED_BY_CHILD_PYTHON = {"LC_CTYPE"}


def test_clear_environment_child_process_sees_an_empty_environment(preset):
    with clear_environment():
        seen = child_environ()  # started by absolute path: PATH is gone too
    assert set(seen) <= ADDED_BY_CHILD_PYTHON
    assert environ_now() == preset


def test_clear_environment_empties_and_restores_variables_set_behind_os_environ():
    # C code (GNU readline, for one) sets variables os.environ never sees; os.putenv does the same here.
    name = PREFIX + "C_LEVEL_ONLY"
    os.putenv(name, "from C")
    try:
        assert name not in os.environ and child_environ()[name] == "from C"
        with clear_environment():
            assert set(child_environ()) <= ADDED_BY_CHILD_PYTHON
        assert name not in os.environ  # back exactly as it was: C-level only
        assert child_environ()[name] == "from C"
    finally:
        os.unsetenv(name)


def test_clear_environment_inside_patch_environment(preset):
    with patch_environment(**{PREFIX + "NEW": "patched"}):
        with clear_environment():
            assert PREFIX + "NEW" not in os.environ
            with patch_environment(**{PREFIX + "NEW": "inner"}):
                assert dict(os.environ) == {PREFIX + "NEW": "inner"}
            assert dict(os.environ) == {}
        assert os.environ[PREFIX + "NEW"] == "patched"
    assert environ_now() == preset


# --- nothing leaks, for any set of keys and values ----------------------------------------------------

names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=8)
values = st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                           max_size=12), st.integers(), st.booleans(), st.floats(allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(existing=st.dictionaries(names, st.text(alphabet="abc123", max_size=5), max_size=5),
       patched=st.dictionaries(names, values, max_size=6), raise_inside=st.booleans(),
       body_writes=st.dictionaries(names, st.text(alphabet="xyz", max_size=3), max_size=3))
def test_nothing_leaks_for_random_key_value_sets(existing, patched, raise_inside, body_writes):
    existing = {PREFIX + "H_" + key.upper(): value for key, value in existing.items()}
    patched = {PREFIX + "H_" + key: value for key, value in patched.items()}
    with patch_environment(**existing):
        before = environ_now()
        try:
            with patch_environment(**patched):
                # keys equal once upper-cased (e= and E=) are one variable: the last value given wins
                expected = {key.upper(): str(value) for key, value in patched.items()}
                for key, value in expected.items():
                    assert os.environ[key] == value
                for key, value in body_writes.items():
                    if PREFIX + "H_" + key.upper() in {k.upper() for k in patched}:
                        os.environ[PREFIX + "H_" + key.upper()] = value  # a body may rewrite a patched key
                if raise_inside:
                    raise Boom()
        except Boom:
            pass
        assert environ_now() == before
        try:
            with clear_environment():
                os.environ.update({PREFIX + "H_" + key.upper(): value for key, value in body_writes.items()})
                if raise_inside:
                    raise Boom()
        except Boom:
            pass
        assert environ_now() == before


# --- str_to_bool / parse_flag_from_env / get_int_from_env / parse_choice_from_env ---------------------


@pytest.mark.parametrize("text", ["y", "YES", "t", "True", "on", "1"])
def test_str_to_bool_true_values(text):
    assert str_to_bool(text) == 1


@pytest.mark.parametrize("text", ["n", "No", "f", "FALSE", "off", "0"])
def test_str_to_bool_false_values(text):
    assert str_to_bool(text) == 0


@pytest.mark.parametrize("text", ["", "2", "maybe", "truthy"])
def test_str_to_bool_rejects_other_strings_naming_them(text):
    with pytest.raises(ValueError, match=repr(text).replace("(", r"\(")):
        str_to_bool(text)


def test_parse_flag_from_env(preset):
    key = PREFIX + "FLAG"
    assert parse_flag_from_env(key) is False
    assert parse_flag_from_env(key, default=True) is True
    with patch_environment(**{key: "yes"}):
        assert parse_flag_from_env(key) is True
    with patch_environment(**{key: "0"}):
        assert parse_flag_from_env(key, default=True) is False
    with patch_environment(**{key: "sometimes"}), pytest.raises(ValueError, match="sometimes"):
        parse_flag_from_env(key)


def test_get_int_from_env_takes_the_first_non_negative(preset):
    with patch_environment(**{PREFIX + "A": "-1", PREFIX + "B": "3", PREFIX + "C": "5"}):
        assert get_int_from_env([PREFIX + "A", PREFIX + "B", PREFIX + "C"], 7) == 3
        assert get_int_from_env([PREFIX + "MISSING"], 7) == 7


def test_parse_choice_from_env(preset):
    assert parse_choice_from_env(PREFIX + "CHOICE", "fp16") == "fp16"
    with patch_environment(**{PREFIX + "CHOICE": "bf16"}):
        assert parse_choice_from_env(PREFIX + "CHOICE") == "bf16"
