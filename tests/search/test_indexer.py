"""The indexer keeps chunks fresh from entity events; `reindex` backfills and resumes."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.helpers import run_cli
from workbench.search.api import Search
from workbench.search.index import delete_documents, write_documents
from workbench.search.indexer import GROUP, entity_document, entity_text, reindex

pytestmark = pytest.mark.stack


def _wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def _indexed_and_catalogued(handle: Any, timeout: float = 180) -> None:
    """Both consumers must have applied it: the indexer, and the catalog the next step reads."""
    handle.wait(timeout=timeout, group=GROUP)
    handle.wait(timeout=timeout)


def test_entity_text_reads_text_attributes() -> None:
    text = entity_text(
        "Acme",
        "42",
        {
            "description": "Big client",
            "plan": {"name": "Pro"},
            "seats": 3,
            "emails": ["a@x.io", "b@x.io"],
        },
    )
    assert text.startswith("# Acme")
    assert "description: Big client" in text and "plan.name: Pro" in text
    assert "a@x.io, b@x.io" in text and "seats" not in text


def test_events_create_update_and_delete_chunks(workbench: Any, search_workers: Any) -> None:
    system = f"crm-{uuid.uuid4().hex[:6]}"
    search: Search = workbench.search
    only = {"source_system": system}
    handle = workbench.catalog.register(
        "sales",
        system,
        "account",
        "a1",
        display_name="Harbour Freight",
        attributes={"description": "Ships containers across the Baltic sea"},
        tags=["vip"],
    )
    _indexed_and_catalogued(handle)
    hits = search("maritime shipping company", k=3, filters=only)
    assert hits["title"].to_list() == ["Harbour Freight"]
    assert hits["entity_id"][0] and hits["entity_type"][0] == "account"
    assert hits["tags"][0].to_list() == ["vip"]

    _indexed_and_catalogued(
        workbench.catalog.register(
            "sales",
            system,
            "account",
            "a1",
            display_name="Harbour Freight",
            attributes={"description": "Now sells bicycles online"},
        ),
        timeout=60,
    )
    assert len(search("Baltic", k=3, filters=only, mode="keyword")) == 0
    assert search("bicycles", k=3, filters=only, mode="keyword")["title"][0] == "Harbour Freight"

    workbench.catalog.delete(system, "account", "a1").wait(timeout=60, group=GROUP)
    assert len(search("bicycles", k=3, filters=only)) == 0


def test_late_events_do_not_resurrect_deleted_entities(workbench: Any) -> None:
    search: Search = workbench.search
    system = f"late-{uuid.uuid4().hex[:6]}"

    def doc(version: int, text: str) -> Any:
        return entity_document(
            entity_id=uuid.uuid5(uuid.NAMESPACE_URL, system),
            domain="d",
            source_system=system,
            entity_type="t",
            source_id="1",
            display_name="Late",
            attributes={"text": text},
            tags=[],
            version=version,
            updated_at=None,
        )

    def chunks() -> int:
        return len(search("zebra giraffe", k=5, filters={"source_system": system}, mode="keyword"))

    with search.connection() as conn:
        write_documents(conn, [doc(2, "zebra")], embedder=search.embedder, chunker=search.chunker())
    assert chunks() == 1
    with search.connection() as conn:  # an older version arriving late changes nothing
        stats = write_documents(
            conn, [doc(1, "giraffe")], embedder=search.embedder, chunker=search.chunker()
        )
    assert stats.skipped == 1
    with search.connection() as conn:
        delete_documents(conn, {uuid.uuid5(uuid.NAMESPACE_URL, system): 3})
    assert chunks() == 0
    with search.connection() as conn:  # version 2 again (a replay) after the delete: ignored
        write_documents(conn, [doc(2, "zebra")], embedder=search.embedder, chunker=search.chunker())
    assert chunks() == 0


def test_reindex_backfills_and_resumes(workbench: Any, search_workers: Any) -> None:
    search: Search = workbench.search
    system = f"backfill-{uuid.uuid4().hex[:6]}"
    handles = [
        workbench.catalog.register(
            "ops",
            system,
            "runbook",
            str(i),
            display_name=f"Runbook {i}",
            attributes={"body": f"Restart service number {i} safely"},
        )
        for i in range(7)
    ]
    for handle in handles:
        _indexed_and_catalogued(handle)
    only = {"source_system": system}
    assert len(search("restart service", k=10, filters=only)) == 7
    with search.connection() as conn:  # lose the index of this system
        conn.execute("DELETE FROM dictamesh_search_documents WHERE source_system = %s", (system,))
    assert len(search("restart service", k=10, filters=only)) == 0

    first = reindex(search, restart=True, batch_size=2, max_batches=1, progress=False)
    assert not first.complete and not first.resumed
    second = reindex(search, batch_size=50, progress=False)
    assert second.resumed and second.complete
    assert len(search("restart service", k=10, filters=only)) == 7
    third = reindex(search, batch_size=50, progress=False)  # nothing changed since
    assert third.indexed == 0 and third.skipped == third.total


def test_cli_search_and_reindex(workbench: Any) -> None:
    key = f"cli-{uuid.uuid4().hex[:6]}"
    workbench.search.index("# Kiwi\n\nKiwi fruit are rich in vitamin C.", key=key, domain=key)
    result = run_cli("search", "vitamin kiwi", "--k", "2", "--format", "json", "--domain", key)
    assert result.returncode == 0, result.stderr
    import json

    rows = json.loads(result.stdout)
    assert rows[0]["source_id"] == key and "**" in rows[0]["snippet"]
    table = run_cli("search", "vitamin", "--domain", key, "--mode", "keyword")
    assert table.returncode == 0 and "Kiwi" in table.stdout
    bad = run_cli("search", "x", "--mode", "hybird")
    assert bad.returncode == 1 and "Did you mean 'hybrid'" in bad.stderr
    empty = run_cli("search", " ")
    assert empty.returncode == 1 and "empty" in empty.stderr
    done = run_cli("search", "reindex", timeout=300)
    assert done.returncode == 0 and "reindex complete" in done.stdout, done.stderr


def test_bulk_reindex_builds_the_vector_index_once_even_across_an_interruption(
    workbench: Any, workers: Any
) -> None:
    search: Search = workbench.search
    system = f"bulk-{uuid.uuid4().hex[:6]}"
    only = {"source_system": system}
    handles = [
        workbench.catalog.register(
            "ops",
            system,
            "runbook",
            str(i),
            display_name=f"Glacier runbook {i}",
            attributes={"body": f"Thaw the frozen pipeline number {i} before restarting it"},
        )
        for i in range(5)
    ]
    for handle in handles:
        handle.wait(timeout=180)  # in the catalog, which the backfill reads

    interrupted = reindex(search, restart=True, bulk=True, batch_size=2, max_batches=1)
    assert interrupted.bulk and not interrupted.complete
    assert search.stats()["vector_index"] == 0, "the load runs without the HNSW index"

    resumed = reindex(search, batch_size=500, progress=False)  # bulk: the index is missing
    assert resumed.resumed and resumed.complete and resumed.bulk
    assert resumed.index_build_seconds > 0
    assert search.stats()["vector_index"] == 1
    hits = search("frozen pipeline thawing", k=10, filters=only, mode="vector")
    assert sorted(hits["source_id"].to_list()) == [str(i) for i in range(5)]

    small = reindex(search, restart=True, batch_size=500, progress=False)
    assert not small.bulk and small.index_build_seconds == 0, "small runs keep the index"
