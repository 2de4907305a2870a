"""The YAML-declared REST connector against a local server: pagination, auth, faults, sync."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from connectors.base.config import build_config
from connectors.base.errors import ConnectorConfigError, SyncFailedError
from connectors.base.sync import SyncEngine
from connectors.rest import RestConfig, RestConnector
from tests.connectors.server import Reply, ScriptedServer, Seen
from workbench.events.producer import wait_for_all

CUSTOMERS = [
    {"id": i, "name": f"customer {i}", "company_id": i % 2, "updated_at": f"2026-03-{i + 1:02d}"}
    for i in range(5)
]


def spec(server: ScriptedServer, **endpoint: Any) -> dict[str, Any]:
    return {
        "base_url": server.url,
        "auth": {"type": "api_key", "header": "X-API-Key"},
        "retries": 3,
        "endpoints": [{"name": "customers", "path": "/customers", **endpoint}],
    }


def make(server: ScriptedServer, instance: str = "crm", **endpoint: Any) -> RestConnector:
    config = RestConfig(spec=spec(server, **endpoint), api_key="k-1", batch_size=2)
    return RestConnector(config, instance=instance)


def page_handler(seen: Seen) -> Reply:
    page = int(seen.query["page"][0])
    size = int(seen.query["per_page"][0])
    since = seen.query.get("updated_since", [""])[0]
    rows = [c for c in CUSTOMERS if c["updated_at"] >= since]
    return Reply(200, {"data": {"items": rows[(page - 1) * size : page * size]}})


def test_page_pagination_record_path_and_auth(http_server: ScriptedServer) -> None:
    http_server.route("GET", "/customers", page_handler)
    rest = make(
        http_server,
        record_path="data.items",
        pagination={"type": "page", "size": 2},
        display_field="name",
        links=[{"field": "company_id", "type": "works_at", "entity_type": "company"}],
    )
    stream = rest.streams()[0]
    rows = list(rest.read(stream))
    assert [r["id"] for r in rows] == [0, 1, 2, 3, 4]
    assert [s.query["page"] for s in http_server.calls("/customers")] == [["1"], ["2"], ["3"]]
    assert all(s.headers["x-api-key"] == "k-1" for s in http_server.requests)
    record = rest.map_record(stream, rows[3])
    assert (record.source_id, record.display_name) == ("3", "customer 3")
    assert record.links[0].entity_type == "company" and record.links[0].source_id == "1"


def test_offset_pagination(http_server: ScriptedServer) -> None:
    def handler(seen: Seen) -> Reply:
        offset, limit = int(seen.query["offset"][0]), int(seen.query["limit"][0])
        return Reply(200, CUSTOMERS[offset : offset + limit])

    http_server.route("GET", "/customers", handler)
    rest = make(http_server, pagination={"type": "offset", "size": 3})
    assert [r["id"] for r in rest.read(rest.streams()[0])] == [0, 1, 2, 3, 4]
    offsets = [s.query["offset"][0] for s in http_server.calls("/customers")]
    assert offsets == ["0", "3"]


def test_cursor_pagination(http_server: ScriptedServer) -> None:
    def handler(seen: Seen) -> Reply:
        start = int(seen.query.get("after", ["0"])[0])
        rows = CUSTOMERS[start : start + 2]
        following = str(start + 2) if start + 2 < len(CUSTOMERS) else None
        return Reply(200, {"results": rows, "meta": {"next": following}})

    http_server.route("GET", "/customers", handler)
    rest = make(
        http_server,
        record_path="results",
        pagination={"type": "cursor", "cursor_param": "after", "cursor_path": "meta.next"},
    )
    assert [r["id"] for r in rest.read(rest.streams()[0])] == [0, 1, 2, 3, 4]
    assert len(http_server.calls("/customers")) == 3


def test_link_header_pagination(http_server: ScriptedServer) -> None:
    def handler(seen: Seen) -> Reply:
        page = int(seen.query.get("p", ["1"])[0])
        headers = {"Link": f'</customers?p={page + 1}>; rel="next"'} if page < 3 else {}
        return Reply(200, CUSTOMERS[(page - 1) * 2 : page * 2], headers)

    http_server.route("GET", "/customers", handler)
    rest = make(http_server, pagination={"type": "link"})
    assert [r["id"] for r in rest.read(rest.streams()[0])] == [0, 1, 2, 3, 4]


def test_incremental_sends_the_cursor_and_sorts(http_server: ScriptedServer) -> None:
    shuffled = [CUSTOMERS[i] for i in (3, 0, 4, 1, 2)]
    http_server.route(
        "GET",
        "/customers",
        lambda seen: Reply(
            200,
            [c for c in shuffled if c["updated_at"] >= seen.query.get("since", [""])[0]],
        ),
    )
    rest = make(http_server, incremental={"field": "updated_at", "param": "since"})
    stream = rest.streams()[0]
    assert stream.cursor_field == "updated_at"
    assert [r["id"] for r in rest.read(stream)] == [0, 1, 2, 3, 4]  # sorted for safe cursors
    assert [r["id"] for r in rest.read(stream, cursor="2026-03-04")] == [3, 4]
    assert http_server.requests[-1].query["since"] == ["2026-03-04"]


def test_spec_errors_name_the_field(http_server: ScriptedServer) -> None:
    broken = spec(http_server, pagination={"type": "pages"})
    with pytest.raises(ConnectorConfigError) as caught:
        RestConfig(spec=broken)
    message = str(caught.value)
    assert "endpoints.0.pagination.type" in message and "'pages'" in message
    with pytest.raises(ConnectorConfigError, match="no api_key"):
        RestConnector(RestConfig(spec=spec(http_server)), instance="crm").http  # noqa: B018
    with pytest.raises(ConnectorConfigError, match="does not exist"):
        build_config(RestConfig, "crm", {"spec": "/nowhere/spec.yaml"})


def test_spec_from_a_yaml_file(http_server: ScriptedServer, tmp_path: Any) -> None:
    import yaml

    path = tmp_path / "crm.yaml"
    path.write_text(yaml.safe_dump(spec(http_server)))
    http_server.route("GET", "/customers", lambda seen: Reply(200, CUSTOMERS))
    rest = RestConnector(
        build_config(RestConfig, "crm", {"spec": str(path), "api_key": "k"}), instance="crm"
    )
    assert len(list(rest.read(rest.streams()[0]))) == 5


@pytest.mark.stack
def test_sync_faults_then_recovery(
    http_server: ScriptedServer, workbench: Any, workers: Any
) -> None:
    """429 and 5xx are retried; a source that stays down leaves a clear failed run and nothing
    half-applied; once it is back the sync resumes and completes."""
    instance = f"crm-{uuid.uuid4().hex[:8]}"
    engine = SyncEngine(workbench.engine, workbench.producer, progress=False)
    state: dict[str, Any] = {"down": False, "glitches": []}

    def handler(seen: Seen) -> Reply:
        if state["glitches"]:
            return state["glitches"].pop(0)  # type: ignore[no-any-return]
        page = int(seen.query["page"][0])
        if state["down"] and page == 2:
            return Reply(503, {"error": "maintenance"})
        return page_handler(seen)

    http_server.route("GET", "/customers", handler)

    def connector() -> RestConnector:
        return make(
            http_server,
            instance,
            record_path="data.items",
            pagination={"type": "page", "size": 2},
            incremental={"field": "updated_at", "param": "updated_since", "sorted": True},
            links=[{"field": "company_id", "type": "works_at", "entity_type": "company"}],
        )

    state["down"] = True
    with pytest.raises(SyncFailedError) as caught:
        engine.sync(connector())
    assert "503" in str(caught.value) and "transient" in str(caught.value)
    run = workbench.connectors.runs(instance).row(0, named=True)
    assert run["status"] == "failed" and "503" in run["error"]
    assert run["records_published"] == 2  # page 1 committed as one batch; nothing else

    state["down"] = False
    state["glitches"] = [Reply(429, {}, {"Retry-After": "1"}), Reply(502, {})]
    done = engine.sync(connector())  # a new process, say: its circuit breaker starts closed
    assert state["glitches"] == []  # both were met, and retried
    assert done.resumed and done.status == "succeeded"
    assert http_server.requests[-1].query.get("updated_since") == [CUSTOMERS[1]["updated_at"]]
    wait_for_all(done.handles, timeout=60)
    frame = workbench.catalog.entities(source_system=instance, limit=100)
    assert sorted(frame["source_id"].to_list()) == ["0", "1", "2", "3", "4"]
    edges = workbench.catalog.relationships(instance, "customers", "3", direction="out")
    assert edges["relationship_type"].to_list() == ["works_at"]
    assert json.loads(workbench.connectors.state(instance)["cursor"][0]) == "2026-03-05"


@pytest.mark.stack
def test_malformed_json_fails_cleanly(http_server: ScriptedServer, workbench: Any) -> None:
    instance = f"crm-{uuid.uuid4().hex[:8]}"
    http_server.script("GET", "/customers", Reply(200, "{'not': json"))
    engine = SyncEngine(workbench.engine, workbench.producer, progress=False)
    with pytest.raises(SyncFailedError, match="not JSON"):
        engine.sync(make(http_server, instance))
    assert len(http_server.calls("/customers")) == 3  # retried, then gave up
    run = workbench.connectors.runs(instance).row(0, named=True)
    assert run["status"] == "failed" and run["records_published"] == 0
