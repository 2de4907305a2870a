"""The Catalog Explorer pages through Postgres and offers a next page only when there is one."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from workbench.dashboards.catalog import PAGE_SIZE, CatalogExplorer

from workbench.events.producer import wait_for_all

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("extra", [0, 1], ids=["exactly-full-last-page", "one-more"])
def test_next_is_offered_only_when_another_page_has_rows(
    workbench: Any, workers: Any, extra: int
) -> None:
    domain = f"paging-{uuid.uuid4().hex[:8]}"
    handles = [
        workbench.catalog.register(domain, "paging", "row", f"{domain}-{i:03d}")
        for i in range(PAGE_SIZE + extra)
    ]
    wait_for_all(handles, timeout=120)
    explorer = CatalogExplorer(workbench)
    explorer.domain = domain  # a facet value, as the user picks it
    first = explorer.rows()["source_id"].to_list()
    assert len(first) == PAGE_SIZE
    assert explorer.has_next() is bool(extra)
    if extra:
        explorer.page = 1
        second = explorer.rows()["source_id"].to_list()
        assert len(second) == 1 and not explorer.has_next()
        assert sorted(first + second) == [f"{domain}-{i:03d}" for i in range(PAGE_SIZE + 1)]
