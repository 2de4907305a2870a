"""The Catalog Explorer's entity detail shows source data as text, never as markup.

Entities are registered through the real pipeline and read back from the catalog, as the page
reads them.
"""

from __future__ import annotations

import html
from typing import Any

import panel as pn
import pytest
from workbench.dashboards.catalog import _detail

from tests.dashboards.support import PAYLOAD, register_hostile, unique

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
