"""Index and query against the real embedded Postgres + pgvector: modes, filters, bad input."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest

from tests.search.conftest import CountingEmbedder
from workbench.errors import UnknownNameError
from workbench.search.api import Search, SearchFrame
from workbench.search.index import (
    Document,
    SearchError,
    copy_chunks,
    parse_filters,
    vector_candidates,
)

pytestmark = pytest.mark.stack

DOCS = {
    "billing.md": "# Refunds\n\nTo refund a customer, open the invoice and issue a credit note for "
    "the paid amount. Refunds return money to the original payment method.",
    "inbox.md": "# Conversations\n\nA conversation can be resolved, reopened or snoozed. Agents "
    "reply to customers from the shared inbox.",
    "contacts.md": "# Contacts\n\nContacts hold a person's name, email address and phone number. "
    "Merge duplicate contacts to keep one profile.",
    "webhooks.md": "# Webhooks\n\nWebhooks deliver an HTTP POST to your URL whenever a message is "
    "created, so external systems hear about events in real time.",
    "teams.md": "# Teams\n\nGroup agents into teams and assign conversations to a team for "
    "routing by skill or language.",
}


@pytest.fixture(scope="module")
def corpus(search: Search) -> str:
    domain = f"docs-{uuid.uuid4().hex[:8]}"
    for key, text in DOCS.items():
        search.index(text, key=f"{domain}/{key}", title=key, domain=domain, tags=["guide"])
    return domain


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_each_mode_finds_the_right_document(search: Search, corpus: str, mode: str) -> None:
    hits = search(
        "how do I give a customer their money back", k=3, filters={"domain": corpus}, mode=mode
    )  # type: ignore[arg-type]
    if mode == "keyword":  # words must match: "customer" and "money" do
        assert hits["title"][0] == "billing.md"
    else:
        assert hits["title"][0] == "billing.md"
    assert isinstance(hits, SearchFrame) and isinstance(hits, pl.DataFrame)
    assert hits["rank"].to_list() == list(range(1, len(hits) + 1))
    assert hits.columns[:4] == ["rank", "score", "entity_id", "document_id"]


def test_snippets_highlight_the_query_terms(search: Search, corpus: str) -> None:
    hits = search("webhooks POST", k=1, filters={"domain": corpus})
    assert "**Webhooks**" in hits["snippet"][0] or "**POST**" in hits["snippet"][0]
    assert "<mark>" in hits["snippet_html"][0]
    html = hits._repr_html_()
    assert "<mark>" in html and "webhooks.md" in html


def test_keyword_phrase_and_exclusion(search: Search, corpus: str) -> None:
    hits = search('"shared inbox"', k=5, filters={"domain": corpus}, mode="keyword")
    assert hits["title"][0] == "inbox.md"
    hits = search("conversations -teams", k=5, filters={"domain": corpus}, mode="keyword")
    assert hits["title"][0] == "inbox.md"


def test_hybrid_keeps_keyword_only_and_vector_only_hits(search: Search, corpus: str) -> None:
    hits = search("snoozed", k=5, filters={"domain": corpus})
    assert hits["title"][0] == "inbox.md"
    assert hits["keyword_rank"][0] == 1


def test_tags_and_time_filters(search: Search, corpus: str) -> None:
    assert len(search("refund", k=5, filters={"domain": corpus, "tags": ["guide"]})) == 5
    assert len(search("refund", k=5, filters={"domain": corpus, "tags": "nope"})) == 0
    future = datetime.now(UTC) + timedelta(days=1)
    assert len(search("refund", k=5, filters={"domain": corpus, "since": future})) == 0
    assert len(search("refund", k=5, filters={"domain": corpus, "until": future})) == 5
    assert (
        len(search("refund", k=5, filters={"domain": corpus, "since": "2000-01-01T00:00:00+00:00"}))
        == 5
    )


def test_context_cites_its_sources_within_budget(search: Search, corpus: str) -> None:
    ctx = search.context("How are refunds paid?", max_tokens=120, filters={"domain": corpus})
    assert ctx.citations and ctx.citations[0]["title"] == "billing.md"
    assert ctx.text.startswith("[1] billing.md")
    assert ctx.tokens <= 120
    assert search.embedder.count_tokens(ctx.text) <= 120
    assert "passage" in repr(ctx)
    with pytest.raises(SearchError, match="max_tokens"):
        search.context("x", max_tokens=0)


def test_unchanged_text_is_never_embedded_twice(workbench: Any, counting: CountingEmbedder) -> None:
    search = Search(workbench.engine, embedder=counting)
    key = f"cache-{uuid.uuid4().hex}"
    text = "# Cache\n\nFirst paragraph about caching.\n\nSecond paragraph about hashing."
    first = search.index(text, key=key)
    assert first.documents == 1 and counting.embedded
    counting.embedded.clear()
    again = search.index(text, key=key)
    assert again.skipped == 1 and counting.embedded == []
    # same chunk text under another key: the cache answers, the model is not called
    other = search.index(text, key=key + "-copy")
    assert other.chunks >= 1 and counting.embedded == []
    assert search.remove(key) >= 1
    assert search.remove(key) == 0


def test_non_utf8_documents_are_indexed(search: Search) -> None:
    domain = f"enc-{uuid.uuid4().hex[:6]}"
    search.index("Le café est prêt.\x00".encode("cp1252"), key=f"{domain}/a", domain=domain)
    search.index(b"\xff\xfeh\x00\xe9\x00l\x00l\x00o\x00", key=f"{domain}/b", domain=domain)
    search.index(bytes(range(256)), key=f"{domain}/c", domain=domain, format="plain")
    html = "<h1>Caf\xe9 menu</h1><p>Espresso and tea.</p>".encode("latin-1")
    search.index(html, key=f"{domain}/d", domain=domain, format="html")
    hits = search("café", k=4, filters={"domain": domain}, mode="keyword")
    assert set(hits["source_id"].to_list()) >= {f"{domain}/a", f"{domain}/d"}
    assert hits.filter(pl.col("source_id") == f"{domain}/d")["title"][0] == "Café menu"


@pytest.mark.parametrize(
    "query",
    [
        "'; DROP TABLE dictamesh_search_chunks; --",
        '"unterminated quote',
        "a & b | !c <-> d:*",
        "%_\\ \\x00 $$ $1 %(text)s {where}",
        "OR AND NOT -",
        "the a of",  # stopwords only: no keyword terms at all
        "🙂 数据",
    ],
)
def test_metacharacters_are_just_text(search: Search, corpus: str, query: str) -> None:
    for mode in ("vector", "keyword", "hybrid"):
        hits = search(query, k=3, filters={"domain": corpus}, mode=mode)  # type: ignore[arg-type]
        assert len(hits) <= 3
    assert search.stats()["chunks"] > 0  # the table is still there


def test_bad_queries_are_clear_errors(search: Search) -> None:
    with pytest.raises(SearchError, match="empty"):
        search("")
    with pytest.raises(SearchError, match="empty"):
        search("   \n\t")
    with pytest.raises(SearchError, match="100,000 characters"):
        search("x" * 100_000)
    with pytest.raises(SearchError, match="k must be"):
        search("x", k=0)
    with pytest.raises(UnknownNameError, match="Did you mean 'domain'"):
        search("x", filters={"domian": "crm"})
    with pytest.raises(UnknownNameError, match="Did you mean 'hybrid'"):
        search("x", mode="hybird")  # type: ignore[arg-type]
    with pytest.raises(SearchError, match="timezone"):
        search("x", filters={"since": datetime(2026, 1, 1)})
    with pytest.raises(SearchError, match="non-empty list"):
        search("x", filters={"tags": []})
    with pytest.raises(SearchError, match="not before"):
        parse_filters({"since": "2026-02-01T00:00:00+00:00", "until": "2026-01-01T00:00:00+00:00"})


def test_selective_filters_still_return_a_full_k(workbench: Any, search: Search) -> None:
    """3,000 chunks, 15 of them in a rare domain: HNSW alone would return too few."""
    rng = np.random.default_rng(7)
    common, rare = f"common-{uuid.uuid4().hex[:6]}", f"rare-{uuid.uuid4().hex[:6]}"
    vectors = rng.normal(size=(3000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = datetime.now(UTC)
    with search.connection() as conn:
        ids = []
        for i in range(3000):
            doc = Document(text="x", key=f"{common}/{i}")
            ids.append(doc.id)
        conn.execute(
            "INSERT INTO dictamesh_search_documents (id, kind, domain) "
            "SELECT i, 'document', %s FROM unnest(%s::uuid[]) AS i",
            (common, ids),
        )
        rows = [
            (
                ids[i],
                0,
                0,
                1,
                "",
                f"synthetic {i}",
                3,
                vectors[i],
                rare if i % 200 == 0 else common,
                "synthetic",
                "doc",
                [],
                now,
            )
            for i in range(3000)
        ]
        copy_chunks(conn, rows)
    query = vectors[1] + 0.01
    query /= np.linalg.norm(query)
    with search.connection() as conn:
        hits = vector_candidates(conn, query, 10, parse_filters({"domain": rare}), ef_search=40)
        exact = conn.execute(
            "SELECT id FROM dictamesh_search_chunks WHERE domain = %s "
            "ORDER BY (embedding <=> %s::vector) + 0 LIMIT 10",
            (rare, "[" + ",".join(map(str, query.tolist())) + "]"),
        ).fetchall()
    assert len(hits) == 10
    assert [h[0] for h in hits] == [r[0] for r in exact]
    with search.connection() as conn:
        conn.execute("DELETE FROM dictamesh_search_documents WHERE id = ANY(%s)", (ids,))
