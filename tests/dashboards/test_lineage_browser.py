"""In a real browser, clicking a lineage node focuses on it at the depth the user chose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import panel as pn
import pytest
from playwright.sync_api import expect
from workbench.dashboards.lineage import PAGE

from tests.dashboards.support import record_chain

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def _drawn(page: Any) -> set[str]:
    nodes = page.locator(".dm-lineage .dm-lineage-node")
    return {nodes.nth(i).get_attribute("data-dataset") for i in range(nodes.count())}


def _lineage_page(
    workbench: Any, serve: Callable[[Callable[[], Any]], str]
) -> tuple[str, list[str]]:
    """The served Lineage page's address, and a chain raw -> clean -> mart -> board."""
    chain = record_chain(workbench, ["raw", "clean", "mart", "board"])
    return serve(lambda: pn.Column(*PAGE.build(workbench))), chain


def test_clicking_a_node_keeps_the_chosen_depth(
    workbench: Any, serve: Callable[[Callable[[], Any]], str], chromium_page: Any
) -> None:
    url, (raw, clean, mart, board) = _lineage_page(workbench, serve)
    page = chromium_page
    page.goto(f"{url}?dataset={quote(clean)}")
    page.locator(f'.dm-lineage .dm-lineage-node[data-dataset="{board}"]').wait_for(timeout=30_000)
    assert _drawn(page) == {raw, clean, mart, board}, "the default depth 3 reaches all"

    # The user moves the depth slider down to its lowest, 1, with the keyboard.
    page.locator(".dm-lineage-depth .noUi-handle").press("Home")
    page.locator(".dm-lineage-summary", has_text="within depth 1").wait_for(timeout=30_000)
    assert _drawn(page) == {raw, clean, mart}

    page.locator(f'.dm-lineage .dm-lineage-node[data-dataset="{mart}"]').click()
    # Only the graph focused on mart draws board at depth 1.
    page.locator(f'.dm-lineage .dm-lineage-node[data-dataset="{board}"]').wait_for(timeout=30_000)
    assert _drawn(page) == {clean, mart, board}, "depth 1 around mart, not the default 3"
    expect(page.locator(".dm-lineage-summary")).to_contain_text("within depth 1")
    expect(page.locator(".dm-lineage-depth")).to_contain_text("Depth: 1")
    expect(page.locator(".dm-lineage-dataset input")).to_have_value(mart)


def test_a_depth_in_a_link_is_held_to_the_slider_range(
    workbench: Any, serve: Callable[[Callable[[], Any]], str], chromium_page: Any
) -> None:
    url, (_raw, clean, _mart, _board) = _lineage_page(workbench, serve)
    page = chromium_page
    page.goto(f"{url}?dataset={quote(clean)}&depth=99")
    expect(page.locator(".dm-lineage-summary")).to_contain_text("within depth 10")
    expect(page.locator(".dm-lineage-depth")).to_contain_text("Depth: 10")
    page.goto(f"{url}?dataset={quote(clean)}&depth=deep")  # not a number: the default
    expect(page.locator(".dm-lineage-summary")).to_contain_text("within depth 3")
