"""Property-based tests of the parsers and the change detection."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from connectors.base.capabilities import EntityRecord, Link
from connectors.base.http import redact_url
from connectors.base.sync import content_hash
from connectors.rest.spec import dig

keys = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)
scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
documents = st.recursive(
    scalars, lambda inner: st.dictionaries(keys, inner, max_size=4), max_leaves=12
)


@given(st.lists(keys, min_size=1, max_size=4), scalars)
def test_dig_finds_what_was_nested(path: list[str], value: Any) -> None:
    document: Any = value
    for step in reversed(path):
        document = {step: document}
    assert dig(document, ".".join(path)) == value
    assert dig(document, ".".join([*path, "missing"])) is None or isinstance(value, dict)


@given(st.dictionaries(keys, documents, max_size=6), st.randoms())
def test_content_hash_ignores_key_order_and_tag_order(attributes: dict[str, Any], rnd: Any) -> None:
    items = list(attributes.items())
    rnd.shuffle(items)
    tags = ["b", "a", "c"]
    first = EntityRecord("t", "1", attributes, "n", [Link("r", "u", "2")], tags=tags)
    second = EntityRecord("t", "1", dict(items), "n", [Link("r", "u", "2")], tags=sorted(tags))
    assert content_hash(first) == content_hash(second)
    changed = EntityRecord("t", "1", {**attributes, "__new": 1}, "n", [Link("r", "u", "2")])
    assert content_hash(changed) != content_hash(first)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20))
def test_secret_query_values_never_survive_redaction(secret: str) -> None:
    url = f"https://api.example.com/x?api_key={secret}&token={secret}&page=2"
    redacted = redact_url(url)
    assert f"={secret}&" not in redacted and not redacted.endswith(f"={secret}")
    assert "page=2" in redacted


def test_integers_beyond_64_bits_are_hashed_and_published_as_text() -> None:
    from connectors.base.sync import _jsonable

    huge = {"n": 2**70, "nested": [{"m": -(2**65)}], "ok": 5}
    assert content_hash(EntityRecord("t", "1", huge)) != content_hash(EntityRecord("t", "1", {}))
    assert _jsonable(huge) == {"n": str(2**70), "nested": [{"m": str(-(2**65))}], "ok": 5}
