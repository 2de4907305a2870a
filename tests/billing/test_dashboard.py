"""The Billing page: built against real data, and driven in a real browser; the invoice
drill-down shows the tax of each rate and the coupons."""

from __future__ import annotations

import html
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


# One per live subscription, and three for the one canceled 80 days in: the time it served (two
# months and a prorated part) is invoiced when it is canceled.
SEEDED_INVOICES = 5 + 3


def _seed(workbench: Any) -> str:
    """Six customers, five invoiced; the first has two tax rates (one inclusive) and a coupon."""
    billing = workbench.billing
    # the page reports every organization in USD: other tests' EUR plans need a rate
    billing.set_fx_rate("EUR", date(2026, 1, 1), Decimal("1.10"))
    org = f"dash{uuid.uuid4().hex[:6]}"
    billing.create_organization(org, "Dashboard Co", "USD", invoice_prefix=org.upper())
    billing.create_plan(org, "basic", "Basic", amount=Decimal(50))
    billing.create_plan(org, "pro", "Pro", amount=Decimal(200))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = (today - timedelta(days=200)).replace(day=1)
    gst = billing.create_tax_rate(org, "GST <CA>", Decimal(5), country="CA")
    qst = billing.create_tax_rate(org, "QST", Decimal("9.975"), inclusive=True, country="CA")
    billing.create_coupon(org, "WELCOME", percent_off=Decimal(10), duration="forever")
    for i in range(6):
        customer = billing.create_customer(org, f"{org}-c{i}", f"Customer {i}")
        if i == 0:
            billing.set_tax_rates(customer, [gst, qst])
            billing.apply_coupon(customer, "WELCOME", at=start)
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
    assert (invoices.value["customer"].str.startswith(org)).sum() == SEEDED_INVOICES

    # selecting the taxed invoice shows one row per tax rate and what the coupon took off
    detail = next(
        o for o in objects if "dm-billing-invoice-detail" in getattr(o, "css_classes", [])
    )
    position = list(invoices.value["customer"]).index(f"{org}-c0")
    invoices.selection = [position]
    invoice = workbench.billing.invoice(uuid.UUID(invoices.value["id"].iloc[position]))
    assert len(invoice.tax_breakdown) == 2 and invoice.discount > 0
    shown = detail.object
    assert "GST &lt;CA&gt;" in shown and "<CA>" not in shown  # escaped like the rest
    tax_table = shown.split('class="dm-billing-tax"')[1].split("</table>")[0]
    for rate in invoice.tax_breakdown:
        kind = "inclusive" if rate["inclusive"] else "exclusive"
        assert (
            f"{html.escape(rate['display_name'])}</td><td>{rate['percentage']} %</td>"
            f"<td>{kind}</td><td>{rate['taxable_amount']}</td><td>{rate['amount']}</td>"
        ) in tax_table
    [coupon] = invoice.coupons
    assert coupon["code"] == "WELCOME" and Decimal(coupon["amount"]) == invoice.discount
    assert f"<td>WELCOME</td><td>{coupon['amount']}</td>" in shown
    assert f"tax included {invoice.tax_inclusive}" in shown


def _find(objects: list[Any], css_class: str) -> Any:
    """The page component with `css_class`, wherever it sits in the layout."""
    stack = list(objects)
    while stack:
        component = stack.pop()
        if css_class in getattr(component, "css_classes", []):
            return component
        stack.extend(getattr(component, "objects", []))
    raise AssertionError(f"no component with class {css_class!r}")


def test_one_organization_top_customers_rates_and_invoice_filters(workbench: Any) -> None:
    from workbench.dashboards.billing import PAGE

    org = _seed(workbench)
    objects = PAGE.build(workbench)
    organization, _currency, start, end, _churn = objects[0]
    organization.value = org

    expected = workbench.billing.analysis(start=start.value, end=end.value, organization_id=org)
    top = _find(objects, "dm-billing-top").value
    assert top["customer_id"].tolist() == expected.customer_mrr(top=20)["customer_id"].to_list()
    assert f"{org}-c2" not in top["customer_id"].tolist(), "a canceled customer brings no MRR"
    assert list(top["mrr"]) == sorted(top["mrr"], reverse=True)
    rates = _find(objects, "dm-billing-rates-pane").object
    assert "<svg" in rates and all(name in rates for name in ("NRR", "GRR", "logo churn"))

    invoices = _find(objects, "dm-billing-invoices")
    status = next(o for o in objects[-3] if getattr(o, "name", "") == "Invoice status")
    customer = next(o for o in objects[-3] if getattr(o, "name", "") == "Customer contains")
    assert len(invoices.value) == SEEDED_INVOICES
    status.value = "void"
    assert len(invoices.value) == 0
    status.value = "open"
    customer.value = f"{org}-c3"
    assert invoices.value["customer"].tolist() == [f"{org}-c3"]


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
    # a series of another size gets a scale of its own instead of a flat line at the bottom
    both = charts.lines(
        ["2026-01", "2026-02"], {"MRR": [1000.0, 5000.0]}, "t", "c", right={"customers": [3, 31]}
    )
    assert "customers (right scale)" in both and 'stroke-dasharray="5 3"' in both
    assert ">31<" in both and ">5,000<" in both  # each axis tops out at its own series


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
    assert rows.count() == SEEDED_INVOICES
    page.locator(".dm-billing-invoices .tabulator-row", has_text=f"{org}-c0").click()
    detail = page.locator(".dm-billing-invoice-detail .dm-billing-lines")
    detail.wait_for(timeout=30_000)
    assert "subscription" in detail.inner_text()
    taxes = page.locator(".dm-billing-invoice-detail .dm-billing-tax")
    rows_of_tax = taxes.locator("tr")
    assert rows_of_tax.count() == 3  # the header and the two rates
    number = page.locator(".dm-billing-invoice-detail h4").inner_text().split(" ")[0]
    invoice_id = next(
        row["id"] for row in workbench.billing.invoices(org).to_dicts() if row["number"] == number
    )
    invoice = workbench.billing.invoice(uuid.UUID(invoice_id))
    for position, rate in enumerate(invoice.tax_breakdown, start=1):
        cells = rows_of_tax.nth(position).inner_text()
        assert rate["display_name"] in cells  # "GST <CA>": shown as text, not parsed as a tag
        assert rate["taxable_amount"] in cells and rate["amount"] in cells
        assert ("inclusive" if rate["inclusive"] else "exclusive") in cells
    coupons = page.locator(".dm-billing-invoice-detail .dm-billing-coupons").inner_text()
    assert "WELCOME" in coupons and invoice.coupons[0]["amount"] in coupons
    page.screenshot(path=str(tmp_path) + "/billing.png", full_page=True)
    page.close()
