"""The identities the catalog derives from natural keys."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from workbench.catalog.model import NAMESPACE, entity_id, relationship_id


@given(st.text(max_size=30), st.text(max_size=30), st.text(max_size=60))
def test_entity_ids_are_the_standard_uuid5_of_the_natural_key(
    system: str, entity_type: str, source_id: str
) -> None:
    derived = entity_id(system, entity_type, source_id)
    standard = uuid.uuid5(NAMESPACE, f"entity\x1f{system}\x1f{entity_type}\x1f{source_id}")
    assert derived == standard
    assert (str(derived), hash(derived), derived.version) == (str(standard), hash(standard), 5)


@given(st.uuids(), st.text(max_size=20), st.uuids())
def test_relationship_ids_are_the_standard_uuid5_of_their_ends(
    source: uuid.UUID, kind: str, target: uuid.UUID
) -> None:
    expected = uuid.uuid5(NAMESPACE, f"relationship\x1f{source}\x1f{kind}\x1f{target}")
    assert relationship_id(source, kind, target) == expected
