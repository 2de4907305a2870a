"""The monthly billing report: `dictamesh report run billing -p month 2026-10`, with charts."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.helpers import run_cli
from workbench.settings import Settings

pytestmark = pytest.mark.stack


def test_billing_report_runs_for_a_month_with_charts(workbench: Any, settings: Settings) -> None:
    billing = workbench.billing
    org = f"rep{uuid.uuid4().hex[:6]}"
    billing.create_organization(org, "Report Co", "EUR", invoice_prefix=org.upper())
    billing.create_plan(org, "std", "Standard", amount=Decimal(80), currency="EUR")
    billing.set_fx_rate("EUR", datetime(2026, 1, 1, tzinfo=UTC).date(), Decimal("1.25"))
    for i in range(3):
        billing.create_customer(org, f"{org}-{i}", f"Customer {i}", currency="EUR")
        billing.subscribe(
            org, f"{org}-{i}", "std", at=datetime(2026, 9, 5, tzinfo=UTC) + timedelta(days=15 * i)
        )
    result = run_cli(
        "report", "run", "billing", "-p", "month", "2026-10", "-p", "organization", org,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    reports = settings.home / "reports" / "billing"
    page = sorted(reports.glob("billing-*.html"))[-1].read_text()
    assert "October 2026 in USD" in page
    images = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 5  # waterfall, MRR, customers, rates, cohorts
    charts = [base64.b64decode(image).decode() for image in images]
    assert any("dm-billing-waterfall" in chart and "<rect" in chart for chart in charts)
    assert any("dm-billing-cohorts" in chart for chart in charts)
    # Sept 5 and Sept 20 start in September; Oct 5 is new in October: 2 x 100 at start, 300 at end
    assert "| MRR at start | 200.00 |" in page or "200.00" in page
    assert "300.00" in page
