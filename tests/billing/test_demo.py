"""The demo organization: made through the billing service, with a history the Billing page,
the report and the analytics can show; loading it again changes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import polars as pl
import pytest

from tests.helpers import run_cli
from workbench.billing.demo import load_demo
from workbench.billing.service import Billing

pytestmark = pytest.mark.stack
NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)


def test_demo_history_has_every_lifecycle_step_and_loads_once(billing: Billing) -> None:
    org = f"demo{uuid.uuid4().hex[:8]}"
    summary = load_demo(billing, organization_id=org, customers=30, months=12, seed=3, now=NOW)
    assert (summary.customers, summary.already_loaded) == (30, False)
    subscriptions = billing.subscriptions(org)
    statuses = set(subscriptions["status"])
    assert {"active", "canceled"} <= statuses
    assert subscriptions.height > 30, "some customers came back after canceling"

    invoices = billing.invoices(org)
    assert summary.invoices == invoices.height > 0
    # every period that ended was invoiced: no live subscription is behind
    live = subscriptions.filter(pl.col("status").is_in(["trialing", "active", "past_due"]))
    assert (live["current_period_end"] > NOW).all()
    assert (invoices["issued_at"] <= NOW).all()
    assert {"paid", "open"} <= set(invoices["status"])

    analysis = billing.analysis(organization_id=org, start=date(2025, 11, 1), end=date(2026, 12, 1))
    kinds = set(analysis.movements["movement"].cast(pl.String))
    assert {"new", "expansion", "contraction", "churn", "reactivation"} <= kinds
    assert analysis.metrics["end_mrr"][-1] > 0

    again = load_demo(billing, organization_id=org, customers=30, months=12, seed=3, now=NOW)
    assert again.already_loaded
    assert (again.customers, again.invoices) == (summary.customers, summary.invoices)
    assert billing.invoices(org).height == invoices.height


def test_demo_command_loads_once(billing: Billing) -> None:
    org = f"demo{uuid.uuid4().hex[:8]}"
    args = ("billing", "demo", "--org", org, "--customers", "6", "--months", "4")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert f"'{org}': 6 customers" in first.stdout
    assert billing.invoices(org).height > 0
    second = run_cli(*args)
    assert second.returncode == 0 and "loaded already" in second.stdout
