"""Health: what each component's check found, in detail."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import panel as pn
from workbench.dashboards.layout import Page

if TYPE_CHECKING:
    from workbench.client import Workbench
    from workbench.observability import HealthReport


def _facts(report: HealthReport) -> pd.DataFrame:
    rows: list[tuple[str, str]] = [
        ("healthy", "yes" if report.healthy else "no"),
        ("version", report.version or "—"),
        ("url", report.url),
        ("check latency", f"{report.latency_ms:.1f} ms"),
    ]
    if report.error:
        rows.append(("error", report.error))
    for key, value in report.details.items():
        if isinstance(value, dict):
            rows.extend((f"{key}: {name}", str(item)) for name, item in value.items())
        else:
            rows.append((key, str(value)))
    return pd.DataFrame(rows, columns=["fact", "value"])


def build(workbench: Workbench) -> list[Any]:
    sections = pn.Column(sizing_mode="stretch_width")

    def refresh() -> None:
        sections.objects = [
            pn.Column(
                pn.pane.Markdown(f"### {report.name}"),
                pn.pane.DataFrame(
                    _facts(report),
                    index=False,
                    sizing_mode="stretch_width",
                    css_classes=[f"dm-health-detail-{report.name}"],
                ),
            )
            for report in workbench.health()
        ]

    lag = pn.pane.DataFrame(sizing_mode="stretch_width", index=False, css_classes=["dm-lag"])

    def refresh_lag() -> None:
        try:
            frame = workbench.lag()
        except Exception as exc:  # keep the page useful while a component is down
            lag.object = pd.DataFrame({"error": [str(exc)]})
            return
        lag.object = (
            frame.to_pandas()
            if frame.height
            else pd.DataFrame({"note": ["no consumer group has applied anything yet"]})
        )

    def refresh_all() -> None:
        refresh()
        refresh_lag()

    refresh_all()
    button = pn.widgets.Button(label="Check again", color="primary", width=120)
    button.on_click(lambda _event: refresh_all())
    return [button, sections, pn.pane.Markdown("### Consumer lag"), lag]


PAGE = Page(
    slug="health",
    title="Health",
    build=build,
    order=90,
    description="Each component's health check in detail",
)
