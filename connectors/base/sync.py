"""The sync engine: full and incremental syncs with persisted cursors, resumable, idempotent.

Records are read a batch at a time. For each batch the engine

1. maps the records to catalog entities and compares each with what the instance last published
   (``dictamesh_connector_records``: a content hash and a version per entity), so unchanged
   records publish nothing;
2. publishes the changes as ``dictamesh.entity.*`` CloudEvents whose ids are derived from the
   entity, its version and its content, and waits until the broker acknowledged them all;
3. commits, in one Postgres transaction, the entities' new versions and hashes, the stream's
   cursor and the run's counters.

A crash between 2 and 3 leaves events on the topic whose state was not committed; the next run
reads those records again, computes the same versions and contents, and so publishes events
with the same ids, which the catalog projection (deduplicating by ``source`` + ``id`` and
guarding versions) applies once. A killed or failed run is resumed by the next sync under the
same run id, from its streams' committed cursors. A full run that finishes detects deletions:
entities the instance published before that this run did not see.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Engine, text

from connectors.base.capabilities import Adapter, Capability, EntityRecord, Stream, WebhookEvent
from connectors.base.errors import SyncFailedError, SyncInProgressError
from workbench.errors import DictaMeshError
from workbench.events import topics
from workbench.events.envelope import CloudEvent

if TYPE_CHECKING:
    from workbench.events.producer import EventProducer, PublishHandle

NAMESPACE = uuid.UUID("0b5d0c4e-6a51-5a8e-8f0e-2f6f7b3c9a10")
SOURCE_PREFIX = "dictamesh://connectors/"
WEBHOOK_STREAM = "webhook"

RegisterSchema = Callable[[str, Mapping[str, Any]], Any]


def event_source(instance: str) -> str:
    return f"{SOURCE_PREFIX}{instance}"


@dataclass
class SyncResult:
    """How a sync run ended."""

    run_id: uuid.UUID
    instance: str
    mode: str
    status: str
    records_read: int = 0
    records_published: int = 0
    records_deleted: int = 0
    resumed: bool = False
    error: str | None = None
    seconds: float = 0.0
    handles: list[PublishHandle] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        return (
            f"SyncResult({self.instance} {self.mode} {self.status}: read {self.records_read}, "
            f"published {self.records_published}, deleted {self.records_deleted}"
            f"{', resumed' if self.resumed else ''} in {self.seconds:.1f} s)"
        )


@dataclass
class _Run:
    id: uuid.UUID
    mode: str
    streams_done: list[str]
    resumed: bool
    read: int = 0
    published: int = 0
    deleted: int = 0
    handles: list[PublishHandle] = field(default_factory=list)


@dataclass
class _Known:
    version: int
    content_hash: str
    last_change: dict[str, Any]
    is_deleted: bool


def content_hash(record: EntityRecord) -> str:
    document = {
        "attributes": record.attributes,
        "display_name": record.display_name,
        "links": [link.__dict__ for link in record.links],
        "tags": sorted(record.tags),
    }
    return hashlib.sha256(_canonical(document)).hexdigest()


def _canonical(document: Any) -> bytes:
    try:
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:  # integers beyond 64 bits: the standard library writes any size
        return json.dumps(document, sort_keys=True, default=str).encode()


def event_id(instance: str, key: str, version: int, digest: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{instance}\x1f{key}\x1f{version}\x1f{digest}"))


class SyncEngine:
    """Runs syncs of connector instances into the pipeline; state lives in Postgres."""

    def __init__(
        self,
        engine: Engine,
        producer: EventProducer,
        *,
        register_schema: RegisterSchema | None = None,
        progress: bool = True,
        delivery_timeout: float = 60.0,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.register_schema = register_schema
        self.progress = progress
        self.delivery_timeout = delivery_timeout

    def __repr__(self) -> str:
        return "SyncEngine()"

    # -- runs -------------------------------------------------------------------------------
    def sync(self, adapter: Adapter[Any], *, full: bool = False) -> SyncResult:
        """Sync every stream of `adapter`; resume its unfinished run if there is one."""
        adapter.require(Capability.READ)
        started = time.monotonic()
        with self._lock(adapter.instance):
            run = self._start_or_resume(adapter, full)
            try:
                if not adapter._initialized:
                    adapter.initialize()
                for declaration in adapter.schemas():
                    if self.register_schema is not None:
                        self.register_schema(declaration.subject, declaration.schema)
                streams = adapter.streams()
                for stream in streams:
                    if stream.name in run.streams_done:
                        continue
                    self._sync_stream(adapter, stream, run)
                    self._stream_done(run, stream)
                if run.mode == "full":
                    self._detect_deletions(adapter, run, [s.name for s in streams])
            except BaseException as exc:  # KeyboardInterrupt too: the run stays resumable
                self._finish(run, "failed", exc)
                if isinstance(exc, DictaMeshError | OSError | ValueError | KeyError | TypeError):
                    kind = exc.kind if isinstance(exc, DictaMeshError) else "terminal"
                    raise SyncFailedError(
                        f"Sync of {adapter.instance!r} failed after {run.read} records "
                        f"({kind}): {exc}",
                        remedy="fix the cause if it is terminal, then run the sync again: it "
                        "resumes from the last committed cursor.",
                    ) from exc
                raise
            self._finish(run, "succeeded", None)
        return SyncResult(
            run.id,
            adapter.instance,
            run.mode,
            "succeeded",
            run.read,
            run.published,
            run.deleted,
            run.resumed,
            None,
            time.monotonic() - started,
            run.handles,
        )

    @contextmanager
    def _lock(self, instance: str) -> Iterator[None]:
        """One sync per instance at a time, across processes; a killed holder frees it."""
        with self.engine.connect() as conn:
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(hashtextextended(:key, 0))"),
                {"key": f"dictamesh.connector:{instance}"},
            ).scalar_one()
            conn.commit()
            if not got:
                raise SyncInProgressError(
                    f"Connector instance {instance!r} is being synced by another process.",
                    remedy="wait for it to finish (see `dictamesh connectors runs`).",
                )
            try:
                yield
            finally:
                conn.execute(
                    text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"),
                    {"key": f"dictamesh.connector:{instance}"},
                )
                conn.commit()

    def _start_or_resume(self, adapter: Adapter[Any], full: bool) -> _Run:
        with self.engine.begin() as conn:
            latest = (
                conn.execute(
                    text(
                        "SELECT id, mode, status, streams_done FROM dictamesh_connector_runs "
                        "WHERE instance = :i ORDER BY started_at DESC LIMIT 1"
                    ),
                    {"i": adapter.instance},
                )
                .mappings()
                .first()
            )
            if latest is not None and latest["status"] in {"running", "failed"}:
                if full and latest["mode"] == "incremental":
                    conn.execute(
                        text(
                            "UPDATE dictamesh_connector_runs SET status = 'abandoned' WHERE id = "
                            ":id"
                        ),
                        {"id": latest["id"]},
                    )
                else:
                    row = conn.execute(
                        text(
                            "UPDATE dictamesh_connector_runs SET status = 'running', "
                            "attempts = attempts + 1, error = NULL, error_kind = NULL, "
                            "heartbeat_at = now(), finished_at = NULL WHERE id = :id "
                            "RETURNING records_read, records_published, records_deleted"
                        ),
                        {"id": latest["id"]},
                    ).one()
                    return _Run(
                        latest["id"],
                        latest["mode"],
                        list(latest["streams_done"]),
                        True,
                        int(row[0]),
                        int(row[1]),
                        int(row[2]),
                    )
            run_id = conn.execute(
                text(
                    "INSERT INTO dictamesh_connector_runs (instance, connector, mode, status) "
                    "VALUES (:i, :c, :m, 'running') RETURNING id"
                ),
                {
                    "i": adapter.instance,
                    "c": adapter.name,
                    "m": "full" if full else "incremental",
                },
            ).scalar_one()
        return _Run(run_id, "full" if full else "incremental", [], False)

    def _finish(self, run: _Run, status: str, exc: BaseException | None) -> None:
        message = None if exc is None else (str(exc) or type(exc).__name__)[:2000]
        kind = None
        if exc is not None:
            kind = exc.kind if isinstance(exc, DictaMeshError) else type(exc).__name__
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE dictamesh_connector_runs SET status = :s, error = :e, "
                    "error_kind = :k, finished_at = now(), heartbeat_at = now() WHERE id = :id"
                ),
                {"s": status, "e": message, "k": kind, "id": run.id},
            )

    def _stream_done(self, run: _Run, stream: Stream) -> None:
        run.streams_done.append(stream.name)
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE dictamesh_connector_runs SET streams_done = "
                    "array_append(streams_done, :s) WHERE id = :id"
                ),
                {"s": stream.name, "id": run.id},
            )

    # -- streams ----------------------------------------------------------------------------
    def _sync_stream(self, adapter: Adapter[Any], stream: Stream, run: _Run) -> None:
        from tqdm.auto import tqdm

        with self.engine.connect() as conn:
            state = (
                conn.execute(
                    text(
                        "SELECT cursor, full_cursor, full_run_id FROM dictamesh_connector_state "
                        "WHERE instance = :i AND stream = :s"
                    ),
                    {"i": adapter.instance, "s": stream.name},
                )
                .mappings()
                .first()
            )
        cursor: Any = None
        if state is not None:
            if run.mode == "incremental":
                cursor = state["cursor"]
            elif state["full_run_id"] == run.id:
                cursor = state["full_cursor"]
        batch_size = int(getattr(adapter.config, "batch_size", 200))
        batch: list[EntityRecord] = []
        records = adapter.read(stream, cursor=cursor)
        with tqdm(
            records,
            desc=f"{adapter.instance}/{stream.name}",
            unit="record",
            disable=not self.progress,
        ) as bar:
            for raw in bar:
                batch.append(adapter.map_record(stream, raw))
                if len(batch) >= batch_size:
                    self._apply(adapter, stream.name, run, batch)
                    batch = []
            if batch:
                self._apply(adapter, stream.name, run, batch)

    def _known(
        self, instance: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], _Known]:
        if not keys:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT r.entity_type, r.source_id, r.version, r.content_hash, "
                    "r.last_change, r.is_deleted FROM jsonb_to_recordset(CAST(:keys AS jsonb)) "
                    "AS k(t text, s text) JOIN dictamesh_connector_records r "
                    "ON r.instance = :i AND r.entity_type = k.t AND r.source_id = k.s"
                ),
                {"i": instance, "keys": orjson.dumps([{"t": t, "s": s} for t, s in keys]).decode()},
            )
            return {(r[0], r[1]): _Known(int(r[2]), r[3], dict(r[4]), bool(r[5])) for r in rows}

    def _change(self, adapter: Adapter[Any], record: EntityRecord, version: int) -> dict[str, Any]:
        data: dict[str, Any] = {
            "domain": adapter.config.domain,
            "source_system": adapter.source_system,
            "entity_type": record.entity_type,
            "source_id": record.source_id,
            "version": version,
            "attributes": _jsonable(record.attributes),
            "relationships": [
                {
                    "type": link.type,
                    "target": {
                        "source_system": link.source_system or adapter.source_system,
                        "entity_type": link.entity_type,
                        "source_id": link.source_id,
                    },
                    "cardinality": link.cardinality,
                }
                for link in record.links
            ],
            "tags": list(record.tags),
        }
        if record.display_name:
            data["display_name"] = record.display_name[:1000]
        return data

    def _apply(
        self, adapter: Adapter[Any], stream: str, run: _Run | None, records: list[EntityRecord]
    ) -> list[PublishHandle]:
        """Publish what changed in `records`, wait for the broker, then commit; return the
        handles of the published events."""
        instance = adapter.instance
        latest: dict[tuple[str, str], EntityRecord] = {}
        for record in records:
            latest[(record.entity_type, record.source_id)] = record
        known = self._known(instance, list(latest))
        handles: list[PublishHandle] = []
        rows: list[dict[str, Any]] = []
        seen: list[tuple[str, str]] = []
        deleted = 0
        for key, record in latest.items():
            before = known.get(key)
            subject = f"{adapter.source_system}/{key[0]}/{key[1]}"
            if record.deleted:
                if before is None or before.is_deleted:
                    seen.append(key)
                    continue
                version = before.version + 1
                change = {**before.last_change, "version": version}
                digest = before.content_hash
                topic = topics.ENTITY_DELETED
                deleted += 1
            else:
                digest = content_hash(record)
                if before is not None and not before.is_deleted and before.content_hash == digest:
                    seen.append(key)
                    continue
                version = (before.version if before else 0) + 1
                change = self._change(adapter, record, version)
                topic = topics.ENTITY_CREATED if before is None else topics.ENTITY_UPDATED
            event = CloudEvent(
                id=event_id(instance, subject, version, digest + topic),
                source=event_source(instance),
                type=topic,
                subject=subject,
                partitionkey=subject,
                data=change,
            )
            handles.append(self.producer.publish(topic, event))
            rows.append(
                {
                    "i": instance,
                    "t": key[0],
                    "s": key[1],
                    "stream": stream,
                    "h": digest,
                    "v": version,
                    "c": change,
                    "run": run.id if run else None,
                    "d": record.deleted,
                }
            )
        self._await(handles)
        cursors = [r.cursor for r in records if r.cursor is not None]
        self._commit(instance, stream, run, rows, seen, max(cursors) if cursors else None)
        if run is not None:
            run.read += len(records)
            run.published += len(handles)
            run.deleted += deleted
            run.handles = _newest_per_partition([*run.handles, *handles])
        return handles

    def _await(self, handles: list[PublishHandle]) -> None:
        if not handles:
            return
        self.producer.flush(self.delivery_timeout)
        for handle in handles:
            handle.delivered(self.delivery_timeout)

    def _commit(
        self,
        instance: str,
        stream: str,
        run: _Run | None,
        rows: list[dict[str, Any]],
        seen: list[tuple[str, str]],
        cursor: Any,
    ) -> None:
        """Versions, hashes, the stream's cursor and the run's counters, in one transaction."""
        run_id = run.id if run else None
        with self.engine.begin() as conn:
            if rows:
                # Set-based: one statement and one JSON parameter per batch.
                conn.execute(
                    text(
                        "INSERT INTO dictamesh_connector_records (instance, entity_type, "
                        "source_id, stream, content_hash, version, last_change, last_seen_run, "
                        "is_deleted) SELECT :i, u.t, u.s, :stream, u.h, u.v, u.c, "
                        "CAST(:run AS uuid), u.d FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
                        "AS u(t text, s text, h text, v bigint, c jsonb, d boolean) "
                        "ON CONFLICT (instance, entity_type, source_id) DO UPDATE SET "
                        "stream = EXCLUDED.stream, content_hash = EXCLUDED.content_hash, "
                        "version = EXCLUDED.version, last_change = EXCLUDED.last_change, "
                        "last_seen_run = coalesce(EXCLUDED.last_seen_run, "
                        "dictamesh_connector_records.last_seen_run), "
                        "is_deleted = EXCLUDED.is_deleted, updated_at = now()"
                    ),
                    {
                        "i": instance,
                        "stream": stream,
                        "run": run_id,
                        "rows": orjson.dumps(rows, default=str).decode(),
                    },
                )
            if seen and run_id is not None:
                conn.execute(
                    text(
                        "UPDATE dictamesh_connector_records r SET last_seen_run = :run "
                        "FROM jsonb_to_recordset(CAST(:seen AS jsonb)) AS u(t text, s text) "
                        "WHERE r.instance = :i AND r.entity_type = u.t AND r.source_id = u.s"
                    ),
                    {
                        "run": run_id,
                        "i": instance,
                        "seen": orjson.dumps([{"t": t, "s": s} for t, s in seen]).decode(),
                    },
                )
            if run is None:
                return
            value = json.dumps(cursor, default=str) if cursor is not None else None
            full = run.mode == "full"
            conn.execute(
                text(
                    "INSERT INTO dictamesh_connector_state (instance, stream, cursor, full_cursor, "
                    "full_run_id, last_run_id) VALUES (:i, :s, CAST(:c AS jsonb), "
                    "CAST(:fc AS jsonb), :fr, :run) ON CONFLICT (instance, stream) DO UPDATE SET "
                    "cursor = CASE WHEN EXCLUDED.cursor IS NULL "
                    "THEN dictamesh_connector_state.cursor "
                    "WHEN dictamesh_connector_state.cursor IS NULL THEN EXCLUDED.cursor "
                    "WHEN EXCLUDED.cursor > dictamesh_connector_state.cursor THEN EXCLUDED.cursor "
                    "ELSE dictamesh_connector_state.cursor END, "
                    "full_cursor = CASE WHEN :full THEN coalesce(EXCLUDED.full_cursor, "
                    "dictamesh_connector_state.full_cursor) ELSE "
                    "dictamesh_connector_state.full_cursor END, "
                    "full_run_id = CASE WHEN :full THEN EXCLUDED.full_run_id ELSE "
                    "dictamesh_connector_state.full_run_id END, "
                    "last_run_id = EXCLUDED.last_run_id, updated_at = now()"
                ),
                {
                    "i": instance,
                    "s": stream,
                    "c": value,
                    "fc": value if full else None,
                    "fr": run_id if full else None,
                    "run": run_id,
                    "full": full,
                },
            )
            conn.execute(
                text(
                    "UPDATE dictamesh_connector_runs SET records_read = records_read + :r, "
                    "records_published = records_published + :p, heartbeat_at = now() "
                    "WHERE id = :id"
                ),
                {"r": len(rows) + len(seen), "p": len(rows), "id": run_id},
            )

    def _detect_deletions(self, adapter: Adapter[Any], run: _Run, streams: list[str]) -> None:
        """After a complete full run: what was published before and not seen now is gone."""
        with self.engine.connect() as conn:
            gone = conn.execute(
                text(
                    "SELECT entity_type, source_id, stream FROM dictamesh_connector_records "
                    "WHERE instance = :i AND stream = ANY(:streams) AND NOT is_deleted "
                    "AND last_seen_run IS DISTINCT FROM :run"
                ),
                {"i": adapter.instance, "streams": streams, "run": run.id},
            ).all()
        by_stream: dict[str, list[EntityRecord]] = {}
        for entity_type, source_id, stream in gone:
            by_stream.setdefault(stream, []).append(
                EntityRecord(entity_type, source_id, {}, deleted=True)
            )
        for stream, records in by_stream.items():
            for start in range(0, len(records), 500):
                chunk = records[start : start + 500]
                self._apply(adapter, stream, run, chunk)
                run.read -= len(chunk)  # deletions are not records read
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE dictamesh_connector_runs SET records_deleted = :d, "
                    "records_read = :r WHERE id = :id"
                ),
                {"d": run.deleted, "r": run.read, "id": run.id},
            )

    # -- webhooks ---------------------------------------------------------------------------
    def apply_webhook(self, adapter: Adapter[Any], delivery: WebhookEvent) -> list[PublishHandle]:
        """Publish a verified delivery: an adapter event, plus the entity changes it carries."""
        adapter.require(Capability.WEBHOOKS)
        subject = f"{adapter.source_system}/webhook/{delivery.event}"
        digest = hashlib.sha256(
            orjson.dumps(delivery.payload, option=orjson.OPT_SORT_KEYS, default=str)
        ).hexdigest()
        handle = self.producer.publish(
            topics.ADAPTER_EVENT,
            CloudEvent(
                id=str(uuid.uuid5(NAMESPACE, f"{adapter.instance}\x1fwebhook\x1f{digest}")),
                source=event_source(adapter.instance),
                type=topics.ADAPTER_EVENT,  # the topic's name; the webhook event is in data
                subject=subject,
                partitionkey=subject,
                time=delivery.occurred_at or datetime.now().astimezone(),
                data={"event": delivery.event, "payload": delivery.payload},
            ),
        )
        streams = {s.entity_type: s.name for s in adapter.streams()}
        by_stream: dict[str, list[EntityRecord]] = {}
        for record in delivery.records:
            stream = streams.get(record.entity_type, WEBHOOK_STREAM)
            by_stream.setdefault(stream, []).append(record)
        published: list[PublishHandle] = []
        for stream, records in by_stream.items():
            published += self._apply(adapter, stream, None, records)  # no run: no cursor moves
        self._await([handle])
        return [handle, *published]


def _newest_per_partition(handles: list[PublishHandle]) -> list[PublishHandle]:
    """What waiting for the projection needs of delivered handles: the newest per partition
    (memory stays flat however long the sync)."""
    newest: dict[tuple[str, int], PublishHandle] = {}
    for handle in handles:
        if handle.partition is None or handle.offset is None:
            return handles  # not all delivered: keep everything
        key = (handle.topic, handle.partition)
        if key not in newest or (newest[key].offset or 0) < handle.offset:
            newest[key] = handle
    return list(newest.values())


def _jsonable(value: Any) -> Any:
    """Attributes as JSON carries them; integers beyond 64 bits become text (as Decimals do),
    since the event encoding and most consumers cannot hold them."""
    try:
        return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS))
    except TypeError:
        return _big_ints_as_text(json.loads(json.dumps(value, default=str)))


def _big_ints_as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {str(k): _big_ints_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_big_ints_as_text(v) for v in value]
    return value
