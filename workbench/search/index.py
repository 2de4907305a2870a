"""The search index: chunks with pgvector embeddings (HNSW, cosine) and Postgres full-text.

Writes. `write_documents` chunks each document, embeds its chunks through the content-hash cache
and replaces the document's chunks in the caller's transaction (binary COPY). A document whose
text and metadata did not change is skipped; an entity document older than the stored version is
ignored, so replays and out-of-order events converge.

Queries. Three modes:

- ``vector``: cosine distance over the HNSW index. pgvector before 0.8 filters *after* the index
  scan, so a selective filter can leave fewer than `k` rows; the search then widens
  ``hnsw.ef_search`` (up to pgvector's maximum of 1000) and, if still short, ranks the filtered
  rows exactly (an ``ORDER BY`` the index cannot serve, so Postgres uses the filter indexes). Where
  pgvector has iterative index scans (0.8+), they are switched on instead.
- ``keyword``: Postgres full-text search (English stemming; headings weigh more than body text).
  Chunks matching any query term are candidates; those matching the whole query (AND, phrases,
  ``-exclusions`` in web-search syntax) rank first, then by ``ts_rank``.
- ``hybrid``: Reciprocal Rank Fusion of both lists: ``sum(weight / (rrf_k + rank))``.

Snippets come from ``ts_headline`` with the query's terms highlighted.
"""

from __future__ import annotations

import math
import struct
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import orjson
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb

from workbench.catalog.model import NAMESPACE
from workbench.errors import TerminalError, UnknownNameError
from workbench.search.chunker import Chunker, decode_document, extract_html
from workbench.search.chunker import Format as DocFormat
from workbench.search.embedder import Embedder, Vectors, embed_texts, vector_literal

Mode = Literal["vector", "keyword", "hybrid"]
MODES: tuple[Mode, ...] = ("vector", "keyword", "hybrid")
FILTER_FIELDS = ("domain", "source_system", "entity_type", "tags", "since", "until")
MAX_QUERY_CHARS = 10_000
MAX_K = 1000
HNSW_MAX_EF = 1000
DEFAULT_EF_SEARCH = 100
DEFAULT_RRF_K = 60

_HL_START = "\x02"
_HL_STOP = "\x03"
_HEADLINE_OPTIONS = (
    f"StartSel={_HL_START}, StopSel={_HL_STOP}, MaxWords=40, MinWords=15, "
    'MaxFragments=2, FragmentDelimiter=" … "'
)


class SearchError(TerminalError):
    """A search request the index cannot answer as asked."""


# -- filters -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """Metadata filters; each given field must match (tags: all of them)."""

    domain: tuple[str, ...] = ()
    source_system: tuple[str, ...] = ()
    entity_type: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    @property
    def empty(self) -> bool:
        return not (self.domain or self.source_system or self.entity_type or self.tags) and (
            self.since is None and self.until is None
        )

    def where(self, alias: str = "c") -> tuple[str, dict[str, Any]]:
        """A SQL condition (constant text, bound values) for the chunk table alias."""
        parts: list[str] = ["TRUE"]
        params: dict[str, Any] = {}
        for name in ("domain", "source_system", "entity_type"):
            values = getattr(self, name)
            if values:
                parts.append(f"{alias}.{name} = ANY(%(f_{name})s)")
                params[f"f_{name}"] = list(values)
        if self.tags:
            parts.append(f"{alias}.tags @> %(f_tags)s::text[]")
            params["f_tags"] = list(self.tags)
        if self.since is not None:
            parts.append(f"{alias}.updated_at >= %(f_since)s")
            params["f_since"] = self.since
        if self.until is not None:
            parts.append(f"{alias}.updated_at < %(f_until)s")
            params["f_until"] = self.until
        return " AND ".join(parts), params


def parse_filters(filters: Mapping[str, Any] | Filters | None) -> Filters:
    """Validate user filters: unknown fields get a did-you-mean, values a clear message."""
    if filters is None:
        return Filters()
    if isinstance(filters, Filters):
        return filters
    if not isinstance(filters, Mapping):
        raise SearchError(
            f"filters must be a mapping of field to value, got {type(filters).__name__}.",
            remedy=f"pass e.g. {{'domain': 'support'}}; fields: {', '.join(FILTER_FIELDS)}.",
        )
    values: dict[str, Any] = {}
    for name, value in filters.items():
        if name not in FILTER_FIELDS:
            raise UnknownNameError("search filter field", str(name), FILTER_FIELDS)
        if value is None:
            continue
        if name in ("since", "until"):
            values[name] = _timestamp(name, value)
        else:
            values[name] = _strings(name, value)
    if values.get("since") and values.get("until") and values["since"] >= values["until"]:
        raise SearchError(
            f"Filter since={values['since'].isoformat()} is not before "
            f"until={values['until'].isoformat()}.",
            remedy="give a time range whose start is before its end.",
        )
    return Filters(**values)


def _strings(name: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple | set | frozenset) or not items:
        raise SearchError(
            f"Filter {name!r} needs a string or a non-empty list of strings, got {value!r}.",
            remedy=f"pass e.g. {{{name!r}: 'value'}} or {{{name!r}: ['a', 'b']}}.",
        )
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise SearchError(
                f"Filter {name!r} has a value that is not a non-empty string: {item!r}.",
                remedy="pass strings only.",
            )
        out.append(item.replace("\x00", ""))
    return tuple(out)


def _timestamp(name: str, value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise SearchError(
                f"Filter {name!r} is not an ISO 8601 timestamp: {value!r}.",
                remedy="use e.g. '2026-01-31T00:00:00+00:00'.",
            ) from None
    if not isinstance(value, datetime):
        raise SearchError(
            f"Filter {name!r} needs a datetime or an ISO 8601 string, got {value!r}.",
            remedy="pass a timezone-aware datetime.",
        )
    if value.tzinfo is None:
        raise SearchError(
            f"Filter {name!r} has no timezone: {value.isoformat()}.",
            remedy="pass a timezone-aware datetime, e.g. with tzinfo=UTC or a '+00:00' suffix.",
        )
    return value.astimezone(UTC)


def check_query(query: Any, k: Any, mode: Any) -> tuple[str, int, Mode]:
    if not isinstance(query, str):
        raise SearchError(
            f"The query must be text, got {type(query).__name__}.", remedy="pass a string."
        )
    cleaned = query.replace("\x00", " ").strip()
    if not cleaned:
        raise SearchError("The search query is empty.", remedy="type some words to search for.")
    if len(cleaned) > MAX_QUERY_CHARS:
        raise SearchError(
            f"The search query has {len(cleaned):,} characters; at most "
            f"{MAX_QUERY_CHARS:,} are accepted.",
            remedy="search with a shorter question or passage (the embedding model reads only "
            "its first ~256 tokens anyway).",
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise SearchError(
            f"k must be an integer from 1 to {MAX_K}, got {k!r}.", remedy="pass k=10."
        )
    if mode not in MODES:
        raise UnknownNameError("search mode", str(mode), MODES)
    return cleaned, k, mode


# -- documents ---------------------------------------------------------------------------------


@dataclass
class Document:
    """Something to index: a free document, or the text of a catalog entity."""

    text: str | bytes
    key: str | None = None
    title: str | None = None
    format: DocFormat = "markdown"
    domain: str | None = None
    source_system: str | None = None
    entity_type: str | None = None
    source_id: str | None = None
    entity_id: uuid.UUID | None = None
    tags: Sequence[str] = ()
    url: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None
    version: int = 0

    @property
    def id(self) -> uuid.UUID:
        if self.entity_id is not None:
            return self.entity_id
        key = self.key or f"{self.source_system or ''}/{self.entity_type or ''}/{self.source_id}"
        if self.key is None and self.source_id is None:
            raise SearchError(
                "A document needs a key (or a source_id) to be indexed.",
                remedy="pass key='a stable name', e.g. the file path or URL.",
            )
        return uuid.uuid5(NAMESPACE, f"document\x1f{key}")


def document_id(key: str) -> uuid.UUID:
    """The id of a free document indexed under `key`."""
    return uuid.uuid5(NAMESPACE, f"document\x1f{key}")


@dataclass(frozen=True)
class WriteStats:
    documents: int = 0
    skipped: int = 0
    chunks: int = 0


def _clean(value: str | None) -> str | None:
    return None if value is None else value.replace("\x00", "")


def embedding_text(title: str | None, heading: str, text: str) -> str:
    """What is embedded for a chunk: title and section path give the passage its context."""
    head = [part for part in (title, heading) if part and part not in text[: len(part) + 8]]
    return "\n".join([*head, text])


class _VectorBinaryDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        array = np.asarray(obj, dtype=">f4")
        return struct.pack(">HH", array.shape[0], 0) + array.tobytes()


def register_vector(conn: psycopg.Connection[Any]) -> None:
    """Let COPY send numpy vectors to a `vector` column in pgvector's binary format."""
    if conn.adapters.types.get("vector") is not None:
        return
    info = TypeInfo.fetch(conn, "vector")
    if info is None:
        raise SearchError(
            "The pgvector extension is not installed in this database.",
            remedy="run `dictamesh migrate up` (it creates the extension).",
        )
    info.register(conn)
    dumper = type("VectorBinaryDumper", (_VectorBinaryDumper,), {"oid": info.oid})
    conn.adapters.register_dumper(np.ndarray, dumper)


_CHUNK_COLUMNS = (
    "document_id, ordinal, char_start, char_end, heading, content, token_count, embedding, "
    "domain, source_system, entity_type, tags, updated_at"
)
_CHUNK_TYPES = [
    "uuid",
    "int4",
    "int4",
    "int4",
    "text",
    "text",
    "int4",
    "vector",
    "text",
    "text",
    "text",
    "text[]",
    "timestamptz",
]


def copy_chunks(conn: psycopg.Connection[Any], rows: Sequence[Sequence[Any]]) -> None:
    """Bulk-insert chunk rows (in `_CHUNK_COLUMNS` order) with binary COPY."""
    if not rows:
        return
    register_vector(conn)
    with (
        conn.cursor() as cursor,
        cursor.copy(
            f"COPY dictamesh_search_chunks ({_CHUNK_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(_CHUNK_TYPES)
        for row in rows:
            copy.write_row(row)


def _document_hash(doc: Document, text: str, model: str) -> bytes:
    import hashlib

    payload = orjson.dumps(
        [
            model,
            doc.title,
            text,
            doc.domain,
            doc.source_system,
            doc.entity_type,
            doc.source_id,
            sorted(doc.tags),
            doc.url,
        ]
    )
    return hashlib.sha256(payload).digest()


def write_documents(
    conn: psycopg.Connection[Any],
    documents: Sequence[Document],
    *,
    embedder: Embedder,
    chunker: Chunker,
    progress: bool | None = None,
) -> WriteStats:
    """Index `documents` in the caller's transaction; unchanged or older ones are skipped."""
    if not documents:
        return WriteStats()
    latest: dict[uuid.UUID, Document] = {}
    for doc in documents:  # the newest version of each document in the batch wins
        current = latest.get(doc.id)
        if current is None or doc.version >= current.version:
            latest[doc.id] = doc
    ids = list(latest)
    stored = {
        row[0]: (row[1], row[2], row[3])
        for row in conn.execute(
            "SELECT id, version, content_hash, is_deleted FROM dictamesh_search_documents "
            "WHERE id = ANY(%s) FOR UPDATE",
            (ids,),
        ).fetchall()
    }
    now = datetime.now(UTC)
    doc_rows: list[tuple[Any, ...]] = []
    chunk_plan: list[tuple[Document, uuid.UUID, str, list[Any]]] = []
    touched: list[tuple[uuid.UUID, datetime]] = []
    skipped = 0
    for doc_id, doc in latest.items():
        text = decode_document(doc.text)
        title = _clean(doc.title)
        if doc.format == "html":
            text, html_title = extract_html(text)
            title = title or html_title
        text = text.replace(_HL_START, "").replace(_HL_STOP, "")
        doc.title = title
        digest = _document_hash(doc, text, embedder.name)
        updated = doc.updated_at or now
        previous = stored.get(doc_id)
        if previous is not None:
            version, old_hash, deleted = previous
            older = version > doc.version or (deleted and version >= doc.version)
            if doc.entity_id is not None and doc.version > 0 and older:
                skipped += 1  # a late or replayed event: the stored state is newer
                continue
            if old_hash is not None and bytes(old_hash) == digest and not deleted:
                touched.append((doc_id, updated))
                doc_rows.append(_doc_row(doc_id, doc, text, digest, embedder.name, updated))
                skipped += 1
                continue
        doc_rows.append(_doc_row(doc_id, doc, text, digest, embedder.name, updated))
        chunks = chunker.chunk(text, "plain" if doc.format == "plain" else "markdown")
        chunk_plan.append((doc, doc_id, text, chunks))
    _upsert_documents(conn, doc_rows)
    if touched:
        conn.execute(
            "UPDATE dictamesh_search_chunks c SET updated_at = u.t "
            "FROM unnest(%s::uuid[], %s::timestamptz[]) AS u(d, t) WHERE c.document_id = u.d",
            ([d for d, _ in touched], [t for _, t in touched]),
        )
    rewritten = [doc_id for _, doc_id, _, _ in chunk_plan]
    if rewritten:
        conn.execute(
            "DELETE FROM dictamesh_search_chunks WHERE document_id = ANY(%s)", (rewritten,)
        )
    texts = [
        embedding_text(doc.title, chunk.heading, chunk.text)
        for doc, _, _, chunks in chunk_plan
        for chunk in chunks
    ]
    vectors = embed_texts(embedder, texts, conn=conn, progress=progress)
    rows: list[tuple[Any, ...]] = []
    position = 0
    for doc, doc_id, _, chunks in chunk_plan:
        for chunk in chunks:
            rows.append(
                (
                    doc_id,
                    chunk.ordinal,
                    chunk.start,
                    chunk.end,
                    chunk.heading,
                    chunk.text,
                    chunk.tokens,
                    vectors[position],
                    doc.domain,
                    doc.source_system,
                    doc.entity_type,
                    list(doc.tags),
                    doc.updated_at or now,
                )
            )
            position += 1
    copy_chunks(conn, rows)
    return WriteStats(documents=len(latest) - skipped, skipped=skipped, chunks=len(rows))


def _doc_row(
    doc_id: uuid.UUID, doc: Document, text: str, digest: bytes, model: str, updated: datetime
) -> tuple[Any, ...]:
    return (
        doc_id,
        doc.entity_id,
        "entity" if doc.entity_id is not None else "document",
        _clean(doc.domain),
        _clean(doc.source_system),
        _clean(doc.entity_type),
        _clean(doc.source_id),
        doc.title,
        _clean(doc.url),
        [t.replace("\x00", "") for t in doc.tags],
        Jsonb(dict(doc.metadata)),
        text,
        digest,
        model,
        doc.version,
        updated,
    )


def _upsert_documents(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    with conn.cursor() as cursor:
        cursor.executemany(
            """
            INSERT INTO dictamesh_search_documents AS d
                (id, entity_id, kind, domain, source_system, entity_type, source_id, title, url,
                 tags, metadata, content, content_hash, model, version, updated_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (id) DO UPDATE SET
                domain = EXCLUDED.domain, source_system = EXCLUDED.source_system,
                entity_type = EXCLUDED.entity_type, source_id = EXCLUDED.source_id,
                title = EXCLUDED.title, url = EXCLUDED.url, tags = EXCLUDED.tags,
                metadata = EXCLUDED.metadata, content = EXCLUDED.content,
                content_hash = EXCLUDED.content_hash, model = EXCLUDED.model,
                version = EXCLUDED.version, updated_at = EXCLUDED.updated_at,
                is_deleted = false, indexed_at = now()
            """,
            rows,
        )


def delete_documents(
    conn: psycopg.Connection[Any], versions: Mapping[uuid.UUID, int], *, tombstone: bool = True
) -> int:
    """Remove the chunks of documents; keep a tombstone with the version (entity deletes)."""
    if not versions:
        return 0
    ids = list(versions)
    if tombstone:
        conn.execute(
            """
            INSERT INTO dictamesh_search_documents AS d (id, entity_id, kind, version, is_deleted)
            SELECT i, i, 'entity', v, true FROM unnest(%s::uuid[], %s::bigint[]) AS u(i, v)
            ON CONFLICT (id) DO UPDATE SET is_deleted = true, version = EXCLUDED.version,
                content = '', content_hash = NULL, indexed_at = now()
            WHERE d.version < EXCLUDED.version OR EXCLUDED.version = 0
            """,
            (ids, [versions[i] for i in ids]),
        )
    else:
        removed = conn.execute(
            "DELETE FROM dictamesh_search_chunks WHERE document_id = ANY(%s)", (ids,)
        ).rowcount
        conn.execute("DELETE FROM dictamesh_search_documents WHERE id = ANY(%s)", (ids,))
        return removed
    deleted = conn.execute(
        "DELETE FROM dictamesh_search_chunks c USING dictamesh_search_documents d "
        "WHERE c.document_id = d.id AND d.id = ANY(%s) AND d.is_deleted",
        (ids,),
    ).rowcount
    return deleted


# -- queries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    score: float
    vector_rank: int | None = None
    keyword_rank: int | None = None
    vector_score: float | None = None
    keyword_score: float | None = None


@dataclass
class SearchTuning:
    """Knobs of the query path; defaults were tuned on the development split of the eval set."""

    ef_search: int = DEFAULT_EF_SEARCH
    rrf_k: int = DEFAULT_RRF_K
    vector_weight: float = 1.0
    keyword_weight: float = 1.0
    coverage_power: float = 2.0
    candidates: int = 50  # per list in hybrid mode (at least k)


@contextmanager
def _transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    if conn.autocommit:
        with conn.transaction():
            yield
    else:
        yield


_iterative: dict[str, bool] = {}


def _has_iterative_scans(conn: psycopg.Connection[Any]) -> bool:
    key = str(conn.info.dsn)
    if key not in _iterative:
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        version = tuple(int(p) for p in str(row[0]).split(".")[:2]) if row else (0, 0)
        _iterative[key] = version >= (0, 8)
    return _iterative[key]


_ANN = """
SELECT c.id, c.embedding <=> %(q)s::vector AS distance FROM dictamesh_search_chunks c
WHERE {where} ORDER BY {order} LIMIT %(n)s
"""


def vector_candidates(
    conn: psycopg.Connection[Any],
    query_vector: Vectors,
    n: int,
    filters: Filters,
    *,
    ef_search: int = DEFAULT_EF_SEARCH,
) -> list[tuple[int, float]]:
    """(chunk id, cosine similarity) of the `n` nearest chunks passing the filters."""
    where, params = filters.where()
    params = {**params, "q": vector_literal(query_vector), "n": n}
    ann = _ANN.format(where=where, order="c.embedding <=> %(q)s::vector")
    exact = _ANN.format(where=where, order="(c.embedding <=> %(q)s::vector) + 0")
    with _transaction(conn):
        ef = min(HNSW_MAX_EF, max(ef_search, n))
        if not filters.empty and _has_iterative_scans(conn):
            conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
        rows = conn.execute(ann, params).fetchall()
        if len(rows) < n and not filters.empty and ef < HNSW_MAX_EF:
            conn.execute(f"SET LOCAL hnsw.ef_search = {HNSW_MAX_EF}")
            rows = conn.execute(ann, params).fetchall()
        if len(rows) < n and not filters.empty:
            rows = conn.execute(exact, params).fetchall()
    ranked = sorted(((int(i), 1.0 - float(d)) for i, d in rows), key=lambda r: -r[1])
    return ranked[:n]


_LEXEMES = """
SELECT lexeme, cardinality(positions) FROM unnest(to_tsvector('english', %(text)s))
"""

# Term statistics are taken within the filters' scope: what is rare among the chunks searched.
_DOC_FREQUENCY = """
SELECT l, (SELECT count(*) FROM dictamesh_search_chunks c
           WHERE c.search_tsv @@ quote_literal(l)::tsquery AND {where})
FROM unnest(%(lexemes)s::text[]) AS l
"""
_SCOPE_SIZE = "SELECT count(*) FROM dictamesh_search_chunks c WHERE {where}"
_ESTIMATE_ABOVE = 50_000  # unfiltered: the planner's row estimate is good enough from here

# BM25-like: each query term weighs by its inverse document frequency, and within a chunk by
# ts_rank (term frequency, headings weigh more than body text). Postgres' own ts_rank has no
# IDF, so common words ("conversation" in a support corpus) would drown the telling ones.
_KEYWORD = """
WITH terms AS (
    SELECT quote_literal(t)::tsquery AS q, w FROM unnest(%(terms)s::text[], %(idf)s::float8[])
        AS u(t, w)
)
SELECT c.id,
       (SELECT sum(terms.w * ts_rank(c.search_tsv, terms.q)) FROM terms)
       + CASE WHEN c.search_tsv @@ websearch_to_tsquery('english', %(text)s)
              THEN %(all_bonus)s ELSE 0 END AS rank,
       (SELECT sum(terms.w) FILTER (WHERE c.search_tsv @@ terms.q) FROM terms)
       / %(idf_total)s AS coverage
FROM dictamesh_search_chunks c
WHERE c.search_tsv @@ {match} AND {where}
ORDER BY rank DESC, c.id
LIMIT %(n)s
"""
_CANDIDATE_TERMS = 6  # the rarest terms select candidates; every term scores them
_MAX_TERMS = 32


def _uses_operators(query: str) -> bool:
    """Web-search syntax the user meant: a "phrase", a -exclusion or OR."""
    return (
        '"' in query
        or " or " in f" {query.lower()} "
        or any(word.startswith("-") and len(word) > 1 for word in query.split())
    )


def _scope_size(
    conn: psycopg.Connection[Any], filters: Filters, where: str, params: dict[str, Any]
) -> int:
    if filters.empty:
        row = conn.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = 'dictamesh_search_chunks'::regclass"
        ).fetchone()
        if row and int(row[0]) > _ESTIMATE_ABOVE:
            return int(row[0])
    counted = conn.execute(_SCOPE_SIZE.format(where=where), params).fetchone()
    return int(counted[0]) if counted else 0


def keyword_candidates(
    conn: psycopg.Connection[Any], query: str, n: int, filters: Filters
) -> list[tuple[int, float, float]]:
    """(chunk id, text rank, coverage) of the best `n` full-text matches passing the filters.

    Coverage is the share of the query's IDF mass a chunk matches: 1.0 when it has every term.
    """
    lexemes = [row[0] for row in conn.execute(_LEXEMES, {"text": query}).fetchall()]
    if not lexemes:  # stopwords or punctuation only
        return []
    lexemes = lexemes[:_MAX_TERMS]
    where, params = filters.where()
    frequency = dict(
        conn.execute(_DOC_FREQUENCY.format(where=where), {**params, "lexemes": lexemes}).fetchall()
    )
    total = _scope_size(conn, filters, where, params)
    total = max(total, max(frequency.values(), default=1), 1)
    idf = {
        t: math.log(1 + (total - frequency.get(t, 0) + 0.5) / (frequency.get(t, 0) + 0.5))
        for t in lexemes
    }
    present = [t for t in lexemes if frequency.get(t, 0) > 0]
    if not present:
        return []
    if _uses_operators(query):
        match = "websearch_to_tsquery('english', %(text)s)"
    else:
        rarest = sorted(present, key=lambda t: -idf[t])[:_CANDIDATE_TERMS]
        match = (
            "(SELECT string_agg(quote_literal(t), ' | ') "
            "FROM unnest(%(candidates)s::text[]) AS t)::tsquery"
        )
        params["candidates"] = rarest
    sql = _KEYWORD.format(where=where, match=match)
    rows = conn.execute(
        sql,
        {
            **params,
            "text": query,
            "n": n,
            "terms": present,
            "idf": [idf[t] for t in present],
            "all_bonus": 0.5 * sum(idf[t] for t in present) / len(present),
            "idf_total": sum(idf.values()),
        },
    ).fetchall()
    return [(int(i), float(r), float(c or 0.0)) for i, r, c in rows]


def fuse(
    vector: Sequence[tuple[int, float]],
    keyword: Sequence[tuple[int, float, float]],
    *,
    k: int,
    rrf_k: int = DEFAULT_RRF_K,
    vector_weight: float = 1.0,
    keyword_weight: float = 1.0,
    coverage_power: float = 1.0,
) -> list[Hit]:
    """Reciprocal Rank Fusion of the vector and keyword lists.

    Each list adds ``weight / (rrf_k + rank)``. A keyword hit's share is scaled by its coverage
    of the query (``coverage ** coverage_power``): a chunk matching one word of a five-word
    question is weak evidence, one matching all of them strong.
    """
    scores: dict[int, float] = {}
    vranks = {cid: rank for rank, (cid, _) in enumerate(vector, 1)}
    kranks = {cid: rank for rank, (cid, _, _) in enumerate(keyword, 1)}
    vscore = dict(vector)
    kscore = {cid: score for cid, score, _ in keyword}
    coverage = {cid: cover for cid, _, cover in keyword}
    for cid, rank in vranks.items():
        scores[cid] = scores.get(cid, 0.0) + vector_weight / (rrf_k + rank)
    for cid, rank in kranks.items():
        share = coverage[cid] ** coverage_power if coverage_power else 1.0
        scores[cid] = scores.get(cid, 0.0) + keyword_weight * share / (rrf_k + rank)
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [
        Hit(cid, score, vranks.get(cid), kranks.get(cid), vscore.get(cid), kscore.get(cid))
        for cid, score in ordered
    ]


def rank(
    conn: psycopg.Connection[Any],
    query: str,
    query_vector: Vectors | None,
    *,
    k: int,
    mode: Mode,
    filters: Filters,
    tuning: SearchTuning | None = None,
) -> list[Hit]:
    """The best `k` chunks for a checked query (vector needed unless mode is keyword)."""
    tuning = tuning or SearchTuning()
    if mode == "keyword":
        return [
            Hit(cid, score, keyword_rank=i, keyword_score=score)
            for i, (cid, score, _) in enumerate(keyword_candidates(conn, query, k, filters), 1)
        ]
    assert query_vector is not None  # noqa: S101 - callers embed unless keyword
    if mode == "vector":
        return [
            Hit(cid, score, vector_rank=i, vector_score=score)
            for i, (cid, score) in enumerate(
                vector_candidates(conn, query_vector, k, filters, ef_search=tuning.ef_search), 1
            )
        ]
    n = max(k, tuning.candidates)
    vector = vector_candidates(conn, query_vector, n, filters, ef_search=tuning.ef_search)
    keyword = keyword_candidates(conn, query, n, filters)
    return fuse(
        vector,
        keyword,
        k=k,
        rrf_k=tuning.rrf_k,
        vector_weight=tuning.vector_weight,
        keyword_weight=tuning.keyword_weight,
        coverage_power=tuning.coverage_power,
    )


_DETAILS = f"""
WITH q AS (
    SELECT coalesce((SELECT string_agg(quote_literal(lexeme), ' | ')
                     FROM unnest(to_tsvector('english', %(text)s))), '') AS loose_text
)
SELECT c.id, c.document_id, c.ordinal, c.char_start, c.char_end, c.heading, c.content,
       c.token_count, d.entity_id, d.kind, d.domain, d.source_system, d.entity_type,
       d.source_id, d.title, d.url, d.tags, c.updated_at,
       CASE WHEN q.loose_text = '' THEN left(c.content, 240)
            ELSE ts_headline('english', c.content, q.loose_text::tsquery,
                             '{_HEADLINE_OPTIONS}') END AS headline
FROM dictamesh_search_chunks c
JOIN dictamesh_search_documents d ON d.id = c.document_id, q
WHERE c.id = ANY(%(ids)s)
"""  # noqa: S608 - constant options

DETAIL_COLUMNS = (
    "chunk_id",
    "document_id",
    "ordinal",
    "char_start",
    "char_end",
    "heading",
    "chunk",
    "token_count",
    "entity_id",
    "kind",
    "domain",
    "source_system",
    "entity_type",
    "source_id",
    "title",
    "url",
    "tags",
    "updated_at",
    "headline",
)


def details(conn: psycopg.Connection[Any], query: str, hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """The chunks and documents of `hits`, in hit order, with highlighted headlines."""
    if not hits:
        return []
    rows = conn.execute(_DETAILS, {"text": query, "ids": [h.chunk_id for h in hits]}).fetchall()
    by_id = {row[0]: dict(zip(DETAIL_COLUMNS, row, strict=True)) for row in rows}
    return [by_id[h.chunk_id] for h in hits if h.chunk_id in by_id]


def headline_parts(headline: str) -> list[tuple[str, bool]]:
    """Split a headline into (text, highlighted) runs."""
    parts: list[tuple[str, bool]] = []
    rest = headline
    while rest:
        start = rest.find(_HL_START)
        if start < 0:
            parts.append((rest, False))
            break
        if start:
            parts.append((rest[:start], False))
        stop = rest.find(_HL_STOP, start)
        if stop < 0:
            parts.append((rest[start + 1 :], True))
            break
        parts.append((rest[start + 1 : stop], True))
        rest = rest[stop + 1 :]
    return [(text, marked) for text, marked in parts if text]


def snippet_text(headline: str) -> str:
    """The headline with matches wrapped in ``**``."""
    return "".join(f"**{t}**" if marked else t for t, marked in headline_parts(headline))


def snippet_html(headline: str) -> str:
    """The headline as escaped HTML with matches in ``<mark>``."""
    import html

    return "".join(
        f"<mark>{html.escape(t)}</mark>" if marked else html.escape(t)
        for t, marked in headline_parts(headline)
    )


VECTOR_INDEX = "idx_dictamesh_search_chunks_embedding"
# The index migration 0005 creates; a bulk load drops it and builds it again in one pass.
_VECTOR_INDEX_DDL = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_dictamesh_search_chunks_embedding "
    "ON dictamesh_search_chunks USING hnsw (embedding vector_cosine_ops) "
    "WITH (m = 16, ef_construction = 64)"
)


def vector_index_present(conn: psycopg.Connection[Any]) -> bool:
    """Whether the HNSW index exists and is valid (an interrupted build leaves it invalid)."""
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = %s",
        (VECTOR_INDEX,),
    ).fetchone()
    return bool(row and row[0])


def drop_vector_index(conn: psycopg.Connection[Any]) -> None:
    """Drop the HNSW index before a bulk load: maintaining it row by row costs a graph walk each.

    Queries stay correct meanwhile (exact scans), only slower; `build_vector_index` restores it.
    """
    conn.execute(f"DROP INDEX IF EXISTS {VECTOR_INDEX}")


def build_vector_index(postgres_url: str, *, maintenance_work_mem: str = "1GB") -> float:
    """Build the HNSW index in one pass, without blocking writers; return the seconds it took.

    CONCURRENTLY cannot run inside a transaction, so this takes its own autocommit connection.
    A half-built (invalid) index from an interrupted build is dropped first.
    """
    started = time.monotonic()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        if not vector_index_present(conn):  # absent, or left invalid by an interrupted build
            drop_vector_index(conn)
        conn.execute(
            "SELECT set_config('maintenance_work_mem', %s, false)", (maintenance_work_mem,)
        )
        conn.execute(_VECTOR_INDEX_DDL)
        conn.execute("ANALYZE dictamesh_search_chunks")
    return time.monotonic() - started


def index_stats(conn: psycopg.Connection[Any]) -> dict[str, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM dictamesh_search_documents WHERE NOT is_deleted), "
        "(SELECT count(*) FROM dictamesh_search_chunks), "
        "(SELECT count(*) FROM dictamesh_search_embedding_cache)"
    ).fetchone()
    documents, chunks, cached = row if row else (0, 0, 0)
    return {
        "documents": int(documents),
        "chunks": int(chunks),
        "cached_embeddings": int(cached),
        "vector_index": int(vector_index_present(conn)),
    }


def to_json(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, default=str))
