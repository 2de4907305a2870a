"""Stored coupons and discounts: Stripe durations across invoice periods, refusals, MRR."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.billing.conftest import new_organization
from workbench.billing.errors import BillingError, BillingInputError
from workbench.billing.service import Billing
from workbench.errors import UnknownNameError

pytestmark = pytest.mark.stack
D = Decimal
T0 = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture
def org(billing: Billing) -> str:
    return new_organization(billing, {"team": 300, "basic": 100})


def _bill_periods(billing: Billing, org: str, subs: list[uuid.UUID], periods: int) -> list[Any]:
    """Invoice `periods` consecutive periods; the discount of each subscription per period."""
    discounts: dict[uuid.UUID, list[Decimal]] = {sub: [] for sub in subs}
    for _ in range(periods):
        at = max(billing.subscription(sub)["current_period_end"] for sub in subs)
        for invoice in billing.generate_invoices(org, subscription_ids=subs, at=at):
            assert invoice.subscription_id is not None
            discounts[invoice.subscription_id].append(invoice.discount)
            assert invoice.total == invoice.subtotal - invoice.discount + invoice.tax
    return [discounts[sub] for sub in subs]


def test_once_repeating_forever_across_four_periods(billing: Billing, org: str) -> None:
    billing.create_coupon(org, "ONCE10", percent_off=D(10), duration="once")
    billing.create_coupon(
        org, "REP20", percent_off=D(20), duration="repeating", duration_in_months=2
    )
    billing.create_coupon(
        org, "FOREVER50", amount_off=D(50), currency="EUR", duration="forever", name="Fifty off"
    )
    subs = []
    for code in ("ONCE10", "REP20", "FOREVER50"):
        billing.create_customer(org, f"cus_{code}", code, currency="EUR")
        sub = billing.subscribe(org, f"cus_{code}", "team", at=T0)
        billing.apply_coupon(sub, code, at=T0)
        subs.append(sub)

    once, repeating, forever = _bill_periods(billing, org, subs, 4)
    assert once == [D("30.00"), 0, 0, 0]  # the first invoice only
    assert repeating == [D("60.00"), D("60.00"), 0, 0]  # October and November
    assert forever == [D("50.00")] * 4

    cus = billing.subscription(subs[0])["customer_id"]
    row = billing.discounts(cus).row(0, named=True)
    assert (row["code"], row["times_applied"], row["active"]) == ("ONCE10", 1, False)
    rep_customer = billing.subscription(subs[1])["customer_id"]
    rep = billing.discounts(rep_customer, at=T0).row(0, named=True)
    assert rep["ends_at"] == datetime(2026, 12, 1, tzinfo=UTC)
    assert rep["times_applied"] == 2
    coupons = billing.coupons(org)
    assert coupons["times_redeemed"].to_list() == [1, 1, 1]
    assert coupons.filter(code="FOREVER50")["name"].item() == "Fifty off"


def test_invoice_records_its_coupons(billing: Billing, org: str) -> None:
    billing.create_coupon(org, "P10", percent_off=D(10), duration="forever")
    billing.create_coupon(org, "A5", amount_off=D(5), currency="EUR", duration="forever")
    billing.create_customer(org, "cus_r", "R", currency="EUR")
    sub = billing.subscribe(org, "cus_r", "basic", at=T0)
    billing.apply_coupon(sub, "P10", at=T0)
    billing.apply_coupon(sub, "A5", at=T0)
    invoice = billing.generate_invoices(org, subscription_ids=[sub], at=T0 + timedelta(days=31))[0]
    assert invoice.discount == D("15.00")  # 10 % of 100, then 5 off what is left
    stored = billing.invoice(invoice.id)
    assert stored.coupons == (
        {"code": "P10", "amount": "10.00"},
        {"code": "A5", "amount": "5.00"},
    )


def test_repeating_applied_mid_period_counts_from_the_period_start(
    billing: Billing, org: str
) -> None:
    billing.create_coupon(
        org, "REP1", percent_off=D(50), duration="repeating", duration_in_months=1
    )
    billing.create_customer(org, "cus_mid", "Mid", currency="EUR")
    sub = billing.subscribe(org, "cus_mid", "basic", at=T0)
    billing.apply_coupon(sub, "REP1", at=T0 + timedelta(days=15))
    [discounts] = _bill_periods(billing, org, [sub], 2)
    assert discounts == [D("50.00"), 0]  # one month: the period it was applied in


def test_customer_discount_covers_every_subscription_and_once_goes_to_one_invoice(
    billing: Billing, org: str
) -> None:
    billing.create_coupon(org, "ALL10", percent_off=D(10), duration="forever")
    billing.create_coupon(org, "FIRST", amount_off=D(20), currency="EUR", duration="once")
    customer = billing.create_customer(org, "cus_two", "Two subs", currency="EUR")
    subs = [billing.subscribe(org, "cus_two", plan, at=T0) for plan in ("team", "basic")]
    billing.apply_coupon(customer, "ALL10", at=T0)
    billing.apply_coupon(customer, "FIRST", at=T0)
    team, basic = _bill_periods(billing, org, subs, 2)
    assert team == [D("50.00"), D("30.00")]  # 10 % of 300, then the once 20 off the rest
    assert basic == [D("10.00"), D("10.00")]


def test_removed_discount_stops_and_drafts_do_not_use_a_once_discount(
    billing: Billing, org: str
) -> None:
    billing.create_coupon(org, "F", percent_off=D(10), duration="forever")
    billing.create_coupon(org, "O", percent_off=D(50), duration="once")
    billing.create_customer(org, "cus_rm", "Remove", currency="EUR")
    sub = billing.subscribe(org, "cus_rm", "basic", at=T0)
    forever = billing.apply_coupon(sub, "F", at=T0)
    billing.apply_coupon(sub, "O", at=T0)
    end = T0 + timedelta(days=31)
    draft = billing.generate_invoices(org, subscription_ids=[sub], finalize=False, at=end)[0]
    assert (draft.status, draft.discount) == ("draft", D("55.00"))
    first = billing.generate_invoices(org, subscription_ids=[sub], at=end)[0]
    assert first.discount == D("55.00")  # the draft did not use the once coupon up
    billing.remove_discount(forever, at=end + timedelta(days=1))
    second = billing.generate_invoices(org, subscription_ids=[sub], at=end + timedelta(days=30))[0]
    assert second.discount == 0
    with pytest.raises(BillingError, match="already removed"):
        billing.remove_discount(forever)
    with pytest.raises(BillingInputError, match="not a discount"):
        billing.remove_discount(uuid.uuid4())


def test_refusals_name_the_field_and_the_remedy(billing: Billing, org: str) -> None:
    billing.create_coupon(org, "LIMITED", percent_off=D(5), max_redemptions=1)
    billing.create_coupon(org, "EXPIRED", percent_off=D(5), redeem_by=T0 - timedelta(days=1))
    billing.create_coupon(org, "DOLLARS", amount_off=D(5), currency="USD")
    first = billing.create_customer(org, "cus_1", "One", currency="EUR")
    second = billing.create_customer(org, "cus_2", "Two", currency="EUR")

    billing.apply_coupon(first, "LIMITED", at=T0)
    with pytest.raises(BillingInputError, match="reached") as limited:
        billing.apply_coupon(second, "LIMITED", at=T0)
    assert (limited.value.row, limited.value.field) == ("LIMITED", "max_redemptions")
    with pytest.raises(BillingInputError, match="has passed") as expired:
        billing.apply_coupon(first, "EXPIRED", at=T0)
    assert expired.value.field == "redeem_by"
    with pytest.raises(BillingInputError, match="does not match EUR") as currency:
        billing.apply_coupon(first, "DOLLARS", at=T0)
    assert currency.value.field == "currency"
    with pytest.raises(UnknownNameError, match="Did you mean 'LIMITED'") as unknown:
        billing.apply_coupon(first, "LIMITD", at=T0)
    assert unknown.value.suggestion == "LIMITED"
    billing.create_coupon(org, "AGAIN", percent_off=D(5), duration="forever")
    billing.apply_coupon(first, "AGAIN", at=T0)
    with pytest.raises(BillingError, match="already applied"):
        billing.apply_coupon(first, "AGAIN", at=T0)
    with pytest.raises(BillingInputError, match="neither a customer"):
        billing.apply_coupon(uuid.uuid4(), "AGAIN", at=T0)

    with pytest.raises(BillingInputError, match="already a coupon"):
        billing.create_coupon(org, "AGAIN", percent_off=D(1))
    bad: list[tuple[dict[str, Any], str]] = [
        ({"percent_off": D(5), "amount_off": D(5), "currency": "EUR"}, "percent_off"),
        ({"percent_off": D(101)}, "percent_off"),
        ({"amount_off": D(5)}, "currency"),
        ({"percent_off": D(5), "duration": "repeating"}, "duration_in_months"),
        ({"percent_off": D(5), "duration_in_months": 3}, "duration_in_months"),
        ({"percent_off": D(5), "duration": "weekly"}, "duration"),
        ({"percent_off": D(5), "max_redemptions": 0}, "max_redemptions"),
    ]
    for kwargs, field in bad:
        with pytest.raises(BillingInputError) as caught:
            billing.create_coupon(org, "BAD", **kwargs)
        assert caught.value.field == field, kwargs
    assert "BAD" not in billing.coupons(org)["code"].to_list()


def test_recurring_discounts_reduce_mrr_once_discounts_do_not(billing: Billing, org: str) -> None:
    billing.create_coupon(org, "R", percent_off=D(20), duration="repeating", duration_in_months=2)
    billing.create_coupon(org, "F", amount_off=D(50), currency="EUR", duration="forever")
    billing.create_coupon(org, "O", percent_off=D(50), duration="once")
    for code in ("R", "F", "O"):
        billing.create_customer(org, f"mrr_{code}", code, currency="EUR")
        sub = billing.subscribe(org, f"mrr_{code}", "team", at=T0)
        billing.apply_coupon(sub, code, at=T0)
    intervals = billing.intervals(org).sort("customer_id", "valid_from")
    rows = [
        (r["customer_id"], r["valid_from"], r["valid_to"], r["discount_amount"])
        for r in intervals.iter_rows(named=True)
    ]
    dec1 = datetime(2026, 12, 1, tzinfo=UTC)
    assert rows == [
        ("mrr_F", T0, None, 50.0),
        ("mrr_O", T0, None, 0.0),
        ("mrr_R", T0, dec1, 60.0),
        ("mrr_R", dec1, None, 0.0),
    ]
    analysis = billing.analysis(
        organization_id=org,
        start=date(2026, 10, 1),
        end=date(2027, 1, 1),
        reporting_currency="EUR",
    )
    moves = {
        (r["customer_id"], str(r["movement"])): r["amount"]
        for r in analysis.movements.iter_rows(named=True)
    }
    assert moves == {
        ("mrr_F", "new"): D("250.00"),
        ("mrr_O", "new"): D("300.00"),
        ("mrr_R", "new"): D("240.00"),
        ("mrr_R", "expansion"): D("60.00"),  # the repeating discount ran out on Dec 1
    }


def test_a_trial_invoice_does_not_use_up_a_once_coupon(billing: Billing, org: str) -> None:
    billing.create_coupon(org, "HALF", percent_off=D(50), duration="once")
    billing.create_customer(org, "cus_trial", "Trial", currency="EUR")
    sub = billing.subscribe(org, "cus_trial", "basic", at=T0, trial_days=14)
    billing.apply_coupon(sub, "HALF", at=T0)
    [discounts] = _bill_periods(billing, org, [sub], 3)
    assert discounts == [0, D("50.00"), 0]  # the trial invoice had nothing to discount
    billing.cancel(sub, at=T0 + timedelta(days=100))
    with pytest.raises(BillingError, match="canceled"):
        billing.apply_coupon(sub, "HALF", at=T0 + timedelta(days=101))


def test_unknown_organizations_and_out_of_range_limits_are_refused(
    billing: Billing, org: str
) -> None:
    misspelt = org[:-1] + ("x" if org[-1] != "x" else "y")
    with pytest.raises(UnknownNameError, match=f"Did you mean '{org}'"):
        billing.create_coupon(misspelt, "WELCOME", percent_off=D(10))
    with pytest.raises(UnknownNameError, match="organization"):
        billing.create_tax_rate(misspelt, "VAT", D(19))
    with pytest.raises(UnknownNameError, match="organization"):
        billing.create_customer(misspelt, "c1", "C1", currency="EUR")
    with pytest.raises(BillingInputError, match="duration_in_months"):
        billing.create_coupon(
            org, "FOREVERISH", percent_off=D(5), duration="repeating", duration_in_months=2**40
        )
    with pytest.raises(BillingInputError, match="max_redemptions"):
        billing.create_coupon(org, "MANY", percent_off=D(5), max_redemptions=2**31)
    assert billing.coupons(org).height == 0, "nothing was stored"
