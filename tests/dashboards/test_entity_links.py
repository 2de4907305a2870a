"""Links from other pages open an entity in the Catalog Explorer, whatever its identity holds."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st
from workbench.dashboards.catalog import entity_link, linked_entity

identity_part = st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s)


def _session_args(link: str) -> dict[str, list[bytes]]:
    """What Panel hands a page: each query argument as a list of bytes."""
    query = parse_qs(urlsplit(link).query, keep_blank_values=True)
    return {key: [value.encode() for value in values] for key, values in query.items()}


@given(identity_part, identity_part, identity_part)
def test_a_link_names_exactly_the_entity_it_was_made_for(
    system: str, kind: str, ident: str
) -> None:
    row = {"source_system": system, "entity_type": kind, "source_id": ident}
    link = entity_link(row)
    assert link.startswith("./catalog?")
    assert linked_entity(_session_args(link)) == row


def test_a_link_missing_a_part_opens_no_entity() -> None:
    args = _session_args(entity_link({"source_system": "crm", "entity_type": "", "source_id": "1"}))
    assert linked_entity(args) is None
    assert linked_entity({}) is None
