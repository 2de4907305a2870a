"""`wb.catalog`: register entities through the pipeline, read them back from the projection."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, text
from sqlalchemy import text as sql_text  # where a parameter is called `text`

from workbench.catalog.model import EntityChange, EntityRef, RelationshipChange, entity_id
from workbench.errors import TerminalError
from workbench.events import topics
from workbench.events.envelope import CloudEvent

if TYPE_CHECKING:
    from workbench.events.producer import EventProducer, PublishHandle

SOURCE = "dictamesh://workbench/catalog"
_FACETS = ("domain", "source_system", "entity_type")
MAX_PAGE = 1000


class Entity(BaseModel):
    """One catalog entity as the projection holds it."""

    id: uuid.UUID
    domain: str
    source_system: str
    entity_type: str
    source_id: str
    version: int
    display_name: str | None
    attributes: dict[str, Any]
    owners: list[str]
    tags: list[str]
    is_deleted: bool
    created_at: datetime
    updated_at: datetime

    def __repr__(self) -> str:
        return (
            f"Entity({self.source_system}/{self.entity_type}/{self.source_id} "
            f"v{self.version}{' deleted' if self.is_deleted else ''})"
        )


class InvalidEntityError(TerminalError):
    """An entity change that would be refused by the projection; nothing was published."""


_ENTITY_COLUMNS = (
    "id, domain, source_system, entity_type, source_id, version, display_name, attributes, "
    "owners, tags, is_deleted, created_at, updated_at"
)


class Catalog:
    """Reads from the catalog projection; writes go through Kafka like every other change."""

    def __init__(self, engine: Engine, producer: EventProducer) -> None:
        self.engine = engine
        self.producer = producer

    def __repr__(self) -> str:
        return "Catalog()"

    # -- writes -------------------------------------------------------------------------------
    def register(
        self,
        domain: str,
        source_system: str,
        entity_type: str,
        source_id: str,
        *,
        attributes: dict[str, Any] | None = None,
        version: int | None = None,
        relationships: list[RelationshipChange] | list[dict[str, Any]] | None = None,
        display_name: str | None = None,
        owners: list[str] | None = None,
        tags: list[str] | None = None,
        source: str = SOURCE,
        correlation_id: str | None = None,
        schema_subject: str | None = None,
    ) -> PublishHandle:
        """Publish a create or update; `version` defaults to one past the catalog's current.

        With `schema_subject`, the attributes are validated against the subject's newest JSON
        Schema before anything is sent (`InvalidPayloadError` says what breaks it).
        """
        current = self._current_version(source_system, entity_type, source_id)
        if version is not None and version <= current:
            # The projection would keep the newer version and only log this one as late.
            raise InvalidEntityError(
                f"version={version} is not newer than version {current} of "
                f"{source_system}/{entity_type}/{source_id} in the catalog.",
                remedy=f"omit version= (it becomes {current + 1}) or pass a higher one; "
                "nothing was published.",
            )
        try:
            change = EntityChange(
                domain=domain,
                source_system=source_system,
                entity_type=entity_type,
                source_id=source_id,
                version=version if version is not None else current + 1,
                attributes=attributes or {},
                relationships=relationships,
                display_name=display_name,
                owners=owners or [],
                tags=tags or [],
                schema_subject=schema_subject,
            )
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise InvalidEntityError(
                f"Field {where!r}: {problem['msg']} (value {problem.get('input')!r}).",
                remedy="fix the value; nothing was published.",
            ) from None
        topic = topics.ENTITY_CREATED if current == 0 else topics.ENTITY_UPDATED
        return self.publish_change(topic, change, source=source, correlation_id=correlation_id)

    def delete(
        self, source_system: str, entity_type: str, source_id: str, *, source: str = SOURCE
    ) -> PublishHandle:
        entity = self.get(source_system, entity_type, source_id)
        if entity is None:
            raise InvalidEntityError(
                f"No entity {source_system}/{entity_type}/{source_id} in the catalog.",
                remedy="check the identity with wb.catalog.entities(...).",
            )
        # The delete carries the last state, so its projection does not depend on arrival order.
        change = EntityChange(
            domain=entity.domain,
            source_system=source_system,
            entity_type=entity_type,
            source_id=source_id,
            version=entity.version + 1,
            attributes=entity.attributes,
            display_name=entity.display_name,
            owners=entity.owners,
            tags=entity.tags,
        )
        return self.publish_change(topics.ENTITY_DELETED, change, source=source)

    def publish_change(
        self,
        topic: str,
        change: EntityChange,
        *,
        source: str = SOURCE,
        correlation_id: str | None = None,
    ) -> PublishHandle:
        event = CloudEvent(
            source=source,
            type=topic,
            subject=change.ref.key,
            partitionkey=change.ref.key,
            correlationid=correlation_id,
            data=change.model_dump(mode="json", exclude_none=True),
        )
        return self.producer.publish(topic, event)

    def _current_version(self, source_system: str, entity_type: str, source_id: str) -> int:
        with self.engine.connect() as conn:
            found = conn.execute(
                text("SELECT version FROM dictamesh_entity_catalog WHERE id = :id"),
                {"id": entity_id(source_system, entity_type, source_id)},
            ).scalar()
        return int(found or 0)

    # -- reads --------------------------------------------------------------------------------
    def get(
        self,
        source_system: str,
        entity_type: str,
        source_id: str,
        *,
        as_of: datetime | None = None,
        version: int | None = None,
    ) -> Entity | None:
        """One entity as the catalog holds it now, as it was at `as_of`, or as `version` left it.

        `version` reads the log by version, not time, so it is exact even when versions share a
        time or arrived with times out of order.
        """
        node = entity_id(source_system, entity_type, source_id)
        params: dict[str, Any]
        if version is not None:
            _one_moment(as_of, version)
            source, params = _AS_VERSION, {"version": version}
        else:
            source, params = _source(as_of)
        params["id"] = node
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    text(f"SELECT {_ENTITY_COLUMNS} FROM {source} WHERE id = :id"),  # noqa: S608 - fixed fragments
                    params,
                )
                .mappings()
                .first()
            )
        return Entity.model_validate(dict(row)) if row else None

    def entities(
        self,
        *,
        domain: str | None = None,
        source_system: str | None = None,
        entity_type: str | None = None,
        text: str | None = None,
        include_deleted: bool = False,
        limit: int = 100,
        cursor: str | None = None,
        as_of: datetime | None = None,
    ) -> pl.DataFrame:
        """A page of entities; pass the last row's `id` as `cursor` for the next page.

        `text` is a web-search style query (words, "quoted phrases", -excluded) over the name,
        identity and string attributes; its matches come most relevant first, with their
        `relevance` (name and identity weigh more than attributes). Without `text`, pages are
        in id order. With `as_of`, the same query runs against the catalog as it was at that
        moment, rebuilt from the immutable event log.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidEntityError(
                f"limit={limit} is out of range.",
                remedy=f"use 1 to {MAX_PAGE} and page with cursor=.",
            )
        source, params = _source(as_of)
        clauses = _filters(params, domain, source_system, entity_type, text, include_deleted)
        columns, order = _ENTITY_COLUMNS, "id"
        if text:
            columns = f"{_ENTITY_COLUMNS}, {_RELEVANCE} AS relevance"
            order = f"{_RELEVANCE} DESC, id"
        if cursor:
            try:
                params["cursor"] = uuid.UUID(cursor)
            except ValueError:
                raise InvalidEntityError(
                    f"cursor={cursor!r} is not an entity id.",
                    remedy="pass the `id` of the last row of the previous page.",
                ) from None
            if text:
                # Keyset on (relevance descending, id): rows after the cursor row, whose
                # relevance is found again.
                clauses.append(
                    f"(-{_RELEVANCE}, id) > (-(SELECT {_RELEVANCE} FROM {source} "  # noqa: S608 - fixed fragments only
                    "WHERE id = :cursor), :cursor)"
                )
            else:
                clauses.append("id > :cursor")
        params["limit"] = limit
        query = (
            f"SELECT {columns} FROM {source} "  # noqa: S608 - fixed fragments only
            f"WHERE {' AND '.join(clauses)} ORDER BY {order} LIMIT :limit"
        )
        return _frame(self.engine, query, params)

    def facet_counts(
        self,
        field: str,
        *,
        domain: str | None = None,
        source_system: str | None = None,
        entity_type: str | None = None,
        text: str | None = None,
        include_deleted: bool = False,
        limit: int = 500,
    ) -> list[tuple[str, int]]:
        """Each value of a facet with its number of entities, most first, under the filters.

        The filters are those of `entities()`, less the facet's own (Datasette-style facets).
        """
        if field not in _FACETS:
            from workbench.errors import UnknownNameError

            raise UnknownNameError("facet", field, _FACETS)
        # A facet's own filter is left out, so all its values stay countable.
        clauses = _filters(
            params := {"limit": limit},
            None if field == "domain" else domain,
            None if field == "source_system" else source_system,
            None if field == "entity_type" else entity_type,
            text,
            include_deleted,
        )
        query = (
            f"SELECT {field}, count(*) FROM dictamesh_entity_catalog "  # noqa: S608 - field from a fixed set
            f"WHERE {' AND '.join(clauses)} GROUP BY {field} ORDER BY count(*) DESC, {field} "
            "LIMIT :limit"
        )
        with self.engine.connect() as conn:
            rows = conn.execute(sql_text(query), params)
            return [(str(value), int(count)) for value, count in rows]

    def relationships(
        self,
        source_system: str,
        entity_type: str,
        source_id: str,
        *,
        direction: str = "both",
        include_deleted: bool = False,
        as_of: datetime | None = None,
        version: int | None = None,
    ) -> pl.DataFrame:
        """Typed edges of one entity, outgoing, incoming or both; with `as_of`, as they were then.

        The past edges come from the event log: each version that declared its entity's edges
        logged them, and a delete retired them. `as_of` shows the edges live at that moment
        (`include_deleted` applies to the current edges only). `version` shows the entity's own
        edges as that version left them, and other entities' edges to it as of that version's
        time.
        """
        if direction not in {"out", "in", "both"}:
            raise InvalidEntityError(f"direction={direction!r} is not one of out, in, both.")
        node = entity_id(source_system, entity_type, source_id)
        if version is not None:
            _one_moment(as_of, version)
            # No version up to `version`: the entity did not exist yet, so nothing pointed at it.
            as_of = self._version_time(node, version) or _BEFORE_ALL
        if as_of is not None:
            _, params = _source(as_of)
            params.update(
                version=version,
                id=node,
                ss=source_system,
                et=entity_type,
                sid=source_id,
                out=direction != "in",
                incoming=direction != "out",
            )
            return _frame(self.engine, _RELATIONSHIPS_AS_OF, params)
        sides = {
            "out": "r.from_entity_id = :id",
            "in": "r.to_entity_id = :id",
            "both": "(r.from_entity_id = :id OR r.to_entity_id = :id)",
        }[direction]
        deleted = "" if include_deleted else "AND NOT r.is_deleted"
        query = f"""
            SELECT CASE WHEN r.from_entity_id = :id THEN 'out' ELSE 'in' END AS direction,
                   r.relationship_type, r.cardinality, r.confidence::float8 AS confidence,
                   f.source_system AS from_source_system, f.entity_type AS from_entity_type,
                   f.source_id AS from_source_id,
                   r.to_source_system, r.to_entity_type, r.to_source_id,
                   t.id IS NOT NULL AS target_known, r.is_deleted, r.updated_at
            FROM dictamesh_entity_relationships r
            JOIN dictamesh_entity_catalog f ON f.id = r.from_entity_id
            LEFT JOIN dictamesh_entity_catalog t ON t.id = r.to_entity_id
            WHERE {sides} {deleted}
            ORDER BY r.relationship_type, r.to_source_id
        """  # noqa: S608 - fixed fragments only
        return _frame(self.engine, query, {"id": node})

    def _version_time(self, node: Any, version: int) -> datetime | None:
        """When the newest logged version up to `version` of an entity happened; None if none."""
        with self.engine.connect() as conn:
            found: datetime | None = conn.execute(
                text(
                    "SELECT occurred_at FROM dictamesh_event_log WHERE entity_id = :id "
                    "AND entity_version <= :version ORDER BY entity_version DESC LIMIT 1"
                ),
                {"id": node, "version": version},
            ).scalar()
        return found

    def history(self, source_system: str, entity_type: str, source_id: str) -> pl.DataFrame:
        """Every applied version of one entity, oldest first, from the immutable event log."""
        query = """
            SELECT entity_version AS version, event_type, occurred_at, event_id, event_source,
                   before_state, after_state, change_description, trace_id, correlation_id
            FROM dictamesh_event_log WHERE entity_id = :id ORDER BY entity_version, id
        """
        return _frame(self.engine, query, {"id": entity_id(source_system, entity_type, source_id)})

    # -- lineage ------------------------------------------------------------------------------
    def lineage(
        self,
        dataset: str,
        *,
        direction: str = "downstream",
        depth: int | None = None,
        field: str | None = None,
        include_history: bool = False,
    ) -> pl.DataFrame:
        """Datasets (or columns, with `field`) up- or downstream of `dataset`, to `depth` levels.

        Each node appears once, at its shortest depth; cycles end the walk. Only current edges
        are followed (a job's latest completed run defines its edges); `include_history` follows
        retired ones too. An unknown dataset raises `UnknownNameError` with close matches.
        """
        from workbench.catalog import lineage

        if direction not in {"upstream", "downstream"}:
            raise InvalidEntityError(f"direction={direction!r} is not one of upstream, downstream.")
        with self._psycopg() as conn:
            nodes = lineage.walk(
                conn,
                dataset,
                direction,  # type: ignore[arg-type]
                depth=depth,
                field=field,
                include_history=include_history,
            )
        return lineage.lineage_frame(nodes)

    def impacted_by(self, dataset: str) -> list[str]:
        """What a breaking change to `dataset` would break: every dataset downstream of it, then
        the jobs that read them (current lineage edges only)."""
        from workbench.catalog import lineage

        with self._psycopg() as conn:
            return lineage.impacted_by(conn, dataset)

    def record_lineage(self, run_event: dict[str, Any]) -> int:
        """Ingest one OpenLineage RunEvent directly (no HTTP, no Kafka); return edges written."""
        from workbench.catalog import lineage

        with self._psycopg() as conn:
            written = lineage.ingest_run_event(conn, run_event)
            conn.commit()
        return written

    def _psycopg(self) -> Any:
        """A pooled psycopg connection, returned to the pool on exit."""
        import contextlib

        @contextlib.contextmanager
        def borrowed() -> Any:
            proxy = self.engine.raw_connection()
            try:
                yield proxy.driver_connection
            finally:
                proxy.close()

        return borrowed()

    def ref(self, source_system: str, entity_type: str, source_id: str) -> EntityRef:
        return EntityRef(source_system=source_system, entity_type=entity_type, source_id=source_id)


def _state_source(chosen: str) -> str:
    """The catalog rebuilt from the log: per entity, the newest version among the `chosen` rows."""
    return f"""(
    SELECT e.id, s.after_state->>'domain' AS domain, e.source_system, e.entity_type,
           e.source_id, s.entity_version AS version, s.after_state->>'display_name' AS display_name,
           coalesce(s.after_state->'attributes', '{{}}'::jsonb) AS attributes,
           ARRAY(SELECT jsonb_array_elements_text(coalesce(s.after_state->'owners', '[]')))
               AS owners,
           ARRAY(SELECT jsonb_array_elements_text(coalesce(s.after_state->'tags', '[]')))
               AS tags,
           coalesce((s.after_state->>'is_deleted')::boolean, false) AS is_deleted,
           e.created_at, s.occurred_at AS updated_at,
           setweight(to_tsvector('english'::regconfig, coalesce(s.after_state->>'display_name', '')
                     || ' ' || e.source_id || ' ' || e.entity_type || ' '
                     || coalesce(s.after_state->>'domain', '')), 'A')
           || setweight(jsonb_to_tsvector('english'::regconfig,
                        coalesce(s.after_state->'attributes', '{{}}'::jsonb), '["string"]'), 'B')
               AS search_vector
    FROM (SELECT DISTINCT ON (entity_id) entity_id, entity_version, after_state, occurred_at
          FROM dictamesh_event_log
          WHERE entity_id IS NOT NULL AND {chosen}
          ORDER BY entity_id, entity_version DESC) s
    JOIN dictamesh_entity_catalog e ON e.id = s.entity_id
) AS catalog_as_of"""  # noqa: S608 - `chosen` is one of the fixed conditions below


# The catalog at a past moment (each entity's newest version logged by then), and one entity
# as one of its versions left it.
_AS_OF = _state_source("occurred_at <= :as_of")
_AS_VERSION = _state_source("entity_id = :id AND entity_version <= :version")
_BEFORE_ALL = datetime(1, 1, 1, tzinfo=UTC)


# One entity's edges at a past moment. Each candidate (the entity, and every entity that ever
# declared an edge to it) gets the edges of its newest version logged by then that declared
# edges or was a delete. Entities whose log predates logged edges fall back to the edge
# table's own times.
_RELATIONSHIPS_AS_OF = """
WITH candidates AS (
    SELECT CAST(:id AS uuid) AS entity_id WHERE :out
    UNION
    SELECT from_entity_id FROM dictamesh_entity_relationships
    WHERE to_entity_id = :id AND :incoming
), declared AS (
    SELECT DISTINCT ON (l.entity_id) l.entity_id, l.after_state, l.occurred_at
    FROM dictamesh_event_log l JOIN candidates c ON c.entity_id = l.entity_id
    WHERE CASE WHEN l.entity_id = :id AND CAST(:version AS bigint) IS NOT NULL
               THEN l.entity_version <= :version  -- exact, whatever the versions' times
               ELSE l.occurred_at <= :as_of END
      AND (l.after_state ? 'relationships'
           OR coalesce((l.after_state->>'is_deleted')::boolean, false))
    ORDER BY l.entity_id, l.entity_version DESC
), edges AS (
    SELECT d.entity_id AS from_entity_id, rel->>'type' AS relationship_type,
           coalesce(rel->>'cardinality', 'many_to_one') AS cardinality,
           coalesce((rel->>'confidence')::float8, 1) AS confidence,
           rel->'target'->>'source_system' AS to_source_system,
           rel->'target'->>'entity_type' AS to_entity_type,
           rel->'target'->>'source_id' AS to_source_id, d.occurred_at AS updated_at
    FROM declared d
    CROSS JOIN jsonb_array_elements(coalesce(d.after_state->'relationships', '[]')) rel
    UNION ALL
    SELECT r.from_entity_id, r.relationship_type, r.cardinality, r.confidence::float8,
           r.to_source_system, r.to_entity_type, r.to_source_id, r.updated_at
    FROM dictamesh_entity_relationships r JOIN candidates c ON c.entity_id = r.from_entity_id
    WHERE r.from_entity_id NOT IN (SELECT entity_id FROM declared)
      AND r.created_at <= :as_of AND (NOT r.is_deleted OR r.updated_at > :as_of)
)
SELECT CASE WHEN x.from_entity_id = :id THEN 'out' ELSE 'in' END AS direction,
       x.relationship_type, x.cardinality, x.confidence,
       f.source_system AS from_source_system, f.entity_type AS from_entity_type,
       f.source_id AS from_source_id, x.to_source_system, x.to_entity_type, x.to_source_id,
       EXISTS (SELECT 1 FROM dictamesh_entity_catalog t JOIN dictamesh_event_log tl
                   ON tl.entity_id = t.id AND tl.occurred_at <= :as_of
               WHERE (t.source_system, t.entity_type, t.source_id)
                     = (x.to_source_system, x.to_entity_type, x.to_source_id)) AS target_known,
       false AS is_deleted, x.updated_at
FROM edges x JOIN dictamesh_entity_catalog f ON f.id = x.from_entity_id
WHERE (x.from_entity_id = :id AND :out)
   OR ((x.to_source_system, x.to_entity_type, x.to_source_id) = (:ss, :et, :sid) AND :incoming)
ORDER BY x.relationship_type, x.to_source_id
"""


_RELEVANCE = "ts_rank_cd(search_vector, websearch_to_tsquery('english', :q))"


def _filters(
    params: dict[str, Any],
    domain: str | None,
    source_system: str | None,
    entity_type: str | None,
    text: str | None,
    include_deleted: bool,
) -> list[str]:
    """The WHERE clauses of a catalog query; their values go into `params`."""
    clauses = ["true"]
    for name, value in (
        ("domain", domain),
        ("source_system", source_system),
        ("entity_type", entity_type),
    ):
        if value is not None:
            clauses.append(f"{name} = :{name}")
            params[name] = value
    if not include_deleted:
        clauses.append("NOT is_deleted")
    if text:
        clauses.append("search_vector @@ websearch_to_tsquery('english', :q)")
        params["q"] = text
    return clauses


def _one_moment(as_of: datetime | None, version: int | None) -> None:
    if as_of is not None and version is not None:
        raise InvalidEntityError(
            f"as_of={as_of.isoformat()} and version={version} both given.",
            remedy="pass one of them: a moment, or one of the entity's versions.",
        )


def _source(as_of: datetime | None) -> tuple[str, dict[str, Any]]:
    """The relation a catalog read selects from, and the parameters it needs."""
    if as_of is None:
        return "dictamesh_entity_catalog", {}
    if as_of.tzinfo is None:
        raise InvalidEntityError(
            f"as_of={as_of.isoformat()} has no timezone.",
            remedy="pass an aware datetime, e.g. datetime(2026, 11, 1, tzinfo=UTC).",
        )
    return _AS_OF, {"as_of": as_of}


def _frame(engine: Engine, query: str, params: dict[str, Any]) -> pl.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(text(query), params)
        columns = list(result.keys())
        rows = [tuple(_plain(v) for v in row) for row in result]
    return pl.DataFrame(rows, schema=columns, orient="row", infer_schema_length=None)


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, default=str, sort_keys=True)
    return value
