"""Data lineage: native edges and OpenLineage run events, kept as a graph of current edges.

Identities. A dataset is the string ``namespace/name`` of its OpenLineage identity (for example
``postgres://db:5432/shop.public.orders``); a job is ``namespace/name`` the same way. Native edges
name their datasets with any string, ideally in the same form. A column is ``dataset#field`` where a
path needs one string.

Storage. ``dictamesh_data_lineage`` holds one row per distinct edge: source, target, source and
target field (both NULL for a table-level edge) and job. Every run of a job upserts the same rows,
so traversals only ever read current edges, however long the history. ``run_id``, ``run_state``
and ``event_time`` describe the newest run that touched the edge; the last few runs are kept in
``transformation -> 'runs'``, off the traversal path. A column edge always comes with the
table-level edge between its datasets, so table-level queries see every dependency.

Runs. START, RUNNING, COMPLETE and OTHER events write the edges they describe (inputs to outputs,
plus the ``columnLineage`` facet of each output) and advance the state of edges written earlier
in the same run. FAIL and ABORT create no edges: a failed run proves no data flowed. They mark the
job's existing edges of that run, and those between the inputs and outputs they list, so "the last
run of the job behind this edge failed" is visible on the edge. Merging is order-independent:
replaying an event changes nothing, and events arriving out of order converge on the same rows.

Queries walk the graph breadth-first, one indexed query per level, keeping the visited set in
Python: each node is expanded once at its shortest depth, so cycles terminate, and the cost grows
with the nodes reached rather than with the number of paths (which a recursive CTE carrying path
arrays enumerates, exponentially on diamond-rich graphs). A column walk takes a column edge with
no target field (a ``columnLineage`` facet's dataset-wide input, such as a filter column) as
feeding every column of its output.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.errors import TerminalError
from workbench.events.consumer import ConsumedEvent
from workbench.events.envelope import InvalidEventError
from workbench.events.topics import LINEAGE

if TYPE_CHECKING:
    import polars as pl

GROUP = "dictamesh.lineage-projector"
EVENT_TYPE = LINEAGE  # the CloudEvent `type` of lineage events
TABLE_TRANSFORMATION = "job"  # transformation_type of the table edges a job's run implies
MAX_RUNS = 5

EventType = Literal["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]
Direction = Literal["upstream", "downstream"]

# Within one run a later state wins whatever the arrival order; the order among the terminal
# states only matters for producers that send two of them, and makes the result deterministic.
_STATE_RANK: dict[str, int] = {
    "OTHER": 0,
    "START": 1,
    "RUNNING": 2,
    "COMPLETE": 3,
    "ABORT": 4,
    "FAIL": 5,
}
_EDGE_WRITING = frozenset({"START", "RUNNING", "COMPLETE", "OTHER"})


class LineageError(TerminalError):
    """A lineage event or query argument the workbench cannot use."""


# -- OpenLineage RunEvent (the subset we read; every other key is kept) -------------------------


class _OpenLineageModel(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class Transformation(_OpenLineageModel):
    """How an input field becomes an output column (``DIRECT``/``INDIRECT`` with a subtype)."""

    type: str | None = None
    subtype: str | None = None
    description: str | None = None
    masking: bool | None = None


class InputField(_OpenLineageModel):
    """One input column of a column-lineage facet."""

    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)
    field: str = Field(min_length=1)
    transformations: list[Transformation] = Field(default_factory=list)

    @property
    def dataset(self) -> str:
        return f"{self.namespace}/{self.name}"


class ColumnLineageField(_OpenLineageModel):
    """The inputs of one output column."""

    input_fields: list[InputField] = Field(default_factory=list, alias="inputFields")
    transformation_description: str | None = Field(default=None, alias="transformationDescription")
    transformation_type: str | None = Field(default=None, alias="transformationType")


class ColumnLineageFacet(_OpenLineageModel):
    """``columnLineage``: output column -> input fields; `dataset` affects the whole output."""

    fields: dict[str, ColumnLineageField] = Field(default_factory=dict)
    dataset: list[InputField] = Field(default_factory=list)


class SchemaField(_OpenLineageModel):
    name: str
    type: str | None = None
    description: str | None = None
    fields: list[SchemaField] = Field(default_factory=list)


class SchemaFacet(_OpenLineageModel):
    fields: list[SchemaField] = Field(default_factory=list)


class DatasetFacets(_OpenLineageModel):
    column_lineage: ColumnLineageFacet | None = Field(default=None, alias="columnLineage")
    schema_: SchemaFacet | None = Field(default=None, alias="schema")


class Dataset(_OpenLineageModel):
    """An input or output dataset; `id` is ``namespace/name``."""

    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)
    facets: DatasetFacets = Field(default_factory=DatasetFacets)

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


class Run(_OpenLineageModel):
    run_id: str = Field(min_length=1, alias="runId")
    facets: dict[str, Any] = Field(default_factory=dict)


class Job(_OpenLineageModel):
    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)
    facets: dict[str, Any] = Field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


class RunEvent(_OpenLineageModel):
    """An OpenLineage RunEvent; an absent ``eventType`` reads as OTHER, as the spec allows."""

    event_type: EventType = Field(default="OTHER", alias="eventType")
    event_time: datetime = Field(alias="eventTime")
    run: Run
    job: Job
    inputs: list[Dataset] = Field(default_factory=list)
    outputs: list[Dataset] = Field(default_factory=list)
    producer: str | None = None
    schema_url: str | None = Field(default=None, alias="schemaURL")

    @field_validator("event_type", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("event_time", mode="after")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("eventTime must carry a timezone (ISO 8601 with offset)")
        return value.astimezone(UTC)


class NativeEdge(BaseModel):
    """A lineage edge declared directly rather than observed from a job's run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1)
    target: str = Field(min_length=1)
    source_field: str | None = Field(default=None, min_length=1)
    target_field: str | None = Field(default=None, min_length=1)
    transformation_type: str | None = Field(default=None, min_length=1)
    job_name: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _two_ends(self) -> NativeEdge:
        if (self.source, self.source_field) == (self.target, self.target_field):
            raise ValueError(f"an edge needs two different ends, got {self.source!r} twice")
        return self


# -- stored edges and the order-independent merge ----------------------------------------------


@dataclass(frozen=True, order=True)
class EdgeKey:
    """The identity of a stored edge (the table's unique index)."""

    source: str
    target: str
    source_field: str | None
    target_field: str | None
    job: str | None


@dataclass(frozen=True)
class _Row:
    transformation_type: str | None
    transformation: dict[str, Any]
    run_id: str | None
    run_state: str | None
    event_time: datetime
    created_at: datetime


@dataclass(frozen=True)
class _Incoming:
    """What one event says about one edge; `facts` None leaves the description as it is.

    `seen` is False for a run's news about an edge the event does not name: it moves the run
    state, not the time the edge was first seen.
    """

    at: datetime
    transformation_type: str | None = None
    facts: dict[str, Any] | None = None
    run_id: str | None = None
    run_state: str | None = None
    seen: bool = True


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _merge_runs(runs: list[dict[str, Any]], new: _Incoming) -> list[dict[str, Any]]:
    """Newest first by (event time, run id); one entry per run with its furthest state."""
    if new.run_id is None or new.run_state is None:
        return runs
    by_run = {str(run["run_id"]): dict(run) for run in runs}
    entry = by_run.get(new.run_id)
    if entry is None:
        by_run[new.run_id] = {
            "run_id": new.run_id,
            "state": new.run_state,
            "event_time": _stamp(new.at),
        }
    else:
        if _STATE_RANK.get(new.run_state, 0) > _STATE_RANK.get(str(entry["state"]), 0):
            entry["state"] = new.run_state
        entry["event_time"] = max(
            str(entry["event_time"]), _stamp(new.at), key=datetime.fromisoformat
        )
    ordered = sorted(
        by_run.values(),
        key=lambda run: (datetime.fromisoformat(str(run["event_time"])), str(run["run_id"])),
        reverse=True,
    )
    return ordered[:MAX_RUNS]


def _merge(current: _Row | None, new: _Incoming) -> _Row | None:
    """The edge after `new`, or None when `new` changes nothing."""
    if current is None:
        runs = _merge_runs([], new)
        head = runs[0] if runs else None
        return _Row(
            transformation_type=new.transformation_type,
            transformation={**(new.facts or {}), **({"runs": runs} if runs else {})},
            run_id=str(head["run_id"]) if head else None,
            run_state=str(head["state"]) if head else None,
            event_time=new.at,
            created_at=new.at,
        )
    description = {k: v for k, v in current.transformation.items() if k != "runs"}
    kind = current.transformation_type
    if new.at >= current.event_time:  # the newest event describes the edge
        if new.facts is not None:
            description = dict(new.facts)
        if new.transformation_type is not None:
            kind = new.transformation_type
    runs = _merge_runs(list(current.transformation.get("runs") or []), new)
    head = runs[0] if runs else None
    merged = _Row(
        transformation_type=kind,
        transformation={**description, **({"runs": runs} if runs else {})},
        run_id=str(head["run_id"]) if head else current.run_id,
        run_state=str(head["state"]) if head else current.run_state,
        event_time=current.event_time,
        created_at=min(current.created_at, new.at) if new.seen else current.created_at,
    )
    if merged == current:
        return None
    # event_time moves only with news, so a replay (or add_edge called twice) is a no-op.
    if (merged.transformation_type, merged.transformation, merged.run_id) != (
        current.transformation_type,
        current.transformation,
        current.run_id,
    ):
        merged = replace(merged, event_time=max(current.event_time, new.at))
    return merged


_COLUMNS = (
    "source_dataset, target_dataset, source_field, target_field, job_name, "
    "transformation_type, transformation, run_id, run_state, event_time, created_at"
)

_SELECT_BY_KEYS = f"""
    SELECT {_COLUMNS} FROM dictamesh_data_lineage e
    JOIN unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) AS k(s, t, sf, tf, j)
      ON e.source_dataset = k.s AND e.target_dataset = k.t
     AND coalesce(e.source_field, '') = coalesce(k.sf, '')
     AND coalesce(e.target_field, '') = coalesce(k.tf, '')
     AND coalesce(e.job_name, '') = coalesce(k.j, '')
    FOR UPDATE OF e
"""  # noqa: S608 - constant column list

_SELECT_RUN = f"""
    SELECT {_COLUMNS} FROM dictamesh_data_lineage
    WHERE run_id = %s AND job_name = %s
    FOR UPDATE
"""  # noqa: S608 - constant column list

_SELECT_PAIRS = f"""
    SELECT {_COLUMNS} FROM dictamesh_data_lineage
    WHERE source_dataset = ANY(%s) AND target_dataset = ANY(%s) AND job_name = %s
    FOR UPDATE
"""  # noqa: S608 - constant column list

# The guard keeps a concurrent writer that read an older row from moving an edge backwards.
_UPSERT = f"""
    INSERT INTO dictamesh_data_lineage AS e ({_COLUMNS})
    SELECT s, t, sf, tf, j, tt, tr::jsonb, r, rs, et, ca FROM unnest(
        %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
        %s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[]
    ) AS u(s, t, sf, tf, j, tt, tr, r, rs, et, ca)
    ON CONFLICT (source_dataset, target_dataset, coalesce(source_field, ''),
                 coalesce(target_field, ''), coalesce(job_name, ''))
    DO UPDATE SET transformation_type = EXCLUDED.transformation_type,
        transformation = EXCLUDED.transformation, run_id = EXCLUDED.run_id,
        run_state = EXCLUDED.run_state, event_time = EXCLUDED.event_time,
        created_at = EXCLUDED.created_at
    WHERE e.event_time <= EXCLUDED.event_time
    RETURNING 1
"""  # noqa: S608 - constant column list


def _rows(cursor_rows: Iterable[tuple[Any, ...]]) -> dict[EdgeKey, _Row]:
    found: dict[EdgeKey, _Row] = {}
    for s, t, sf, tf, j, kind, transformation, run_id, state, at, created in cursor_rows:
        found[EdgeKey(s, t, sf, tf, j)] = _Row(
            kind, dict(transformation or {}), run_id, state, at, created
        )
    return found


def _existing(conn: psycopg.Connection[Any], keys: Sequence[EdgeKey]) -> dict[EdgeKey, _Row]:
    if not keys:
        return {}
    ordered = sorted(keys, key=_sort_key)
    return _rows(
        conn.execute(
            _SELECT_BY_KEYS,
            (
                [k.source for k in ordered],
                [k.target for k in ordered],
                [k.source_field for k in ordered],
                [k.target_field for k in ordered],
                [k.job for k in ordered],
            ),
        ).fetchall()
    )


def _sort_key(key: EdgeKey) -> tuple[str, str, str, str, str]:
    return (
        key.source,
        key.target,
        key.source_field or "",
        key.target_field or "",
        key.job or "",
    )


def _write(conn: psycopg.Connection[Any], rows: Mapping[EdgeKey, _Row]) -> int:
    if not rows:
        return 0
    keys = sorted(rows, key=_sort_key)
    written = conn.execute(
        _UPSERT,
        (
            [k.source for k in keys],
            [k.target for k in keys],
            [k.source_field for k in keys],
            [k.target_field for k in keys],
            [k.job for k in keys],
            [rows[k].transformation_type for k in keys],
            [json.dumps(rows[k].transformation, sort_keys=True) for k in keys],
            [rows[k].run_id for k in keys],
            [rows[k].run_state for k in keys],
            [rows[k].event_time for k in keys],
            [rows[k].created_at for k in keys],
        ),
    ).fetchall()
    return len(written)


def _apply(
    conn: psycopg.Connection[Any],
    incoming: Mapping[EdgeKey, _Incoming],
    current: Mapping[EdgeKey, _Row],
) -> int:
    changed: dict[EdgeKey, _Row] = {}
    for key, news in incoming.items():
        merged = _merge(current.get(key), news)
        if merged is not None:
            changed[key] = merged
    return _write(conn, changed)


def _atomic(conn: psycopg.Connection[Any]) -> AbstractContextManager[Any]:
    """A transaction of our own only on an autocommit connection; otherwise the caller's."""
    return conn.transaction() if conn.autocommit else nullcontext()


# -- ingestion ---------------------------------------------------------------------------------


def _problem(exc: ValidationError) -> str:
    problem = exc.errors()[0]
    where = ".".join(str(part) for part in problem["loc"]) or "data"
    value = repr(problem.get("input"))
    value = value if len(value) <= 200 else f"{value[:200]}..."
    return f"field {where!r} {problem['msg'].lower()} (value {value})"


def parse_run_event(data: RunEvent | Mapping[str, Any]) -> RunEvent:
    """A validated RunEvent; `LineageError` says which field is wrong."""
    if isinstance(data, RunEvent):
        return data
    try:
        return RunEvent.model_validate(data)
    except ValidationError as exc:
        raise LineageError(
            f"Not an OpenLineage RunEvent: {_problem(exc)}.",
            remedy="send eventTime (with timezone), run.runId, job.namespace and job.name.",
        ) from None


def _run_event_edges(event: RunEvent) -> dict[EdgeKey, _Incoming]:
    """The edges a run event describes: table edges, and column edges with their table edge."""
    job = event.job.id
    table_facts = {"job": {"namespace": event.job.namespace, "name": event.job.name}}
    edges: dict[EdgeKey, _Incoming] = {}

    def news(kind: str | None, facts: dict[str, Any]) -> _Incoming:
        return _Incoming(
            at=event.event_time,
            transformation_type=kind,
            facts=facts,
            run_id=event.run.run_id,
            run_state=event.event_type,
        )

    def table_edge(source: str, target: str) -> None:
        edges[EdgeKey(source, target, None, None, job)] = news(TABLE_TRANSFORMATION, table_facts)

    for output in event.outputs:
        for source in event.inputs:
            table_edge(source.id, output.id)
        lineage = output.facets.column_lineage
        if lineage is None:
            continue
        columns: list[tuple[str | None, list[InputField], ColumnLineageField | None]] = [
            (column, f.input_fields, f) for column, f in lineage.fields.items()
        ]
        columns.append((None, lineage.dataset, None))
        for column, inputs, described in columns:
            for item in inputs:
                table_edge(item.dataset, output.id)
                facts: dict[str, Any] = {**table_facts}
                if item.transformations:
                    facts["transformations"] = [
                        t.model_dump(mode="json", exclude_none=True) for t in item.transformations
                    ]
                kind = next((t.subtype or t.type for t in item.transformations), None)
                if described is not None:
                    kind = kind or described.transformation_type
                    if described.transformation_description:
                        facts["description"] = described.transformation_description
                edges[EdgeKey(item.dataset, output.id, item.field, column, job)] = news(kind, facts)
    return edges


def ingest_run_event(conn: psycopg.Connection[Any], event: RunEvent | Mapping[str, Any]) -> int:
    """Apply one OpenLineage RunEvent; return the number of edges inserted or changed.

    Runs in the caller's transaction and does not commit (on an autocommit connection it uses a
    transaction of its own). Idempotent; see the module docstring for what each state does.
    """
    run_event = parse_run_event(event)
    job, run_id = run_event.job.id, run_event.run.run_id
    run_only = _Incoming(
        at=run_event.event_time, run_id=run_id, run_state=run_event.event_type, seen=False
    )
    described = _run_event_edges(run_event) if run_event.event_type in _EDGE_WRITING else {}
    with _atomic(conn):
        current = _rows(conn.execute(_SELECT_RUN, (run_id, job)).fetchall())
        if run_event.event_type not in _EDGE_WRITING and run_event.inputs and run_event.outputs:
            pairs = conn.execute(
                _SELECT_PAIRS,
                ([d.id for d in run_event.inputs], [d.id for d in run_event.outputs], job),
            ).fetchall()
            current.update(_rows(pairs))
        current.update(_existing(conn, [k for k in described if k not in current]))
        incoming = {key: run_only for key in current}
        incoming.update(described)
        return _apply(conn, incoming, current)


def add_edge(
    conn: psycopg.Connection[Any],
    source: str,
    target: str,
    *,
    source_field: str | None = None,
    target_field: str | None = None,
    transformation_type: str | None = None,
    job_name: str | None = None,
    at: datetime | None = None,
) -> int:
    """Declare a native edge (with its table edge when fields are given); return edges written.

    Runs in the caller's transaction like `ingest_run_event`; declaring an edge again is a no-op.
    """
    try:
        edge = NativeEdge(
            source=source,
            target=target,
            source_field=source_field,
            target_field=target_field,
            transformation_type=transformation_type,
            job_name=job_name,
        )
    except ValidationError as exc:
        raise LineageError(
            f"Invalid lineage edge: {_problem(exc)}.",
            remedy="give non-empty dataset (and field) names and two different ends.",
        ) from None
    return _add_native(conn, edge, at or datetime.now(UTC))


def _add_native(conn: psycopg.Connection[Any], edge: NativeEdge, at: datetime) -> int:
    key = EdgeKey(edge.source, edge.target, edge.source_field, edge.target_field, edge.job_name)
    incoming = {key: _Incoming(at=at, transformation_type=edge.transformation_type)}
    fields = edge.source_field is not None or edge.target_field is not None
    if fields and edge.source != edge.target:  # the table edge a column edge implies
        incoming[EdgeKey(edge.source, edge.target, None, None, edge.job_name)] = _Incoming(at=at)
    with _atomic(conn):
        return _apply(conn, incoming, _existing(conn, list(incoming)))


# -- the consumer sink -------------------------------------------------------------------------


def parse_lineage(consumed: ConsumedEvent) -> RunEvent | NativeEdge:
    """The run event or native edge a record carries; `InvalidEventError` when it has neither."""
    event = consumed.event
    if event.type != EVENT_TYPE:
        raise InvalidEventError(
            "unexpected-type",
            f"Event type {event.type!r} on topic {consumed.topic!r} is not {EVENT_TYPE!r}.",
        )
    data = event.data
    if not isinstance(data, dict):
        raise InvalidEventError(
            "schema-invalid",
            f"Lineage event {event.id!r}: data must be a JSON object, got {type(data).__name__}.",
        )
    is_run = "eventType" in data or "run" in data
    try:
        if is_run:
            return RunEvent.model_validate(data)
        return NativeEdge.model_validate(data)
    except ValidationError as exc:
        what = "OpenLineage RunEvent" if is_run else "native edge"
        raise InvalidEventError(
            "schema-invalid", f"Lineage event {event.id!r} ({what}): {_problem(exc)}."
        ) from None


class LineageSink:
    """Sink of the lineage consumer group: run events and native edges from `dictamesh.lineage`.

    Producers should key lineage events by job, so one job's runs stay in order on one partition.
    """

    group: str = GROUP
    topics: Sequence[str] = (LINEAGE,)

    def __init__(self, group: str = GROUP) -> None:
        self.group = group

    def prepare(self, consumed: ConsumedEvent) -> RunEvent | NativeEdge:
        return parse_lineage(consumed)

    def apply(
        self,
        conn: psycopg.Connection[Any],
        batch: Sequence[tuple[ConsumedEvent, RunEvent | NativeEdge]],
    ) -> None:
        for consumed, item in batch:
            if isinstance(item, RunEvent):
                ingest_run_event(conn, item)
            else:
                _add_native(conn, item, consumed.event.time)


# -- queries -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineageNode:
    """A dataset (or column) reached from the start, at its shortest depth, with one such path.

    `path` runs from the start to this node; a column appears in it as ``dataset#field``.
    """

    dataset: str
    field: str | None
    depth: int
    path: tuple[str, ...]


_Node = tuple[str, str | None]

# Each query maps a frontier to (from, from_field, to, to_field) pairs one step further.
_TABLE_STEP: dict[Direction, str] = {
    "downstream": "SELECT DISTINCT source_dataset, target_dataset FROM dictamesh_data_lineage "
    "WHERE source_dataset = ANY(%s) AND source_field IS NULL AND target_field IS NULL",
    "upstream": "SELECT DISTINCT target_dataset, source_dataset FROM dictamesh_data_lineage "
    "WHERE target_dataset = ANY(%s) AND source_field IS NULL AND target_field IS NULL",
}
# A column edge with no target field (a columnLineage facet's ``dataset`` input, such as a
# filter or join column) affects the whole output, so it feeds every column of that output.
_COLUMN_STEP: dict[Direction, str] = {
    "downstream": """
        WITH f(d, c) AS (SELECT * FROM unnest(%s::text[], %s::text[])),
        e AS (
            SELECT e.source_dataset, e.source_field, e.target_dataset, e.target_field
            FROM dictamesh_data_lineage e JOIN f ON e.source_dataset = f.d AND e.source_field = f.c
        )
        SELECT * FROM e
        UNION
        SELECT e.source_dataset, e.source_field, e.target_dataset, o.field FROM e
        JOIN LATERAL (
            SELECT target_field FROM dictamesh_data_lineage
            WHERE target_dataset = e.target_dataset AND target_field IS NOT NULL
            UNION
            SELECT source_field FROM dictamesh_data_lineage
            WHERE source_dataset = e.target_dataset AND source_field IS NOT NULL
        ) AS o(field) ON true
        WHERE e.target_field IS NULL
    """,
    "upstream": """
        WITH f(d, c) AS (SELECT * FROM unnest(%s::text[], %s::text[]))
        SELECT e.target_dataset, e.target_field, e.source_dataset, e.source_field
        FROM dictamesh_data_lineage e JOIN f ON e.target_dataset = f.d AND e.target_field = f.c
        UNION
        SELECT f.d, f.c, e.source_dataset, e.source_field
        FROM dictamesh_data_lineage e JOIN f ON e.target_dataset = f.d
        WHERE e.target_field IS NULL AND e.source_field IS NOT NULL
    """,
}


def _label(node: _Node) -> str:
    dataset, field = node
    return dataset if field is None else f"{dataset}#{field}"


def _step(
    conn: psycopg.Connection[Any], direction: Direction, frontier: list[_Node], columns: bool
) -> list[tuple[_Node, _Node]]:
    if columns:
        rows = conn.execute(
            _COLUMN_STEP[direction], ([d for d, _ in frontier], [f for _, f in frontier])
        ).fetchall()
        return [((a, af), (b, bf)) for a, af, b, bf in rows]
    rows = conn.execute(_TABLE_STEP[direction], ([d for d, _ in frontier],)).fetchall()
    return [((a, None), (b, None)) for a, b in rows]


def walk(
    conn: psycopg.Connection[Any],
    dataset: str,
    direction: Direction,
    *,
    depth: int | None = None,
    field: str | None = None,
) -> list[LineageNode]:
    """Breadth-first lineage from `dataset` (or its column `field`), nearest first."""
    if depth is not None and depth < 0:
        raise LineageError(
            f"Lineage depth must be 0 or more, got {depth}.", remedy="pass None for any depth."
        )
    start: _Node = (dataset, field)
    paths: dict[_Node, tuple[str, ...]] = {start: (_label(start),)}
    found: list[LineageNode] = []
    frontier = [start]
    level = 0
    while frontier and (depth is None or level < depth):
        level += 1
        parents: dict[_Node, _Node] = {}
        for parent, child in _step(conn, direction, frontier, field is not None):
            if child in paths:
                continue
            if child not in parents or _label(parent) < _label(parents[child]):
                parents[child] = parent  # the smallest parent: deterministic paths
        for child in sorted(parents, key=_label):
            paths[child] = (*paths[parents[child]], _label(child))
            found.append(LineageNode(child[0], child[1], level, paths[child]))
        # A whole dataset reached by a column walk is listed but not walked on: its columns are.
        frontier = [node for node in parents if field is None or node[1] is not None]
    return found


def upstream(
    conn: psycopg.Connection[Any],
    dataset: str,
    *,
    depth: int | None = None,
    field: str | None = None,
) -> list[LineageNode]:
    """What `dataset` (or its column `field`) is derived from, to `depth` levels (None: all)."""
    return walk(conn, dataset, "upstream", depth=depth, field=field)


def downstream(
    conn: psycopg.Connection[Any],
    dataset: str,
    *,
    depth: int | None = None,
    field: str | None = None,
) -> list[LineageNode]:
    """What is derived from `dataset` (or its column `field`), to `depth` levels (None: all)."""
    return walk(conn, dataset, "downstream", depth=depth, field=field)


def impacted_by(conn: psycopg.Connection[Any], dataset: str) -> list[str]:
    """Every dataset downstream of `dataset` at any depth, nearest first."""
    return [node.dataset for node in downstream(conn, dataset)]


def lineage_frame(nodes: Sequence[LineageNode]) -> pl.DataFrame:
    """The nodes of a lineage query as a Polars DataFrame."""
    import polars as pl

    return pl.DataFrame(
        {
            "dataset": [n.dataset for n in nodes],
            "field": [n.field for n in nodes],
            "depth": [n.depth for n in nodes],
            "path": [list(n.path) for n in nodes],
        },
        schema={
            "dataset": pl.String,
            "field": pl.String,
            "depth": pl.Int64,
            "path": pl.List(pl.String),
        },
    )
