"""Overview: each component's health and the catalog's key counts."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import panel as pn
from workbench.dashboards.layout import Page, refresh_every

if TYPE_CHECKING:
    from workbench.client import Workbench
    from workbench.observability import HealthReport

REFRESH_MS = 10_000


def _health_card(report: HealthReport) -> str:
    state = "healthy" if report.healthy else "unhealthy"
    colour = "#1a7f37" if report.healthy else "#cf222e"
    facts = [
        ("version", report.version or "—"),
        ("url", report.url),
        ("check", f"{report.latency_ms:.0f} ms"),
    ]
    if report.error:
        facts.append(("error", report.error))
    rows = "".join(
        f"<tr><th>{name}</th><td>{html.escape(str(value))}</td></tr>" for name, value in facts
    )
    return (
        f'<div class="dm-health" data-component="{report.name}" '
        f'data-healthy="{str(report.healthy).lower()}"'
        ' style="border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;min-width:260px">'
        f'<h3 style="margin:0">{report.name} <span class="dm-health-state" style="color:{colour}">'
        f"{state}</span></h3><table>{rows}</table></div>"
    )


def build(workbench: Workbench) -> list[Any]:
    health = pn.pane.HTML(sizing_mode="stretch_width")
    counts = pn.FlexBox()
    updated = pn.pane.Markdown()

    def refresh() -> None:
        reports = workbench.health()
        health.object = (
            '<div style="display:flex;gap:12px;flex-wrap:wrap">'
            + "".join(_health_card(r) for r in reports)
            + "</div>"
        )
        try:
            numbers = workbench.counts()
        except Exception as exc:  # the page stays useful while Postgres is down
            updated.object = f"Counts unavailable: {exc}"
            return
        counts.objects = [
            pn.indicators.Number(
                name=name.replace("_", " "),
                value=value,
                format="{value:,}",
                font_size="28pt",
                title_size="11pt",
            )
            for name, value in numbers.items()
        ]
        updated.object = ""

    refresh()
    button = pn.widgets.Button(label="Refresh", color="primary", width=100)
    button.on_click(lambda _event: refresh())
    refresh_every(refresh, REFRESH_MS)
    return [
        pn.pane.Markdown("### Components"),
        health,
        pn.pane.Markdown("### Catalog"),
        counts,
        button,
        updated,
    ]


PAGE = Page(
    slug="overview",
    title="Overview",
    build=build,
    order=0,
    description="Component health and key counts",
)
