"""The Event Monitor in a real browser: event types as text, tick and replay one letter."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import panel as pn
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect
from workbench.dashboards.events import PAGE

from tests.dashboards.support import (
    PAYLOAD,
    ends,
    log_event,
    replayed,
    tables_missing,
    write_dead_letters,
)
from workbench.events.topics import ADAPTER_EVENT, ENTITY_CREATED

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def row_with(page: Any, table: str, text: str, timeout: float = 30.0) -> Any:
    """The table's row holding `text`, scrolling the table until it is drawn (rows are drawn
    only near the visible part of a table)."""
    page.locator(f"{table} .tabulator-row").first.wait_for(timeout=timeout * 1000)
    holder = page.locator(f"{table} .tabulator-tableholder")
    row = page.locator(f"{table} .tabulator-row", has_text=text)
    deadline = time.monotonic() + timeout
    while True:
        try:
            row.wait_for(timeout=500)
            return row
        except PlaywrightTimeout:
            assert time.monotonic() < deadline, f"no row of {table} shows {text!r}"
            holder.evaluate(
                "el => { el.scrollTop = el.scrollTop + el.clientHeight >= el.scrollHeight"
                " ? 0 : el.scrollTop + el.clientHeight / 2; }"
            )


def test_hostile_event_type_is_text_and_the_ticked_letter_is_replayed(
    workbench: Any,
    catalog_db: str,
    workbench_with: Callable[..., Any],
    serve: Callable[[Callable[[], Any]], str],
    chromium_page: Any,
) -> None:
    bootstrap = workbench.endpoints.kafka_bootstrap
    log_event(catalog_db, ENTITY_CREATED, "crm/account/b-1")
    log_event(catalog_db, PAYLOAD, "crm/account/b-2")
    since = ends(bootstrap, [ADAPTER_EVENT])
    first, second = write_dead_letters(bootstrap, [(ADAPTER_EVENT, 0)] * 2)
    wb = workbench_with(postgres_url=catalog_db)
    page = chromium_page
    with tables_missing(catalog_db, "dictamesh_consumer_offsets"):  # the lag read fails
        page.goto(serve(lambda: pn.Column(*PAGE.build(wb))))
        wanted = row_with(page, ".dm-dead-letters", second.marker)
        titles = page.locator(".dm-event-rates .tabulator-col-title").all_inner_texts()
        assert PAYLOAD in titles
        assert ENTITY_CREATED in titles
        problems = page.locator(".dm-events-problems p").inner_text()
        assert problems.startswith("Consumer lag unavailable")
        tick = wanted.locator("input[type=checkbox]")
        tick.click()
        expect(tick).to_be_checked(timeout=30_000)  # as the user sees it, before replaying
        page.locator(".dm-replay button").click()
        status = page.locator(".dm-replay-status p")
        status.wait_for(timeout=30_000)
        assert "Replayed 1 record" in status.inner_text()
    assert replayed(bootstrap, since, [first, second]) == [second.letter_id]
    # No element was made of the markup anywhere on the page, so nothing could run it.
    assert page.locator("img[onerror]").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
