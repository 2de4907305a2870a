"""The catalog projector: the one writer of the catalog tables.

Entity events are applied by (source system, entity type, source id) and guarded by `version`:
a duplicate or an older version is a no-op, so replays and out-of-order delivery converge on the
same tables. Deletes are soft and keep history. Every applied change appends to the immutable
event log with before and after state and trace ids.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from workbench.catalog.model import EntityChange, RelationshipChange, relationship_id
from workbench.events import topics
from workbench.events.consumer import ConsumedEvent
from workbench.events.envelope import InvalidEventError

GROUP = "dictamesh.catalog-projector"
_STATE_FIELDS = ("domain", "display_name", "attributes", "owners", "tags", "version", "is_deleted")


@dataclass(frozen=True)
class PreparedChange:
    change: EntityChange
    deleted: bool


def parse_change(consumed: ConsumedEvent) -> PreparedChange:
    """The entity change a record carries; `InvalidEventError` when it carries none."""
    event = consumed.event
    if event.type not in topics.ENTITY_TOPICS:
        raise InvalidEventError(
            "unexpected-type",
            f"Event type {event.type!r} on topic {consumed.topic!r} is not an entity event "
            f"({', '.join(topics.ENTITY_TOPICS)}).",
        )
    try:
        change = EntityChange.model_validate(event.data)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "data"
        raise InvalidEventError(
            "schema-invalid",
            f"Entity event {event.id!r}: field {where!r} {problem['msg'].lower()} "
            f"(value {problem.get('input')!r}).",
        ) from None
    return PreparedChange(change, deleted=event.type == topics.ENTITY_DELETED)


def _state(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {name: row[name] for name in _STATE_FIELDS}


def _describe_change(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """OpenMetadata-style change description of the attributes and entity fields."""
    old = (before or {}).get("attributes") or {}
    new = after.get("attributes") or {}
    description: dict[str, Any] = {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(k for k in set(old) & set(new) if old[k] != new[k]),
    }
    if before is not None:
        description["fields"] = sorted(
            name
            for name in ("domain", "display_name", "owners", "tags", "is_deleted")
            if before.get(name) != after.get(name)
        )
    return description


def _trace_ids(traceparent: str | None) -> tuple[str | None, str | None]:
    parts = (traceparent or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
        return parts[1], parts[2]
    return None, None


class CatalogProjector:
    """Sink of the catalog projection consumer group."""

    topics = topics.ENTITY_TOPICS

    def __init__(self, group: str = GROUP) -> None:
        self.group = group

    def prepare(self, consumed: ConsumedEvent) -> PreparedChange:
        return parse_change(consumed)

    def apply(
        self, conn: psycopg.Connection[Any], batch: Sequence[tuple[ConsumedEvent, PreparedChange]]
    ) -> None:
        for consumed, prepared in batch:
            self._apply_one(conn, consumed, prepared)

    def _apply_one(
        self, conn: psycopg.Connection[Any], consumed: ConsumedEvent, prepared: PreparedChange
    ) -> None:
        change, event = prepared.change, consumed.event
        entity = change.ref.entity_id
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
            current = cursor.execute(
                "SELECT domain, display_name, attributes, owners, tags, version, is_deleted "
                "FROM dictamesh_entity_catalog WHERE id = %s FOR UPDATE",
                (entity,),
            ).fetchone()
        at = event.time
        after = {
            "domain": change.domain,
            "display_name": change.display_name,
            "attributes": change.attributes,
            "owners": change.owners,
            "tags": change.tags,
            "version": change.version,
            "is_deleted": prepared.deleted,
        }
        if prepared.deleted and current is not None and not change.attributes:
            # A delete without content keeps what the entity was; it only marks it gone.
            after.update(
                {k: current[k] for k in ("domain", "display_name", "attributes", "owners", "tags")}
            )
        if current is not None and current["version"] >= change.version:
            self._record_late(conn, consumed, entity, after)
            if change.relationships and not prepared.deleted:
                self._record_late_relationships(conn, entity, change, at)
            return
        conn.execute(
            """
            INSERT INTO dictamesh_entity_catalog AS e
                (id, domain, source_system, entity_type, source_id, version, display_name,
                 attributes, owners, tags, is_deleted, deleted_at, created_at, updated_at,
                 source_updated_at)
            VALUES (%(id)s, %(domain)s, %(source_system)s, %(entity_type)s, %(source_id)s,
                    %(version)s, %(display_name)s, %(attributes)s, %(owners)s, %(tags)s,
                    %(is_deleted)s, %(deleted_at)s, %(at)s, %(at)s, %(at)s)
            ON CONFLICT (id) DO UPDATE SET
                domain = EXCLUDED.domain, version = EXCLUDED.version,
                display_name = EXCLUDED.display_name, attributes = EXCLUDED.attributes,
                owners = EXCLUDED.owners, tags = EXCLUDED.tags, is_deleted = EXCLUDED.is_deleted,
                deleted_at = EXCLUDED.deleted_at, updated_at = EXCLUDED.updated_at,
                source_updated_at = EXCLUDED.source_updated_at
            WHERE e.version < EXCLUDED.version
            """,
            {
                "id": entity,
                "source_system": change.source_system,
                "entity_type": change.entity_type,
                "source_id": change.source_id,
                "domain": after["domain"],
                "version": change.version,
                "display_name": after["display_name"],
                "attributes": Jsonb(after["attributes"]),
                "owners": after["owners"],
                "tags": after["tags"],
                "is_deleted": prepared.deleted,
                "deleted_at": at if prepared.deleted else None,
                "at": at,
            },
        )
        if prepared.deleted:
            conn.execute(
                "UPDATE dictamesh_entity_relationships SET is_deleted = true, updated_at = %s "
                "WHERE from_entity_id = %s AND NOT is_deleted",
                (at, entity),
            )
        elif change.relationships is not None:
            self._apply_relationships(conn, entity, change, at)
        _log_event(conn, consumed, entity, _state(current), after, _describe_change(current, after))
        conn.execute(
            """
            INSERT INTO dictamesh_cache_status AS c
                (cache_key, entity_id, cache_layer, last_refreshed_at, source_version,
                 is_stale, invalidation_count, updated_at)
            VALUES (%s, %s, 'L2', %s, %s, false, 0, %s)
            ON CONFLICT (cache_key) DO UPDATE SET
                last_refreshed_at = EXCLUDED.last_refreshed_at,
                source_version = EXCLUDED.source_version, is_stale = true,
                invalidation_count = c.invalidation_count + 1,
                last_invalidated_at = EXCLUDED.updated_at,
                last_invalidation_reason = 'entity changed', updated_at = EXCLUDED.updated_at
            """,
            (f"entity:{entity}", entity, at, change.version, at),
        )

    def _record_late(
        self,
        conn: psycopg.Connection[Any],
        consumed: ConsumedEvent,
        entity: uuid.UUID,
        state: dict[str, Any],
    ) -> None:
        """An older version arriving after a newer one: the entity stays, its history gains it.

        Created, updated and deleted events travel on different topics, so arrival order is not
        version order. Logging each version once, whatever the order, keeps history complete
        and makes a replay converge on the same tables.
        """
        event = consumed.event
        conn.execute(
            "UPDATE dictamesh_entity_catalog SET created_at = LEAST(created_at, %s) WHERE id = %s",
            (event.time, entity),
        )
        previous = conn.execute(
            "SELECT after_state FROM dictamesh_event_log WHERE entity_id = %s "
            "AND entity_version < %s ORDER BY entity_version DESC LIMIT 1",
            (entity, state["version"]),
        ).fetchone()
        before = previous[0] if previous else None
        description = {**_describe_change(before, _jsonable(state)), "late": True}
        _log_event(conn, consumed, entity, before, state, description)

    def _record_late_relationships(
        self, conn: psycopg.Connection[Any], entity: uuid.UUID, change: EntityChange, at: datetime
    ) -> None:
        """Edges an older version declared: known, but retired unless a newer version has them."""
        for rel in change.relationships or []:
            _upsert_edge(conn, entity, rel, change.version, at, retired=True)

    def _apply_relationships(
        self, conn: psycopg.Connection[Any], entity: uuid.UUID, change: EntityChange, at: datetime
    ) -> None:
        """The event lists the entity's outgoing edges in full: upsert them, retire the rest."""
        keep = [
            _upsert_edge(conn, entity, rel, change.version, at, retired=False)
            for rel in change.relationships or []
        ]
        conn.execute(
            "UPDATE dictamesh_entity_relationships SET is_deleted = true, updated_at = %s "
            "WHERE from_entity_id = %s AND NOT is_deleted AND NOT (id = ANY(%s))",
            (at, entity, keep),
        )


def _log_event(
    conn: psycopg.Connection[Any],
    consumed: ConsumedEvent,
    entity: uuid.UUID,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    description: dict[str, Any],
) -> None:
    """Append one version to the immutable log, once per event and once per entity version."""
    event = consumed.event
    trace_id, span_id = _trace_ids(event.traceparent)
    conn.execute(
        """
        INSERT INTO dictamesh_event_log
            (event_id, event_source, event_type, subject, entity_id, entity_version,
             before_state, after_state, change_description, trace_id, span_id,
             correlation_id, causation_id, topic, kafka_partition, kafka_offset, occurred_at)
        SELECT %(id)s, %(source)s, %(type)s, %(subject)s, %(entity)s, %(version)s, %(before)s,
               %(after)s, %(description)s, %(trace)s, %(span)s, %(correlation)s, %(causation)s,
               %(topic)s, %(partition)s, %(offset)s, %(time)s
        WHERE NOT EXISTS (SELECT 1 FROM dictamesh_event_log
                          WHERE entity_id = %(entity)s AND entity_version = %(version)s)
        ON CONFLICT (event_source, event_id) DO NOTHING
        """,
        {
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "subject": event.subject,
            "entity": entity,
            "version": after["version"],
            "before": Jsonb(_jsonable(before)),
            "after": Jsonb(_jsonable(after)),
            "description": Jsonb(description),
            "trace": trace_id,
            "span": span_id,
            "correlation": event.correlationid,
            "causation": event.causationid,
            "topic": consumed.topic,
            "partition": consumed.partition,
            "offset": consumed.offset,
            "time": event.time,
        },
    )


def _upsert_edge(
    conn: psycopg.Connection[Any],
    entity: uuid.UUID,
    rel: RelationshipChange,
    version: int,
    at: datetime,
    *,
    retired: bool,
) -> uuid.UUID:
    """Store one declared edge; a retired one (from a late version) never revives a live one."""
    target = rel.target.entity_id
    edge = relationship_id(entity, rel.type, target)
    on_conflict = (
        "created_at = LEAST(r.created_at, EXCLUDED.created_at)"
        if retired
        else "cardinality = EXCLUDED.cardinality, confidence = EXCLUDED.confidence, "
        "metadata = EXCLUDED.metadata, version = EXCLUDED.version, is_deleted = false, "
        "updated_at = EXCLUDED.updated_at"
    )
    conn.execute(
        f"""
        INSERT INTO dictamesh_entity_relationships AS r
            (id, from_entity_id, to_entity_id, relationship_type, cardinality, confidence,
             metadata, to_source_system, to_entity_type, to_source_id, version,
             is_deleted, created_at, updated_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (id) DO UPDATE SET {on_conflict}
        """,  # noqa: S608 - the only interpolation is one of two fixed clauses
        (
            edge,
            entity,
            target,
            rel.type,
            rel.cardinality,
            rel.confidence,
            Jsonb(rel.metadata),
            rel.target.source_system,
            rel.target.entity_type,
            rel.target.source_id,
            version,
            retired,
            at,
            at,
        ),
    )
    return edge


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str)) if value is not None else None
