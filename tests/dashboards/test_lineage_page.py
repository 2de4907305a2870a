"""The Lineage page answers a mistyped dataset with the closest one lineage knows."""

from __future__ import annotations

import uuid
from typing import Any

import panel as pn
import pytest
from workbench.dashboards.lineage import build

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
