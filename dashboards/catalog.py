"""Catalog Explorer: search and facets over entities, server-side pages, entity detail.

Each facet lists its values with their entity counts under the other filters (Datasette-style),
counted again whenever those filters change.

A link ``/catalog?source_system=S&entity_type=T&source_id=I`` (the Semantic Search page makes
them) opens with that entity's detail shown and the list narrowed to its system and type.

Picking a row in the detail's Versions tab shows the entity, its attributes and its relationships
as they were at that version's time, under a label saying so, until "Back to current".
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pandas as pd
import panel as pn
import param
import polars as pl
from workbench.dashboards.layout import Page, table_data

if TYPE_CHECKING:
    from workbench.catalog.api import Entity
    from workbench.client import Workbench

PAGE_SIZE = 25
LIST_COLUMNS = [
    "domain",
    "source_system",
    "entity_type",
    "source_id",
    "display_name",
    "version",
    "updated_at",
    "id",
]


IDENTITY = ("source_system", "entity_type", "source_id")
FACETS = ("domain", "source_system", "entity_type")
FILTERS = ("query", *FACETS, "include_deleted")
FACET_LIMIT = 500
ALL = "all"


def facet_options(counts: list[tuple[str, int]], selected: str, complete: bool) -> dict[str, str]:
    """A facet selector's choices, label to value: "all", then each value with its count.

    The selected value stays a choice when the other filters leave none of it, so the
    selection is never dropped; its count is 0 unless the list was cut at its limit.
    """
    options = {ALL: ""}
    options.update((f"{value} ({count:,})", value) for value, count in counts)
    if selected and selected not in options.values():
        options[f"{selected} (0)" if complete else selected] = selected
    return options


def entity_link(row: Mapping[str, Any]) -> str:
    """The Catalog Explorer address that opens this entity's detail (relative to a page)."""
    return "./catalog?" + urlencode({field: row[field] or "" for field in IDENTITY})


def linked_entity(args: Mapping[str, list[bytes]]) -> dict[str, str] | None:
    """The entity a page link names in its query arguments, if it names all three parts."""
    named = {field: args.get(field, [b""])[0].decode("utf-8", "replace") for field in IDENTITY}
    return named if all(named.values()) else None


class CatalogExplorer(param.Parameterized):
    """State of one user's explorer session; every query runs in Postgres, a page at a time."""

    query = param.String(default="", doc="Full-text search over names and string attributes")
    domain = param.Selector(default="", objects=[""])
    source_system = param.Selector(default="", objects=[""])
    entity_type = param.Selector(default="", objects=[""])
    include_deleted = param.Boolean(default=False)
    page = param.Integer(default=0, bounds=(0, None))

    def __init__(self, workbench: Workbench, **params: Any) -> None:
        super().__init__(**params)
        self.workbench = workbench
        self._cursors: list[str | None] = [None]
        self._recount(FACETS)
        self.param.watch(self._filters_changed, list(FILTERS))

    def _filters_changed(self, *events: param.parameterized.Event) -> None:
        # A facet's counts ignore its own filter, so a change of only that filter keeps them.
        changed = {event.name for event in events}
        self._recount([field for field in FACETS if changed - {field}])

    def _recount(self, fields: Iterable[str]) -> None:
        filters = self._filters()
        for field in fields:
            counts = self.workbench.catalog.facet_counts(field, **filters, limit=FACET_LIMIT)
            self.param[field].objects = facet_options(
                counts, getattr(self, field), complete=len(counts) < FACET_LIMIT
            )

    def _filters(self) -> dict[str, Any]:
        return {
            "domain": self.domain or None,
            "source_system": self.source_system or None,
            "entity_type": self.entity_type or None,
            "text": self.query.strip() or None,
            "include_deleted": self.include_deleted,
        }

    @param.depends(*FILTERS, watch=True)
    def _restart(self) -> None:
        self._cursors = [None]
        self.page = 0

    def rows(self) -> pd.DataFrame:
        # One row more than a page tells whether a next page exists (an exactly full last
        # page must not offer an empty one).
        frame = self.workbench.catalog.entities(
            **self._filters(), limit=PAGE_SIZE + 1, cursor=self._cursors[self.page]
        )
        more, frame = frame.height > PAGE_SIZE, frame.head(PAGE_SIZE)
        if more and len(self._cursors) == self.page + 1:
            self._cursors.append(str(frame["id"][-1]))
        if frame.height == 0:
            return pd.DataFrame(columns=LIST_COLUMNS)
        return table_data(frame.select(LIST_COLUMNS))

    def has_next(self) -> bool:
        return len(self._cursors) > self.page + 1


class EntityDetail(param.Parameterized):
    """Which moment one entity's detail shows: now, or one of its versions as it left the entity."""

    version = param.Selector(
        default=None, objects=[None], doc="A version of the entity's history; None is now"
    )

    def __init__(self, workbench: Workbench, ref: tuple[str, str, str], **params: Any) -> None:
        super().__init__(**params)
        self.workbench = workbench
        self.ref = ref
        self.history = workbench.catalog.history(*ref)
        self.param.version.objects = [None, *self.history["version"]]

    def version_time(self) -> datetime | None:
        if self.version is None:
            return None
        when: datetime = self.history.filter(pl.col("version") == self.version)["occurred_at"][0]
        return when

    def entity(self) -> Entity | None:
        # By version, not by its time: versions can share a time or carry times out of order.
        return self.workbench.catalog.get(*self.ref, version=self.version)

    def relationships(self) -> pl.DataFrame:
        # include_deleted keeps retired edges visible now; a past version has none to show.
        return self.workbench.catalog.relationships(
            *self.ref, include_deleted=True, version=self.version
        )

    def label(self) -> str:
        when = self.version_time()
        if when is None:
            return "Current · pick a row under Versions to see the entity as it was then"
        return f"As of version {self.version}, {when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _table(frame: Any, css_class: str, **options: Any) -> pn.widgets.Tabulator:
    """A read-only table of a Polars frame, as every detail tab shows one."""
    return pn.widgets.Tabulator(
        table_data(frame),
        disabled=True,
        show_index=False,
        sizing_mode="stretch_width",
        height=260,
        css_classes=[css_class],
        **options,
    )


def _summary(entity: Entity) -> str:
    """The detail header; every value came from a source system, so each one is escaped."""
    esc = html.escape
    ref = f"{entity.source_system}/{entity.entity_type}/{entity.source_id}"
    state = "deleted" if entity.is_deleted else "live"
    return (
        f"<h3>{esc(entity.display_name or entity.source_id)}</h3>"
        f"<p><code>{esc(ref)}</code> · domain <strong>{esc(entity.domain)}</strong>"
        f" · version <strong>{esc(str(entity.version))}</strong> · {state}"
        f" · owners {esc(', '.join(entity.owners)) or '—'}"
        f" · tags {esc(', '.join(entity.tags)) or '—'}</p>"
    )


def _detail(workbench: Workbench, row: Mapping[str, Any] | pd.Series) -> list[Any]:
    state = EntityDetail(workbench, (row["source_system"], row["entity_type"], row["source_id"]))
    entity = state.entity()
    if entity is None:
        return [pn.pane.Markdown("The entity is no longer in the catalog.")]
    header = pn.pane.HTML(_summary(entity), css_classes=["dm-entity-detail"])
    moment = pn.pane.HTML(
        state.label(), css_classes=["dm-entity-as-of"], styles={"font-weight": "600"}
    )
    back = pn.widgets.Button(label="Back to current", visible=False, css_classes=["dm-entity-now"])
    attributes = pn.pane.JSON(
        entity.attributes, depth=2, theme="light", css_classes=["dm-entity-attributes"]
    )
    relationships = _table(state.relationships(), "dm-entity-relationships")
    versions = _table(
        state.history.select(
            "version", "event_type", "occurred_at", "event_source", "change_description", "trace_id"
        ),
        "dm-entity-versions",
        selectable=1,
    )

    def show(*_events: Any) -> None:
        shown = state.entity()
        header.object = _summary(shown) if shown else "<p>The entity was not in the catalog.</p>"
        attributes.object = shown.attributes if shown else {}
        relationships.value = table_data(state.relationships())
        moment.object = state.label()
        back.visible = state.version is not None
        if state.version is None:
            versions.selection = []

    def pick(event: Any) -> None:
        state.version = state.history["version"][event.new[0]] if event.new else None

    state.param.watch(show, "version")
    versions.param.watch(pick, "selection")
    back.on_click(lambda _e: setattr(state, "version", None))
    return [
        header,
        pn.Row(moment, back),
        pn.Tabs(
            ("Attributes", attributes),
            ("Versions", versions),
            ("Relationships", relationships),
            (
                "Event log",
                _table(
                    state.history.select(
                        "occurred_at",
                        "event_id",
                        "event_type",
                        "before_state",
                        "after_state",
                        "correlation_id",
                    ),
                    "dm-entity-events",
                ),
            ),
            sizing_mode="stretch_width",
        ),
    ]


def build(workbench: Workbench) -> list[Any]:
    explorer = CatalogExplorer(workbench)
    table = pn.widgets.Tabulator(
        explorer.rows(),
        disabled=True,
        selectable=1,
        show_index=False,
        pagination=None,
        sizing_mode="stretch_width",
        height=420,
        css_classes=["dm-catalog-table"],
        hidden_columns=["id"],
    )
    detail = pn.Column(sizing_mode="stretch_width")
    previous = pn.widgets.Button(label="◀ Previous", width=110, disabled=True)
    following = pn.widgets.Button(label="Next ▶", width=110, disabled=not explorer.has_next())
    where = pn.pane.Markdown("")

    def refresh(*_events: Any) -> None:
        table.value = explorer.rows()
        table.selection = []
        previous.disabled = explorer.page == 0
        following.disabled = not explorer.has_next()
        where.object = f"Page {explorer.page + 1} · {len(table.value)} entities"

    def select(event: Any) -> None:
        if event.new:
            detail.objects = _detail(workbench, table.value.iloc[event.new[0]])

    def turn(step: int) -> None:
        explorer.page = max(explorer.page + step, 0)
        refresh()

    explorer.param.watch(refresh, list(FILTERS))
    table.param.watch(select, "selection")
    previous.on_click(lambda _e: turn(-1))
    following.on_click(lambda _e: turn(1))
    linked = linked_entity(pn.state.session_args) if pn.state.curdoc else None
    if linked is not None:
        explorer.param.update(
            {
                field: linked[field]
                for field in ("source_system", "entity_type")
                if linked[field] in explorer.param[field].objects
            }
        )
        detail.objects = _detail(workbench, linked)
    refresh()
    controls = pn.Param(
        explorer.param,
        parameters=list(FILTERS),
        widgets={
            "query": {
                "type": pn.widgets.TextInput,
                "placeholder": "search entities…",
                "css_classes": ["dm-catalog-search"],
            },
            **{field: {"css_classes": [f"dm-catalog-facet-{field}"]} for field in FACETS},
        },
        show_name=False,
        default_layout=pn.Row,
        sizing_mode="stretch_width",
    )
    return [controls, table, pn.Row(previous, following, where), detail]


PAGE = Page(
    slug="catalog",
    title="Catalog Explorer",
    build=build,
    order=10,
    description="Search, facets and entity detail",
)
