"""The Config Editor page in a real browser: validated edit with diff preview, masked secrets."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dashboards.test_overview_browser import USER, _logged_in
from workbench.config import Config

pytestmark = [pytest.mark.stack, pytest.mark.browser]
PLAIN = "tok-never-shown-42"


def _text(page: Any, selector: str, contains: str, timeout: float = 30_000) -> str:
    locator = page.locator(selector, has_text=contains)
    locator.first.wait_for(timeout=timeout)
    return str(locator.first.inner_text())


def test_edit_validate_preview_save_and_masked_secret(
    server: Any, browser: Any, admin: Config, ns: str
) -> None:
    port, token = f"{ns}.port", f"{ns}.token"
    admin.define(
        port,
        schema={"type": "integer", "minimum": 1, "maximum": 65535},
        description="listen port",
        owners=["platform"],
    )
    admin.set(port, 8080, environment="dev", service="api", reason="seed")
    admin.set(token, PLAIN, environment="dev", secret=True)

    page = _logged_in(browser, server)
    page.goto(server.url + "/config")
    page.locator(".dm-config-tree .tabulator-row", has_text=port).first.wait_for(timeout=30_000)
    assert PLAIN not in page.content()
    masked = page.locator(".dm-config-tree .tabulator-row", has_text=token)
    assert "••••••" in masked.first.inner_text()

    page.locator(".dm-config-key input").fill(port)
    page.locator(".dm-config-key input").press("Tab")
    page.locator(".dm-config-service input").fill("api")
    page.locator(".dm-config-service input").press("Tab")
    _text(page, ".dm-config-schema .dm-schema", "listen port")
    page.locator(".dm-config-value textarea").fill("70000")
    page.locator(".dm-config-value textarea").press("Tab")
    page.locator(".dm-config-preview button").click()
    error = _text(page, ".dm-config-message .dm-msg", "maximum")
    assert port in error and "70000" in error

    page.locator(".dm-config-value textarea").fill("9090")
    page.locator(".dm-config-value textarea").press("Tab")
    page.locator(".dm-config-reason input").fill("more room")
    page.locator(".dm-config-reason input").press("Tab")
    page.locator(".dm-config-preview button").click()
    shown = _text(page, ".dm-config-diff .dm-diff", "+9090")
    assert "-8080" in shown
    assert admin.get(port, environment="dev", service="api") == 8080, "preview applies nothing"
    page.locator(".dm-config-save button").click()
    _text(page, ".dm-config-message .dm-msg", "saved as version")
    assert admin.get(port, environment="dev", service="api") == 9090
    latest = admin.history(port).to_dicts()[0]
    assert latest["author"] == USER and latest["reason"] == "more room"
    page.locator(".dm-config-history .tabulator-row").nth(1).wait_for(timeout=30_000)

    # Reveal without permission: refused, audited with the browser's address and agent.
    page.locator(".dm-config-key input").fill(token)
    page.locator(".dm-config-key input").press("Tab")
    page.locator(".dm-config-service input").fill("")
    page.locator(".dm-config-service input").press("Tab")
    page.locator(".dm-config-reveal button").click()
    _text(page, ".dm-config-message .dm-msg", "may not read secret")
    assert PLAIN not in page.content()
    denied = admin.audit(key=token, action="secret.read").to_dicts()[0]
    assert denied["actor"] == USER and denied["outcome"] == "denied"
    assert denied["address"] and "Chrome" in (denied["user_agent"] or "")

    admin.grant(USER, "secrets:read", keys=token, environments="dev")
    page.locator(".dm-config-reveal button").click()
    assert PLAIN in _text(page, ".dm-config-message .dm-revealed", PLAIN)
    assert admin.audit(key=token, action="secret.read").to_dicts()[0]["outcome"] == "ok"
    page.close()
