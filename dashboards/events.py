"""Event Monitor: the live stream, rates, lag per consumer group, dead letters with replay."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import panel as pn
import polars as pl
from workbench.dashboards.layout import Page, refresh_every

if TYPE_CHECKING:
    from workbench.client import Workbench

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


def _table(css_class: str, **options: Any) -> pn.widgets.Tabulator:
    return pn.widgets.Tabulator(
        pd.DataFrame(),
        disabled=True,
        show_index=False,
        sizing_mode="stretch_width",
        css_classes=[css_class],
        **options,
    )


def build(workbench: Workbench) -> list[Any]:
    recent = _table("dm-recent-events", height=300)
    rates = _table("dm-event-rates", height=200)
    lag = _table("dm-group-lag", height=220)
    letters = _table("dm-dead-letters", height=220, selectable="checkbox")
    replay = pn.widgets.Button(
        label="Replay selected", color="warning", width=160, css_classes=["dm-replay"]
    )
    status = pn.pane.Markdown("")

    def refresh() -> None:
        recent.value = workbench.sql(RECENT).to_pandas()
        per_minute = workbench.sql(RATES)
        rates.value = (
            per_minute.pivot(on="event_type", index="minute", values="events")
            .fill_null(0)
            .sort("minute", descending=True)
            .to_pandas()
            if per_minute.height
            else pd.DataFrame()
        )
        lags = workbench.lag()
        lag.value = (
            lags.group_by("group", "topic")
            .agg(pl.col("lag_messages").sum(), pl.col("lag_seconds").max())
            .sort("group", "topic")
            .to_pandas()
            if lags.height
            else pd.DataFrame()
        )
        letters.value = workbench.events.dead_letters().to_pandas()

    def do_replay(_event: Any) -> None:
        chosen = letters.value.iloc[letters.selection] if letters.selection else None
        if chosen is None or chosen.empty:
            status.object = "Select dead letters to replay first."
            return
        sent = 0
        for topic, rows in chosen.groupby("topic"):
            sent += workbench.events.replay(str(topic), [int(o) for o in rows["offset"]])
        status.object = f"Replayed {sent} record(s) to their original topics."
        refresh()

    replay.on_click(do_replay)
    refresh()
    refresh_every(refresh, REFRESH_MS)
    return [
        pn.pane.Markdown("### Latest applied changes"),
        recent,
        pn.pane.Markdown("### Events per minute (last hour)"),
        rates,
        pn.pane.Markdown("### Lag per consumer group"),
        lag,
        pn.pane.Markdown("### Dead letters"),
        letters,
        pn.Row(replay, status),
    ]


PAGE = Page(
    slug="events",
    title="Event Monitor",
    build=build,
    order=20,
    description="Live stream, rates, lag and dead letters",
)
