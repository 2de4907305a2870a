"""The data of entity events, and the deterministic identities the catalog derives from it.

Identities are UUIDv5 of the natural key, so replaying a topic into an empty database yields the
same rows, ids included, and a relationship can name an entity that has not arrived yet.
"""

from __future__ import annotations

import hashlib
import uuid
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workbench.events.envelope import CloudEvent, InvalidEventError

NAMESPACE = uuid.UUID("6f1c2a9e-4b7d-5e3a-9c11-d1c7a3e5f042")

Cardinality = Literal["one_to_one", "one_to_many", "many_to_one", "many_to_many"]


class EntityRef(BaseModel):
    """The natural key of a catalog entity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_system: str = Field(min_length=1, max_length=200)
    entity_type: str = Field(min_length=1, max_length=200)
    source_id: str = Field(min_length=1, max_length=1000)

    @property
    def entity_id(self) -> uuid.UUID:
        return entity_id(self.source_system, self.entity_type, self.source_id)

    @property
    def key(self) -> str:
        """Partition key: every change of one entity lands on one partition, in order."""
        return f"{self.source_system}/{self.entity_type}/{self.source_id}"


class RelationshipChange(BaseModel):
    """A typed, directed edge from the event's entity to `target`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field(min_length=1, max_length=200)
    target: EntityRef
    cardinality: Cardinality = "many_to_one"
    confidence: Decimal = Field(default=Decimal(1), ge=0, le=1, max_digits=4, decimal_places=3)
    metadata: dict[str, Any] = Field(default_factory=dict)


class EntityChange(BaseModel):
    """The `data` of dictamesh.entity.created / updated / deleted events."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    domain: str = Field(min_length=1, max_length=200)
    source_system: str = Field(min_length=1, max_length=200)
    entity_type: str = Field(min_length=1, max_length=200)
    source_id: str = Field(min_length=1, max_length=1000)
    # Strict: "3", 3.0 and true are not versions; the bound is the catalog's bigint column.
    version: int = Field(
        ge=1, le=2**63 - 1, strict=True, description="Increases with every change of one entity."
    )
    attributes: dict[str, Any] = Field(default_factory=dict)
    relationships: list[RelationshipChange] | None = Field(
        default=None,
        description="The entity's outgoing edges in full; None leaves them as they are.",
    )
    display_name: str | None = None
    owners: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    schema_subject: str | None = None

    @property
    def ref(self) -> EntityRef:
        return EntityRef(
            source_system=self.source_system, entity_type=self.entity_type, source_id=self.source_id
        )


def entity_id(source_system: str, entity_type: str, source_id: str) -> uuid.UUID:
    return _uuid5(f"entity\x1f{source_system}\x1f{entity_type}\x1f{source_id}")


def relationship_id(from_id: uuid.UUID, relationship_type: str, to_id: uuid.UUID) -> uuid.UUID:
    return _uuid5(f"relationship\x1f{from_id}\x1f{relationship_type}\x1f{to_id}")


_NAMESPACE_BYTES = NAMESPACE.bytes
_VERSION_5_MASK = ~((0xC000 << 48) | (0xF000 << 64))
_VERSION_5_BITS = (0x8000 << 48) | (5 << 76)


def _uuid5(name: str) -> uuid.UUID:
    """`uuid.uuid5(NAMESPACE, name)`, built without `UUID.__init__`'s argument checks.

    Every event derives its entity's id, and the checks cost more than the hash.
    """
    digest = hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()
    value = object.__new__(uuid.UUID)
    bits = int.from_bytes(digest[:16]) & _VERSION_5_MASK | _VERSION_5_BITS
    object.__setattr__(value, "int", bits)
    object.__setattr__(value, "is_safe", uuid.SafeUUID.unknown)
    return value


def entity_change(event: CloudEvent) -> EntityChange:
    """The change an entity event carries; `InvalidEventError` naming the field and value if not."""
    try:
        return EntityChange.model_validate(event.data)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "data"
        raise InvalidEventError(
            "schema-invalid",
            f"Entity event {event.id!r}: field {where!r} {problem['msg'].lower()} "
            f"(value {problem.get('input')!r}).",
        ) from None
