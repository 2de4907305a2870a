"""The Semantic Search page in a real browser: query, highlighted hits, entity detail."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.dashboards.test_overview_browser import Server, _logged_in
from tests.dashboards.test_overview_browser import browser as browser  # noqa: PLC0414 - fixture
from tests.dashboards.test_overview_browser import server as server  # noqa: PLC0414 - fixture

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def test_search_page_shows_highlighted_hits(
    server: Server,
    browser: object,
    workbench: Any,
    tmp_path: object,
) -> None:
    domain = f"browser-{uuid.uuid4().hex[:6]}"
    workbench.search.index(
        "# Lighthouse keeping\n\nThe keeper trims the lamp wick every evening at dusk.",
        key=f"{domain}/lighthouse",
        domain=domain,
        title="Lighthouse keeping",
    )
    page = _logged_in(browser, server)
    page.locator("a.dm-nav", has_text="Semantic Search").click()
    page.wait_for_url("**/search")
    page.locator(".dm-search-query input").fill("who looks after the lamp wick")
    page.locator(".dm-search-go button").click()
    hit = page.locator(".dm-search-results li.dm-search-hit").first
    try:  # the server loads the embedding model on its first query
        hit.wait_for(timeout=180_000)
    finally:
        page.screenshot(path=str(tmp_path) + "/search.png", full_page=True)  # type: ignore[operator]
    assert "Lighthouse keeping" in hit.inner_text()
    assert hit.locator("mark").count() >= 1  # "lamp" and "wick" are highlighted
    assert "wick" in " ".join(hit.locator("mark").all_inner_texts()).lower()

    page.locator(".dm-search-query input").fill("   ")
    page.locator(".dm-search-go button").click()
    page.locator(".dm-search-status", has_text="empty").wait_for(timeout=30_000)
    page.close()
