"""Self-contained SVG charts of the MRR analytics (dashboard and report; nothing loads online)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import polars as pl

WIDTH, HEIGHT, PAD = 760, 280, 48
COLOURS = {
    "new": "#2e7d32",
    "expansion": "#66bb6a",
    "reactivation": "#26a69a",
    "contraction": "#ef6c00",
    "churn": "#c62828",
    "fx_impact": "#7e57c2",
}


def _svg(body: str, css_class: str, title: str, width: int = WIDTH, height: int = HEIGHT) -> str:
    # scales down to the space it is given (two charts side by side), never up
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" style="max-width:{width}px" '
        f'viewBox="0 0 {width} {height}" class="{css_class}" role="img" '
        f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>'
        f'<text x="{PAD}" y="18" font-size="13" font-weight="600">{html.escape(title)}</text>'
        f"{body}</svg>"
    )


def _scale(lo: float, hi: float, top: float, bottom: float) -> tuple[float, float]:
    if hi == lo:
        hi = lo + 1
    k = (bottom - top) / (hi - lo)
    return k, bottom + lo * k  # y = offset - value * k


def _axis(lo: float, hi: float, k: float, offset: float, *, right: bool = False) -> str:
    """Five labelled grid lines; a right-hand axis labels them at the right edge, no lines."""
    parts = []
    for i in range(5):
        value = lo + (hi - lo) * i / 4
        y = offset - value * k
        label = f"{value:,.{0 if hi - lo >= 10 else 2}f}"
        if right:
            parts.append(
                f'<text x="{WIDTH - 12}" y="{y - 3:.1f}" font-size="10" text-anchor="end" '
                f'fill="#555">{label}</text>'
            )
            continue
        parts.append(
            f'<line x1="{PAD}" x2="{WIDTH - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{PAD - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{label}</text>"
        )
    return "".join(parts)


def _labels(months: Sequence[object], step: float) -> str:
    every = max(1, len(months) // 12)
    return "".join(
        f'<text x="{PAD + step * (i + 0.5):.1f}" y="{HEIGHT - 8}" font-size="10" '
        f'text-anchor="middle">{html.escape(str(m)[:7])}</text>'
        for i, m in enumerate(months)
        if i % every == 0
    )


def waterfall(metrics: pl.DataFrame, title: str = "MRR movements per month") -> str:
    """Stacked gains above zero and losses below, per month, with the net change as a dot."""
    if metrics.height == 0:
        return _svg('<text x="60" y="80">No data</text>', "dm-billing-waterfall", title)
    f = metrics.with_columns(
        [pl.col(c).cast(pl.Float64) for c in (*COLOURS, "net_new_mrr")]
    ).with_columns(
        gain=pl.col("new") + pl.col("expansion") + pl.col("reactivation")
        + pl.col("fx_impact").clip(lower_bound=0),
        loss=pl.col("contraction") + pl.col("churn") - pl.col("fx_impact").clip(upper_bound=0),
    )  # fmt: skip
    gains = [float(v) for v in f["gain"].to_list()]
    losses = [float(v) for v in f["loss"].to_list()]
    hi, lo = max([*gains, 1.0]), -max([*losses, 1.0])
    k, offset = _scale(lo, hi, 30, HEIGHT - 24)
    step = (WIDTH - PAD - 10) / f.height
    bars = []
    for i, row in enumerate(f.iter_rows(named=True)):
        x = PAD + step * i + step * 0.15
        up = down = 0.0
        for name in ("new", "expansion", "reactivation", "fx_impact"):
            value = max(row[name], 0.0)
            if value:
                bars.append(
                    f'<rect x="{x:.1f}" y="{offset - (up + value) * k:.1f}" '
                    f'width="{step * 0.7:.1f}" '
                    f'height="{value * k:.1f}" fill="{COLOURS[name]}"><title>{row["month"]} '
                    f"{name}: {value:,.2f}</title></rect>"
                )
                up += value
        for name in ("contraction", "churn", "fx_impact"):
            value = row[name] if name != "fx_impact" else -min(row[name], 0.0)
            if value:
                bars.append(
                    f'<rect x="{x:.1f}" y="{offset + down * k:.1f}" width="{step * 0.7:.1f}" '
                    f'height="{value * k:.1f}" fill="{COLOURS[name]}"><title>{row["month"]} '
                    f"{name}: -{value:,.2f}</title></rect>"
                )
                down += value
        bars.append(
            f'<circle cx="{x + step * 0.35:.1f}" cy="{offset - row["net_new_mrr"] * k:.1f}" r="3" '
            f'fill="#111"><title>{row["month"]} net new MRR: {row["net_new_mrr"]:,.2f}</title>'
            "</circle>"
        )
    legend = "".join(
        f'<rect x="{PAD + 110 * i + 200}" y="8" width="10" height="10" fill="{c}"/>'
        f'<text x="{PAD + 110 * i + 214}" y="17" font-size="10">{n}</text>'
        for i, (n, c) in enumerate(list(COLOURS.items())[:5])
    )
    return _svg(
        _axis(lo, hi, k, offset) + "".join(bars) + _labels(f["month"].to_list(), step) + legend,
        "dm-billing-waterfall",
        title,
    )


def _bounds(series: dict[str, Sequence[float | None]]) -> tuple[float, float] | None:
    values = [float(v) for s in series.values() for v in s if v is not None]
    if not values:
        return None
    hi, lo = max(values), min(*values, 0.0)
    return lo, hi if hi > lo else lo + 1


def lines(
    months: Sequence[object],
    series: dict[str, Sequence[float | None]],
    title: str,
    css_class: str,
    right: dict[str, Sequence[float | None]] | None = None,
) -> str:
    """One line per series over the months; `right` series (dashed) have a scale of their own,
    labelled on the right, for quantities of another size (paying customers next to MRR)."""
    left_bounds, right_bounds = _bounds(series), _bounds(right or {})
    if not months or left_bounds is None:
        return _svg('<text x="60" y="80">No data</text>', css_class, title)
    step = (WIDTH - PAD - 10) / len(months)
    palette = ["#0072B5", "#c62828", "#2e7d32", "#ef6c00", "#7e57c2"]
    scales = [(series, left_bounds, "")]
    if right and right_bounds is not None:
        scales.append((right, right_bounds, ' stroke-dasharray="5 3"'))
    body, j = [], 0
    for group, (lo, hi), dash in scales:
        k, offset = _scale(lo, hi, 30, HEIGHT - 24)
        for name, points in group.items():
            coords = [
                f"{PAD + step * (i + 0.5):.1f},{offset - float(v) * k:.1f}"
                for i, v in enumerate(points)
                if v is not None
            ]
            colour = palette[j % len(palette)]
            side = " (right scale)" if dash else ""
            body.append(
                f'<polyline points="{" ".join(coords)}" fill="none" stroke="{colour}" '
                f'stroke-width="2"{dash}><title>{html.escape(name)}</title></polyline>'
                f'<text x="{PAD + 200 + 140 * j}" y="17" font-size="10" fill="{colour}">'
                f"— {html.escape(name + side)}</text>"
            )
            j += 1
        body.append(_axis(lo, hi, k, offset, right=bool(dash)))
    return _svg("".join(body) + _labels(list(months), step), css_class, title)


def heatmap(matrix: pl.DataFrame, title: str = "Net MRR retention by cohort") -> str:
    """Cohort rows, months-since columns; colour from red (0 %) to green (>= 100 %)."""
    if matrix.height == 0:
        return _svg('<text x="60" y="80">No cohorts</text>', "dm-billing-cohorts", title)
    columns = [c for c in matrix.columns if c != "cohort"]
    cell_w = max(18.0, min(40.0, (WIDTH - 110) / max(len(columns), 1)))
    cell_h = 18
    height = 40 + cell_h * matrix.height + 10
    width = int(110 + cell_w * len(columns) + 10)
    cells = []
    for r, row in enumerate(matrix.iter_rows(named=True)):
        y = 30 + r * cell_h
        cells.append(
            f'<text x="100" y="{y + 13}" font-size="10" text-anchor="end">{row["cohort"]}</text>'
        )
        for c, name in enumerate(columns):
            value = row[name]
            if value is None:
                continue
            ratio = max(0.0, min(float(value), 1.2)) / 1.2
            red, green = int(220 * (1 - ratio)), int(60 + 140 * ratio)
            cells.append(
                f'<rect x="{110 + c * cell_w:.1f}" y="{y}" width="{cell_w - 1:.1f}" '
                f'height="{cell_h - 1}" fill="rgb({red},{green},90)">'
                f"<title>cohort {row['cohort']}, "
                f"month {name}: {float(value):.0%}</title></rect>"
            )
    return _svg("".join(cells), "dm-billing-cohorts", title, width=max(width, 300), height=height)
