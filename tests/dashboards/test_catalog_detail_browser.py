"""In a real browser, the entity detail shows markup in source data as text, never running it,
and a picked version's attributes and edges as they were."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import panel as pn
import pytest
from playwright.sync_api import expect
from workbench.dashboards.catalog import PAGE, entity_link

from tests.dashboards.support import PAYLOAD, register_hostile, register_swapped_edge

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def open_detail(
    workbench: Any, serve: Callable[[Callable[[], Any]], str], page: Any, identity: dict[str, str]
) -> None:
    """The served page, opened on the entity's detail as a Semantic Search link opens it."""
    url = serve(lambda: pn.Column(*PAGE.build(workbench)))
    page.goto(url + "?" + urlsplit(entity_link(identity)).query)


def test_hostile_entity_opened_by_a_link_is_shown_literally_and_never_runs(
    workbench: Any,
    workers: Any,
    serve: Callable[[Callable[[], Any]], str],
    chromium_page: Any,
) -> None:
    identity = register_hostile(workbench)
    page = chromium_page
    open_detail(workbench, serve, page, identity)
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


def test_a_picked_version_shows_its_edges_and_back_to_current_shows_todays(
    workbench: Any,
    workers: Any,
    serve: Callable[[Callable[[], Any]], str],
    chromium_page: Any,
) -> None:
    edge = register_swapped_edge(workbench)
    page = chromium_page
    open_detail(workbench, serve, page, edge.identity)

    def tab(name: str) -> None:
        page.locator(".bk-tab", has_text=name).click()

    def edge_rows(target: str) -> Any:
        return page.locator(".dm-entity-relationships .tabulator-row", has_text=target)

    moment = page.locator(".dm-entity-as-of")
    back = page.locator(".dm-entity-now button")
    expect(moment).to_contain_text("Current", timeout=30_000)
    expect(back).to_be_hidden()
    tab("Relationships")
    expect(edge_rows(edge.second)).to_have_count(1, timeout=30_000)

    tab("Versions")
    version = page.locator(".dm-entity-versions .tabulator-cell[tabulator-field=version]")
    version.filter(has_text=re.compile(r"^1$")).click()
    expect(moment).to_contain_text(re.compile(r"As of version 1, \d{4}-\d\d-\d\d .* UTC"))
    tab("Relationships")
    expect(edge_rows(edge.first)).to_have_count(1)
    expect(edge_rows(edge.second)).to_have_count(0)
    tab("Attributes")
    expect(page.locator(".dm-entity-attributes")).to_contain_text("draft")
    expect(page.locator(".dm-entity-detail p")).to_contain_text("version 1")

    back.click()
    expect(moment).to_contain_text("Current")
    expect(back).to_be_hidden()
    expect(page.locator(".dm-entity-attributes")).to_contain_text("final")
    tab("Relationships")
    expect(edge_rows(edge.second)).to_have_count(1)
