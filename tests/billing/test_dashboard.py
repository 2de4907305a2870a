"""The Billing page: built against real data, and driven in a real browser."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.dashboards.test_overview_browser import (  # fixtures shared with the other pages
    _logged_in,
    browser,
    server,
)
from workbench.billing import charts
from workbench.billing.mrr import analyse

__all__ = ["browser", "server"]
pytestmark = pytest.mark.stack


def _seed(workbench: Any) -> str:
    billing = workbench.billing
    org = f"dash{uuid.uuid4().hex[:6]}"
    billing.create_organization(org, "Dashboard Co", "USD", invoice_prefix=org.upper())
    billing.create_plan(org, "basic", "Basic", amount=Decimal(50))
    billing.create_plan(org, "pro", "Pro", amount=Decimal(200))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = (today - timedelta(days=200)).replace(day=1)
    for i in range(6):
        billing.create_customer(org, f"{org}-c{i}", f"Customer {i}")
        sub = billing.subscribe(
            org, f"{org}-c{i}", "basic" if i % 2 else "pro", at=start + timedelta(days=20 * i)
        )
        if i == 1:
            billing.change_plan(sub, "pro", at=start + timedelta(days=45))
        if i == 2:
            billing.cancel(sub, at=start + timedelta(days=120))
    billing.generate_invoices(org, at=today)
    return org


def test_page_builds_with_charts_and_invoices(workbench: Any) -> None:
    from workbench.dashboards.billing import PAGE

    org = _seed(workbench)
    objects = PAGE.build(workbench)
    htmls = [o.object for o in objects if hasattr(o, "object") and isinstance(o.object, str)]
    joined = "\n".join(htmls)
    assert "dm-billing-waterfall" in joined
    assert "dm-billing-cohorts" in joined
    assert "MRR" in joined
    invoices = next(o for o in objects if "dm-billing-invoices" in getattr(o, "css_classes", []))
    assert (invoices.value["customer"].str.startswith(org)).sum() == 5


def test_charts_render_empty_and_small_inputs() -> None:
    empty = analyse(
        {
            "customer_id": [],
            "subscription_id": [],
            "valid_from": [],
            "amount": [],
            "currency": [],
            "interval": [],
        },
        start=date(2024, 1, 1),
        end=date(2024, 3, 1),
    )
    assert "<svg" in charts.waterfall(empty.metrics)
    assert "No cohorts" in charts.heatmap(empty.cohort_matrix())
    assert "No data" in charts.lines([], {}, "t", "c")


@pytest.mark.browser
def test_billing_page_in_a_browser(
    server: Any, browser: Any, workbench: Any, tmp_path: Any
) -> None:
    org = _seed(workbench)
    page = _logged_in(browser, server)
    page.goto(server.url + "/billing")
    page.locator(".dm-billing-waterfall").first.wait_for(timeout=60_000)
    assert page.locator(".dm-billing-mrr").count() == 1
    assert page.locator(".dm-billing-cohorts").count() == 1
    kpis = page.locator(".dm-billing-kpis p")
    kpis.first.wait_for(timeout=30_000)
    assert "MRR" in kpis.first.inner_text()
    rows = page.locator(".dm-billing-invoices .tabulator-row", has_text=org)
    rows.first.wait_for(timeout=30_000)
    assert rows.count() == 5
    rows.first.click()
    detail = page.locator(".dm-billing-invoice-detail table")
    detail.wait_for(timeout=30_000)
    assert "subscription" in detail.inner_text()
    page.screenshot(path=str(tmp_path) + "/billing.png", full_page=True)
    page.close()
