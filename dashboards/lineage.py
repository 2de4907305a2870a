"""Lineage: a dataset's upstream and downstream graph, with a depth control.

The graph is drawn as layered SVG (upstream levels to the left, downstream to the right), so it
renders offline; every node links to its own lineage view at the depth chosen. Dataset and
depth are kept in the address, so a link or a reload shows the same view.
"""

from __future__ import annotations

import html
import itertools
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import panel as pn
from workbench.dashboards.layout import Page

from workbench.errors import UnknownNameError

if TYPE_CHECKING:
    import polars as pl

    from workbench.client import Workbench

COLUMN_WIDTH, ROW_HEIGHT, NODE_WIDTH, NODE_HEIGHT = 230, 46, 200, 30
LOWEST, DEEPEST = 1, 10  # the depth slider's range


def _layers(upstream: pl.DataFrame, downstream: pl.DataFrame) -> dict[int, list[str]]:
    layers: dict[int, list[str]] = {}
    for frame, sign in ((upstream, -1), (downstream, 1)):
        for dataset, depth in frame.select("dataset", "depth").unique().sort("dataset").rows():
            layers.setdefault(sign * int(depth), []).append(str(dataset))
    return layers


def render_svg(
    focus: str, upstream: pl.DataFrame, downstream: pl.DataFrame, depth: int | None = None
) -> str:
    """The focus dataset in the middle, each level of lineage one column away.

    With `depth`, each node's link carries it, so focusing on a node keeps the chosen depth.
    """
    keep = "" if depth is None else f"&amp;depth={int(depth)}"
    layers = _layers(upstream, downstream)
    layers[0] = [focus]
    low, high = min(layers), max(layers)
    tallest = max(len(names) for names in layers.values())
    width = (high - low + 1) * COLUMN_WIDTH
    height = max(tallest * ROW_HEIGHT, ROW_HEIGHT) + 20
    position: dict[str, tuple[int, int]] = {}
    nodes = []
    for level, names in sorted(layers.items()):
        x = (level - low) * COLUMN_WIDTH + 10
        top = (height - len(names) * ROW_HEIGHT) // 2
        for index, name in enumerate(names):
            y = top + index * ROW_HEIGHT
            position.setdefault(name, (x, y))
            fill = "#0072B5" if level == 0 else "#e8f1f8"
            colour = "#fff" if level == 0 else "#0b3d5c"
            label = name if len(name) <= 28 else "…" + name[-27:]
            nodes.append(
                f'<a href="?dataset={quote(name)}{keep}" class="dm-lineage-node" data-dataset='
                f'"{html.escape(name)}"><rect x="{x}" y="{y}" width="{NODE_WIDTH}" '
                f'height="{NODE_HEIGHT}" rx="6" fill="{fill}" stroke="#0072B5"/>'
                f'<text x="{x + 10}" y="{y + 19}" font-size="12" fill="{colour}">'
                f"<title>{html.escape(name)}</title>{html.escape(label)}</text></a>"
            )
    edges = []
    for frame in (upstream, downstream):
        for path in frame["path"].to_list():
            steps = [step.split("#", 1)[0] for step in path]
            for source, target in itertools.pairwise(steps):
                if source in position and target in position:
                    (x1, y1), (x2, y2) = position[source], position[target]
                    if x1 > x2:  # upstream paths run from the focus backwards
                        (x1, y1), (x2, y2) = (x2, y2), (x1, y1)
                    edges.append(
                        f'<line x1="{x1 + NODE_WIDTH}" y1="{y1 + NODE_HEIGHT // 2}" x2="{x2}" '
                        f'y2="{y2 + NODE_HEIGHT // 2}" stroke="#8aa" marker-end="url(#arrow)"/>'
                    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'class="dm-lineage-graph"><defs><marker id="arrow" markerWidth="8" markerHeight="8" '
        f'refX="8" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#8aa"/></marker>'
        f"</defs>{''.join(sorted(set(edges)))}{''.join(nodes)}</svg>"
    )


def build(workbench: Workbench) -> list[Any]:
    dataset = pn.widgets.TextInput(
        label="Dataset (namespace/name)", width=360, css_classes=["dm-lineage-dataset"]
    )
    depth = pn.widgets.IntSlider(
        label="Depth",
        start=LOWEST,
        end=DEEPEST,
        value=3,
        width=240,
        css_classes=["dm-lineage-depth"],
    )
    graph = pn.pane.HTML(sizing_mode="stretch_width", css_classes=["dm-lineage"])
    summary = pn.pane.HTML(css_classes=["dm-lineage-summary"])
    if pn.state.location is not None:
        # Synced apart, so a bad depth in a link cannot stop the dataset from being set.
        pn.state.location.sync(dataset, {"value": "dataset"})
        pn.state.location.sync(depth, {"value": "depth"})

    def refresh(*_events: Any) -> None:
        chosen = depth.value or 0
        if not LOWEST <= chosen <= DEEPEST:  # a hand-edited link; setting it refreshes
            depth.value = min(max(chosen, LOWEST), DEEPEST)
            return
        focus = dataset.value.strip()
        if not focus:
            graph.object = ""
            summary.object = "<p>Enter a dataset, e.g. <code>warehouse/orders</code>.</p>"
            return
        try:
            up = workbench.catalog.lineage(focus, direction="upstream", depth=depth.value)
            down = workbench.catalog.lineage(focus, direction="downstream", depth=depth.value)
        except UnknownNameError as exc:  # a typo: say so, with the closest dataset lineage knows
            graph.object = ""
            summary.object = f"<p>{html.escape(str(exc))}</p>"
            return
        graph.object = render_svg(focus, up, down, depth.value)
        summary.object = (
            f"<p><strong>{up.height}</strong> upstream and <strong>{down.height}</strong> "
            f"downstream datasets within depth {depth.value}.</p>"
        )

    dataset.param.watch(refresh, "value")
    depth.param.watch(refresh, "value")
    refresh()
    return [pn.Row(dataset, depth), summary, graph]


PAGE = Page(
    slug="lineage",
    title="Lineage",
    build=build,
    order=15,
    description="Upstream and downstream graph of a dataset",
)
