"""In a real browser, the facet selectors show counts that follow the search and the facets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import panel as pn
import pytest
from playwright.sync_api import expect
from workbench.dashboards.catalog import PAGE

from tests.dashboards.support import register_facets

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def test_facet_counts_follow_the_search_and_a_chosen_facet_stays(
    workbench: Any,
    workers: Any,
    serve: Callable[[Callable[[], Any]], str],
    chromium_page: Any,
) -> None:
    f = register_facets(workbench)
    url = serve(lambda: pn.Column(*PAGE.build(workbench)))
    page = chromium_page
    page.goto(url)
    domain = page.locator(".dm-catalog-facet-domain select")
    system = page.locator(".dm-catalog-facet-source_system select")
    kind = page.locator(".dm-catalog-facet-entity_type select")
    expect(domain.locator("option", has_text=f"{f.domain} (6)")).to_have_count(1, timeout=30_000)

    domain.select_option(label=f"{f.domain} (6)")
    expect(system.locator("option", has_text=f"{f.crm} (4)")).to_have_count(1, timeout=30_000)
    system.select_option(label=f"{f.erp} (2)")
    expect(kind.locator("option", has_text=f"{f.account} (2)")).to_have_count(1, timeout=30_000)

    search = page.locator(".dm-catalog-search input")
    search.fill(f.word)  # no entity of erp says it
    search.press("Enter")
    expect(system.locator("option", has_text=f"{f.crm} (2)")).to_have_count(1, timeout=30_000)
    # The chosen system and domain stay chosen, at a count of 0; the types have nothing left.
    expect(system.locator("option:checked")).to_have_text(f"{f.erp} (0)")
    expect(domain.locator("option:checked")).to_have_text(f"{f.domain} (0)")
    expect(kind.locator("option", has_text=f.account)).to_have_count(0)
    expect(page.locator(".dm-catalog-table .tabulator-row")).to_have_count(0)

    system.select_option(label="all")
    expect(page.locator(".dm-catalog-table .tabulator-row")).to_have_count(2, timeout=30_000)
    expect(domain.locator("option:checked")).to_have_text(f"{f.domain} (2)")
    expect(kind.locator("option", has_text=f"{f.invoice} (1)")).to_have_count(1)
