"""The identities the catalog derives from natural keys, and what an entity change must hold."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workbench.catalog.model import NAMESPACE, entity_change, entity_id, relationship_id
from workbench.events import topics
from workbench.events.envelope import CloudEvent, InvalidEventError


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


@pytest.mark.parametrize("version", ["3", 3.0, True, 0, 2**63], ids=repr)
def test_an_entity_version_must_be_a_positive_64_bit_integer(version: object) -> None:
    data = {"domain": "d", "source_system": "s", "entity_type": "t", "source_id": "1"}
    event = CloudEvent(source="/u", type=topics.ENTITY_UPDATED, data={**data, "version": version})
    with pytest.raises(InvalidEventError, match=r"field 'version' .*\(value "):
        entity_change(event)
    assert entity_change(event.model_copy(update={"data": {**data, "version": 3}})).version == 3
