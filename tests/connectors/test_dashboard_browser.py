"""The Connectors page in a real browser: installed connectors, instances, "Sync now", runs."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.base.config import env_var
from connectors.chatwoot import sign
from tests.helpers import BIN, chromium, free_port, wait_for_port

pytestmark = [pytest.mark.stack, pytest.mark.browser]

USER, PASSWORD = "ada", "correct-horse-battery"


@pytest.fixture(scope="module")
def instance(workbench: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("dash-files")
    (folder / "tickets.csv").write_text("id,title\n1,Printer jam\n2,VPN down\n")
    name = f"a-dash-{uuid.uuid4().hex[:6]}"  # sorts first: the page selects it by default
    path: Path = workbench.settings.home / "connectors.yaml"
    declared = yaml.safe_load(path.read_text()) if path.exists() else {}
    declared[name] = {"connector": "files", "path": str(folder), "domain": "it"}
    path.write_text(yaml.safe_dump(declared))
    return name


HOOKS = f"hooks-{uuid.uuid4().hex[:6]}"
HOOK_SECRET = "chatwoot-webhook-secret"


@pytest.fixture(scope="module")
def server(instance: str, workbench: Any) -> Iterator[str]:
    path: Path = workbench.settings.home / "connectors.yaml"
    declared = yaml.safe_load(path.read_text())
    declared[HOOKS] = {"connector": "chatwoot", "base_url": "http://127.0.0.1:9", "account_id": 1}
    path.write_text(yaml.safe_dump(declared))
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "dictamesh"), "serve", "--port", str(port)],
        env={
            **os.environ,
            "DICTAMESH_DASHBOARD_USERS": f"{USER}:{PASSWORD}",
            env_var(HOOKS, "webhook_secret"): HOOK_SECRET,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, process=process, timeout=120)
        yield f"http://localhost:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_page_builds_without_a_browser(workbench: Any, instance: str) -> None:
    from workbench.dashboards.connectors import PAGE, ConnectorsState

    assert PAGE.slug == "connectors"
    assert len(PAGE.build(workbench)) >= 5
    state = ConnectorsState(workbench)
    assert state.instance == instance
    frame = state.status(check_health=False)
    assert instance in set(frame["instance"])


def test_sync_now_from_the_connectors_page(server: str, instance: str, workbench: Any) -> None:
    with chromium() as browser:
        page = browser.new_page()
        page.goto(server + "/login")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/overview")
        page.locator("a.dm-nav", has_text="Connectors").click()
        page.wait_for_url("**/connectors")
        installed = page.locator(".dm-connectors-installed .tabulator-row")
        installed.first.wait_for(timeout=30_000)
        text = " ".join(installed.nth(i).inner_text() for i in range(installed.count()))
        for name in ("chatwoot", "files", "rest", "sql"):
            assert name in text
        assert "webhooks" in text
        page.locator(".dm-connectors-status .tabulator-row", has_text=instance).wait_for()
        page.get_by_role("button", name="Sync now").click()
        message = page.locator(".dm-connectors-message p", has_text="sync succeeded")
        message.wait_for(timeout=60_000)
        assert "published 2" in message.inner_text()
        run = page.locator(".dm-connectors-runs .tabulator-row", has_text=instance)
        run.filter(has_text="succeeded").first.wait_for(timeout=30_000)
        assert "1970" not in run.first.inner_text()  # timestamps as text, not epoch numbers
    assert workbench.connectors.runs(instance)["status"].to_list()[0] == "succeeded"


def test_webhook_endpoint_publishes_verified_deliveries(
    server: str, instance: str, workbench: Any, workers: Any
) -> None:
    import time

    import httpx

    body = (
        b'{"event": "contact_updated", "id": 4242, "name": "Ada Lovelace", '
        b'"email": "ada@example.com", "last_activity_at": 1}'
    )
    stamp = str(int(time.time()))
    signed = {
        "Content-Type": "application/json",
        "X-Chatwoot-Timestamp": stamp,
        "X-Chatwoot-Signature": sign(HOOK_SECRET, stamp, body),
    }
    accepted = httpx.post(f"{server}/webhooks/{HOOKS}", content=body, headers=signed)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["event"] == "contact_updated"
    assert len(accepted.json()["published"]) == 2

    forged = {**signed, "X-Chatwoot-Signature": sign("guess", stamp, body)}
    refused = httpx.post(f"{server}/webhooks/{HOOKS}", content=body, headers=forged)
    assert refused.status_code == 401 and "does not match" in refused.json()["error"]
    assert httpx.post(f"{server}/webhooks/nobody", content=body).status_code == 404
    files = httpx.post(f"{server}/webhooks/{instance}", content=body)
    assert files.status_code == 404 and "takes no webhooks" in files.json()["error"]

    deadline = time.monotonic() + 60
    contact = None
    while contact is None and time.monotonic() < deadline:
        contact = workbench.catalog.get(HOOKS, "contact", "4242")
        time.sleep(0.2)
    assert contact is not None and contact.attributes["email"] == "ada@example.com"
