"""Log into the served dashboards in a real browser and read the Overview page."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.helpers import BIN, chromium, free_port, wait_for_port
from workbench.stack import Endpoints

pytestmark = [pytest.mark.stack, pytest.mark.browser]

USER, PASSWORD = "ada", "correct-horse-battery"
TOKEN = "metrics-token-0123456789abcdef"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]


@pytest.fixture(scope="module")
def server(stack: Endpoints) -> Iterator[Server]:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "dictamesh"), "serve", "--port", str(port)],
        env={
            **os.environ,
            "DICTAMESH_DASHBOARD_USERS": f"{USER}:{PASSWORD}",
            "DICTAMESH_API_TOKENS": TOKEN,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, process=process)
        yield Server(f"http://localhost:{port}", process)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as launched:
        yield launched


def _logged_in(browser: object, server: Server) -> Any:
    """A new page with a dashboard session, on the Overview."""
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server.url + "/login")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/overview")
    return page


def test_login_then_overview_shows_every_component_healthy(
    server: Server, browser: object, tmp_path: object
) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server.url + "/")
    assert "/login" in page.url, "the dashboards must ask for a login first"

    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", "wrong-password")
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url("**/login**error=*")
    assert "Invalid username or password" in page.content()

    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url("**/overview")

    cards = page.locator(".dm-health")
    cards.first.wait_for(timeout=30_000)
    assert cards.count() == 3
    states = {
        cards.nth(i).get_attribute("data-component"): cards.nth(i).get_attribute("data-healthy")
        for i in range(3)
    }
    assert states == {"postgres": "true", "broker": "true", "redis": "true"}
    assert page.locator(".dm-health-state", has_text="unhealthy").count() == 0
    # Navigation and counts are on the page too.
    assert page.locator("a.dm-nav", has_text="Overview").count() == 1
    page.get_by_text("entities").first.wait_for()
    page.screenshot(path=str(tmp_path) + "/overview.png", full_page=True)  # type: ignore[operator]

    # The navigation leads to every other page, inside the same template and session.
    page.locator("a.dm-nav", has_text="Health").click()
    page.wait_for_url("**/health")
    postgres = page.locator(".dm-health-detail-postgres table")  # inside the pane's shadow root
    postgres.wait_for(timeout=30_000)
    assert postgres.locator("td", has_text="vector_installed").count() == 1
    assert postgres.locator("td", has_text="dictamesh_entity_catalog").count() == 1
    assert page.locator("a.dm-nav-current").inner_text() == "Health"
    page.close()


def test_machine_endpoints_require_credentials(server: Server) -> None:
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert httpx.get(server.url + "/api/health").status_code == 401
    assert (
        httpx.get(
            server.url + "/metrics", headers={"Authorization": "Bearer wrong-token-000000"}
        ).status_code
        == 401
    )

    metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert metrics.status_code == 200
    assert 'dictamesh_component_up{component="postgres"} 1.0' in metrics.text

    health = httpx.get(server.url + "/api/health", auth=(USER, PASSWORD))
    assert health.status_code == 200
    body = health.json()
    assert body["healthy"] is True
    assert [c["name"] for c in body["components"]] == ["postgres", "broker", "redis"]
    assert PASSWORD not in health.text


def test_pages_redirect_to_login_without_a_session(server: Server) -> None:
    response = httpx.get(server.url + "/overview", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"].lstrip(".").startswith("/login")


def test_catalog_explorer_searches_pages_and_opens_an_entity(
    server: Server, browser: object, workbench: object, workers: object
) -> None:
    import uuid

    from workbench.events.producer import wait_for_all

    domain = "explorer"
    batch = f"batch{uuid.uuid4().hex[:10]}"  # this run's entities say it, and nothing else does
    handles = [
        workbench.catalog.register(  # type: ignore[attr-defined]
            domain,
            "crm",
            "account",
            f"acct-{i:03d}",
            attributes={
                "name": f"Account {i}",
                "segment": "enterprise" if i % 3 == 0 else "smb",
                "batch": batch,
            },
            display_name=f"Account {i}",
        )
        for i in range(40)
    ]
    wait_for_all(handles)
    workbench.catalog.register(  # type: ignore[attr-defined]
        domain,
        "crm",
        "account",
        "acct-003",
        attributes={"name": "Account 3", "segment": "mid", "batch": batch},
        display_name="Account 3",
    ).wait()

    page = _logged_in(browser, server)
    page.goto(server.url + "/catalog")
    rows = page.locator(".dm-catalog-table .tabulator-row")
    rows.first.wait_for(timeout=30_000)
    assert rows.count() == 25, "one server-side page of 25"

    search = page.locator(".dm-catalog-search input")
    search.fill(f"mid {batch}")  # of this run's entities, only acct-003's version 2 says "mid"
    search.press("Enter")
    # The unsearched page has 25 rows, so a single row is the search's answer, not the old page.
    expect(rows).to_have_count(1, timeout=30_000)
    expect(rows).to_contain_text("acct-003")
    rows.first.click()
    summary = page.locator(".dm-entity-detail p")  # inside the pane's shadow root
    summary.wait_for(timeout=30_000)
    text = summary.inner_text()
    assert "crm/account/acct-003" in text
    assert "version 2" in text
    page.locator(".bk-tab", has_text="Versions").click()
    versions = page.locator(".dm-entity-versions .tabulator-row")
    versions.first.wait_for(timeout=30_000)
    assert versions.count() == 2

    # a link from another page (Semantic Search makes these) opens the entity directly
    page.goto(server.url + "/catalog?source_system=crm&entity_type=account&source_id=acct-007")
    linked = page.locator(".dm-entity-detail p")
    linked.wait_for(timeout=30_000)
    assert "crm/account/acct-007" in linked.inner_text()
    page.close()


def test_event_monitor_shows_changes_lag_and_dead_letters(
    server: Server, browser: object, workbench: object, workers: object
) -> None:
    workbench.catalog.register(  # type: ignore[attr-defined]
        "monitor", "crm", "account", "m-1", attributes={"name": "Monitored"}
    ).wait()
    page = _logged_in(browser, server)
    page.goto(server.url + "/events")
    page.locator(".dm-recent-events .tabulator-row").first.wait_for(timeout=30_000)
    assert page.locator(".dm-recent-events .tabulator-row", has_text="crm/account/m-1").count() >= 1
    page.locator(
        ".dm-group-lag .tabulator-row", has_text="dictamesh.catalog-projector"
    ).first.wait_for(timeout=30_000)
    page.close()


def test_lineage_page_draws_the_graph_with_a_depth_control(
    server: Server, browser: object, workbench: object
) -> None:
    import uuid

    ns = f"ui-{uuid.uuid4().hex[:6]}"
    chain = [f"{ns}/raw", f"{ns}/clean", f"{ns}/mart", f"{ns}/board"]
    for source, target in itertools.pairwise(chain):
        workbench.catalog.record_lineage(
            {  # type: ignore[attr-defined]
                "eventType": "COMPLETE",
                "eventTime": "2026-11-26T10:00:00Z",
                "run": {"runId": str(uuid.uuid4())},
                "job": {"namespace": ns, "name": f"to-{target.split('/')[1]}"},
                "inputs": [{"namespace": ns, "name": source.split("/")[1]}],
                "outputs": [{"namespace": ns, "name": target.split("/")[1]}],
            }
        )
    page = _logged_in(browser, server)
    page.goto(f"{server.url}/lineage?dataset={chain[1]}")
    nodes = page.locator(".dm-lineage .dm-lineage-node")
    nodes.first.wait_for(timeout=30_000)
    names = {nodes.nth(i).get_attribute("data-dataset") for i in range(nodes.count())}
    assert names == set(chain), "depth 3 reaches raw upstream and mart, board downstream"
    page.close()
