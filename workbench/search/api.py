"""`wb.search`: semantic, keyword and hybrid search over the catalog and free documents.

>>> wb.search("refund a customer's invoice", k=5)               # Polars frame of hits
>>> wb.search("pii", mode="keyword", filters={"domain": "crm"})
>>> ctx = wb.search.context("How do I reopen a conversation?", max_tokens=800)
>>> print(ctx.text)                                             # passages with [n] citations
>>> wb.search.index(open("README.md").read(), key="README.md")  # a free document
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from workbench.search.chunker import Chunker, Format
from workbench.search.embedder import Embedder, Vectors, get_embedder
from workbench.search.index import (
    Document,
    Filters,
    Mode,
    SearchError,
    SearchTuning,
    WriteStats,
    check_query,
    delete_documents,
    details,
    document_id,
    index_stats,
    parse_filters,
    rank,
    snippet_html,
    snippet_text,
    write_documents,
)

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy import Engine

    from workbench.search.indexer import ReindexResult

RESULT_SCHEMA: dict[str, Any] = {
    "rank": pl.Int64,
    "score": pl.Float64,
    "entity_id": pl.String,
    "document_id": pl.String,
    "kind": pl.String,
    "domain": pl.String,
    "source_system": pl.String,
    "entity_type": pl.String,
    "source_id": pl.String,
    "title": pl.String,
    "heading": pl.String,
    "chunk": pl.String,
    "snippet": pl.String,
    "snippet_html": pl.String,
    "char_start": pl.Int64,
    "char_end": pl.Int64,
    "tags": pl.List(pl.String),
    "url": pl.String,
    "updated_at": pl.Datetime("us", "UTC"),
    "vector_rank": pl.Int64,
    "keyword_rank": pl.Int64,
    "vector_score": pl.Float64,
    "keyword_score": pl.Float64,
}


class SearchFrame(pl.DataFrame):
    """The hits of one search: a Polars DataFrame with a readable HTML view in Jupyter."""

    query: str = ""
    mode: str = ""

    @classmethod
    def wrap(cls, frame: pl.DataFrame, query: str, mode: str) -> SearchFrame:
        wrapped = cls.__new__(cls)
        wrapped._df = frame._df
        wrapped.query = query
        wrapped.mode = mode
        return wrapped

    def _repr_html_(self, **kwargs: Any) -> str:
        try:
            return render_hits_html(self, self.query, self.mode)
        except Exception:  # a repr never raises: fall back on the plain table
            return str(pl.DataFrame._repr_html_(self, **kwargs))


def citation(row: Mapping[str, Any]) -> str:
    """How a hit is cited: its entity identity, or its document key and title."""
    if row.get("kind") == "entity":
        ident = f"{row.get('source_system')}/{row.get('entity_type')}/{row.get('source_id')}"
        name = row.get("title")
        return f"{name} ({ident})" if name else ident
    name = row.get("title") or row.get("source_id") or row.get("url") or row.get("document_id")
    return str(name)


def render_hits_html(frame: pl.DataFrame, query: str, mode: str) -> str:
    items = []
    for row in frame.iter_rows(named=True):
        where = " / ".join(
            html.escape(str(part)) for part in (row.get("domain"), row.get("heading")) if part
        )
        items.append(
            "<li style='margin-bottom:.6em'>"
            f"<b>{html.escape(citation(row))}</b> "
            f"<span style='color:#777'>score {row['score']:.4f}"
            f"{' · ' + where if where else ''}</span><br>"
            f"<span>{row['snippet_html']}</span></li>"
        )
    head = (
        f"<div><b>{len(frame)} hit(s)</b> for <code>{html.escape(query)}</code> "
        f"({html.escape(mode)})</div>"
    )
    return head + "<ol>" + "".join(items) + "</ol>"


@dataclass
class SearchContext:
    """RAG-ready context: numbered passages and what each number cites."""

    question: str
    text: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return (
            f"SearchContext({len(self.citations)} passage(s), {self.tokens} tokens, "
            f"question={self.question[:60]!r})"
        )

    def _repr_markdown_(self) -> str:
        return self.text

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.citations)


class Search:
    """Index documents and search them; `wb.search(...)` is a search."""

    def __init__(
        self,
        engine: Engine,
        *,
        model: str = "all-MiniLM-L6-v2",
        embedder: Embedder | None = None,
        tuning: SearchTuning | None = None,
    ) -> None:
        self.engine = engine
        self._model = model
        self._embedder = embedder
        self.tuning = tuning or SearchTuning()
        self._query_cache: OrderedDict[tuple[str, str], Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Search model={self._model!r} modes=vector|keyword|hybrid>"

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self._model)
        return self._embedder

    def chunker(self) -> Chunker:
        embedder = self.embedder
        return Chunker(embedder.count_tokens, split_tokens=embedder.split_tokens)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled psycopg connection in a transaction committed on success."""
        raw = self.engine.raw_connection()
        try:
            conn: psycopg.Connection[Any] = raw.driver_connection  # type: ignore[assignment]
            yield conn
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()

    @property
    def postgres_url(self) -> str:
        """The index database as a libpq URL, for work that needs its own connection."""
        return self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def embed_query(self, query: str) -> Vectors:
        key = (self.embedder.name, query)
        with self._lock:
            cached = self._query_cache.get(key)
            if cached is not None:
                self._query_cache.move_to_end(key)
                return cached
        vector: Vectors = self.embedder.embed([query])[0]
        with self._lock:
            self._query_cache[key] = vector
            while len(self._query_cache) > 256:
                self._query_cache.popitem(last=False)
        return vector

    # -- queries --------------------------------------------------------------------------
    def __call__(
        self,
        query: str,
        k: int = 10,
        filters: Mapping[str, Any] | Filters | None = None,
        mode: Mode = "hybrid",
    ) -> SearchFrame:
        """The `k` best chunks for `query` as a Polars frame (see RESULT_SCHEMA)."""
        text, k, mode = check_query(query, k, mode)
        checked = parse_filters(filters)
        vector = None if mode == "keyword" else self.embed_query(text)
        with self.connection() as conn:
            hits = rank(conn, text, vector, k=k, mode=mode, filters=checked, tuning=self.tuning)
            rows = details(conn, text, hits)
        by_id = {h.chunk_id: h for h in hits}
        records = []
        for position, row in enumerate(rows, 1):
            hit = by_id[row["chunk_id"]]
            records.append(
                {
                    "rank": position,
                    "score": hit.score,
                    "entity_id": str(row["entity_id"]) if row["entity_id"] else None,
                    "document_id": str(row["document_id"]),
                    "kind": row["kind"],
                    "domain": row["domain"],
                    "source_system": row["source_system"],
                    "entity_type": row["entity_type"],
                    "source_id": row["source_id"],
                    "title": row["title"],
                    "heading": row["heading"],
                    "chunk": row["chunk"],
                    "snippet": snippet_text(row["headline"] or ""),
                    "snippet_html": snippet_html(row["headline"] or ""),
                    "char_start": row["char_start"],
                    "char_end": row["char_end"],
                    "tags": list(row["tags"] or []),
                    "url": row["url"],
                    "updated_at": row["updated_at"],
                    "vector_rank": hit.vector_rank,
                    "keyword_rank": hit.keyword_rank,
                    "vector_score": hit.vector_score,
                    "keyword_score": hit.keyword_score,
                }
            )
        frame = pl.DataFrame(records, schema=RESULT_SCHEMA, orient="row")
        return SearchFrame.wrap(frame, text, mode)

    def context(
        self,
        question: str,
        max_tokens: int = 1500,
        *,
        k: int = 20,
        filters: Mapping[str, Any] | Filters | None = None,
        mode: Mode = "hybrid",
    ) -> SearchContext:
        """The best passages for `question`, numbered, within `max_tokens` of the model's tokens.

        Each passage starts with ``[n] <citation>``; `citations[n-1]` names the entity (or
        document) and position it came from. Overlapping chunks of one document are merged.
        """
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 16:
            raise SearchError(
                f"max_tokens must be an integer of at least 16, got {max_tokens!r}.",
                remedy="pass e.g. max_tokens=1500.",
            )
        hits = self(question, k=k, filters=filters, mode=mode)
        count = self.embedder.count_tokens
        blocks: list[str] = []
        citations: list[dict[str, Any]] = []
        used = 0
        taken: dict[str, list[tuple[int, int]]] = {}
        for row in hits.iter_rows(named=True):
            spans = taken.setdefault(row["document_id"], [])
            if any(s <= row["char_start"] and row["char_end"] <= e for s, e in spans):
                continue
            number = len(citations) + 1
            header = f"[{number}] {citation(row)}"
            if row["heading"]:
                header += f" — {row['heading']}"
            block = f"{header}\n{row['chunk'].strip()}"
            cost = count(block) + 2
            if used + cost > max_tokens:
                continue
            used += cost
            spans.append((row["char_start"], row["char_end"]))
            blocks.append(block)
            citations.append(
                {
                    "n": number,
                    "citation": citation(row),
                    "entity_id": row["entity_id"],
                    "document_id": row["document_id"],
                    "kind": row["kind"],
                    "source_system": row["source_system"],
                    "entity_type": row["entity_type"],
                    "source_id": row["source_id"],
                    "title": row["title"],
                    "heading": row["heading"],
                    "char_start": row["char_start"],
                    "char_end": row["char_end"],
                    "score": row["score"],
                }
            )
        return SearchContext(question, "\n\n".join(blocks), citations, used)

    # -- documents ------------------------------------------------------------------------
    def index(
        self,
        text: str | bytes | Path,
        *,
        key: str | None = None,
        title: str | None = None,
        format: Format | None = None,
        domain: str | None = None,
        source_system: str | None = None,
        entity_type: str | None = None,
        tags: Sequence[str] = (),
        url: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        updated_at: datetime | None = None,
    ) -> WriteStats:
        """Index a free document (Markdown, plain text or HTML; str, bytes or a file path)."""
        if isinstance(text, Path):
            key = key or str(text)
            suffix = text.suffix.lower()
            format = format or (
                "html" if suffix in {".html", ".htm"} else "plain" if suffix == ".txt" else None
            )
            text = text.read_bytes()
        if key is None:
            raise SearchError(
                "A free document needs a key to be indexed (and later updated or removed).",
                remedy="pass key='a stable name', e.g. the file path or URL.",
            )
        document = Document(
            text=text,
            key=key,
            title=title,
            format=format or "markdown",
            domain=domain,
            source_system=source_system,
            entity_type=entity_type or "document",
            source_id=key,
            tags=tuple(tags),
            url=url,
            metadata=dict(metadata or {}),
            updated_at=updated_at,
        )
        return self.index_documents([document])

    def index_documents(
        self, documents: Sequence[Document], *, progress: bool | None = None
    ) -> WriteStats:
        """Index many documents in one transaction."""
        with self.connection() as conn:
            return write_documents(
                conn, documents, embedder=self.embedder, chunker=self.chunker(), progress=progress
            )

    def remove(self, key: str) -> int:
        """Remove a free document indexed under `key`; returns the chunks removed."""
        with self.connection() as conn:
            return delete_documents(conn, {document_id(key): 0}, tombstone=False)

    def reindex(
        self, *, restart: bool = False, batch_size: int = 200, bulk: bool | None = None
    ) -> ReindexResult:
        """Backfill the index from the catalog; resumes where an interrupted run stopped.

        `bulk` drops the HNSW index for the load and builds it once at the end (by default when
        at least 20,000 entities are to be indexed).
        """
        from workbench.search.indexer import reindex

        return reindex(self, restart=restart, batch_size=batch_size, bulk=bulk)

    def stats(self) -> dict[str, int]:
        """Documents, chunks and cached embeddings in the index, and whether the HNSW index
        is in place (0 while a bulk load runs)."""
        with self.connection() as conn:
            return index_stats(conn)
