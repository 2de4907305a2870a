"""Fixtures shared by the billing tests that run on the session's embedded stack."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from workbench.billing.service import Billing


@pytest.fixture
def billing(workbench: Any) -> Billing:
    """The session's billing service with its topics, and the EUR rate the session's USD
    reports (the Billing page) need for the EUR plans these tests create."""
    service: Billing = workbench.billing
    service.ensure_topics()
    service.set_fx_rate("EUR", date(2026, 1, 1), Decimal("1.10"))
    return service


def new_organization(billing: Billing, plans: dict[str, int]) -> str:
    """A fresh EUR organization (its own invoice numbers) with monthly plans `code: amount`."""
    name = f"org{uuid.uuid4().hex[:8]}"
    billing.create_organization(name, "Acme", "EUR", invoice_prefix=name.upper())
    for code, amount in plans.items():
        billing.create_plan(name, code, code.title(), amount=Decimal(amount), currency="EUR")
    return name
