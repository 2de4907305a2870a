"""The monthly billing report: `dictamesh report run billing -p month 2026-10`, with charts."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from tests.helpers import run_cli
from workbench.settings import Settings

pytestmark = pytest.mark.stack


def _cell_after(page: str, label: str) -> str:
    """The value cell next to `label` in a rendered Markdown table of the report."""
    found = re.search(
        rf"<td>(?:<strong>)?{re.escape(label)}(?:</strong>)?</td>\s*"
        r"<td>(?:<strong>)?([^<]*)(?:</strong>)?</td>",
        page,
    )
    assert found, f"no row {label!r} in the report"
    return found.group(1)


@pytest.mark.parametrize("currency", ["USD", "EUR"])
def test_billing_report_runs_for_a_month_with_charts(
    workbench: Any, settings: Settings, currency: str
) -> None:
    billing = workbench.billing
    org = f"rep{uuid.uuid4().hex[:6]}"
    billing.create_organization(org, "Report Co", "EUR", invoice_prefix=org.upper())
    billing.create_plan(org, "std", "Standard", amount=Decimal(80), currency="EUR")
    rate = Decimal("1.25")
    billing.set_fx_rate("EUR", datetime(2026, 1, 1, tzinfo=UTC).date(), rate)
    for i in range(3):
        billing.create_customer(org, f"{org}-{i}", f"Customer {i}", currency="EUR")
        billing.subscribe(
            org, f"{org}-{i}", "std", at=datetime(2026, 9, 5, tzinfo=UTC) + timedelta(days=15 * i)
        )
    reports = settings.home / "reports" / "billing"
    earlier = set(reports.glob("billing-*.html"))
    result = run_cli(
        "report", "run", "billing", "-p", "month", "2026-10", "-p", "organization", org,
        "-p", "reporting_currency", currency,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    (html,) = set(reports.glob("billing-*.html")) - earlier
    page = html.read_text()
    assert f"October 2026 in {currency}" in page
    images = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 5  # waterfall, MRR, customers, rates, cohorts
    charts = [base64.b64decode(image).decode() for image in images]
    assert any("dm-billing-waterfall" in chart and "<rect" in chart for chart in charts)
    assert any("dm-billing-cohorts" in chart for chart in charts)
    # The figure rows are those of the same data through `workbench.billing`.
    october = (
        billing.analysis(
            start=date(2026, 10, 1),
            end=date(2026, 11, 1),
            organization_id=org,
            reporting_currency=currency,
        )
        .metrics.filter(pl.col("month") == date(2026, 10, 1))
        .row(0, named=True)
    )
    # Sept 5 and Sept 20 start in September; Oct 5 is new in October (80 EUR each).
    price = Decimal(80) * (rate if currency == "USD" else 1)
    assert (october["start_mrr"], october["new"], october["end_mrr"]) == (
        2 * price,
        price,
        3 * price,
    )
    assert _cell_after(page, "MRR at start") == f"{october['start_mrr']:,}"
    assert _cell_after(page, "New") == f"{october['new']:,}"
    assert _cell_after(page, "MRR at end") == f"{october['end_mrr']:,}"
    assert _cell_after(page, "Paying customers") == (
        f"{october['customers_start']} → {october['customers_end']}"
    )
