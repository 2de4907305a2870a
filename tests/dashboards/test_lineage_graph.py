"""The lineage graph drawing, without a browser."""

from __future__ import annotations

import polars as pl
from workbench.dashboards.lineage import render_svg

SCHEMA = {"dataset": pl.String, "field": pl.String, "depth": pl.Int64, "path": pl.List(pl.String)}


def _frame(rows: list[tuple[str, int, list[str]]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"dataset": d, "field": None, "depth": n, "path": p} for d, n, p in rows], schema=SCHEMA
    )


def test_focus_in_the_middle_levels_left_and_right() -> None:
    up = _frame([("raw/orders", 1, ["wh/orders", "raw/orders"])])
    down = _frame(
        [
            ("wh/daily", 1, ["wh/orders", "wh/daily"]),
            ("bi/board", 2, ["wh/orders", "wh/daily", "bi/board"]),
        ]
    )
    svg = render_svg("wh/orders", up, down)
    assert svg.count('class="dm-lineage-node"') == 4
    x = {
        name: int(svg.split(f'data-dataset="{name}"><rect x="')[1].split('"')[0])
        for name in ("raw/orders", "wh/orders", "wh/daily", "bi/board")
    }
    assert x["raw/orders"] < x["wh/orders"] < x["wh/daily"] < x["bi/board"]
    assert svg.count("<line ") == 3
    assert 'href="?dataset=bi/board"' in svg


def test_names_are_escaped() -> None:
    svg = render_svg("<script>alert(1)</script>", _frame([]), _frame([]))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
