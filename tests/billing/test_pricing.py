"""The pricing engine: Stripe tier semantics, proration to the second, invoice totals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workbench.billing.errors import BillingInputError
from workbench.billing.pricing import (
    Charge,
    Coupon,
    LineInput,
    TaxRate,
    Tier,
    graduated,
    invoice_totals,
    price,
    prorate,
    proration_for_change,
    round_money,
    volume,
)

D = Decimal
TIERS = (
    Tier(D(1000), D("0.10"), D(0)),
    Tier(D(5000), D("0.08"), D(5)),
    Tier(None, D("0.05"), D(0)),
)


def test_graduated_like_stripe() -> None:
    # 1000 x 0.10 + (4000 x 0.08 + 5 flat) + 1000 x 0.05
    assert graduated(6000, TIERS) == D("100") + D("325") + D("50")
    assert graduated(1000, TIERS) == D("100.00")  # up_to is inclusive
    assert graduated(1001, TIERS) == D("100.00") + D("0.08") + D(5)
    assert graduated(0, TIERS) == 0  # zero usage costs nothing


def test_volume_like_stripe() -> None:
    assert volume(6000, TIERS) == D("300.00")
    assert volume(5000, TIERS) == D("405.00")  # inclusive: 5000 is still tier 2 (+ its flat fee)
    assert volume(0, TIERS) == 0


def test_package_percentage_flat_usage_standard() -> None:
    assert price(Charge("package", package_size=D(1000), package_amount=D(2)), 2001) == D(6)
    assert price(Charge("package", package_size=D(1000), package_amount=D(2)), 0) == 0
    percentage = Charge("percentage", rate=D("0.029"), fixed_amount=D("0.30"))
    assert price(percentage, amount=D(1000), transactions=10) == D("32.000")
    flat = Charge("flat_usage", flat_amount=D(49), usage=Charge("standard", unit_amount=D("0.01")))
    assert price(flat, 1500) == D("64.00")
    assert price(Charge("standard", unit_amount=D("1.5")), 3) == D("4.5")


def test_bad_charges_and_quantities() -> None:
    with pytest.raises(BillingInputError, match="quantity"):
        price(Charge("standard", unit_amount=D(1)), -1)
    with pytest.raises(BillingInputError, match="unbounded"):
        graduated(1, (Tier(D(10), D(1)),))
    with pytest.raises(BillingInputError, match="greater"):
        graduated(1, (Tier(D(10), D(1)), Tier(D(5), D(1)), Tier(None, D(1))))
    with pytest.raises(BillingInputError, match="charge model"):
        Charge("magic")  # type: ignore[arg-type]
    with pytest.raises(BillingInputError, match="float"):
        price(Charge("standard", unit_amount=D(1)), 1.5)  # type: ignore[arg-type]


def test_rounding_per_currency() -> None:
    assert round_money(D("1.005"), "USD") == D("1.01")  # half up
    assert round_money(D("100.5"), "JPY") == D("101")
    assert round_money(D("1.0005"), "KWD") == D("1.001")


def test_proration_mid_period_upgrade() -> None:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    end = datetime(2024, 4, 1, tzinfo=UTC)  # 31 days
    lines = proration_for_change(D(31), D(62), start, end, start + timedelta(days=10), "USD")
    assert lines.credit == D("-21.00")
    assert lines.charge == D("42.00")
    assert lines.net == D("21.00")


def test_invoice_with_tax_coupon_and_credits() -> None:
    totals = invoice_totals(
        [LineInput("Pro plan", D(100)), LineInput("API calls", D("50.004"), kind="usage")],
        "EUR",
        coupons=[Coupon("WELCOME10", percent_off=D(10))],
        tax_rates=[TaxRate("vat", "VAT", D(20))],
        credit_balance=D(20),
    )
    assert totals.subtotal == D("150.00")
    assert totals.discount == D("15.00")
    assert [line.discount for line in totals.lines] == [D("10.00"), D("5.00")]
    assert totals.tax == D("27.00")
    assert totals.total == D("162.00")
    assert totals.credits_applied == D(20)
    assert totals.amount_due == D("142.00")


# -- properties ------------------------------------------------------------------------------------
money = st.decimals(min_value=0, max_value=100_000, places=4, allow_nan=False)
quantities = st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False)


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(set(draw(st.lists(st.integers(1, 10**6), min_size=0, max_size=4))))
    tiers = [Tier(D(b), draw(money), draw(money)) for b in bounds]
    return (*tiers, Tier(None, draw(money), draw(money)))


@given(tier_lists(), quantities)
def test_graduated_and_volume_agree_inside_the_first_tier(
    tiers: tuple[Tier, ...], q: Decimal
) -> None:
    first = tiers[0].up_to
    if first is not None and q > first:
        q = first
    assert graduated(q, tiers) == volume(q, tiers)


@given(tier_lists(), quantities, quantities)
def test_graduated_is_monotonic(tiers: tuple[Tier, ...], a: Decimal, b: Decimal) -> None:
    lo, hi = sorted((a, b))
    assert graduated(lo, tiers) <= graduated(hi, tiers)


@given(
    money,
    st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    st.integers(1, 400 * 86400),
)
def test_proration_over_the_full_period_is_the_full_price(
    amount: Decimal, start: datetime, seconds: int
) -> None:
    end = start + timedelta(seconds=seconds)
    assert prorate(amount, start, end, start, end) == amount
    lines = proration_for_change(amount, amount, start, end, start, "USD")
    assert lines.net == 0
    assert lines.charge == round_money(amount, "USD")


@given(money, money, st.integers(1, 31 * 86400), st.floats(0, 1))
def test_proration_splits_add_up(a: Decimal, b: Decimal, seconds: int, at: float) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    end = start + timedelta(seconds=seconds)
    cut = start + timedelta(seconds=int(seconds * at))
    assert prorate(a, start, end, start, cut) + prorate(a, start, end, cut, end) == a


lines_strategy = st.lists(
    st.builds(
        LineInput,
        description=st.just("line"),
        amount=st.decimals(min_value=-500, max_value=10_000, places=5, allow_nan=False),
        kind=st.sampled_from(["subscription", "usage", "proration"]),
        discountable=st.booleans(),
    ),
    min_size=0,
    max_size=8,
)
CURRENCIES = ["USD", "JPY", "KWD", "EUR"]
tax_rate_strategy = st.builds(
    TaxRate,
    key=st.text("abc", min_size=1, max_size=3),
    display_name=st.just("tax"),
    percentage=st.sampled_from([D(0), D(7), D(19), D(20), D("25.5"), D(100)]),
    inclusive=st.booleans(),
)


@st.composite
def coupon_lists(draw: st.DrawFn, currency: str) -> list[Coupon]:
    percent = st.builds(Coupon, code=st.just("P"), percent_off=st.decimals("0.01", 100, places=2))
    amount = st.builds(
        Coupon,
        code=st.just("A"),
        amount_off=st.decimals("0.01", 5000, places=2),
        currency=st.just(currency),
    )
    return draw(st.lists(st.one_of(percent, amount), max_size=2))


@given(
    lines_strategy,
    st.data(),
    st.lists(tax_rate_strategy, max_size=3),
    st.decimals(0, 5000, places=2),
    st.sampled_from(CURRENCIES),
)
def test_invoice_total_is_lines_plus_tax_minus_credits(
    lines: list[LineInput],
    data: st.DataObject,
    rates: list[TaxRate],
    credits: Decimal,
    currency: str,
) -> None:
    coupons = data.draw(coupon_lists(currency))
    totals = invoice_totals(
        lines, currency, coupons=coupons, tax_rates=rates, credit_balance=credits
    )
    nets = sum((line.net for line in totals.lines), D(0))
    taxes = sum((line.tax for line in totals.lines), D(0))
    # a negative total is owed to the customer: nothing due, the rest to the credit balance
    assert totals.amount_due - totals.credit_to_balance == nets + taxes - totals.credits_applied
    assert totals.amount_due >= 0 and totals.credit_to_balance >= 0
    assert totals.amount_due == 0 or totals.credit_to_balance == 0
    assert totals.total == totals.subtotal - totals.discount + totals.tax
    assert totals.discount == sum(totals.coupon_amounts, D(0))
    exclusive = [t.amount for t in totals.tax_breakdown if not t.inclusive]
    inclusive = [t.amount for t in totals.tax_breakdown if t.inclusive]
    assert totals.tax == sum(exclusive, D(0))
    assert totals.tax_inclusive == sum(inclusive, D(0))
    assert totals.tax_inclusive == sum((line.tax_inclusive for line in totals.lines), D(0))
    assert totals.discount >= 0
    assert totals.credits_applied <= credits
    for line in totals.lines:
        assert line.amount == round_money(line.amount, currency)
        assert line.tax == round_money(line.tax, currency)
        assert line.discount == round_money(line.discount, currency)
        assert 0 <= line.discount <= max(line.amount, D(0))
