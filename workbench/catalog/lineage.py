"""Data lineage: native edges and OpenLineage run events, kept as a graph of current edges.

Identities. A dataset is the string ``namespace/name`` of its OpenLineage identity (for example
``postgres://db:5432/shop.public.orders``); a job is ``namespace/name`` the same way. Native edges
name their datasets with any string, ideally in the same form. A column is ``dataset#field`` where a
path needs one string.

Storage. ``dictamesh_data_lineage`` holds one row per distinct edge: source, target, source and
target field (both NULL for a table-level edge) and job. Every run of a job upserts the same rows,
so the table grows with the distinct edges, not with the runs. ``run_id``, ``run_state`` and
``event_time`` describe the newest run that touched the edge; the last few runs (and the
newest that did not fail) are kept in ``transformation -> 'runs'``, off the traversal path.
A column edge always comes with the table-level edge between its datasets, so table-level
queries see every dependency.

Current edges. A job's latest completed run defines its current edges, as in Marquez: a COMPLETE
run retires the job's edges that no event of that run mentions and that no run that did not fail
has seen since. ``retired_at`` is then the time of that first COMPLETE run after the edge was last
seen (NULL while current); retired edges are kept for history. ``dictamesh_lineage_job_runs``
remembers each completed run, so an older COMPLETE arriving late neither resurrects an edge nor
retires one a newer run uses, and every arrival order ends with the same rows. A run reading a
retired edge again makes it current from its START. Native edges are never retired.

Runs. START, RUNNING, COMPLETE and OTHER events write the edges they describe (inputs to outputs,
plus the ``columnLineage`` facet of each output) and advance the state of edges written earlier
in the same run. FAIL and ABORT create no edges: a failed run proves no data flowed. They mark the
job's existing edges of that run, and those between the inputs and outputs they list, so "the last
run of the job behind this edge failed" is visible on the edge. Merging is order-independent:
replaying an event changes nothing, and events arriving out of order converge on the same rows.

Queries follow current edges (``include_history=True`` follows retired ones too) and raise
`UnknownNameError`, with close matches, for a dataset or column no edge names; a known dataset
with nothing up- or downstream gives an empty answer. They walk the graph breadth-first, one
indexed query per level (current table-level edges have partial covering indexes), keeping the
visited set in Python: each node is expanded once at its shortest depth, so cycles terminate, and
the cost grows with the nodes reached rather than with the number of paths (which a recursive CTE
carrying path arrays enumerates, exponentially on diamond-rich graphs). A column walk takes a
column edge with no target field (a ``columnLineage`` facet's dataset-wide input, such as a filter
column) as feeding every column of its output.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.errors import TerminalError, UnknownNameError
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
_FAILED = frozenset({"FAIL", "ABORT"})
# Per-job lock of run ingestion: the two-int4 advisory key space never meets single-bigint keys.
_LOCK_NAMESPACE = 0x4C696E65  # "Line"


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
    retired_at: datetime | None = None

    def last_seen(self) -> datetime:
        """The newest time a run that did not fail saw the edge (its first sighting at least).

        A job's COMPLETE run after this time did not mention the edge, so it retires it.
        """
        seen = [self.created_at]
        for run in self.transformation.get("runs") or []:
            if str(run.get("state") or "") not in _FAILED:
                seen.append(datetime.fromisoformat(str(run["event_time"])))
        return max(seen)


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
    kept = ordered[:MAX_RUNS]
    # The newest sightings stay whatever failed since: `_Row.last_seen` reads them. The newest
    # completed run too, as a run still going may yet fail.
    for sighting in (
        next((run for run in ordered if str(run["state"]) not in _FAILED), None),
        next((run for run in ordered if run["state"] == "COMPLETE"), None),
    ):
        if sighting is not None and sighting not in kept:
            kept.append(sighting)
    return kept


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
            retired_at=None,
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
        retired_at=current.retired_at,
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
    "transformation_type, transformation, run_id, run_state, event_time, created_at, retired_at"
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
    SELECT s, t, sf, tf, j, tt, tr::jsonb, r, rs, et, ca, ra FROM unnest(
        %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
        %s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[]
    ) AS u(s, t, sf, tf, j, tt, tr, r, rs, et, ca, ra)
    ON CONFLICT (source_dataset, target_dataset, coalesce(source_field, ''),
                 coalesce(target_field, ''), coalesce(job_name, ''))
    DO UPDATE SET transformation_type = EXCLUDED.transformation_type,
        transformation = EXCLUDED.transformation, run_id = EXCLUDED.run_id,
        run_state = EXCLUDED.run_state, event_time = EXCLUDED.event_time,
        created_at = EXCLUDED.created_at, retired_at = EXCLUDED.retired_at
    WHERE e.event_time <= EXCLUDED.event_time
    RETURNING 1
"""  # noqa: S608 - constant column list


def _rows(cursor_rows: Iterable[tuple[Any, ...]]) -> dict[EdgeKey, _Row]:
    found: dict[EdgeKey, _Row] = {}
    for s, t, sf, tf, j, kind, transformation, run_id, state, at, created, retired in cursor_rows:
        found[EdgeKey(s, t, sf, tf, j)] = _Row(
            kind, dict(transformation or {}), run_id, state, at, created, retired
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
            [rows[k].retired_at for k in keys],
        ),
    ).fetchall()
    return len(written)


def _apply(
    conn: psycopg.Connection[Any],
    incoming: Mapping[EdgeKey, _Incoming],
    current: Mapping[EdgeKey, _Row],
    then: _Incoming | None = None,
) -> int:
    """Merge `incoming` (and `then` after it, on the same edges) and write what changed."""
    changed: dict[EdgeKey, _Row] = {}
    for key, news in incoming.items():
        merged = _merge(current.get(key), news)
        if then is not None:
            merged = _merge(merged or current.get(key), then) or merged
        if merged is not None:
            changed[key] = merged
    return _write(conn, _with_retirement(conn, changed))


# -- retirement: a job's latest completed run defines its current edges ------------------------
#
# An edge a job's run wrote is retired at the first COMPLETE run of that job after the edge was
# last seen (`_Row.last_seen`): retired_at = min(completed_at > last_seen), NULL when there is
# none. Both sides only grow (last_seen is a max over the edge's runs, the completed runs are a
# set), so replays change nothing and any arrival order gives the same rows. Native edges (no
# run) are never retired.

_LAST_SEEN_SQL = """greatest(e.created_at, (
    SELECT max((r->>'event_time')::timestamptz)
    FROM jsonb_array_elements(coalesce(e.transformation->'runs', '[]'::jsonb)) AS r
    WHERE coalesce(r->>'state', '') NOT IN ('FAIL', 'ABORT')))"""

_FIRST_COMPLETION_AFTER = """
    SELECT u.i, (
        SELECT min(j.completed_at) FROM dictamesh_lineage_job_runs j
        WHERE j.job_name = u.job AND j.completed_at > u.seen
    ) FROM unnest(%s::int[], %s::text[], %s::timestamptz[]) AS u(i, job, seen)
"""

_RETIRE_SUPERSEDED = f"""
    UPDATE dictamesh_data_lineage e SET retired_at = %(at)s
    WHERE e.job_name = %(job)s AND e.run_id IS NOT NULL
      AND (e.retired_at IS NULL OR e.retired_at > %(at)s)
      AND {_LAST_SEEN_SQL} < %(at)s
"""  # noqa: S608 - constant SQL

_RECOMPUTE_RETIRED_AT = f"""
    UPDATE dictamesh_data_lineage e SET retired_at = (
        SELECT min(j.completed_at) FROM dictamesh_lineage_job_runs j
        WHERE j.job_name = e.job_name AND j.completed_at > {_LAST_SEEN_SQL}
    )
    WHERE e.job_name = %(job)s AND e.retired_at = %(at)s
"""  # noqa: S608 - constant SQL


def _with_retirement(
    conn: psycopg.Connection[Any], rows: Mapping[EdgeKey, _Row]
) -> dict[EdgeKey, _Row]:
    """`rows` with retired_at recomputed for the edges that runs of a job wrote."""
    keys = [k for k, row in rows.items() if k.job is not None and row.run_id is not None]
    out = dict(rows)
    if not keys:
        return out
    found = conn.execute(
        _FIRST_COMPLETION_AFTER,
        (list(range(len(keys))), [k.job for k in keys], [rows[k].last_seen() for k in keys]),
    ).fetchall()
    for i, retired_at in found:
        key = keys[int(i)]
        out[key] = replace(rows[key], retired_at=retired_at)
    return out


def _lock_job(conn: psycopg.Connection[Any], job: str) -> None:
    # Serialises the runs of one job, so retiring its edges never races a run writing them.
    conn.execute("SELECT pg_advisory_xact_lock(%s::integer, hashtext(%s))", (_LOCK_NAMESPACE, job))


def _record_completion(
    conn: psycopg.Connection[Any], job: str, run_id: str, at: datetime
) -> tuple[datetime, int]:
    """Remember that the run completed; return its completion time (the latest COMPLETE event's,
    should a producer send two) and the number of edges changed."""
    stored = conn.execute(
        "SELECT completed_at FROM dictamesh_lineage_job_runs "
        "WHERE job_name = %s AND run_id = %s FOR UPDATE",
        (job, run_id),
    ).fetchone()
    if stored is None:
        conn.execute(
            "INSERT INTO dictamesh_lineage_job_runs (job_name, run_id, completed_at) "
            "VALUES (%s, %s, %s)",
            (job, run_id, at),
        )
        return at, 0
    if stored[0] >= at:
        return stored[0], 0
    conn.execute(
        "UPDATE dictamesh_lineage_job_runs SET completed_at = %s "
        "WHERE job_name = %s AND run_id = %s",
        (at, job, run_id),
    )
    # Edges this run retired at its earlier time take the next completion after them instead.
    return at, conn.execute(_RECOMPUTE_RETIRED_AT, {"job": job, "at": stored[0]}).rowcount


def _retire_superseded(conn: psycopg.Connection[Any], job: str, at: datetime) -> int:
    """Retire, at `at`, the job's edges last seen before its run completing at `at`."""
    return conn.execute(_RETIRE_SUPERSEDED, {"job": job, "at": at}).rowcount


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
        _lock_job(conn, job)
        changed = 0
        completed_at: datetime | None = None
        then: _Incoming | None = None
        if run_event.event_type == "COMPLETE":
            completed_at, changed = _record_completion(conn, job, run_id, run_event.event_time)
        elif described:
            # The run's COMPLETE came first: the edges it writes now are the completed run's,
            # as they would have been in order.
            done = conn.execute(
                "SELECT completed_at FROM dictamesh_lineage_job_runs "
                "WHERE job_name = %s AND run_id = %s",
                (job, run_id),
            ).fetchone()
            if done is not None:
                then = _Incoming(at=done[0], run_id=run_id, run_state="COMPLETE", seen=False)
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
        changed += _apply(conn, incoming, current, then)
        if completed_at is not None:
            changed += _retire_superseded(conn, job, completed_at)
        return changed


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

# Each query maps a frontier to (from, from_field, to, to_field) pairs one step further. `{cur}`
# is where the current-edges filter goes; the table steps of current edges match the partial
# indexes idx_dictamesh_lineage_current_down/up exactly (index-only scans where possible).
_TABLE_STEP_SQL: dict[Direction, str] = {
    "downstream": "SELECT DISTINCT source_dataset, target_dataset FROM dictamesh_data_lineage "
    "WHERE source_dataset = ANY(%s) AND source_field IS NULL AND target_field IS NULL{cur}",
    "upstream": "SELECT DISTINCT target_dataset, source_dataset FROM dictamesh_data_lineage "
    "WHERE target_dataset = ANY(%s) AND source_field IS NULL AND target_field IS NULL{cur}",
}
# A column edge with no target field (a columnLineage facet's ``dataset`` input, such as a
# filter or join column) affects the whole output, so it feeds every column of that output.
_COLUMN_STEP_SQL: dict[Direction, str] = {
    "downstream": """
        WITH f(d, c) AS (SELECT * FROM unnest(%s::text[], %s::text[])),
        e AS (
            SELECT e.source_dataset, e.source_field, e.target_dataset, e.target_field
            FROM dictamesh_data_lineage e JOIN f ON e.source_dataset = f.d AND e.source_field = f.c
            WHERE true{cur_e}
        )
        SELECT * FROM e
        UNION
        SELECT e.source_dataset, e.source_field, e.target_dataset, o.field FROM e
        JOIN LATERAL (
            SELECT target_field FROM dictamesh_data_lineage
            WHERE target_dataset = e.target_dataset AND target_field IS NOT NULL{cur}
            UNION
            SELECT source_field FROM dictamesh_data_lineage
            WHERE source_dataset = e.target_dataset AND source_field IS NOT NULL{cur}
        ) AS o(field) ON true
        WHERE e.target_field IS NULL
    """,
    "upstream": """
        WITH f(d, c) AS (SELECT * FROM unnest(%s::text[], %s::text[]))
        SELECT e.target_dataset, e.target_field, e.source_dataset, e.source_field
        FROM dictamesh_data_lineage e JOIN f ON e.target_dataset = f.d AND e.target_field = f.c
        WHERE true{cur_e}
        UNION
        SELECT f.d, f.c, e.source_dataset, e.source_field
        FROM dictamesh_data_lineage e JOIN f ON e.target_dataset = f.d
        WHERE e.target_field IS NULL AND e.source_field IS NOT NULL{cur}
    """,
}
_CURRENT = " AND retired_at IS NULL"
# Keyed by (direction, include_history).
_TABLE_STEP: dict[tuple[Direction, bool], str] = {
    (d, history): sql.format(cur="" if history else _CURRENT)
    for d, sql in _TABLE_STEP_SQL.items()
    for history in (False, True)
}
_COLUMN_STEP: dict[tuple[Direction, bool], str] = {
    (d, history): sql.format(
        cur="" if history else _CURRENT, cur_e="" if history else " AND e.retired_at IS NULL"
    )
    for d, sql in _COLUMN_STEP_SQL.items()
    for history in (False, True)
}


def _label(node: _Node) -> str:
    dataset, field = node
    return dataset if field is None else f"{dataset}#{field}"


def _step(
    conn: psycopg.Connection[Any],
    direction: Direction,
    frontier: list[_Node],
    columns: bool,
    include_history: bool,
) -> list[tuple[_Node, _Node]]:
    if columns:
        rows = conn.execute(
            _COLUMN_STEP[direction, include_history],
            ([d for d, _ in frontier], [f for _, f in frontier]),
        ).fetchall()
        return [((a, af), (b, bf)) for a, af, b, bf in rows]
    rows = conn.execute(
        _TABLE_STEP[direction, include_history], ([d for d, _ in frontier],)
    ).fetchall()
    return [((a, None), (b, None)) for a, b in rows]


# -- unknown names: "did you mean" from the datasets next to the name in index order ------------

_KNOWN_DATASET = """
    SELECT EXISTS (SELECT 1 FROM dictamesh_data_lineage WHERE source_dataset = %(d)s)
        OR EXISTS (SELECT 1 FROM dictamesh_data_lineage WHERE target_dataset = %(d)s)
"""
_KNOWN_COLUMN = """
    SELECT EXISTS (SELECT 1 FROM dictamesh_data_lineage
                   WHERE source_dataset = %(d)s AND source_field = %(f)s)
        OR EXISTS (SELECT 1 FROM dictamesh_data_lineage
                   WHERE target_dataset = %(d)s AND target_field = %(f)s)
"""
_COLUMNS_OF = """
    SELECT source_field FROM dictamesh_data_lineage
    WHERE source_dataset = %(d)s AND source_field IS NOT NULL
    UNION
    SELECT target_field FROM dictamesh_data_lineage
    WHERE target_dataset = %(d)s AND target_field IS NOT NULL
    LIMIT 1000
"""
_NEIGHBOURS = 25
# The distinct dataset names either side of a name in each index (a loose index scan, so a hub
# dataset with many edges counts once): a typo usually keeps the beginning of the name.
_NEAR_NAMES = " UNION ".join(
    f"""(WITH RECURSIVE near(name, n) AS (
        SELECT {agg}({column}), 1 FROM dictamesh_data_lineage WHERE {column} {op} %(d)s
        UNION ALL
        SELECT (SELECT {agg}({column}) FROM dictamesh_data_lineage WHERE {column} {op} near.name),
               near.n + 1
        FROM near WHERE near.name IS NOT NULL AND near.n < {_NEIGHBOURS}
    ) SELECT name FROM near WHERE name IS NOT NULL)"""  # noqa: S608 - constant names
    for column in ("source_dataset", "target_dataset")
    for agg, op in (("min", ">"), ("max", "<"))
)


def _unknown(kind: str, name: str, pool: Iterable[str], remedy: str) -> UnknownNameError:
    """`UnknownNameError` naming the close matches only (never a whole catalog)."""
    close = difflib.get_close_matches(name, sorted(set(pool)), n=3, cutoff=0.6)
    error = UnknownNameError(kind, name, close)
    error.remedy = f"Use one of: {', '.join(close)}; or {remedy}" if close else remedy
    return error


def _exists(conn: psycopg.Connection[Any], query: str, params: Mapping[str, Any]) -> bool:
    row = conn.execute(query, params).fetchone()
    return bool(row and row[0])


def _check_known(conn: psycopg.Connection[Any], dataset: str, field: str | None) -> None:
    """Raise `UnknownNameError` when no edge, current or retired, names the dataset (column)."""
    if not _exists(conn, _KNOWN_DATASET, {"d": dataset}):
        near = [str(r[0]) for r in conn.execute(_NEAR_NAMES, {"d": dataset}).fetchall()]
        raise _unknown(
            "lineage dataset",
            dataset,
            near,
            "name a dataset by its OpenLineage identity 'namespace/name', as its run events "
            "or native edges give it.",
        )
    if field is not None and not _exists(conn, _KNOWN_COLUMN, {"d": dataset, "f": field}):
        columns = [str(r[0]) for r in conn.execute(_COLUMNS_OF, {"d": dataset}).fetchall()]
        raise _unknown(
            f"column of lineage dataset {dataset!r}",
            field,
            columns,
            "pass field=None for the whole dataset, or a column its column lineage names.",
        )


def walk(
    conn: psycopg.Connection[Any],
    dataset: str,
    direction: Direction,
    *,
    depth: int | None = None,
    field: str | None = None,
    include_history: bool = False,
) -> list[LineageNode]:
    """Breadth-first lineage from `dataset` (or its column `field`), nearest first.

    Only current edges are followed; `include_history` follows retired ones too (edges the
    latest completed run of their job no longer mentions). Raises `UnknownNameError`, with close
    matches, when no edge names `dataset` (or its column `field`).
    """
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
        for parent, child in _step(conn, direction, frontier, field is not None, include_history):
            if child in paths:
                continue
            if child not in parents or _label(parent) < _label(parents[child]):
                parents[child] = parent  # the smallest parent: deterministic paths
        for child in sorted(parents, key=_label):
            paths[child] = (*paths[parents[child]], _label(child))
            found.append(LineageNode(child[0], child[1], level, paths[child]))
        # A whole dataset reached by a column walk is listed but not walked on: its columns are.
        frontier = [node for node in parents if field is None or node[1] is not None]
    if not found:  # only an empty answer pays for telling "nothing there" from "no such name"
        _check_known(conn, dataset, field)
    return found


def upstream(
    conn: psycopg.Connection[Any],
    dataset: str,
    *,
    depth: int | None = None,
    field: str | None = None,
    include_history: bool = False,
) -> list[LineageNode]:
    """What `dataset` (or its column `field`) is derived from, to `depth` levels (None: all)."""
    return walk(
        conn, dataset, "upstream", depth=depth, field=field, include_history=include_history
    )


def downstream(
    conn: psycopg.Connection[Any],
    dataset: str,
    *,
    depth: int | None = None,
    field: str | None = None,
    include_history: bool = False,
) -> list[LineageNode]:
    """What is derived from `dataset` (or its column `field`), to `depth` levels (None: all)."""
    return walk(
        conn, dataset, "downstream", depth=depth, field=field, include_history=include_history
    )


@dataclass(frozen=True, slots=True)
class Impact:
    """What a breaking change to a dataset reaches.

    `datasets`: every dataset downstream, nearest first. `jobs`: the jobs reading the dataset or
    any of those (the jobs of the current edges leaving them), nearest first, then by name.
    """

    dataset: str
    datasets: list[str]
    jobs: list[str]


_READERS = """
    SELECT DISTINCT source_dataset, job_name FROM dictamesh_data_lineage
    WHERE source_dataset = ANY(%s) AND job_name IS NOT NULL{cur}
"""
_READERS_BY_HISTORY = {
    history: _READERS.format(cur="" if history else _CURRENT) for history in (False, True)
}


def impact(conn: psycopg.Connection[Any], dataset: str, *, include_history: bool = False) -> Impact:
    """The datasets downstream of `dataset` and the jobs reading it or them.

    Raises `UnknownNameError` for a dataset no lineage edge names.
    """
    nodes = downstream(conn, dataset, include_history=include_history)
    depth = {dataset: 0} | {node.dataset: node.depth for node in nodes}
    readers = conn.execute(_READERS_BY_HISTORY[include_history], (list(depth),)).fetchall()
    nearest: dict[str, int] = {}
    for source, job in readers:
        nearest[str(job)] = min(nearest.get(str(job), depth[source]), depth[source])
    return Impact(
        dataset=dataset,
        datasets=[node.dataset for node in nodes],
        jobs=sorted(nearest, key=lambda job: (nearest[job], job)),
    )


def impacted_by(
    conn: psycopg.Connection[Any], dataset: str, *, include_history: bool = False
) -> list[str]:
    """Every dataset downstream of `dataset` (nearest first), then the jobs reading any of them
    or `dataset` itself (see `Impact`; `impact` keeps the two apart)."""
    found = impact(conn, dataset, include_history=include_history)
    return [*found.datasets, *found.jobs]


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
