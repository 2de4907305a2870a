"""In a real browser, markup in an entity's source data is shown as text and never runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import panel as pn
import pytest
from workbench.dashboards.catalog import PAGE, entity_link

from tests.dashboards.support import PAYLOAD, register_hostile

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def test_hostile_entity_opened_by_a_link_is_shown_literally_and_never_runs(
    workbench: Any,
    workers: Any,
    serve: Callable[[Callable[[], Any]], str],
    chromium_page: Any,
) -> None:
    identity = register_hostile(workbench)
    url = serve(lambda: pn.Column(*PAGE.build(workbench)))
    page = chromium_page
    page.goto(url + "?" + urlsplit(entity_link(identity)).query)  # as Semantic Search links
    header = page.locator(".dm-entity-detail h3")  # inside the pane's shadow root
    header.wait_for(timeout=30_000)
    assert header.inner_text() == PAYLOAD
    summary = page.locator(".dm-entity-detail p").inner_text()
    assert f"owners ada{PAYLOAD}, bob" in summary
    assert f"domain sales{PAYLOAD}" in summary
    # The list beside it, narrowed to the entity's system and type, shows it as text too.
    row = page.locator(".dm-catalog-table .tabulator-row", has_text=identity["source_system"])
    row.first.wait_for(timeout=30_000)
    assert PAYLOAD in row.first.inner_text()
    # No element was made of the markup anywhere on the page, so nothing could run it.
    assert page.locator("img[onerror]").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
