"""The shared page template, navigation and the page registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import panel as pn
import polars as pl

from workbench.errors import TerminalError

if TYPE_CHECKING:
    import pandas as pd

    from workbench.client import Workbench

APP_TITLE = "DictaMesh Workbench"
ENTRY_POINT_GROUP = "dictamesh.dashboards"


def table_data(frame: pl.DataFrame) -> pd.DataFrame:
    """A Polars frame as the dashboards' tables take it.

    Decimal money becomes numbers the browser table can serialise. Zoned times become UTC
    without their zone: the table shows UTC either way, and its reading of zoned pandas
    columns relies on a pandas behaviour that is going away.
    """
    decimals = [name for name, dtype in frame.schema.items() if dtype.is_decimal()]
    zoned = [
        name
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
    ]
    return frame.with_columns(
        *(pl.col(name).cast(pl.Float64) for name in decimals),
        *(pl.col(name).dt.convert_time_zone("UTC").dt.replace_time_zone(None) for name in zoned),
    ).to_pandas()


@dataclass(frozen=True)
class Page:
    """One dashboard page: its URL slug, title, sidebar order and the function that builds it."""

    slug: str
    title: str
    build: Callable[[Workbench], list[Any]]
    order: int = 100
    description: str = ""


def discover_pages() -> list[Page]:
    """Every registered page, built-in ones included, in sidebar order."""
    pages: dict[str, Page] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        page = entry.load()
        if not isinstance(page, Page):
            raise TerminalError(
                f"Entry point {entry.name!r} in {ENTRY_POINT_GROUP} is {type(page).__name__}, "
                "not a workbench.dashboards.layout.Page.",
                remedy=f"point it at a Page object (value: {entry.value}).",
            )
        pages[page.slug] = page
    return sorted(pages.values(), key=lambda p: (p.order, p.title))


def navigation(pages: list[Page], current: str) -> pn.pane.HTML:
    links = "".join(
        f'<li><a href="./{p.slug}" class="dm-nav{" dm-nav-current" if p.slug == current else ""}"'
        f' title="{p.description}">{p.title}</a></li>'
        for p in pages
    )
    return pn.pane.HTML(
        f'<nav aria-label="pages"><ul class="dm-nav-list">{links}</ul></nav>'
        '<p><a href="./logout" class="dm-logout">Log out</a></p>',
        sizing_mode="stretch_width",
    )


_CSS = """
.dm-nav-list { list-style: none; padding: 0; margin: 0; }
.dm-nav-list li a { display: block; padding: 6px 8px; border-radius: 4px; text-decoration: none; }
.dm-nav-current { font-weight: 600; background: rgba(0, 114, 181, 0.12); }
"""


def refresh_every(callback: Callable[[], None], milliseconds: int) -> None:
    """Run `callback` periodically while a browser session is open (not when built in a test)."""
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        pn.state.add_periodic_callback(callback, period=milliseconds)


def render(page: Page, pages: list[Page], workbench: Workbench) -> pn.template.FastListTemplate:
    """The page's content inside the one template every page shares."""
    return pn.template.FastListTemplate(
        title=APP_TITLE,
        sidebar=[navigation(pages, page.slug)],
        main=[
            pn.Column(
                pn.pane.Markdown(f"## {page.title}"),
                *page.build(workbench),
                sizing_mode="stretch_width",
            )
        ],
        raw_css=[_CSS],
        accent="#0072B5",
        # Served offline too: system fonts, no font CDN.
        font="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
        font_url="",
    )
