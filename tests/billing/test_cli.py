"""`dictamesh billing ...` run as a user runs it: metrics and movements of an imported history
(checked against `saas_metrics` / `mrr_movements` on the same frame), bad rows, invoices of
data made through `wb.billing`, FX rates."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.helpers import run_cli
from workbench.billing import mrr_movements, saas_metrics
from workbench.billing.mrr import FX_SCHEMA, INTERVAL_SCHEMA

START, END = date(2026, 1, 1), date(2026, 12, 1)  # --start 2026-01 --end 2026-11


def _t(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def _history() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every kind of movement: new, expansion, contraction, churn, reactivation, fx_impact."""
    rows: list[tuple[Any, ...]] = [
        # customer, subscription, from, to, amount, currency, interval, discount, trial, cancel
        ("acme", "s-acme", "2026-01-05", "2026-04-05", 100.0, "USD", "month", 0.0, False, None),
        ("acme", "s-acme", "2026-04-05", None, 250.0, "USD", "month", 10.0, False, None),
        ("bolt", "s-bolt", "2026-01-20", "2026-02-20", 0.0, "USD", "month", 0.0, True, None),
        ("bolt", "s-bolt", "2026-02-20", "2026-06-20", 1200.0, "USD", "year", 0.0, False, None),
        ("bolt", "s-bolt2", "2026-09-01", None, 30.0, "USD", "week", 0.0, False, None),
        ("cafe", "s-cafe", "2026-02-01", "2026-07-01", 90.0, "EUR", "month", 0.0, False, None),
        ("cafe", "s-cafe", "2026-07-01", None, 60.0, "EUR", "month", 0.0, False, None),
        ("dune", "s-dune", "2026-03-10", "2026-08-10", 300.0, "USD", "quarter", 0.0, False, None),
    ]
    intervals = pl.DataFrame(
        [
            (c, s, _t(f), _t(t) if t else None, a, cur, i, d, tr, _t(x) if x else None)
            for c, s, f, t, a, cur, i, d, tr, x in rows
        ],
        schema=INTERVAL_SCHEMA,
        orient="row",
    )
    fx = pl.DataFrame(
        [
            ("EUR", date(2025, 12, 1), 1.08),
            ("EUR", date(2026, 5, 1), 1.12),
            ("EUR", date(2026, 9, 1), 1.05),
        ],
        schema=FX_SCHEMA,
        orient="row",
    )
    return intervals, fx


@pytest.fixture
def history(tmp_path: Path) -> tuple[pl.DataFrame, pl.DataFrame, Path, Path]:
    intervals, fx = _history()
    intervals_csv, fx_csv = tmp_path / "intervals.csv", tmp_path / "fx.csv"
    intervals.write_csv(intervals_csv)
    fx.write_csv(fx_csv)
    return intervals, fx, intervals_csv, fx_csv


def _same(printed: Any, expected: Any) -> bool:
    if expected is None or printed is None:
        return printed is expected
    if isinstance(expected, Decimal):
        return Decimal(printed) == expected
    if isinstance(expected, float):
        return math.isclose(printed, expected, rel_tol=1e-12)
    if isinstance(expected, date | datetime):
        return str(printed) == expected.isoformat()
    return bool(printed == expected)


def _with_cell(source: Path, target: Path, row: int, column: str, value: str) -> Path:
    """A copy of the CSV `source` with one cell (data row `row`, 0-based) replaced."""
    lines = source.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row + 1].split(",")
    cells[header.index(column)] = value
    lines[row + 1] = ",".join(cells)
    target.write_text("\n".join(lines) + "\n")
    return target


def test_metrics_of_an_imported_history_match_saas_metrics(history: Any) -> None:
    intervals, fx, intervals_csv, fx_csv = history
    result = run_cli(
        "billing", "metrics", "--start", "2026-01", "--end", "2026-11",
        "--intervals", str(intervals_csv), "--fx", str(fx_csv), "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    expected = saas_metrics(intervals, fx, start=START, end=END)
    assert len(printed) == expected.height == 11
    for got, want in zip(printed, expected.to_dicts(), strict=True):
        assert set(got) == set(want)
        assert all(_same(got[k], want[k]) for k in want), (got, want)
    kinds = ("new", "expansion", "contraction", "churn", "reactivation", "fx_impact")
    assert all(any(Decimal(m[k]) != 0 for m in printed) for k in kinds)  # every kind occurs

    table = run_cli(
        "billing", "metrics", "--start", "2026-01", "--end", "2026-11",
        "--intervals", str(intervals_csv), "--fx", str(fx_csv),
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    last = expected.row(-1, named=True)
    assert "2026-11-01" in table.stdout and str(last["end_mrr"]) in table.stdout

    csv = run_cli(
        "billing", "metrics", "--start", "2026-01", "--end", "2026-11",
        "--intervals", str(intervals_csv), "--fx", str(fx_csv), "--churn-recognition",
        "end_of_service_period", "--currency", "USD", "--format", "csv",
    )  # fmt: skip
    assert csv.returncode == 0, csv.stderr
    frame = pl.read_csv(csv.stdout.encode(), infer_schema=False)
    want = saas_metrics(
        intervals, fx, start=START, end=END, churn_recognition="end_of_service_period"
    )
    assert [Decimal(v) for v in frame["end_mrr"]] == want["end_mrr"].to_list()


def test_movements_of_an_imported_history_match_mrr_movements(history: Any) -> None:
    intervals, fx, intervals_csv, fx_csv = history
    result = run_cli(
        "billing", "movements", "--start", "2026-01", "--end", "2026-11",
        "--intervals", str(intervals_csv), "--fx", str(fx_csv), "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    expected = mrr_movements(intervals, fx, start=START, end=END).to_dicts()
    assert len(printed) == len(expected) > 5
    for got, want in zip(printed, expected, strict=True):
        assert got["customer_id"] == want["customer_id"]
        assert got["movement"] == want["movement"]
        assert Decimal(got["amount"]) == want["amount"]
        assert datetime.fromisoformat(got["date"]) == want["date"]


def test_a_bad_row_names_the_row_the_line_and_the_field(history: Any, tmp_path: Path) -> None:
    _, _, intervals_csv, fx_csv = history
    negative = _with_cell(intervals_csv, tmp_path / "negative.csv", 3, "amount", "-1200")
    result = run_cli(
        "billing", "metrics", "--start", "2026-01", "--end", "2026-11",
        "--intervals", str(negative), "--fx", str(fx_csv),
    )  # fmt: skip
    assert result.returncode == 1
    assert "negative.csv, line 5: Row 3 (customer_id='bolt', subscription_id='s-bolt')" in (
        result.stderr
    )
    assert "field 'amount' = -1200.0: is negative" in result.stderr
    assert "Traceback" not in result.stderr

    garbled = _with_cell(intervals_csv, tmp_path / "garbled.csv", 1, "valid_from", "5 April")
    result = run_cli(
        "billing", "movements", "--start", "2026-01", "--end", "2026-11",
        "--intervals", str(garbled), "--fx", str(fx_csv),
    )  # fmt: skip
    assert result.returncode == 1
    assert "garbled.csv, line 3: Row 1 (customer_id='acme', subscription_id='s-acme')" in (
        result.stderr
    )
    assert "field 'valid_from' = '5 April': is not an ISO 8601 date or time" in result.stderr

    rates = tmp_path / "rates.csv"
    rates.write_text("currency,date,rate_to_reporting\nEUR,2025-12-01,1.08\nEUR,2026-05-01,-1\n")
    result = run_cli(
        "billing", "metrics", "--start", "2026-01", "--end", "2026-11",
        "--intervals", str(intervals_csv), "--fx", str(rates),
    )  # fmt: skip
    assert result.returncode == 1
    assert "rates.csv, line 3: Row 1 of the FX table, field 'rate_to_reporting'" in result.stderr

    missing_fx = run_cli(
        "billing", "metrics", "--start", "2026-01", "--end", "2026-11",
        "--intervals", str(intervals_csv),
    )  # fmt: skip
    assert missing_fx.returncode == 1
    assert "field 'currency' = 'EUR'" in missing_fx.stderr and "--fx" in missing_fx.stderr


@pytest.mark.stack
def test_invoices_generate_list_show(workbench: Any) -> None:
    billing = workbench.billing
    org = f"cli{uuid.uuid4().hex[:8]}"
    billing.create_organization(org, "CLI Co", "EUR", invoice_prefix=org.upper())
    billing.create_plan(org, "basic", "Basic", amount=Decimal("49.90"), currency="EUR")
    billing.create_customer(org, "cus_one", "One", currency="EUR")
    billing.create_customer(org, "cus_two", "Two", currency="EUR")
    billing.subscribe(org, "cus_one", "basic", at=datetime(2026, 10, 1, tzinfo=UTC))
    billing.subscribe(org, "cus_two", "basic", at=datetime(2026, 10, 1, tzinfo=UTC))

    drafts = run_cli("billing", "invoices", "generate", "--org", org, "--draft", "-f", "json")
    assert drafts.returncode == 0, drafts.stderr
    assert [(i["status"], i["number"]) for i in json.loads(drafts.stdout)] == [("draft", None)] * 2

    issued = run_cli(
        "billing", "invoices", "generate", "--org", org, "--at", "2026-11-01", "--format", "json"
    )
    assert issued.returncode == 0, issued.stderr
    invoices = json.loads(issued.stdout)
    assert [i["status"] for i in invoices] == ["open", "open"]
    assert sorted(i["number"] for i in invoices) == [
        f"{org.upper()}-000001",
        f"{org.upper()}-000002",
    ]
    assert all(
        Decimal(i["amount_due"]) == billing.invoice(uuid.UUID(i["id"])).amount_due for i in invoices
    )

    listed = run_cli("billing", "invoices", "list", "--org", org, "--status", "open", "-f", "json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["id"] for r in rows} == {i["id"] for i in invoices}
    assert {r["customer"] for r in rows} == {"cus_one", "cus_two"}
    assert billing.invoices(org).height == 4  # the two drafts stay drafts
    table = run_cli("billing", "invoices", "list", "--org", org)
    assert table.returncode == 0 and f"{org.upper()}-000002" in table.stdout
    none_paid = run_cli("billing", "invoices", "list", "--org", org, "--status", "paid")
    assert none_paid.returncode == 0 and "No invoice" in none_paid.stdout
    bad_status = run_cli("billing", "invoices", "list", "--org", org, "--status", "opne")
    assert bad_status.returncode == 1 and "open" in bad_status.stderr

    invoice_id = invoices[0]["id"]
    shown = run_cli("billing", "invoices", "show", invoice_id, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    invoice = billing.invoice(uuid.UUID(invoice_id))
    assert document["number"] == invoice.number and document["status"] == "open"
    assert Decimal(document["total"]) == invoice.total
    assert [line["description"] for line in document["lines"]] == [
        line["description"] for line in invoice.lines
    ]
    assert document["payments"] == []
    human = run_cli("billing", "invoices", "show", invoice_id)
    assert human.returncode == 0 and invoice.number in human.stdout and "Basic" in human.stdout
    unknown = run_cli("billing", "invoices", "show", str(uuid.uuid4()))
    assert unknown.returncode == 1 and "is not an invoice" in unknown.stderr
    garbage = run_cli("billing", "invoices", "show", "INV-1")
    assert garbage.returncode == 1 and "'invoice_id'" in garbage.stderr


@pytest.mark.stack
def test_fx_set_and_list(workbench: Any) -> None:
    result = run_cli("billing", "fx", "set", "JPY", "2026-03-01", "0.0091", "--reporting", "CHF")
    assert result.returncode == 0, result.stderr
    assert "1 JPY = 0.0091 CHF from 2026-03-01" in result.stdout
    again = run_cli("billing", "fx", "set", "JPY", "2026-03-01", "0.0092", "--reporting", "CHF")
    assert again.returncode == 0, again.stderr
    listed = run_cli("billing", "fx", "list", "--reporting", "CHF", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rates = [r for r in json.loads(listed.stdout) if r["currency"] == "JPY"]
    assert rates == [{"currency": "JPY", "date": "2026-03-01", "rate_to_reporting": 0.0092}]
    stored = workbench.billing.fx_rates("CHF").filter(pl.col("currency") == "JPY")
    assert stored["rate_to_reporting"].to_list() == [0.0092]
    table = run_cli("billing", "fx", "list", "--reporting", "CHF")
    assert table.returncode == 0 and "0.0092" in table.stdout

    bad = run_cli("billing", "fx", "set", "XXQ", "2026-03-01", "1.1")
    assert bad.returncode == 1 and "XXQ" in bad.stderr
    bad_rate = run_cli("billing", "fx", "set", "EUR", "2026-03-01", "one")
    assert bad_rate.returncode == 1 and "field 'rate'" in bad_rate.stderr


@pytest.mark.stack
def test_metrics_of_own_data_match_the_analysis(workbench: Any) -> None:
    billing = workbench.billing
    org = f"clm{uuid.uuid4().hex[:8]}"
    billing.create_organization(org, "Metrics Co", "USD")
    billing.create_plan(org, "pro", "Pro", amount=Decimal(120), currency="USD")
    billing.create_customer(org, "cus_m", "M", currency="USD")
    billing.subscribe(org, "cus_m", "pro", at=datetime(2026, 2, 3, tzinfo=UTC))
    result = run_cli(
        "billing", "metrics", "--start", "2026-01", "--end", "2026-04", "--org", org, "-f", "json"
    )
    assert result.returncode == 0, result.stderr
    expected = billing.analysis(
        start=date(2026, 1, 1), end=date(2026, 5, 1), organization_id=org
    ).metrics
    printed = json.loads(result.stdout)
    assert [Decimal(m["end_mrr"]) for m in printed] == expected["end_mrr"].to_list()
    assert [Decimal(m["new"]) for m in printed] == [0, 120, 0, 0]
    movements = run_cli(
        "billing", "movements", "--start", "2026-01", "--end", "2026-04", "--org", org
    )
    assert movements.returncode == 0 and "cus_m" in movements.stdout and "new" in movements.stdout


# -- coupons, discounts and tax rates --------------------------------------------------------------
T0 = datetime(2026, 10, 1, tzinfo=UTC)


def _json(*args: str) -> Any:
    """Run a command with `--format json`; it must succeed."""
    result = run_cli(*args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _fails(*args: str, code: int = 1) -> str:
    """Run a command that must fail with `code`, without a traceback; its stderr."""
    result = run_cli(*args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return " ".join(result.stderr.split())  # the error's line, unwrapped


def _tax_org(workbench: Any) -> str:
    billing = workbench.billing
    org = f"txc{uuid.uuid4().hex[:8]}"  # sorts after the Billing page's organizations
    billing.create_organization(org, "Tax CLI Co", "EUR", invoice_prefix=org.upper())
    billing.create_plan(org, "basic", "Basic", amount=Decimal(100), currency="EUR")
    return org


@pytest.mark.stack
def test_coupons_and_tax_rates_made_with_the_cli_reach_the_invoices(workbench: Any) -> None:
    billing = workbench.billing
    org = _tax_org(workbench)
    ca = billing.create_customer(org, "cus_ca", "Canada", currency="EUR")
    billing.create_customer(org, "cus_dk", "Denmark", currency="EUR")
    sub_ca = billing.subscribe(org, "cus_ca", "basic", at=T0)
    sub_dk = billing.subscribe(org, "cus_dk", "basic", at=T0)

    tax = ("billing", "tax-rates")
    [gst] = _json(*tax, "create", "--org", org, "--name", "GST", "--percentage", "5",
                  "--jurisdiction", "Canada", "--country", "ca")  # fmt: skip
    [pst] = _json(*tax, "create", "--org", org, "--name", "PST", "--percentage", "7")
    [moms] = _json(*tax, "create", "--org", org, "--name", "MOMS", "--percentage", "25",
                   "--inclusive", "--country", "DK")  # fmt: skip
    assert (Decimal(gst["percentage"]), gst["inclusive"], gst["country"]) == (5, False, "CA")
    assert (Decimal(moms["percentage"]), moms["inclusive"]) == (25, True)
    assigned = _json(*tax, "assign", "--org", org, "--customer", "cus_ca", gst["id"], pst["id"])
    assert [r["display_name"] for r in assigned] == ["GST", "PST"]
    _json(*tax, "assign", "--org", org, "--customer", "cus_dk", moms["id"])
    assert billing.tax_rates(org, customer_id=ca)["id"].to_list() == [gst["id"], pst["id"]]
    listed = _json(*tax, "list", "--org", org, "--customer", "cus_dk")
    assert [r["id"] for r in listed] == [moms["id"]]
    table = run_cli(*tax, "list", "--org", org)
    assert table.returncode == 0, table.stderr
    moms_row = next(line for line in table.stdout.splitlines() if "MOMS" in line)
    assert moms["id"] in moms_row and " 25 " in moms_row and "True" in moms_row

    coupons = ("billing", "coupons")
    [ten] = _json(*coupons, "create", "TEN", "--org", org, "--percent-off", "10",
                  "--duration", "forever")  # fmt: skip
    [q1] = _json(*coupons, "create", "Q1", "--org", org, "--amount-off", "5", "--currency", "EUR",
                 "--duration", "repeating", "--months", "3", "--max-redemptions", "2",
                 "--redeem-by", "2027-01-01", "--name", "Quarter one")  # fmt: skip
    assert Decimal(ten["percent_off"]) == 10 and ten["amount_off"] is None
    assert (q1["name"], q1["currency"], q1["duration_in_months"]) == ("Quarter one", "EUR", 3)
    assert Decimal(q1["amount_off"]) == 5 and q1["percent_off"] is None
    assert q1["redeem_by"] == "2027-01-01T00:00:00+00:00" and q1["max_redemptions"] == 2
    assert [c["code"] for c in _json(*coupons, "list", "--org", org)] == ["TEN", "Q1"]
    table = run_cli(*coupons, "list", "--org", org)
    assert table.returncode == 0, table.stderr
    q1_row = next(line for line in table.stdout.splitlines() if "Quarter one" in line)
    assert " 5.00 " in q1_row and "repeating" in q1_row  # money without the column's padding

    [on_ca] = _json(*coupons, "apply", "TEN", "--org", org, "--customer", "cus_ca",
                    "--at", "2026-10-01")  # fmt: skip
    [on_dk] = _json(*coupons, "apply", "Q1", "--org", org, "--subscription", str(sub_dk),
                    "--at", "2026-10-01")  # fmt: skip
    assert on_ca["subscription_id"] is None and on_ca["code"] == "TEN"
    assert on_dk["subscription_id"] == str(sub_dk)
    assert on_dk["ends_at"] == "2027-01-01T00:00:00+00:00"  # 3 months from the period start
    discounts = _json("billing", "discounts", "list", "--org", org, "--customer", "cus_ca",
                      "--at", "2026-10-15")  # fmt: skip
    assert [(d["id"], d["code"], d["active"]) for d in discounts] == [(on_ca["id"], "TEN", True)]
    assert billing.coupons(org)["times_redeemed"].to_list() == [1, 1]

    issued = _json("billing", "invoices", "generate", "--org", org, "--at", "2026-11-01")
    assert len(issued) == 2
    shown = {}
    for row in issued:
        document = _json("billing", "invoices", "show", row["id"])
        invoice = billing.invoice(uuid.UUID(row["id"]))
        for name in ("subtotal", "discount", "tax", "tax_inclusive", "total", "amount_due"):
            assert Decimal(document[name]) == getattr(invoice, name), name
        assert document["tax_breakdown"] == list(invoice.tax_breakdown)
        assert document["coupons"] == list(invoice.coupons)
        assert [line["description"] for line in document["lines"]] == [
            line["description"] for line in invoice.lines
        ]
        shown[invoice.subscription_id] = (document, invoice)

    canada, invoice = shown[sub_ca]
    assert [(t["display_name"], t["inclusive"]) for t in canada["tax_breakdown"]] == [
        ("GST", False),
        ("PST", False),
    ]
    assert sum(Decimal(t["amount"]) for t in canada["tax_breakdown"]) == invoice.tax > 0
    assert [c["code"] for c in canada["coupons"]] == ["TEN"]
    assert Decimal(canada["coupons"][0]["amount"]) == invoice.discount > 0
    denmark, dk_invoice = shown[sub_dk]
    [vat] = denmark["tax_breakdown"]
    assert (vat["display_name"], vat["inclusive"]) == ("MOMS", True)
    assert Decimal(vat["amount"]) == dk_invoice.tax_inclusive > 0 and dk_invoice.tax == 0
    assert [(c["code"], Decimal(c["amount"])) for c in denmark["coupons"]] == [
        ("Q1", dk_invoice.discount)
    ]

    human = run_cli("billing", "invoices", "show", str(invoice.id))
    assert human.returncode == 0, human.stderr
    for rate in invoice.tax_breakdown:
        row = next(line for line in human.stdout.splitlines() if rate["display_name"] in line)
        assert rate["taxable_amount"] in row and rate["amount"] in row and "exclusive" in row
    coupon_row = next(line for line in human.stdout.splitlines() if "TEN" in line)
    assert f"{invoice.coupons[0]['amount']} EUR" in coupon_row

    removed = run_cli("billing", "discounts", "remove", on_ca["id"], "--at", "2026-11-15")
    assert removed.returncode == 0 and on_ca["id"] in removed.stdout
    assert billing.discounts(ca)["removed_at"].to_list() == [datetime(2026, 11, 15, tzinfo=UTC)]
    assert "already removed" in _fails("billing", "discounts", "remove", on_ca["id"])

    archived = run_cli(*tax, "archive", pst["id"])
    assert archived.returncode == 0 and "archived" in archived.stdout
    active = {r["display_name"]: r["active"] for r in _json(*tax, "list", "--org", org)}
    assert active == {"GST": True, "PST": False, "MOMS": True}
    refused = _fails(*tax, "assign", "--org", org, "--customer", "cus_dk", pst["id"])
    assert "tax_rate_ids[0]" in refused and "is archived" in refused
    cleared = run_cli(*tax, "assign", "--org", org, "--customer", "cus_ca")
    assert cleared.returncode == 0 and "no tax rate" in cleared.stdout
    assert billing.tax_rates(org, customer_id=ca).height == 0


@pytest.mark.stack
def test_bad_coupon_and_tax_input_names_the_field(workbench: Any) -> None:
    billing = workbench.billing
    org = _tax_org(workbench)
    billing.create_customer(org, "cus_x", "X", currency="EUR")
    billing.create_coupon(org, "WELCOME", percent_off=Decimal(10))
    create = ("billing", "coupons", "create", "Q2", "--org", org)

    no_months = _fails(*create, "--percent-off", "20", "--duration", "repeating")
    assert "field 'duration_in_months' = None" in no_months and "(option --months)" in no_months
    duration = _fails(*create, "--percent-off", "20", "--duration", "monthly")
    assert "field 'duration' = 'monthly'" in duration and "once, repeating, forever" in duration
    both = _fails(*create, "--percent-off", "20", "--amount-off", "5", "--currency", "EUR",
                  "--duration", "once")  # fmt: skip
    assert "field 'percent_off'" in both and "exactly one of" in both
    assert "field 'percent_off' = 'ten': is not a number" in _fails(
        *create, "--percent-off", "ten", "--duration", "once"
    )
    assert "field 'percent_off' = Decimal('120')" in _fails(
        *create, "--percent-off", "120", "--duration", "once"
    )
    assert billing.coupons(org)["code"].to_list() == ["WELCOME"]  # nothing half-made

    apply = ("billing", "coupons", "apply")
    typo = _fails(*apply, "WELCOM", "--org", org, "--customer", "cus_x")
    assert "Unknown coupon 'WELCOM'. Did you mean 'WELCOME'?" in typo
    customer = _fails(*apply, "WELCOME", "--org", org, "--customer", "cus_y")
    assert "field 'customer' = 'cus_y'" in customer
    organization = _fails("billing", "coupons", "list", "--org", org + "x")
    assert f"Unknown organization '{org}x'. Did you mean '{org}'?" in organization
    assert "--subscription" in _fails(*apply, "WELCOME", "--org", org, code=2)
    assert "field 'subscription_id' = 'sub-1'" in _fails(
        *apply, "WELCOME", "--org", org, "--subscription", "sub-1"
    )

    tax = ("billing", "tax-rates")
    rate = _fails(*tax, "create", "--org", org, "--name", "VAT", "--percentage", "120")
    assert "field 'percentage' = Decimal('120')" in rate and "(option --percentage)" in rate
    country = _fails(*tax, "create", "--org", org, "--name", "VAT", "--percentage", "19",
                     "--country", "DEU")  # fmt: skip
    assert "field 'country' = 'DEU'" in country
    assert billing.tax_rates(org).height == 0
    bad_id = _fails(*tax, "assign", "--org", org, "--customer", "cus_x", "not-an-id")
    assert "Row tax_rate_ids[0], field 'tax_rate_id' = 'not-an-id'" in bad_id
    assert "is not a tax rate" in _fails(*tax, "archive", str(uuid.uuid4()))
    assert "field 'discount_id' = 'd-1'" in _fails("billing", "discounts", "remove", "d-1")


def test_notify_trials_sends_each_trial_once(workbench: Any) -> None:
    billing = workbench.billing
    org = f"cli{uuid.uuid4().hex[:8]}"
    billing.create_organization(org, "Trial Co", "EUR", invoice_prefix=org.upper())
    billing.create_plan(org, "basic", "Basic", amount=Decimal("49.90"), currency="EUR")
    billing.create_customer(org, "cus_soon", "Soon", currency="EUR")
    billing.create_customer(org, "cus_later", "Later", currency="EUR")
    start = datetime(2026, 10, 1, tzinfo=UTC)
    soon = billing.subscribe(org, "cus_soon", "basic", at=start, trial_days=14)
    billing.subscribe(org, "cus_later", "basic", at=start, trial_days=30)

    args = ("billing", "notify-trials", "--org", org, "--at", "2026-10-12", "-f", "json")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert [row["subscription_id"] for row in json.loads(first.stdout)] == [str(soon)]
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == [], "a trial is notified once"
    bad = run_cli("billing", "notify-trials", "--org", org, "--within-days", "0")
    assert bad.returncode == 1 and "within" in bad.stderr


@pytest.mark.stack
def test_customers_plans_and_a_subscription_lifecycle_from_the_cli(workbench: Any) -> None:
    billing = workbench.billing
    org = _tax_org(workbench)
    billing.create_plan(org, "basic", "Basic", amount=Decimal(120), currency="EUR")  # version 2
    billing.create_plan(org, "team", "Team", amount=Decimal(300), currency="EUR")

    new_customer = ("billing", "customers", "create", "cus_9", "--org", org, "--name", "Nine")
    [customer] = _json(*new_customer, "--currency", "EUR", "--email", "9@example.com")
    assert (customer["external_id"], customer["currency"]) == ("cus_9", "EUR")
    assert [c["external_id"] for c in _json("billing", "customers", "list", "--org", org)] == [
        "cus_9"
    ]
    plans = _json("billing", "plans", "list", "--org", org)
    assert [(p["code"], p["version"], Decimal(p["amount"])) for p in plans] == [
        ("basic", 2, 120),
        ("team", 1, 300),
    ]
    assert len(_json("billing", "plans", "list", "--org", org, "--all-versions")) == 3

    subs = ("billing", "subscriptions")
    [sub] = _json(*subs, "create", "--org", org, "--customer", "cus_9", "--plan", "basic",
                  "--at", "2026-10-01")  # fmt: skip
    assert (sub["status"], sub["plan_version"], sub["current_period_end"]) == (
        "active",
        2,
        "2026-11-01T00:00:00+00:00",
    )
    [upgraded] = _json(*subs, "change-plan", sub["id"], "--org", org, "--plan", "team",
                       "--at", "2026-10-11")  # fmt: skip
    assert upgraded["plan"] == "team"
    [paused] = _json(*subs, "pause", sub["id"], "--org", org, "--at", "2026-10-21")
    assert paused["status"] == "paused"
    # the twenty days served were invoiced on pausing: ten on basic (120), ten on team (300)
    [invoice] = billing.invoices(org).to_dicts()
    assert invoice["period_end"] == datetime(2026, 10, 21, tzinfo=UTC)
    assert invoice["amount_due"] == Decimal("38.71") + Decimal("96.77")
    [resumed] = _json(*subs, "resume", sub["id"], "--org", org, "--at", "2026-11-01")
    assert (resumed["status"], resumed["current_period_start"]) == (
        "active",
        "2026-11-01T00:00:00+00:00",
    )
    [ending] = _json(*subs, "cancel", sub["id"], "--org", org, "--at-period-end")
    assert ending["cancel_at_period_end"] is True
    listed = _json(*subs, "list", "--org", org, "--status", "active", "--customer", "cus_9")
    assert [s["id"] for s in listed] == [sub["id"]]
    table = run_cli(*subs, "list", "--org", org)
    assert table.returncode == 0 and sub["id"] in table.stdout and "team" in table.stdout

    assert "'opne'" in _fails(*subs, "list", "--org", org, "--status", "opne")
    assert "'subscription_id'" in _fails(*subs, "pause", "sub-1", "--org", org)
    other = _tax_org(workbench)
    assert f"is not a subscription of '{other}'" in _fails(
        *subs, "pause", sub["id"], "--org", other
    )
    assert "Did you mean" in _fails("billing", "customers", "list", "--org", org[:-1] + "q")


@pytest.mark.stack
def test_organizations_and_plans_from_the_cli(workbench: Any) -> None:
    org = f"orgcli{uuid.uuid4().hex[:6]}"
    [made] = _json("billing", "organizations", "create", org, "--name", "CLI Org",
                   "--currency", "EUR", "--invoice-prefix", "CLIO")  # fmt: skip
    assert (made["id"], made["currency"], made["invoice_prefix"], made["customers"]) == (
        org,
        "EUR",
        "CLIO",
        0,
    )
    assert org in [o["id"] for o in _json("billing", "organizations", "list")]
    plan = ("billing", "plans", "create", "pro", "--org", org, "--name", "Pro")
    [first] = _json(*plan, "--amount", "49.90", "--currency", "EUR", "--trial-days", "14")
    assert (first["version"], Decimal(first["amount"]), first["trial_days"]) == (
        1,
        Decimal("49.90"),
        14,
    )
    [second] = _json(*plan, "--amount", "59", "--currency", "EUR", "--interval", "year")
    assert (second["version"], second["interval"]) == (2, "year")
    assert "'amount'" in _fails(*plan, "--amount", "lots")
    assert "--interval" in _fails(*plan, "--amount", "5", "--interval", "fortnight")
    assert "--currency" in _fails(*plan, "--amount", "5", "--currency", "EURO")
