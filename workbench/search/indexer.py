"""Keeps the search index fresh: a sink on the entity topics, and a resumable backfill.

The sink (consumer group ``dictamesh.search-indexer``) turns each entity's text attributes into a
document and (re)indexes it when it is created or updated; a delete removes its chunks and leaves a
tombstone carrying the version, so an older update arriving late cannot bring it back. Events are
applied in the consumer's transaction together with its offsets (exactly once). The embedding
model is loaded on the first entity event, not when the workers start, and the indexer embeds on
one thread so it never takes more than one core from the rest of the process.

`reindex` backfills from the catalog table in id order, committing its cursor with every batch:
interrupted, it resumes after the last committed batch. Unchanged entities cost one hash compare;
unchanged chunk text is never embedded again (content-hash cache).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from workbench.catalog.model import EntityChange
from workbench.catalog.projector import PreparedChange, parse_change
from workbench.events import topics
from workbench.events.consumer import ConsumedEvent
from workbench.observability import get_logger
from workbench.search.chunker import Chunker
from workbench.search.embedder import Embedder, get_embedder
from workbench.search.index import (
    Document,
    build_vector_index,
    delete_documents,
    drop_vector_index,
    vector_index_present,
    write_documents,
)

if TYPE_CHECKING:
    from workbench.search.api import Search

log = get_logger(__name__)
GROUP = "dictamesh.search-indexer"
REINDEX_JOB = "catalog"
_MAX_VALUE_CHARS = 20_000


def _texts(value: Any, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, str):
        if value.strip():
            out.append((path, value[:_MAX_VALUE_CHARS]))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _texts(item, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list | tuple):
        strings = [v for v in value if isinstance(v, str) and v.strip()]
        if strings and len(strings) == len(value):
            out.append((path, ", ".join(strings)[:_MAX_VALUE_CHARS]))
        else:
            for item in value:
                _texts(item, path, out)


def entity_text(display_name: str | None, source_id: str, attributes: Mapping[str, Any]) -> str:
    """The searchable text of an entity: its name, then each text attribute as a paragraph."""
    pairs: list[tuple[str, str]] = []
    _texts(dict(attributes), "", pairs)
    lines = [f"# {display_name or source_id}"]
    for key, value in pairs:
        label = key.replace("_", " ")
        lines.append(f"{label}: {value}")
    return "\n\n".join(lines)


def entity_document(
    *,
    entity_id: uuid.UUID,
    domain: str,
    source_system: str,
    entity_type: str,
    source_id: str,
    display_name: str | None,
    attributes: Mapping[str, Any],
    tags: Sequence[str],
    version: int,
    updated_at: datetime | None,
) -> Document:
    return Document(
        text=entity_text(display_name, source_id, attributes),
        title=display_name or source_id,
        format="markdown",
        domain=domain,
        source_system=source_system,
        entity_type=entity_type,
        source_id=source_id,
        entity_id=entity_id,
        tags=tuple(tags),
        updated_at=updated_at,
        version=version,
    )


def change_document(change: EntityChange, at: datetime | None) -> Document:
    return entity_document(
        entity_id=change.ref.entity_id,
        domain=change.domain,
        source_system=change.source_system,
        entity_type=change.entity_type,
        source_id=change.source_id,
        display_name=change.display_name,
        attributes=change.attributes,
        tags=change.tags,
        version=change.version,
        updated_at=at,
    )


def _one_thread() -> None:
    """Background indexing takes one core: the process's foreground work keeps the other.

    Applies to the process's torch intra-op pool; queries already run on one thread, and a
    `reindex` runs in a process of its own with every core.
    """
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


class SearchIndexer:
    """Sink of the search indexer group: entity created/updated/deleted -> chunks."""

    group: str = GROUP
    topics: Sequence[str] = topics.ENTITY_TOPICS

    def __init__(self, group: str = GROUP, embedder: Embedder | None = None) -> None:
        self.group = group
        self._embedder = embedder
        self._chunker: Chunker | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from workbench.settings import load_settings

            self._embedder = get_embedder(load_settings().embedding_model)
        return self._embedder

    @property
    def chunker(self) -> Chunker:
        if self._chunker is None:
            embedder = self.embedder
            self._chunker = Chunker(embedder.count_tokens, split_tokens=embedder.split_tokens)
        return self._chunker

    def prepare(self, consumed: ConsumedEvent) -> PreparedChange:
        return parse_change(consumed)

    def apply(
        self,
        conn: psycopg.Connection[Any],
        batch: Sequence[tuple[ConsumedEvent, PreparedChange]],
    ) -> None:
        latest: dict[uuid.UUID, tuple[ConsumedEvent, PreparedChange]] = {}
        for consumed, prepared in batch:
            seen = latest.get(prepared.entity)
            if seen is None or prepared.change.version >= seen[1].change.version:
                latest[prepared.entity] = (consumed, prepared)
        documents = [
            change_document(p.change, c.event.time) for c, p in latest.values() if not p.deleted
        ]
        deletes = {p.entity: p.change.version for _, p in latest.values() if p.deleted}
        if documents:
            _one_thread()
            write_documents(
                conn, documents, embedder=self.embedder, chunker=self.chunker, progress=False
            )
        if deletes:
            delete_documents(conn, deletes)


# -- backfill ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReindexResult:
    """What one `reindex` run did."""

    total: int
    indexed: int
    skipped: int
    chunks: int
    removed: int
    resumed: bool
    complete: bool
    seconds: float
    bulk: bool = False
    index_build_seconds: float = 0.0


# From this many entities to (re)index, a bulk load with one index build beats row-by-row upkeep.
BULK_MIN_ENTITIES = 20_000

_SELECT_BATCH = """
SELECT id, domain, source_system, entity_type, source_id, display_name, attributes, tags,
       version, updated_at
FROM dictamesh_entity_catalog
WHERE NOT is_deleted AND (%(cursor)s::uuid IS NULL OR id > %(cursor)s::uuid)
ORDER BY id
LIMIT %(n)s
"""


def reindex(
    search: Search,
    *,
    restart: bool = False,
    batch_size: int = 200,
    max_batches: int | None = None,
    progress: bool | None = None,
    bulk: bool | None = None,
) -> ReindexResult:
    """Backfill the index from the catalog, resuming an unfinished run unless `restart`.

    `max_batches` stops early (as an interruption would); the next call resumes. `bulk` (by
    default: when at least BULK_MIN_ENTITIES remain) drops the HNSW index for the load and builds
    it once at the end, far cheaper than maintaining it row by row; queries stay correct
    meanwhile, only slower. A run that completes always leaves the index in place.
    """
    from tqdm.auto import tqdm

    started = time.monotonic()
    embedder = search.embedder
    chunker = search.chunker()
    total, cursor, done, resumed, bulk = _start_job(
        search, embedder.name, restart=restart, bulk=bulk
    )
    indexed = skipped = chunks = batches = 0
    complete = False
    show = progress if progress is not None else None
    with tqdm(
        total=total, initial=min(done, total), desc="reindex", unit="entity", disable=show is False
    ) as bar:
        while True:
            if max_batches is not None and batches >= max_batches:
                break
            with search.connection() as conn:
                rows = conn.execute(_SELECT_BATCH, {"cursor": cursor, "n": batch_size}).fetchall()
                if not rows:
                    complete = True
                    break
                documents = [
                    entity_document(
                        entity_id=row[0],
                        domain=row[1],
                        source_system=row[2],
                        entity_type=row[3],
                        source_id=row[4],
                        display_name=row[5],
                        attributes=row[6] or {},
                        tags=row[7] or [],
                        version=int(row[8]),
                        updated_at=row[9],
                    )
                    for row in rows
                ]
                stats = write_documents(
                    conn, documents, embedder=embedder, chunker=chunker, progress=False
                )
                cursor = rows[-1][0]
                done += len(rows)
                conn.execute(
                    "UPDATE dictamesh_search_reindex SET cursor_id = %s, done = %s, "
                    "updated_at = now() WHERE job = %s",
                    (cursor, done, REINDEX_JOB),
                )
            indexed += stats.documents
            skipped += stats.skipped
            chunks += stats.chunks
            batches += 1
            bar.update(len(rows))
    removed = 0
    build_seconds = 0.0
    if complete:
        with search.connection() as conn:
            removed = _sweep(conn)
            missing = not vector_index_present(conn)
        if missing:
            build_seconds = build_vector_index(search.postgres_url)
        with search.connection() as conn:
            conn.execute(
                "UPDATE dictamesh_search_reindex SET finished_at = now(), updated_at = now() "
                "WHERE job = %s",
                (REINDEX_JOB,),
            )
    result = ReindexResult(
        total=total,
        indexed=indexed,
        skipped=skipped,
        chunks=chunks,
        removed=removed,
        resumed=resumed,
        complete=complete,
        seconds=round(time.monotonic() - started, 3),
        bulk=bool(bulk),
        index_build_seconds=round(build_seconds, 3),
    )
    log.info("search reindex", **result.__dict__)
    return result


def _start_job(
    search: Search, model: str, *, restart: bool, bulk: bool | None
) -> tuple[int, uuid.UUID | None, int, bool, bool]:
    """Record a (re)started or resumed run; drop the HNSW index for a bulk load.

    Returns the entities to cover, the cursor and count to resume from, whether it resumed,
    and whether it loads in bulk.
    """
    with search.connection() as conn:
        state = conn.execute(
            "SELECT cursor_id, done, finished_at, model FROM dictamesh_search_reindex "
            "WHERE job = %s",
            (REINDEX_JOB,),
        ).fetchone()
        counted = conn.execute(
            "SELECT count(*) FROM dictamesh_entity_catalog WHERE NOT is_deleted"
        ).fetchone()
        total = int(counted[0]) if counted else 0
        resumed = bool(state is not None and state[2] is None and not restart and state[3] == model)
        cursor: uuid.UUID | None = state[0] if resumed and state is not None else None
        done = int(state[1]) if resumed and state is not None else 0
        index_present = vector_index_present(conn)
        if bulk is None:
            bulk = not index_present or total - done >= BULK_MIN_ENTITIES
        if bulk and index_present:
            drop_vector_index(conn)
        conn.execute(
            """
            INSERT INTO dictamesh_search_reindex (job, cursor_id, done, total, model)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (job) DO UPDATE SET cursor_id = EXCLUDED.cursor_id,
                done = EXCLUDED.done, total = EXCLUDED.total, model = EXCLUDED.model,
                started_at = CASE WHEN %s THEN dictamesh_search_reindex.started_at
                                  ELSE now() END,
                updated_at = now(), finished_at = NULL
            """,
            (REINDEX_JOB, cursor, done, total, model, resumed),
        )
    return total, cursor, done, resumed, bulk


def _sweep(conn: psycopg.Connection[Any]) -> int:
    """Remove entity documents whose entity the catalog marks deleted.

    A document without a catalog row is left alone: its entity may simply not be projected yet.
    """
    gone = conn.execute(
        """
        SELECT d.id, e.version FROM dictamesh_search_documents d
        JOIN dictamesh_entity_catalog e ON e.id = d.entity_id
        WHERE d.kind = 'entity' AND NOT d.is_deleted AND e.is_deleted
        """
    ).fetchall()
    return delete_documents(conn, {row[0]: int(row[1]) for row in gone}) if gone else 0
