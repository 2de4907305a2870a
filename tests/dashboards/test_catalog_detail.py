"""The Catalog Explorer's entity detail shows source data as text, never as markup.

Entities are registered through the real pipeline and read back from the catalog, as the page
reads them.
"""

from __future__ import annotations

import html
from typing import Any

import panel as pn
import pytest
from workbench.dashboards.catalog import EntityDetail, _detail

from tests.dashboards.support import PAYLOAD, find, register_hostile, register_swapped_edge, unique

pytestmark = pytest.mark.stack


def detail_header(workbench: Any, identity: dict[str, str]) -> Any:
    return _detail(workbench, identity)[0]


def inserted_html(pane: Any) -> str:
    """The markup the browser assigns to innerHTML (Panel ships it HTML-escaped once)."""
    return html.unescape(pane.get_root().text)


def test_every_source_value_in_the_detail_header_is_escaped(workbench: Any, workers: Any) -> None:
    identity = register_hostile(workbench)
    header = detail_header(workbench, identity)
    assert "dm-entity-detail" in header.css_classes
    shown = inserted_html(header)
    assert "<img" not in shown
    escaped = html.escape(PAYLOAD)
    assert f"<h3>{escaped}</h3>" in shown
    for field in ("sales", "ada", "vip", f"{identity['source_system']}/account", "acct-1"):
        assert f"{field}{escaped}" in shown


def test_markdown_syntax_in_source_values_stays_literal(workbench: Any, workers: Any) -> None:
    text = "**bold** [x](javascript:alert(1))"
    shown = inserted_html(detail_header(workbench, register_hostile(workbench, text)))
    assert "<strong>bold" not in shown
    assert "<a " not in shown
    assert f"<h3>{text}</h3>" in shown


def test_the_header_still_reads_as_before(workbench: Any, workers: Any) -> None:
    system, domain = f"ledger-{unique()}", f"finance-{unique()}"
    for name in ("Ledger seven", "Ledger 7"):  # two versions
        workbench.catalog.register(domain, system, "book", "book-7", display_name=name).wait()
    identity = {"source_system": system, "entity_type": "book", "source_id": "book-7"}
    header = detail_header(workbench, identity)
    assert isinstance(header, pn.pane.HTML)
    shown = inserted_html(header)
    assert "<h3>Ledger 7</h3>" in shown
    assert f"<code>{system}/book/book-7</code>" in shown
    assert f"domain <strong>{domain}</strong>" in shown
    assert "version <strong>2</strong>" in shown
    assert "live" in shown
    assert "owners —" in shown
    assert "tags —" in shown


def test_picking_a_version_shows_the_entity_and_its_edges_as_they_were(
    workbench: Any, workers: Any
) -> None:
    edge = register_swapped_edge(workbench)
    state = EntityDetail(workbench, tuple(edge.identity.values()))

    def targets() -> list[tuple[str, bool]]:
        return state.relationships().select("to_source_id", "is_deleted").rows()

    assert state.label().startswith("Current")
    assert state.entity().attributes == {"stage": "final"}
    assert (edge.second, False) in targets()
    state.version = 1
    then = state.entity()
    assert (then.version, then.attributes) == (1, {"stage": "draft"})
    assert targets() == [(edge.first, False)]
    assert state.label().startswith("As of version 1, ")
    with pytest.raises(ValueError, match="does not accept 3"):
        state.version = 3  # not a version of this entity
    state.version = None
    assert state.entity().version == 2


def test_the_detail_panes_follow_the_picked_version_and_come_back(
    workbench: Any, workers: Any
) -> None:
    edge = register_swapped_edge(workbench)
    shown = _detail(workbench, edge.identity)
    versions = find(shown, "dm-entity-versions")
    edges, moment, back = (
        find(shown, name)
        for name in ("dm-entity-relationships", "dm-entity-as-of", "dm-entity-now")
    )
    assert not back.visible
    versions.selection = [0]  # the user clicks version 1's row
    assert edges.value["to_source_id"].to_list() == [edge.first]
    assert "As of version 1, " in moment.object
    assert "version <strong>1</strong>" in shown[0].object
    assert back.visible
    back.clicks += 1
    assert edge.second in edges.value["to_source_id"].to_list()
    assert moment.object.startswith("Current")
    assert (versions.selection, back.visible) == ([], False)
