"""Event Monitor: the live stream, rates, lag per consumer group, dead letters with replay."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd
import panel as pn
import polars as pl
from workbench.dashboards.layout import Page, refresh_every, table_data

from workbench.events.deadletters import replay_letters
from workbench.observability import get_logger, scrub

if TYPE_CHECKING:
    from workbench.client import Workbench

log = get_logger(__name__)

REFRESH_MS = 5_000
RATES = """
SELECT date_trunc('minute', recorded_at) AS minute, event_type, count(*) AS events
FROM dictamesh_event_log WHERE recorded_at > now() - interval '1 hour'
GROUP BY 1, 2 ORDER BY 1
"""
RECENT = """
SELECT recorded_at, event_type, subject, event_source, entity_version, topic,
       kafka_partition, kafka_offset, trace_id
FROM dictamesh_event_log ORDER BY id DESC LIMIT 50
"""
MESSAGE_CHARS = 200


def _table(css_class: str, **options: Any) -> pn.widgets.Tabulator:
    return pn.widgets.Tabulator(
        pd.DataFrame(),
        disabled=True,
        show_index=False,
        sizing_mode="stretch_width",
        css_classes=[css_class],
        **options,
    )


def _message(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _short(exc: Exception) -> str:
    """One line of an error for the page (driver errors run to many), passwords masked."""
    lines = scrub(str(exc)).strip().splitlines() or [""]
    return f"{type(exc).__name__}: {lines[0]}"[:MESSAGE_CHARS]


def _rates(workbench: Workbench) -> pd.DataFrame:
    per_minute = workbench.sql(RATES)
    if not per_minute.height:
        return pd.DataFrame()
    return table_data(
        per_minute.pivot(on="event_type", index="minute", values="events")
        .fill_null(0)
        .sort("minute", descending=True)
    )


def _lag(workbench: Workbench) -> pd.DataFrame:
    lags = workbench.lag()
    if not lags.height:
        return pd.DataFrame()
    return table_data(
        lags.group_by("group", "topic")
        .agg(pl.col("lag_messages").sum(), pl.col("lag_seconds").max())
        .sort("group", "topic")
    )


class DeadLetterTable:
    """The dead letters by letter id; ticks are kept by id, so a refresh moving rows keeps them."""

    def __init__(self) -> None:
        self.widget = _table("dm-dead-letters", height=220, selectable="checkbox")
        self.ticked: list[str] = []
        self.widget.param.watch(self._remember, "selection")

    def _remember(self, event: Any) -> None:
        ids = self.widget.value.index
        self.ticked = [str(ids[row]) for row in event.new if row < len(ids)]

    def show(self, frame: pd.DataFrame) -> None:
        ticked = [letter for letter in self.ticked if letter in frame.index]
        # The new rows first (Tabulator may remap or drop the selection as they land), then
        # the ticks by name, so the last word on the selection is ours.
        self.widget.value = frame
        self.widget.selection = [int(frame.index.get_loc(letter)) for letter in ticked]
        self.ticked = ticked

    def clear(self) -> None:
        self.widget.selection = []
        self.ticked = []


class EventMonitor:
    """One session's Event Monitor: its panes, their refresh and the dead-letter replay."""

    def __init__(self, workbench: Workbench) -> None:
        self.workbench = workbench
        self.recent = _table("dm-recent-events", height=300)
        self.rates = _table("dm-event-rates", height=200)
        self.lag = _table("dm-group-lag", height=220)
        self.letters = DeadLetterTable()
        self.replay_button = pn.widgets.Button(
            label="Replay selected", color="warning", width=160, css_classes=["dm-replay"]
        )
        self.replay_button.on_click(lambda _event: self.replay())
        self.status = pn.pane.HTML("", css_classes=["dm-replay-status"])
        self.problems = pn.pane.HTML("", css_classes=["dm-events-problems"])

    def refresh(self) -> None:
        """Re-read every section; one that fails keeps its last rows and says why on the page."""
        sections: list[tuple[str, Callable[[], None]]] = [
            ("Latest changes", self._show_recent),
            ("Event rates", self._show_rates),
            ("Consumer lag", self._show_lag),
            ("Dead letters", self._show_letters),
        ]
        failures = [_message(problem) for name, show in sections if (problem := _try(name, show))]
        self.problems.object = "".join(failures)

    def _show_recent(self) -> None:
        self.recent.value = table_data(self.workbench.sql(RECENT))

    def _show_rates(self) -> None:
        frame = _rates(self.workbench)
        # Columns are event types, and Tabulator renders column titles as HTML.
        titles = {column: html.escape(str(column)) for column in frame.columns}
        self.rates.param.update(titles=titles, value=frame)

    def _show_lag(self) -> None:
        self.lag.value = _lag(self.workbench)

    def _show_letters(self) -> None:
        frame = table_data(self.workbench.events.dead_letters())
        self.letters.show(frame.set_index("letter_id"))

    def replay(self) -> None:
        chosen = list(self.letters.ticked)
        if not chosen:
            self.status.object = _message("Select dead letters to replay first.")
            return
        user = str(pn.state.user or "anonymous")
        try:
            sent = replay_letters(self.workbench.events.bootstrap, chosen)
        except Exception as exc:  # the page stays usable; the user sees why
            log.warning("dead letter replay failed", user=user, letters=chosen, error=str(exc))
            self.status.object = _message(f"Replay failed: {_short(exc)}")
            return
        log.info("dead letters replayed", user=user, letters=chosen, sent=sent)
        self.letters.clear()
        self.status.object = _message(f"Replayed {sent} record(s) to their original topics.")
        self.refresh()

    def panes(self) -> list[Any]:
        return [
            self.problems,
            pn.pane.Markdown("### Latest applied changes"),
            self.recent,
            pn.pane.Markdown("### Events per minute (last hour)"),
            self.rates,
            pn.pane.Markdown("### Lag per consumer group"),
            self.lag,
            pn.pane.Markdown("### Dead letters"),
            self.letters.widget,
            pn.Row(self.replay_button, self.status),
        ]


def _try(section: str, show: Callable[[], None]) -> str | None:
    """Run one section's refresh; on failure, what to tell the user instead of raising."""
    try:
        show()
    except Exception as exc:  # a broker or database hiccup must not break the page
        return f"{section} unavailable: {_short(exc)}"
    return None


def build(workbench: Workbench) -> list[Any]:
    monitor = EventMonitor(workbench)
    monitor.refresh()
    refresh_every(monitor.refresh, REFRESH_MS)
    return monitor.panes()


PAGE = Page(
    slug="events",
    title="Event Monitor",
    build=build,
    order=20,
    description="Live stream, rates, lag and dead letters",
)
