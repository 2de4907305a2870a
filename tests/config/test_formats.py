"""Property-based tests of the .env encoding and name mapping (no stack needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workbench.config.io import decode_env_value, encode_env_value, env_name, key_from_env_name
from workbench.config.model import Actor, ConfigError, Scope

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_env_values_round_trip(value: Any) -> None:
    encoded = encode_env_value(value)
    assert len(encoded.splitlines()) <= 1, "one line per value"
    assert "\n" not in encoded
    assert decode_env_value(encoded) == value


@given(st.text())
def test_text_stays_text_even_when_it_looks_like_json(value: str) -> None:
    assert decode_env_value(encode_env_value(value)) == value
    assert isinstance(decode_env_value(encode_env_value(value)), str)


@given(st.from_regex(r"[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){0,3}", fullmatch=True))
def test_env_names_map_back_to_their_keys(key: str) -> None:
    name = env_name(key)
    assert name == name.upper()
    assert key_from_env_name(name, [key]) == key
    if not any(part in key for part in ("__", "_.", "._")):  # otherwise ambiguous: define it
        assert key_from_env_name(name, []) == key


def test_quotes_and_bad_quotes() -> None:
    assert decode_env_value("'$HOME #not a comment'") == "$HOME #not a comment"
    assert decode_env_value('"a\\nb"') == "a\nb"
    assert decode_env_value("42") == 42 and decode_env_value("42", as_text=True) == "42"
    with pytest.raises(ValueError, match="Unterminated"):
        decode_env_value('"unclosed')
    assert json.loads(encode_env_value({"a": [1]})) == {"a": [1]}


def test_bad_actor_and_scope_are_refused() -> None:
    with pytest.raises(ConfigError, match="Actor type 'robot'"):
        Actor("x", "robot")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs a name"):
        Actor("")
    with pytest.raises(ConfigError, match="service name"):
        Scope("dev", "bad service!")
