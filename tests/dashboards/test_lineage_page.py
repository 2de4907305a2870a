"""The Lineage page answers a mistyped dataset with the closest one lineage knows, and its
node links keep the depth the user chose."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any
from urllib.parse import parse_qs

import panel as pn
import pytest
from workbench.dashboards.lineage import build

from tests.dashboards.support import find, record_chain

pytestmark = pytest.mark.stack


def _summary(panes: list[Any]) -> pn.pane.HTML:
    return next(p for p in panes if "dm-lineage-summary" in (p.css_classes or []))


def test_a_mistyped_dataset_is_named_with_a_suggestion_and_markup_stays_text(
    workbench: Any,
) -> None:
    ns = f"typo-{uuid.uuid4().hex[:6]}"
    workbench.catalog.record_lineage(
        {
            "eventType": "COMPLETE",
            "eventTime": "2026-11-26T10:00:00Z",
            "run": {"runId": str(uuid.uuid4())},
            "job": {"namespace": ns, "name": "load"},
            "inputs": [{"namespace": ns, "name": "orders_raw"}],
            "outputs": [{"namespace": ns, "name": "orders"}],
        }
    )
    panes = build(workbench)
    dataset = panes[0][0]
    summary = _summary(panes)

    dataset.value = f"{ns}/orders"
    assert "<strong>1</strong> upstream" in summary.object

    dataset.value = f"{ns}/ordres<img src=x>"
    assert f"Did you mean &#x27;{ns}/orders&#x27;?" in summary.object
    assert "<img" not in summary.object


def test_every_node_link_carries_the_depth_the_user_chose(workbench: Any) -> None:
    raw, clean, mart, _board = record_chain(workbench, ["raw", "clean", "mart", "board"])
    panes = build(workbench)
    dataset, depth = panes[0][0], panes[0][1]
    graph = find(panes, "dm-lineage")

    dataset.value = clean
    depth.value = 1
    assert "within depth 1" in _summary(panes).object
    links = {
        name: parse_qs(html.unescape(href).removeprefix("?"))
        for href, name in re.findall(
            r'href="([^"]*)" class="dm-lineage-node" data-dataset="([^"]*)"', graph.object
        )
    }
    # A click on a node opens its link, so the link must say the depth as well as the dataset.
    assert links == {name: {"dataset": [name], "depth": ["1"]} for name in (raw, clean, mart)}
