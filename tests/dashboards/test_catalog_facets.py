"""The Catalog Explorer's facets show each value's count under the other filters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import panel as pn
import pytest
from workbench.dashboards.catalog import CatalogExplorer, build, facet_options

from tests.dashboards.support import Facets, register_facets

pytestmark = pytest.mark.stack


def _labels(choices: dict[str, str], f: Facets) -> list[str]:
    """The labels of a facet's choices that name this test's values or stand for all."""
    return [label for label, value in choices.items() if value == "" or f.ours(value)]


def _shown(explorer: CatalogExplorer, field: str, f: Facets) -> list[str]:
    return _labels(explorer.param[field].names, f)


def test_counts_follow_the_other_filters(workbench: Any, workers: Any) -> None:
    f = register_facets(workbench)
    explorer = CatalogExplorer(workbench)
    assert _shown(explorer, "domain", f) == ["all", f"{f.domain} (6)", f"{f.other_domain} (1)"]
    assert _shown(explorer, "source_system", f) == ["all", f"{f.crm} (5)", f"{f.erp} (2)"]
    assert _shown(explorer, "entity_type", f) == ["all", f"{f.account} (6)", f"{f.invoice} (1)"]

    explorer.domain = f.domain
    # The domain counts ignore the domain filter; the other facets are narrowed by it.
    assert _shown(explorer, "domain", f) == ["all", f"{f.domain} (6)", f"{f.other_domain} (1)"]
    assert _shown(explorer, "source_system", f) == ["all", f"{f.crm} (4)", f"{f.erp} (2)"]
    assert _shown(explorer, "entity_type", f) == ["all", f"{f.account} (5)", f"{f.invoice} (1)"]

    explorer.include_deleted = True
    assert _shown(explorer, "source_system", f) == ["all", f"{f.crm} (4)", f"{f.erp} (3)"]
    assert _shown(explorer, "entity_type", f) == ["all", f"{f.account} (5)", f"{f.invoice} (2)"]

    explorer.include_deleted = False
    explorer.query = f.word
    assert _shown(explorer, "domain", f) == ["all", f"{f.domain} (2)"]
    assert _shown(explorer, "source_system", f) == ["all", f"{f.crm} (2)"]
    assert _shown(explorer, "entity_type", f) == ["all", f"{f.account} (1)", f"{f.invoice} (1)"]
    assert sorted(explorer.rows()["source_id"]) == ["a1", "b1"]


def test_a_choice_the_other_filters_empty_stays_chosen_at_zero(
    workbench: Any, workers: Any
) -> None:
    f = register_facets(workbench)
    explorer = CatalogExplorer(workbench)
    explorer.param.update(domain=f.domain, source_system=f.erp)
    assert _shown(explorer, "entity_type", f) == ["all", f"{f.account} (2)"]

    explorer.query = f.word  # no entity of erp says it
    assert (explorer.domain, explorer.source_system) == (f.domain, f.erp)
    assert _shown(explorer, "source_system", f) == ["all", f"{f.crm} (2)", f"{f.erp} (0)"]
    assert _shown(explorer, "domain", f) == ["all", f"{f.domain} (0)"]
    assert _shown(explorer, "entity_type", f) == ["all"]
    assert explorer.rows().empty

    explorer.query = ""
    assert _shown(explorer, "source_system", f) == ["all", f"{f.crm} (4)", f"{f.erp} (2)"]
    assert _shown(explorer, "domain", f) == ["all", f"{f.domain} (2)"]


def test_one_count_per_facet_whose_counts_can_change(
    workbench: Any, workers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = register_facets(workbench)
    explorer = CatalogExplorer(workbench)
    asked: list[str] = []
    real: Callable[..., Any] = workbench.catalog.facet_counts

    def counted(field: str, **filters: Any) -> Any:  # the real query, with a tally
        asked.append(field)
        return real(field, **filters)

    monkeypatch.setattr(workbench.catalog, "facet_counts", counted)
    explorer.query = f.word
    assert sorted(asked) == ["domain", "entity_type", "source_system"]
    asked.clear()
    explorer.domain = f.domain  # only the domain filter changed, which domain counts ignore
    assert sorted(asked) == ["entity_type", "source_system"]
    asked.clear()
    explorer.param.update(source_system=f.crm, include_deleted=True)  # one change of two
    assert sorted(asked) == ["domain", "entity_type", "source_system"]


def test_the_page_selectors_show_the_counts_and_follow_the_search(
    workbench: Any, workers: Any
) -> None:
    f = register_facets(workbench)
    controls = build(workbench)[0]
    widgets = {w.name: w for w in controls.select(pn.widgets.Widget)}
    search, domain, system = widgets["Query"], widgets["Domain"], widgets["Source system"]

    domain.value = f.domain  # as the user picks it
    assert _labels(system.options, f) == ["all", f"{f.crm} (4)", f"{f.erp} (2)"]
    search.value = f.word
    assert _labels(system.options, f) == ["all", f"{f.crm} (2)"]
    assert _labels(domain.options, f) == ["all", f"{f.domain} (2)"]
    assert domain.value == f.domain


def test_options_put_all_first_and_keep_an_emptied_choice() -> None:
    counts = [("support", 1234), ("sales", 5)]
    assert facet_options(counts, "", complete=True) == {
        "all": "",
        "support (1,234)": "support",
        "sales (5)": "sales",
    }
    assert facet_options(counts, "billing", complete=True)["billing (0)"] == "billing"
    # Past the list's limit its count is unknown, so none is claimed.
    assert facet_options(counts, "billing", complete=False)["billing"] == "billing"
