"""The sync engine on the real stack: full, incremental, deletions, failure, kill and resume."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from connectors.base.errors import SyncFailedError
from connectors.base.sync import SyncEngine, event_source
from tests.connectors.fakes import ListAdapter, ListConfig, records
from tests.helpers import REPO
from workbench.events.producer import wait_for_all

pytestmark = pytest.mark.stack


def adapter(path: Path, instance: str, **extra: Any) -> ListAdapter:
    return ListAdapter(
        ListConfig(path=path, batch_size=10, domain="test", **extra), instance=instance
    )


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps(rows))


def logged(wb: Any, instance: str) -> list[tuple[str, int]]:
    frame = wb.sql(
        "SELECT subject, entity_version FROM dictamesh_event_log WHERE event_source = :s",
        {"s": event_source(instance)},
    )
    return [(r["subject"], r["entity_version"]) for r in frame.iter_rows(named=True)]


def test_full_incremental_and_deletions(workbench: Any, workers: Any, tmp_path: Path) -> None:
    instance = f"list-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "items.json"
    rows = records(30)
    write(path, rows)
    engine = SyncEngine(workbench.engine, workbench.producer, progress=False)

    first = engine.sync(adapter(path, instance), full=True)
    assert (first.status, first.records_read, first.records_published) == ("succeeded", 30, 30)
    wait_for_all(first.handles, timeout=60)
    item = workbench.catalog.get(instance, "item", "7")
    assert item is not None and item.attributes["name"] == "item 7" and item.domain == "test"
    edges = workbench.catalog.relationships(instance, "item", "7", direction="out")
    assert edges["relationship_type"].to_list() == ["member_of"]
    assert edges["to_source_id"].to_list() == ["1"]

    # Two changes and one new record: only they are published.
    rows[3] = {**rows[3], "name": "renamed", "updated_at": "2026-02-01T00:00:00Z"}
    rows[5] = {**rows[5], "group": 2, "updated_at": "2026-02-01T00:00:01Z"}
    rows.append({"id": 99, "updated_at": "2026-02-02T00:00:00Z", "name": "new", "group": 0})
    write(path, rows)
    second = engine.sync(adapter(path, instance))
    assert second.mode == "incremental"
    assert second.records_published == 3
    assert second.records_read <= 4  # from the committed cursor on (inclusive)
    wait_for_all(second.handles, timeout=60)
    renamed = workbench.catalog.get(instance, "item", "3")
    assert renamed is not None and renamed.version == 2 and renamed.display_name == "renamed"
    moved = workbench.catalog.relationships(instance, "item", "5", direction="out")
    assert moved["to_source_id"].to_list() == ["2"]

    # Nothing changed: nothing published.
    assert engine.sync(adapter(path, instance)).records_published == 0

    # Five records vanish; a full sync deletes them from the catalog.
    write(path, rows[5:])
    third = engine.sync(adapter(path, instance), full=True)
    assert third.records_deleted == 5 and third.records_published == 5
    wait_for_all(third.handles, timeout=60)
    gone = workbench.catalog.get(instance, "item", "0")
    assert gone is not None and gone.is_deleted and gone.version == 2
    assert not workbench.catalog.get(instance, "item", "10").is_deleted
    state = workbench.connectors.state(instance)
    assert json.loads(state["cursor"][0]) == "2026-02-02T00:00:00Z"


def test_failure_leaves_a_clear_failed_state_and_resumes(
    workbench: Any, workers: Any, tmp_path: Path
) -> None:
    instance = f"list-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "items.json"
    write(path, records(35))
    engine = SyncEngine(workbench.engine, workbench.producer, progress=False)
    with pytest.raises(SyncFailedError) as caught:
        engine.sync(adapter(path, instance, fail_after=25))
    assert "after 20 records" in str(caught.value) and "transient" in str(caught.value)
    run = workbench.connectors.runs(instance).row(0, named=True)
    assert run["status"] == "failed" and "went away" in run["error"]
    assert run["records_read"] == 20
    # Nothing half-applied: the partial third batch was never published.
    published = workbench.sql(
        "SELECT count(*) AS n FROM dictamesh_connector_records WHERE instance = :i",
        {"i": instance},
    )["n"][0]
    assert published == 20

    resumed = engine.sync(adapter(path, instance))
    assert resumed.resumed and resumed.status == "succeeded"
    assert resumed.run_id == uuid.UUID(run["run_id"])
    wait_for_all(resumed.handles, timeout=60)
    events = logged(workbench, instance)
    assert len(events) == 35 == len(set(events))


KILL_SCRIPT = """
import os, signal, sys, json
from pathlib import Path
sys.path.insert(0, {repo!r})
from workbench.client import connect
from connectors.base.sync import SyncEngine
from tests.connectors.fakes import ListAdapter, ListConfig

mode, path, instance = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
wb = connect(start=False)
engine = SyncEngine(wb.engine, wb.producer, progress=False)
config = dict(path=path, batch_size=10, domain="test")
if mode == "while-reading":
    config["kill_after"] = 25
else:  # killed after batch 3 was published and acknowledged, before its commit
    original = SyncEngine._commit
    calls = []
    def commit(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)
    SyncEngine._commit = commit
engine.sync(ListAdapter(ListConfig(**config), instance=instance), full=True)
"""


@pytest.mark.parametrize("moment", ["while-reading", "after-publish-before-commit"])
def test_killed_sync_resumes_without_duplicates(
    workbench: Any, workers: Any, tmp_path: Path, moment: str
) -> None:
    instance = f"list-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "items.json"
    write(path, records(50))
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT.format(repo=str(REPO))))
    killed = subprocess.run(
        [sys.executable, str(script), moment, str(path), instance],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = workbench.connectors.runs(instance).row(0, named=True)
    assert run["status"] == "running"  # nobody could record the end
    assert run["records_read"] == 20
    state = workbench.connectors.state(instance)
    committed = json.loads(state["full_cursor"][0])
    assert committed == records(50)[19]["updated_at"]

    engine = SyncEngine(workbench.engine, workbench.producer, progress=False)
    resumed = engine.sync(adapter(path, instance), full=True)
    assert resumed.resumed and resumed.run_id == uuid.UUID(run["run_id"])
    # 20 before the kill, then 31 from the cursor on: the record at the (inclusive) cursor is
    # read again and, unchanged, publishes nothing.
    assert resumed.records_read == 51 and resumed.records_deleted == 0
    assert resumed.records_published == 50
    # The resumed run read from the committed cursor, not from the beginning.
    cursors = [json.loads(line) for line in path.with_suffix(".calls").read_text().splitlines()]
    assert cursors == [None, committed]
    wait_for_all(resumed.handles, timeout=60)
    events = logged(workbench, instance)
    assert len(events) == 50, "each record applied exactly once"
    assert {version for _, version in events} == {1}
    count = workbench.catalog.entities(source_system=instance, limit=1000).height
    assert count == 50


def test_one_sync_per_instance_at_a_time(workbench: Any, tmp_path: Path) -> None:
    from connectors.base.errors import SyncInProgressError

    instance = f"list-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "items.json"
    write(path, records(3))
    engine = SyncEngine(workbench.engine, workbench.producer, progress=False)
    with engine._lock(instance), pytest.raises(SyncInProgressError):
        engine.sync(adapter(path, instance))
