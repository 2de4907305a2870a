"""The catalog projector: the one writer of the catalog tables.

Entity events are applied by (source system, entity type, source id) and guarded by `version`:
a duplicate or an older version is a no-op, so replays and out-of-order delivery converge on the
same tables. Deletes are soft and keep history. Every applied change appends to the immutable
event log with before and after state and trace ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from prometheus_client import Counter
from psycopg.copy import LibpqWriter
from psycopg.types.json import Jsonb

from workbench.catalog.model import (
    EntityChange,
    RelationshipChange,
    entity_change,
    entity_id,
    relationship_id,
)
from workbench.events import topics
from workbench.events.consumer import ConsumedEvent
from workbench.events.envelope import InvalidEventError
from workbench.observability import REGISTRY, get_logger

log = get_logger(__name__)
GROUP = "dictamesh.catalog-projector"
VERSION_CONFLICTS = Counter(
    "dictamesh_catalog_version_conflicts_total",
    "Entity events that claimed a version the catalog already holds with other content.",
    ["group", "source_system"],
    registry=REGISTRY,
)
REUSED_EVENT_IDS = Counter(
    "dictamesh_catalog_reused_event_ids_total",
    "Entity events not applied because an earlier event had the same source and id.",
    ["group", "source_system"],
    registry=REGISTRY,
)
_STATE_FIELDS = ("domain", "display_name", "attributes", "owners", "tags", "version", "is_deleted")


@dataclass(frozen=True)
class PreparedChange:
    change: EntityChange
    deleted: bool
    entity: uuid.UUID
    # The id as text, made while the batch is read: a batch plan keys its rows by it (a str
    # caches its hash; a UUID hashes in Python every time) and COPY writes it.
    entity_text: str


def parse_change(consumed: ConsumedEvent) -> PreparedChange:
    """The entity change a record carries; `InvalidEventError` when it carries none."""
    event = consumed.event
    if event.type not in topics.ENTITY_TOPICS:
        raise InvalidEventError(
            "unexpected-type",
            f"Event type {event.type!r} on topic {consumed.topic!r} is not an entity event "
            f"({', '.join(topics.ENTITY_TOPICS)}).",
        )
    change = entity_change(event)
    entity = entity_id(change.source_system, change.entity_type, change.source_id)
    return PreparedChange(
        change, deleted=event.type == topics.ENTITY_DELETED, entity=entity, entity_text=str(entity)
    )


def _state(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {name: row[name] for name in _STATE_FIELDS}


def _describe_change(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """OpenMetadata-style change description of the attributes and entity fields."""
    new = after.get("attributes") or {}
    if before is None:
        return {"added": sorted(new), "removed": [], "changed": []}
    old = before.get("attributes") or {}
    description: dict[str, Any] = {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(k for k in set(old) & set(new) if old[k] != new[k]),
    }
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


_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS dictamesh_stage_entities (
    id uuid, domain text, source_system text, entity_type text, source_id text, version bigint,
    display_name text, attributes jsonb, owners text[], tags text[], is_deleted boolean,
    deleted_at timestamptz, created_at timestamptz, updated_at timestamptz,
    source_updated_at timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS dictamesh_stage_cache (
    entity_id uuid, version bigint, at timestamptz, changes bigint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS dictamesh_stage_log (
    event_id text, event_source text, event_type text, subject text, entity_id uuid,
    entity_version bigint, before_state jsonb, after_state jsonb, change_description jsonb,
    trace_id text, span_id text, correlation_id text, causation_id text, topic text,
    kafka_partition int, kafka_offset bigint, occurred_at timestamptz
) ON COMMIT DELETE ROWS;
"""


class _BatchPlan:
    """What one batch does to the catalog, worked out in memory before anything is written.

    Rows are kept as COPY text lines, each field formatted once: the same lines feed the
    tables themselves (appends) and the staging tables, whose columns are in the same order.
    """

    def __init__(self, stored: set[str]) -> None:
        # Entities are keyed by their id as text (`PreparedChange.entity_text`).
        self.stored = stored  # entities the catalog held when the batch started
        self.entities: dict[str, str] = {}  # the newest version this batch stages
        self.created: dict[str, str] = {}  # when the batch first staged each entity
        self.log: list[str] = []
        self.latest: dict[str, tuple[str, int, str, int]] = {}  # for cache status
        self.late: list[tuple[ConsumedEvent, uuid.UUID, dict[str, Any]]] = []
        self.late_edges: list[tuple[uuid.UUID, EntityChange, datetime]] = []
        self.late_deletes: list[tuple[uuid.UUID, int, datetime]] = []  # entity, version, time
        # Each applied version's edges in arrival order: its full list, or None when deleted.
        self.edge_changes: list[tuple[uuid.UUID, EntityChange | None, datetime]] = []

    def add(
        self,
        consumed: ConsumedEvent,
        prepared: PreparedChange,
        current: dict[str, dict[str, Any]],
    ) -> None:
        change, event = prepared.change, consumed.event
        entity, entity_text, at = prepared.entity, prepared.entity_text, event.time
        before = current.get(entity_text)
        after: dict[str, Any] = {
            "domain": change.domain,
            "display_name": change.display_name,
            "attributes": change.attributes,
            "owners": change.owners,
            "tags": change.tags,
            "version": change.version,
            "is_deleted": prepared.deleted,
        }
        if change.relationships is not None and not prepared.deleted:
            # Logged with the version, so `relationships(as_of=)` can rebuild the edges.
            after["relationships"] = [rel.model_dump(mode="json") for rel in change.relationships]
        if prepared.deleted and before is not None and not change.attributes:
            # A delete without content keeps what the entity was; it only marks it gone.
            after.update(
                {k: before[k] for k in ("domain", "display_name", "attributes", "owners", "tags")}
            )
        if before is not None and before["version"] >= change.version:
            self.late.append((consumed, entity, after))
            if prepared.deleted:
                self.late_deletes.append((entity, change.version, at))
            elif change.relationships:
                self.late_edges.append((entity, change, at))
            return
        current[entity_text] = after
        at_text, version = copy_time(at), str(change.version)
        self.entities[entity_text] = copy_line(
            entity_text,
            copy_text(after["domain"]),
            copy_text(change.source_system),
            copy_text(change.entity_type),
            copy_text(change.source_id),
            version,
            copy_text(after["display_name"]),
            copy_json(after["attributes"]),
            copy_array(after["owners"]),
            copy_array(after["tags"]),
            copy_bool(prepared.deleted),
            at_text if prepared.deleted else NULL,
            self.created.setdefault(entity_text, at_text),
            at_text,
            at_text,
        )
        trace_id, span_id = _trace_ids(event.traceparent)
        self.log.append(
            copy_line(
                copy_text(event.id),
                copy_text(event.source),
                copy_text(event.type),
                copy_text(event.subject),
                entity_text,
                version,
                copy_json(_state(before)),
                copy_json(after),
                copy_json(_describe_change(before, after)),
                copy_text(trace_id),
                copy_text(span_id),
                copy_text(event.correlationid),
                copy_text(event.causationid),
                copy_text(consumed.topic),
                str(consumed.partition),
                str(consumed.offset),
                at_text,
            )
        )
        # Versions are applied in increasing order, so the last one logged is the newest.
        latest = self.latest.get(entity_text)
        changes = latest[3] + 1 if latest is not None else 1
        self.latest[entity_text] = (entity_text, change.version, at_text, changes)
        if prepared.deleted:
            self.edge_changes.append((entity, None, at))
        elif change.relationships is not None:
            self.edge_changes.append((entity, change, at))

    def append(self, conn: psycopg.Connection[Any]) -> None:
        """Write the batch, appending wherever nothing can be there yet.

        Every logged version is newer than anything the catalog holds for its entity, and an
        entity absent when the batch began has no row anywhere, so the common case is COPY into
        the tables themselves; only entities the catalog holds are merged. A unique violation
        (an event id logged before, another writer of the same entity) is the caller's to handle.
        """
        new = [line for entity, line in self.entities.items() if entity not in self.stored]
        held = [line for entity, line in self.entities.items() if entity in self.stored]
        with conn.cursor() as cursor:
            _copy_lines(cursor, f"dictamesh_entity_catalog ({_ENTITY_COLUMNS})", new)
            _copy_lines(cursor, f"dictamesh_event_log ({_LOG_COLUMNS})", self.log)
            _copy_lines(
                cursor,
                f"dictamesh_cache_status ({_CACHE_COLUMNS})",
                [
                    _new_cache_line(*latest)
                    for entity, latest in self.latest.items()
                    if entity not in self.stored
                ],
            )
        if held:
            cache = [
                _stage_cache_line(*latest)
                for entity, latest in self.latest.items()
                if entity in self.stored
            ]
            _merge(conn, held, [], cache)

    def merge(self, conn: psycopg.Connection[Any]) -> None:
        """Write the batch through staging tables, each row guarded against what is stored."""
        if self.entities:
            cache = [_stage_cache_line(*latest) for latest in self.latest.values()]
            _merge(conn, list(self.entities.values()), self.log, cache)


def _merge(
    conn: psycopg.Connection[Any], entities: list[str], log: list[str], cache: list[str]
) -> None:
    """Upsert through staging tables, each guarded against what the tables already hold."""
    conn.execute(_STAGING)
    with conn.cursor() as cursor:
        _copy_lines(cursor, "dictamesh_stage_entities", entities)
        _copy_lines(cursor, "dictamesh_stage_log", log)
        _copy_lines(cursor, "dictamesh_stage_cache", cache)
        cursor.execute(
            f"""
            INSERT INTO dictamesh_entity_catalog AS e ({_ENTITY_COLUMNS})
            SELECT {_ENTITY_COLUMNS} FROM dictamesh_stage_entities
            ON CONFLICT (id) DO UPDATE SET
                domain = EXCLUDED.domain, version = EXCLUDED.version,
                display_name = EXCLUDED.display_name, attributes = EXCLUDED.attributes,
                owners = EXCLUDED.owners, tags = EXCLUDED.tags,
                is_deleted = EXCLUDED.is_deleted, deleted_at = EXCLUDED.deleted_at,
                updated_at = EXCLUDED.updated_at,
                source_updated_at = EXCLUDED.source_updated_at
            WHERE e.version < EXCLUDED.version
            """  # noqa: S608 - fixed column lists
        )
        if log:
            cursor.execute(
                f"""
                INSERT INTO dictamesh_event_log ({_LOG_COLUMNS})
                SELECT s.* FROM dictamesh_stage_log s
                WHERE NOT EXISTS (SELECT 1 FROM dictamesh_event_log l
                                  WHERE l.entity_id = s.entity_id
                                    AND l.entity_version = s.entity_version)
                ON CONFLICT (event_source, event_id) DO NOTHING
                """  # noqa: S608 - fixed column lists
            )
        cursor.execute(
            f"""
            INSERT INTO dictamesh_cache_status AS c ({_CACHE_COLUMNS})
            SELECT 'entity:' || entity_id, entity_id, 'L2', at, version, false, changes - 1,
                   CASE WHEN changes > 1 THEN at END,
                   CASE WHEN changes > 1 THEN 'entity changed' END, at
            FROM dictamesh_stage_cache
            ON CONFLICT (cache_key) DO UPDATE SET
                last_refreshed_at = EXCLUDED.last_refreshed_at,
                source_version = EXCLUDED.source_version, is_stale = false,
                invalidation_count = c.invalidation_count + EXCLUDED.invalidation_count + 1,
                last_invalidated_at = EXCLUDED.updated_at,
                last_invalidation_reason = 'entity changed', updated_at = EXCLUDED.updated_at
            """  # noqa: S608 - fixed column lists
        )


_ENTITY_COLUMNS = (
    "id, domain, source_system, entity_type, source_id, version, display_name, attributes, "
    "owners, tags, is_deleted, deleted_at, created_at, updated_at, source_updated_at"
)
_LOG_COLUMNS = (
    "event_id, event_source, event_type, subject, entity_id, entity_version, before_state, "
    "after_state, change_description, trace_id, span_id, correlation_id, causation_id, topic, "
    "kafka_partition, kafka_offset, occurred_at"
)
_CACHE_COLUMNS = (
    "cache_key, entity_id, cache_layer, last_refreshed_at, source_version, is_stale, "
    "invalidation_count, last_invalidated_at, last_invalidation_reason, updated_at"
)


def _new_cache_line(entity: str, version: int, at: str, changes: int) -> str:
    """The cache-status row of an entity first seen in this batch (as the merge would make it).

    The row is the catalog's copy of the source record: refreshed (not stale) by each applied
    version; each version it replaced counts as an invalidation of the copy held before.
    """
    changed = changes > 1
    return copy_line(
        f"entity:{entity}",
        entity,
        "L2",
        at,
        str(version),
        "f",
        str(changes - 1),
        at if changed else NULL,
        "entity changed" if changed else NULL,
        at,
    )


def _stage_cache_line(entity: str, version: int, at: str, changes: int) -> str:
    return copy_line(entity, str(version), at, str(changes))


_COPY_CHUNK = 250  # rows per write: Postgres stores one chunk while the next is sent


def _copy_lines(cursor: psycopg.Cursor[Any], target: str, lines: Sequence[str]) -> None:
    if not lines:
        return
    writer = LibpqWriter(cursor, flush_threshold=0)  # send each chunk now, not at 1 MB
    with cursor.copy(f"COPY {target} FROM STDIN", writer=writer) as copy:
        for start in range(0, len(lines), _COPY_CHUNK):
            copy.write("".join(lines[start : start + _COPY_CHUNK]))


# COPY's text format, one function per column type: psycopg's `write_row` adapts every value
# through its dumper registry, which dominated the projector's Python time; the projector knows
# each column's type, and formats values shared by several columns (time, entity id) once.
NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def copy_line(*fields: str) -> str:
    """One row from fields already in COPY text format."""
    return "\t".join(fields) + "\n"


def copy_text(text: str | None) -> str:
    if text is None:
        return NULL
    # Scanning for the four characters is far cheaper than translating every character.
    if "\\" in text or "\n" in text or "\t" in text or "\r" in text:
        return text.translate(_COPY_ESCAPES)
    return text


def copy_bool(value: bool) -> str:
    return "t" if value else "f"


def copy_time(value: datetime) -> str:
    return value.isoformat()


def copy_array(items: list[str]) -> str:
    """A text[] literal; every element quoted, so any text (commas, braces, NULL) stays text."""
    quoted = ",".join('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return copy_text("{" + quoted + "}")


def copy_json(value: Any) -> str:
    return NULL if value is None else copy_text(orjson.dumps(value, default=str).decode())


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
        """Apply a batch set-wise: one read of the current rows, then COPY-fed upserts.

        The version guard runs in memory over the batch in arrival order, exactly as applying
        the events one by one would, so the tables do not depend on how records were batched.
        """
        if not batch:
            return
        plan = _plan(conn, batch)
        try:
            with conn.transaction():
                plan.append(conn)
        except psycopg.errors.UniqueViolation:
            plan = _plan(conn, self._without_reused_ids(conn, batch))
            plan.merge(conn)
        if plan.late:
            # Replays (a restart, a reset offset) arrive as versions already in the history:
            # one query finds them, and only versions never seen take the slower late path.
            logged = _logged_versions(conn, [(e, s["version"]) for _, e, s in plan.late])
            for consumed, entity, state in plan.late:
                kept = logged.get((entity, state["version"]))
                if kept is not None:
                    self._report_conflict(consumed, entity, state, kept)
            plan.late = [item for item in plan.late if (item[1], item[2]["version"]) not in logged]
            plan.late_edges = [
                item for item in plan.late_edges if (item[0], item[1].version) not in logged
            ]
            plan.late_deletes = [item for item in plan.late_deletes if item[:2] not in logged]
        for consumed, entity, state in plan.late:
            self._record_late(conn, consumed, entity, state)
        for entity, change, at in plan.late_edges:
            self._record_late_relationships(conn, entity, change, at)
        for entity, version, at in plan.late_deletes:
            # A delete retires the edges older versions declared; newer versions' stay.
            _retire_edges(conn, entity, at, older_than=version)
        # In arrival order: a delete and a re-creation in one batch end with the new edges.
        for entity, edges, at in plan.edge_changes:
            if edges is None:
                _retire_edges(conn, entity, at)
            else:
                self._apply_relationships(conn, entity, edges, at)

    def _without_reused_ids(
        self, conn: psycopg.Connection[Any], batch: Sequence[tuple[ConsumedEvent, PreparedChange]]
    ) -> list[tuple[ConsumedEvent, PreparedChange]]:
        """The batch less events whose id (with their source) an earlier event already used.

        Source and id identify a CloudEvent, so an event reusing them for another change is
        a duplicate to its consumers: the first one stands, the others are named in the log. A
        re-delivery of the same event stays; the version guard makes it a no-op.
        """
        logged = _logged_event_ids(conn, [consumed.event for consumed, _ in batch])
        kept = []
        for consumed, prepared in batch:
            event = consumed.event
            claimed = (prepared.entity, prepared.change.version)
            first = logged.setdefault((event.source, event.id), claimed)
            if first == claimed:
                kept.append((consumed, prepared))
                continue
            REUSED_EVENT_IDS.labels(self.group, prepared.change.source_system).inc()
            log.warning(
                "event id reused: event not applied",
                event_id=event.id,
                event_source=event.source,
                entity=prepared.change.ref.key,
                version=prepared.change.version,
                topic=consumed.topic,
                partition=consumed.partition,
                offset=consumed.offset,
                fix="give every event an id of its own",
            )
        return kept

    def _report_conflict(
        self,
        consumed: ConsumedEvent,
        entity: uuid.UUID,
        state: dict[str, Any],
        kept: tuple[str, str, Any],
    ) -> None:
        """Two different events claiming one version: the first applied stays, the other is named.

        Which one arrives first can depend on the topic each travels on, so a producer must give
        every change its own, higher version; a re-delivery of the same event is no conflict.
        """
        event = consumed.event
        kept_source, kept_id, kept_state = kept
        if (kept_source, kept_id) == (event.source, event.id) or kept_state == _jsonable(state):
            return
        change = EntityChange.model_validate(event.data)
        VERSION_CONFLICTS.labels(self.group, change.source_system).inc()
        log.warning(
            "version conflict: event not applied",
            entity=change.ref.key,
            version=state["version"],
            event_id=event.id,
            kept_event_id=kept_id,
            topic=consumed.topic,
            partition=consumed.partition,
            offset=consumed.offset,
            fix="publish every change with a higher version than the last",
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


def _retire_edges(
    conn: psycopg.Connection[Any],
    entity: uuid.UUID,
    at: datetime,
    *,
    older_than: int | None = None,
) -> None:
    """Mark the entity's live outgoing edges deleted (only those declared before `older_than`)."""
    conn.execute(
        "UPDATE dictamesh_entity_relationships SET is_deleted = true, updated_at = %s "
        "WHERE from_entity_id = %s AND NOT is_deleted AND (%s::bigint IS NULL OR version < %s)",
        (at, entity, older_than, older_than),
    )


def _plan(
    conn: psycopg.Connection[Any], batch: Sequence[tuple[ConsumedEvent, PreparedChange]]
) -> _BatchPlan:
    """Lock the batch's entities, then work out in memory what the batch does to them."""
    # An array literal of the ids' text: Postgres parses it faster than the client dumps UUIDs.
    ids = "{" + ",".join({prepared.entity_text for _, prepared in batch}) + "}"
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        current: dict[str, dict[str, Any]] = {
            str(row["id"]): row
            for row in cursor.execute(
                "SELECT id, domain, display_name, attributes, owners, tags, version, "
                "is_deleted FROM dictamesh_entity_catalog WHERE id = ANY(%s::uuid[]) "
                "ORDER BY id FOR UPDATE",
                (ids,),
            )
        }
    plan = _BatchPlan(set(current))
    for consumed, prepared in batch:
        plan.add(consumed, prepared, current)
    return plan


def _logged_event_ids(
    conn: psycopg.Connection[Any], events: Sequence[Any]
) -> dict[tuple[str, str], tuple[uuid.UUID, int]]:
    """The entity version each of these events (by source and id) was logged as, if any."""
    rows = conn.execute(
        "SELECT event_source, event_id, entity_id, entity_version FROM dictamesh_event_log "
        "WHERE (event_source, event_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        ([event.source for event in events], [event.id for event in events]),
    ).fetchall()
    return {
        (source, event_id): (entity, int(version)) for source, event_id, entity, version in rows
    }


def _logged_versions(
    conn: psycopg.Connection[Any], versions: list[tuple[uuid.UUID, int]]
) -> dict[tuple[uuid.UUID, int], tuple[str, str, Any]]:
    """The event (source, id, after state) the log holds for each of these entity versions."""
    rows = conn.execute(
        "SELECT entity_id, entity_version, event_source, event_id, after_state "
        "FROM dictamesh_event_log WHERE (entity_id, entity_version) IN "
        "(SELECT * FROM unnest(%s::uuid[], %s::bigint[]))",
        ([entity for entity, _ in versions], [version for _, version in versions]),
    ).fetchall()
    return {
        (entity, int(version)): (source, event_id, after)
        for entity, version, source, event_id, after in rows
    }


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
    return orjson.loads(orjson.dumps(value, default=str)) if value is not None else None
