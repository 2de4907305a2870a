"""Connectors: installed connectors, capabilities, health, last sync, records, errors, sync now."""

from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING, Any

import pandas as pd
import panel as pn
import param
import polars as pl
from workbench.dashboards.layout import Page

if TYPE_CHECKING:
    from workbench.client import Workbench

STATUS_COLUMNS = [
    "instance",
    "connector",
    "capabilities",
    "health",
    "last_status",
    "last_finished",
    "records_read",
    "records_published",
    "error",
]


class ConnectorsState(param.Parameterized):
    """The page's state: the selected instance and the outcome of its last "sync now"."""

    instance = param.Selector(default=None, objects=[], allow_None=True)
    message = param.String(default="")
    busy = param.Boolean(default=False)

    def __init__(self, workbench: Workbench, **params: Any) -> None:
        super().__init__(**params)
        self.workbench = workbench
        names = list(workbench.connectors)
        self.param.instance.objects = names
        if names:
            self.instance = names[0]

    def status(self, check_health: bool) -> pd.DataFrame:
        frame = self.workbench.connectors.status(check_health=check_health)
        if frame.height == 0:
            return pd.DataFrame(columns=STATUS_COLUMNS)
        return _display(frame.select(STATUS_COLUMNS))

    def sync_now(self, full: bool, done: Any) -> None:
        """Run the selected instance's sync in a thread; `done` refreshes the page after."""
        if self.instance is None or self.busy:
            return
        name = self.instance
        self.busy = True
        self.message = f"syncing {name}…"

        def work() -> None:
            try:
                result = self.workbench.connectors[name].sync(full=full, progress=False)
                self.message = (
                    f"{name}: {result.mode} sync {result.status}; read {result.records_read}, "
                    f"published {result.records_published}, deleted {result.records_deleted}"
                )
            except Exception as exc:
                self.message = f"{name}: sync failed: {exc}"
            finally:
                self.busy = False
                done()

        threading.Thread(target=work, name=f"sync-{name}", daemon=True).start()


def _display(frame: pl.DataFrame) -> pd.DataFrame:
    """Timestamps as readable UTC text (Tabulator would show epoch milliseconds)."""
    stamps = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.Datetime)]
    return frame.with_columns(
        [pl.col(name).dt.strftime("%Y-%m-%d %H:%M:%S") for name in stamps]
    ).to_pandas()


def build(workbench: Workbench) -> list[Any]:
    state = ConnectorsState(workbench)
    installed = pn.widgets.Tabulator(
        workbench.connectors.installed().to_pandas(),
        disabled=True,
        show_index=False,
        sizing_mode="stretch_width",
        css_classes=["dm-connectors-installed"],
    )
    table = pn.widgets.Tabulator(
        state.status(check_health=False),
        disabled=True,
        show_index=False,
        sizing_mode="stretch_width",
        height=260,
        css_classes=["dm-connectors-status"],
    )
    runs = pn.widgets.Tabulator(
        _display(workbench.connectors.runs(limit=20)),
        disabled=True,
        show_index=False,
        sizing_mode="stretch_width",
        height=260,
        css_classes=["dm-connectors-runs"],
    )
    message = pn.pane.HTML("", css_classes=["dm-connectors-message"], sizing_mode="stretch_width")

    def refresh(check_health: bool = False) -> None:
        table.value = state.status(check_health=check_health)
        runs.value = _display(workbench.connectors.runs(limit=20))
        message.object = f"<p>{html.escape(state.message)}</p>" if state.message else ""

    def after_sync() -> None:
        document = pn.state.curdoc
        if document is not None and document.session_context is not None:
            document.add_next_tick_callback(refresh)
        else:
            refresh()

    picker = pn.widgets.Select.from_param(state.param.instance, name="Instance", width=220)
    sync_now = pn.widgets.Button(label="Sync now", color="primary", width=120)
    sync_full = pn.widgets.Button(label="Full sync", width=120)
    check = pn.widgets.Button(label="Check health", width=130)
    sync_now.on_click(lambda _e: (state.sync_now(False, after_sync), refresh()))
    sync_full.on_click(lambda _e: (state.sync_now(True, after_sync), refresh()))
    check.on_click(lambda _e: refresh(check_health=True))
    return [
        pn.pane.Markdown("### Installed connectors"),
        installed,
        pn.pane.Markdown("### Instances"),
        pn.Row(picker, sync_now, sync_full, check),
        message,
        table,
        pn.pane.Markdown("### Recent runs"),
        runs,
    ]


PAGE = Page(
    slug="connectors",
    title="Connectors",
    build=build,
    order=60,
    description="Installed connectors, health, syncs and errors",
)
