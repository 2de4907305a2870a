"""Tax rates: inclusive and exclusive, several per customer, the per-rate breakdown, the
migration from the per-customer number, and the invoice invariant for random rates and coupons."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, inspect, text

from tests.billing.conftest import new_organization
from workbench import db
from workbench.billing.errors import BillingInputError
from workbench.billing.pricing import LineInput, TaxRate, invoice_totals
from workbench.billing.service import Billing
from workbench.stack import Endpoints

D = Decimal
T0 = datetime(2026, 10, 1, tzinfo=UTC)


# -- the pricing engine ----------------------------------------------------------------------------
def test_inclusive_rate_is_contained_in_the_price() -> None:
    totals = invoice_totals(
        [LineInput("Plan", D(120))], "EUR", tax_rates=[TaxRate("vat", "VAT", D(20), True)]
    )
    assert (totals.subtotal, totals.tax, totals.tax_inclusive, totals.total) == (
        D("120.00"),
        0,
        D("20.00"),  # 120 - 120 / 1.2
        D("120.00"),
    )
    assert totals.lines[0].tax_inclusive == D("20.00")
    [vat] = totals.tax_breakdown
    assert (vat.taxable_amount, vat.amount, vat.inclusive) == (D("100.00"), D("20.00"), True)


def test_two_exclusive_rates_and_a_mix() -> None:
    rates = [TaxRate("gst", "GST", D(5)), TaxRate("pst", "PST", D(7))]
    totals = invoice_totals(
        [LineInput("Plan", D(100)), LineInput("Usage", D(50))], "CAD", tax_rates=rates
    )
    assert totals.tax == D("18.00")
    assert [(t.key, t.amount) for t in totals.tax_breakdown] == [
        ("gst", D("7.50")),
        ("pst", D("10.50")),
    ]
    assert totals.lines[0].tax_rate == D("0.12")
    assert totals.total == D("168.00")

    mixed = invoice_totals(
        [LineInput("Plan", D(119))],
        "EUR",
        tax_rates=[TaxRate("vat", "VAT", D(19), True), TaxRate("levy", "Levy", D(5))],
    )
    # the tax base is the price without the inclusive tax (100); the levy is added on it
    assert (mixed.tax_inclusive, mixed.tax, mixed.total) == (D("19.00"), D("5.00"), D("124.00"))


def test_bad_tax_rates() -> None:
    with pytest.raises(BillingInputError, match=r"\[0, 100\]"):
        TaxRate("x", "X", D(101))
    with pytest.raises(BillingInputError, match="percentage"):
        TaxRate("x", "X", 19.0)  # type: ignore[arg-type]


# -- the service -----------------------------------------------------------------------------------
@pytest.fixture
def org(billing: Billing) -> str:
    return new_organization(billing, {"basic": 100})


@pytest.mark.stack
def test_customer_with_two_rates_gets_a_breakdown(billing: Billing, org: str) -> None:
    gst = billing.create_tax_rate(org, "GST", D(5), jurisdiction="Canada", country="ca")
    pst = billing.create_tax_rate(org, "PST", D(7), jurisdiction="British Columbia", country="CA")
    vat = billing.create_tax_rate(org, "VAT incl.", D(25), inclusive=True, country="DK")
    canada = billing.create_customer(org, "cus_ca", "Canada", currency="EUR")
    denmark = billing.create_customer(org, "cus_dk", "Denmark", currency="EUR")
    billing.set_tax_rates(canada, [gst, pst])
    billing.set_tax_rates(denmark, [vat])
    billing.create_coupon(org, "TEN", percent_off=D(10), duration="forever")
    billing.apply_coupon(canada, "TEN", at=T0)
    subs = [billing.subscribe(org, ext, "basic", at=T0) for ext in ("cus_ca", "cus_dk")]

    invoices = billing.generate_invoices(org, at=T0 + timedelta(days=31))
    ca, dk = (next(i for i in invoices if i.subscription_id == s) for s in subs)
    stored = billing.invoice(ca.id)
    assert (stored.subtotal, stored.discount, stored.tax, stored.total) == (
        D("100.00"),
        D("10.00"),
        D("10.80"),  # 5 % + 7 % of the discounted 90
        D("100.80"),
    )
    assert [
        (t["display_name"], t["amount"], t["taxable_amount"]) for t in stored.tax_breakdown
    ] == [
        ("GST", "4.50", "90.00"),
        ("PST", "6.30", "90.00"),
    ]
    assert stored.lines[0]["tax"] == D("10.80")
    assert stored.lines[0]["tax_rate"] == D("0.12")

    stored_dk = billing.invoice(dk.id)
    assert (stored_dk.tax, stored_dk.tax_inclusive, stored_dk.total) == (0, D("20.00"), D("100.00"))
    assert stored_dk.tax_breakdown[0]["inclusive"] is True
    assert stored_dk.lines[0]["tax_inclusive"] == D("20.00")

    listing = billing.tax_rates(org)
    assert listing["display_name"].to_list() == ["GST", "PST", "VAT incl."]
    assert listing["country"].to_list() == ["CA", "CA", "DK"]
    assert billing.tax_rates(org, customer_id=canada)["display_name"].to_list() == ["GST", "PST"]
    billing.set_tax_rates(canada, [pst])
    assert billing.tax_rates(org, customer_id=canada)["display_name"].to_list() == ["PST"]


@pytest.mark.stack
def test_tax_rate_refusals(billing: Billing, org: str) -> None:
    customer = billing.create_customer(org, "cus_x", "X", currency="EUR")
    with pytest.raises(BillingInputError, match="percentage"):
        billing.create_tax_rate(org, "Too much", D(150))
    with pytest.raises(BillingInputError, match="country"):
        billing.create_tax_rate(org, "VAT", D(19), country="Germany")
    other = f"org{uuid.uuid4().hex[:8]}"
    billing.create_organization(other, "Other", "EUR")
    foreign = billing.create_tax_rate(other, "Foreign", D(10))
    with pytest.raises(BillingInputError, match="not a tax rate of") as caught:
        billing.set_tax_rates(customer, [foreign])
    assert (caught.value.row, caught.value.field) == ("tax_rate_ids[0]", "tax_rate_id")
    kept = billing.create_tax_rate(org, "Kept", D(10))
    old = billing.create_tax_rate(org, "Old", D(10))
    billing.set_tax_rates(customer, [kept])
    billing.archive_tax_rate(old)
    billing.archive_tax_rate(kept)
    with pytest.raises(BillingInputError, match="archived"):
        billing.set_tax_rates(customer, [old])
    billing.set_tax_rates(customer, [kept])  # an archived rate stays where it already is
    with pytest.raises(BillingInputError, match="twice"):
        billing.set_tax_rates(customer, [kept, kept])
    with pytest.raises(BillingInputError, match="not a customer"):
        billing.set_tax_rates(uuid.uuid4(), [])
    with pytest.raises(BillingInputError, match="not a tax rate"):
        billing.archive_tax_rate(uuid.uuid4())
    assert billing.tax_rates(org).filter(display_name="Kept")["active"].item() is False


money = st.decimals(min_value="0.01", max_value=5000, places=2)
rate_specs = st.lists(
    st.tuples(st.sampled_from([D(0), D(5), D("7.5"), D(19), D(25)]), st.booleans()), max_size=3
)
coupon_specs = st.lists(
    st.one_of(
        st.tuples(st.just("percent"), st.decimals("0.01", 100, places=2)),
        st.tuples(st.just("amount"), money),
    ),
    max_size=2,
)


@pytest.mark.stack
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan_amount=money, rates=rate_specs, coupons=coupon_specs, credit=money)
def test_stored_invoice_total_is_lines_minus_discounts_plus_exclusive_tax_minus_credits(
    billing: Billing,
    plan_amount: Decimal,
    rates: list[tuple[Decimal, bool]],
    coupons: list[tuple[str, Decimal]],
    credit: Decimal,
) -> None:
    org = f"org{uuid.uuid4().hex[:8]}"
    billing.create_organization(org, "Prop", "EUR", invoice_prefix=org.upper())
    billing.create_plan(org, "p", "P", amount=plan_amount, currency="EUR")
    customer = billing.create_customer(org, "c", "C", currency="EUR", credit_balance=credit)
    ids = [
        billing.create_tax_rate(org, f"r{i}", pct, inclusive=inc)
        for i, (pct, inc) in enumerate(rates)
    ]
    billing.set_tax_rates(customer, ids)
    sub = billing.subscribe(org, "c", "p", at=T0)
    for i, (kind, value) in enumerate(coupons):
        if kind == "percent":
            billing.create_coupon(org, f"C{i}", percent_off=value, duration="forever")
        else:
            billing.create_coupon(
                org, f"C{i}", amount_off=value, currency="EUR", duration="forever"
            )
        billing.apply_coupon(sub if i % 2 else customer, f"C{i}", at=T0)
    issued = billing.generate_invoices(org, at=T0 + timedelta(days=31))[0]
    invoice = billing.invoice(issued.id)
    lines = sum((line["amount"] for line in invoice.lines), D(0))
    discounts = sum((line["discount"] for line in invoice.lines), D(0))
    exclusive = sum((D(t["amount"]) for t in invoice.tax_breakdown if not t["inclusive"]), D(0))
    inclusive = sum((D(t["amount"]) for t in invoice.tax_breakdown if t["inclusive"]), D(0))
    assert invoice.subtotal == lines
    assert invoice.discount == discounts == sum((D(c["amount"]) for c in invoice.coupons), D(0))
    assert invoice.tax == exclusive
    assert invoice.tax_inclusive == inclusive
    assert invoice.total == lines - discounts + exclusive
    assert invoice.amount_due == invoice.total - invoice.credits_applied
    assert invoice.credits_applied == min(credit, invoice.total)
    assert len(invoice.tax_breakdown) == len(rates)


# -- the migration ---------------------------------------------------------------------------------
@pytest.fixture
def engine(stack: Endpoints) -> Iterator[Engine]:
    name = f"taxes_{time.monotonic_ns()}"
    admin_url = stack.postgres_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = db.make_engine(stack.postgres_url.rsplit("/", 1)[0] + f"/{name}")
    yield engine
    engine.dispose()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


NEW_TABLES = {
    "dictamesh_billing_coupons",
    "dictamesh_billing_discounts",
    "dictamesh_billing_tax_rates",
    "dictamesh_billing_customer_tax_rates",
}


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) & NEW_TABLES


def _customer_columns(engine: Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("dictamesh_billing_customers")}


@pytest.mark.stack
def test_migration_moves_customer_rates_into_tax_rates_and_back(engine: Engine) -> None:
    db.migrate_up(engine, "0007")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dictamesh_billing_organizations (id, name, currency, invoice_prefix) "
                "VALUES ('o1', 'O', 'EUR', 'O1'), ('o2', 'O2', 'EUR', 'O2')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO dictamesh_billing_customers (organization_id, external_id, name, "
                "currency, tax_rate) VALUES ('o1', 'a', 'A', 'EUR', 0.19), "
                "('o1', 'b', 'B', 'EUR', 0.19), ('o1', 'c', 'C', 'EUR', 0), "
                "('o2', 'd', 'D', 'EUR', 0.075)"
            )
        )
    db.migrate_up(engine, "0008")
    assert _tables(engine) == NEW_TABLES
    assert "tax_rate" not in _customer_columns(engine)
    for table in NEW_TABLES:
        for index in inspect(engine).get_indexes(table):
            assert index["name"].startswith(("idx_dictamesh_", "uq_dictamesh_")), index["name"]
    with engine.connect() as conn:
        rates = conn.execute(
            text(
                "SELECT organization_id, display_name, percentage, inclusive FROM "
                "dictamesh_billing_tax_rates ORDER BY organization_id"
            )
        ).all()
        links = conn.execute(
            text(
                "SELECT c.external_id, t.percentage FROM dictamesh_billing_customer_tax_rates l "
                "JOIN dictamesh_billing_customers c ON c.id = l.customer_id JOIN "
                "dictamesh_billing_tax_rates t ON t.id = l.tax_rate_id ORDER BY 1"
            )
        ).all()
    assert [tuple(r) for r in rates] == [
        ("o1", "Tax 19%", D(19), False),
        ("o2", "Tax 7.5%", D("7.5"), False),
    ]
    assert [(r[0], r[1]) for r in links] == [("a", D(19)), ("b", D(19)), ("d", D("7.5"))]

    db.migrate_down(engine, "0007")
    assert db.current_revision(engine) == "0007"
    assert _tables(engine) == set()
    with engine.connect() as conn:
        back = conn.execute(
            text("SELECT external_id, tax_rate FROM dictamesh_billing_customers ORDER BY 1")
        ).all()
    assert [(r[0], r[1]) for r in back] == [
        ("a", D("0.19")),
        ("b", D("0.19")),
        ("c", 0),
        ("d", D("0.075")),
    ]
    db.migrate_up(engine, "0008")
    assert _tables(engine) == NEW_TABLES
