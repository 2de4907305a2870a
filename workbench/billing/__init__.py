"""Billing: pricing, subscriptions, usage, invoices, payments, and MRR/churn analytics.

The analytics load on first use, so commands that never touch them do not pay for Polars.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from workbench.billing.errors import BillingError, BillingInputError

if TYPE_CHECKING:
    from workbench.billing.mrr import (
        MOVEMENTS,
        MrrAnalysis,
        analyse,
        cohort_matrix,
        mrr_movements,
        prepare_intervals,
        saas_metrics,
    )

_FROM_MRR = {
    "MOVEMENTS",
    "MrrAnalysis",
    "analyse",
    "cohort_matrix",
    "mrr_movements",
    "prepare_intervals",
    "saas_metrics",
}


def __getattr__(name: str) -> Any:
    if name in _FROM_MRR:
        return getattr(importlib.import_module("workbench.billing.mrr"), name)
    raise AttributeError(f"module 'workbench.billing' has no attribute {name!r}")


__all__ = [
    "MOVEMENTS",
    "BillingError",
    "BillingInputError",
    "MrrAnalysis",
    "analyse",
    "cohort_matrix",
    "mrr_movements",
    "prepare_intervals",
    "saas_metrics",
]
