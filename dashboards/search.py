"""Semantic Search: a query box, mode and filters, hits with highlighted snippets.

Entity hits link to the Catalog Explorer and open the entity's detail (versions, relationships,
event log) right below the results.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import panel as pn
import param
from workbench.dashboards.catalog import entity_link
from workbench.dashboards.layout import Page

from workbench.errors import DictaMeshError

if TYPE_CHECKING:
    import polars as pl

    from workbench.client import Workbench

MODES = ["hybrid", "vector", "keyword"]


def _facets(workbench: Workbench, column: str) -> list[str]:
    if column not in {"domain", "source_system", "entity_type"}:
        return []
    frame = workbench.sql(
        f"SELECT DISTINCT {column} AS v FROM dictamesh_search_documents "  # noqa: S608 - fixed
        f"WHERE {column} IS NOT NULL AND NOT is_deleted ORDER BY 1 LIMIT 500"
    )
    return [str(v) for v in frame["v"].to_list()] if frame.height else []


class SearchState(param.Parameterized):
    """One user's search session."""

    query = param.String(default="")
    mode = param.Selector(default="hybrid", objects=MODES)
    k = param.Integer(default=10, bounds=(1, 100))
    domain = param.Selector(default="", objects=[""])
    source_system = param.Selector(default="", objects=[""])
    entity_type = param.Selector(default="", objects=[""])

    def __init__(self, workbench: Workbench, **params: Any) -> None:
        super().__init__(**params)
        self.workbench = workbench
        for field in ("domain", "source_system", "entity_type"):
            self.param[field].objects = ["", *_facets(workbench, field)]

    def filters(self) -> dict[str, Any]:
        return {
            "domain": self.domain or None,
            "source_system": self.source_system or None,
            "entity_type": self.entity_type or None,
        }

    def run(self) -> pl.DataFrame:
        return self.workbench.search(
            self.query,
            k=self.k,
            filters=self.filters(),
            mode=self.mode,  # type: ignore[arg-type]
        )


def render_hits(frame: pl.DataFrame) -> str:
    """Hits as HTML: title (linked to the catalog for entities), where it is, snippet."""
    if frame.height == 0:
        return "<p class='dm-search-empty'>No hits.</p>"
    from workbench.search.api import citation

    items = []
    for row in frame.iter_rows(named=True):
        name = html.escape(citation(row))
        if row["kind"] == "entity":
            name = f"<a href='{html.escape(entity_link(row))}' class='dm-search-link'>{name}</a>"
        where = " / ".join(
            html.escape(str(p)) for p in (row["domain"], row["entity_type"], row["heading"]) if p
        )
        items.append(
            f"<li class='dm-search-hit' data-rank='{row['rank']}'>"
            f"<div><b>{name}</b> <small style='color:#666'>{where} · score "
            f"{row['score']:.4f}</small></div>"
            f"<div class='dm-search-snippet'>{row['snippet_html']}</div></li>"
        )
    return "<ol class='dm-search-list'>" + "".join(items) + "</ol>"


def build(workbench: Workbench) -> list[Any]:
    state = SearchState(workbench)
    box = pn.widgets.TextInput(
        label="Query",
        placeholder='Ask in your own words, or use keywords, "phrases" and -exclusions',
        sizing_mode="stretch_width",
        css_classes=["dm-search-query"],
    )
    mode = pn.widgets.RadioButtonGroup(label="Mode", options=MODES, value="hybrid")
    k = pn.widgets.IntInput(label="Hits", value=10, start=1, end=100, width=90)
    facets = {
        field: pn.widgets.Select(
            label=field.replace("_", " "), options=state.param[field].objects, width=180
        )
        for field in ("domain", "source_system", "entity_type")
    }
    button = pn.widgets.Button(label="Search", color="primary", css_classes=["dm-search-go"])
    status = pn.pane.Markdown("", css_classes=["dm-search-status"])
    results = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["dm-search-results"])
    chooser = pn.widgets.Select(label="Entity detail", options={}, visible=False)
    detail = pn.Column(sizing_mode="stretch_width")
    current: dict[str, Any] = {}

    def search(*_events: Any) -> None:
        state.param.update(
            query=box.value_input if box.value_input is not None else box.value,
            mode=mode.value,
            k=int(k.value or 10),
            **{field: widget.value or "" for field, widget in facets.items()},
        )
        detail.objects = []
        try:
            frame = state.run()
        except DictaMeshError as exc:
            status.object = f"**{html.escape(exc.message)}** {html.escape(exc.remedy or '')}"
            results.object = ""
            chooser.visible = False
            return
        current["frame"] = frame
        status.object = f"{frame.height} hit(s) · {state.mode}"
        results.object = render_hits(frame)
        entities = {
            f"{row['rank']}. {row['title'] or row['source_id']}": row["rank"]
            for row in frame.iter_rows(named=True)
            if row["kind"] == "entity"
        }
        chooser.options = {"": 0, **entities}
        chooser.visible = bool(entities)

    def show(event: Any) -> None:
        frame = current.get("frame")
        if frame is None or not event.new:
            detail.objects = []
            return
        row = frame.row(int(event.new) - 1, named=True)
        import pandas as pd
        from workbench.dashboards.catalog import _detail

        detail.objects = _detail(workbench, pd.Series(row))

    button.on_click(search)
    if "enter_pressed" in box.param:  # Enter in the query box searches too
        box.param.watch(search, "enter_pressed")
    chooser.param.watch(show, "value")
    return [
        pn.Row(box, button, sizing_mode="stretch_width"),
        pn.Row(mode, k, *facets.values()),
        status,
        results,
        chooser,
        detail,
    ]


PAGE = Page(
    slug="search",
    title="Semantic Search",
    build=build,
    order=25,
    description="Semantic, keyword and hybrid search over entities and documents",
)
