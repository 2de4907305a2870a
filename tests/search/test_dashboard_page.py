"""The Semantic Search page's logic without a browser: search, errors, entity detail."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.stack


def test_page_searches_and_reports_errors(workbench: Any, search_workers: Any) -> None:
    from workbench.dashboards.search import PAGE

    from workbench.search.indexer import GROUP

    system = f"page-{uuid.uuid4().hex[:6]}"
    handle = workbench.catalog.register(
        "ops",
        system,
        "runbook",
        "r1",
        display_name="Disk full runbook",
        attributes={"body": "Free space on the volume before the database stops"},
    )
    handle.wait(timeout=180, group=GROUP)  # searchable
    handle.wait(timeout=180)  # and in the catalog, where the detail comes from
    box, button = None, None
    parts = PAGE.build(workbench)
    top, _options, status, results, chooser, detail = parts
    box, button = top[0], top[1]
    box.value = box.value_input = "database ran out of storage <script>"
    button.clicks += 1
    assert "Disk full runbook" in results.object
    assert "<script>" not in results.object  # the query is escaped where it is shown
    assert "./catalog?source_system=" in results.object
    assert chooser.visible
    chooser.value = next(v for v in chooser.options.values() if v)
    assert any("Disk full runbook" in str(getattr(o, "object", "")) for o in detail.objects)
    box.value = box.value_input = ""
    button.clicks += 1
    assert "empty" in status.object and results.object == ""
