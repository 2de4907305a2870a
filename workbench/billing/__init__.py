"""Billing: pricing, subscriptions, usage, invoices, payments, and MRR/churn analytics."""

from __future__ import annotations

from workbench.billing.errors import BillingError, BillingInputError
from workbench.billing.mrr import (
    MOVEMENTS,
    MrrAnalysis,
    analyse,
    cohort_matrix,
    mrr_movements,
    prepare_intervals,
    saas_metrics,
)

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
