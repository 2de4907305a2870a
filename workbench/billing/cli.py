"""`dictamesh billing ...`: SaaS metrics and MRR movements, invoices, coupons and discounts,
tax rates, FX rates.

``metrics`` and ``movements`` read the workbench's own subscriptions (``--org`` narrows them to
one organization), or a subscription history imported from elsewhere (``--intervals FILE``, with
``--fx FILE`` for foreign currencies); both go through the same functions
(`workbench.billing.saas_metrics` / `mrr_movements`). Every command prints a table, or JSON /
CSV for scripts (``--format``); money is printed exactly (JSON carries it as strings).
Customers are named by their external id (``--customer cus_1``) within ``--org``; coupons by
their code; subscriptions, discounts, tax rates and invoices by their id.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.markup import escape
from rich.table import Table

from workbench.cli_support import handles_errors, out
from workbench.errors import DictaMeshError, UnknownNameError

if TYPE_CHECKING:
    import polars as pl

    from workbench.billing.mrr import MrrAnalysis
    from workbench.billing.service import Billing
    from workbench.client import Workbench

FORMATS = ("table", "json", "csv")

billing_app = typer.Typer(
    help="Billing: customers, plans, subscriptions, invoices, coupons, tax rates, FX rates, "
    "SaaS metrics and MRR movements.",
    no_args_is_help=True,
)
invoices_app = typer.Typer(help="List, generate and show invoices.", no_args_is_help=True)
coupons_app = typer.Typer(
    help="Coupons (Stripe terms) and applying them to customers or subscriptions.",
    no_args_is_help=True,
)
discounts_app = typer.Typer(
    help="Discounts: coupons applied to a customer or a subscription.", no_args_is_help=True
)
tax_rates_app = typer.Typer(
    help="Tax rates (inclusive or exclusive) and the customers' rates.", no_args_is_help=True
)
fx_app = typer.Typer(help="FX rates to the reporting currency.", no_args_is_help=True)
organizations_app = typer.Typer(help="Billing organizations.", no_args_is_help=True)
customers_app = typer.Typer(help="Customers of an organization.", no_args_is_help=True)
plans_app = typer.Typer(help="Plans and their versions.", no_args_is_help=True)
subscriptions_app = typer.Typer(
    help="Subscriptions: start, change plan, pause, resume, cancel.", no_args_is_help=True
)
billing_app.add_typer(invoices_app, name="invoices")
billing_app.add_typer(coupons_app, name="coupons")
billing_app.add_typer(discounts_app, name="discounts")
billing_app.add_typer(tax_rates_app, name="tax-rates")
billing_app.add_typer(fx_app, name="fx")
billing_app.add_typer(organizations_app, name="organizations")
billing_app.add_typer(customers_app, name="customers")
billing_app.add_typer(plans_app, name="plans")
billing_app.add_typer(subscriptions_app, name="subscriptions")

Format = Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")]
Org = Annotated[str, typer.Option("--org", help="The organization.")]
Start = Annotated[
    str, typer.Option("--start", help="First month (YYYY-MM) or day (YYYY-MM-DD) of the window.")
]
End = Annotated[
    str,
    typer.Option(
        "--end", help="Last month, included (YYYY-MM), or the day after the window (YYYY-MM-DD)."
    ),
]
Currency = Annotated[str, typer.Option("--currency", help="Reporting currency (ISO 4217).")]
Churn = Annotated[
    str,
    typer.Option(
        "--churn-recognition",
        help="at_subscription_end, end_of_service_period or at_schedule.",
    ),
]
MaybeOrg = Annotated[
    str | None, typer.Option("--org", help="Only this organization (own data only).")
]
Intervals = Annotated[
    Path | None,
    typer.Option(
        "--intervals",
        help="An imported history: CSV (or Parquet) with one row per subscription price interval.",
    ),
]
Fx = Annotated[
    Path | None,
    typer.Option("--fx", help="FX table for --intervals: currency, date, rate_to_reporting."),
]
Customer = Annotated[
    str, typer.Option("--customer", metavar="EXTERNAL_ID", help="The customer's external id.")
]
MaybeCustomer = Annotated[
    str | None,
    typer.Option("--customer", metavar="EXTERNAL_ID", help="The customer's external id."),
]
At = Annotated[
    str | None,
    typer.Option("--at", help="When it takes effect (ISO 8601; default now, naive = UTC)."),
]

# The columns a terminal table shows; --format json/csv prints every column.
METRIC_COLUMNS = (
    "month",
    "start_mrr",
    "new",
    "expansion",
    "reactivation",
    "contraction",
    "churn",
    "fx_impact",
    "end_mrr",
    "customers_end",
    "logo_churn_rate",
    "nrr",
    "grr",
    "arpa",
    "ltv",
    "quick_ratio",
)
RATIOS = {"logo_churn_rate", "gross_mrr_churn_rate", "net_mrr_churn_rate", "nrr", "grr"}
INVOICE_COLUMNS = (
    "number",
    "status",
    "customer",
    "currency",
    "total",
    "amount_due",
    "amount_paid",
    "issued_at",
    "id",
)
COUPON_COLUMNS = (
    "code",
    "name",
    "percent_off",
    "amount_off",
    "currency",
    "duration",
    "duration_in_months",
    "max_redemptions",
    "redeem_by",
    "times_redeemed",
)
DISCOUNT_COLUMNS = (
    "id",
    "code",
    "percent_off",
    "amount_off",
    "currency",
    "duration",
    "subscription_id",
    "starts_at",
    "ends_at",
    "removed_at",
    "times_applied",
    "active",
)
TAX_RATE_COLUMNS = (
    "id",
    "display_name",
    "percentage",
    "inclusive",
    "jurisdiction",
    "country",
    "active",
)
CUSTOMER_COLUMNS = ("external_id", "name", "email", "currency", "credit_balance", "created_at")
PLAN_COLUMNS = (
    "code",
    "version",
    "name",
    "amount",
    "currency",
    "interval",
    "trial_days",
    "usage_charges",
    "live_subscriptions",
)
SUBSCRIPTION_COLUMNS = (
    "id",
    "customer",
    "plan",
    "status",
    "amount",
    "currency",
    "current_period_end",
    "cancel_at_period_end",
    "ended_at",
)
# Decimal columns that are not money: printed without padding to cents.
PLAIN_NUMBERS = {"percent_off", "percentage", "quantity", "tax_rate"}
# Invoice fields holding several entries: shown as tables of their own, not as summary rows.
NESTED = ("lines", "tax_breakdown", "coupons")
# Service fields of coupons and tax rates, and the options that set them.
OPTIONS = {
    "percent_off": "--percent-off",
    "amount_off": "--amount-off",
    "currency": "--currency",
    "duration": "--duration",
    "duration_in_months": "--months",
    "max_redemptions": "--max-redemptions",
    "redeem_by": "--redeem-by",
    "percentage": "--percentage",
    "country": "--country",
    "interval": "--interval",
    "amount": "--amount",
}


# -- plumbing -------------------------------------------------------------------------------------
@contextmanager
def _workbench() -> Iterator[Workbench]:
    from workbench.cli import _settings
    from workbench.client import connect

    workbench = connect(_settings())
    try:
        yield workbench
    finally:
        workbench.close()


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UnknownNameError("output format", fmt, FORMATS)


def _plain(value: Any) -> Any:
    """A JSON-ready value: money exact as a string, times in ISO 8601."""
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _csv_value(value: Any) -> Any:
    """A CSV cell: nested values (a tax breakdown, coupons) as JSON."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(_plain(value))
    return _plain(value)


def _float_text(name: str, value: float) -> str:
    if name in RATIOS:
        return f"{value:.1%}"
    return f"{value:.2f}" if name == "quick_ratio" else str(value)


def _cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return _float_text(name, value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, Decimal):
        return _number_text(value, money=name not in PLAIN_NUMBERS)
    if isinstance(value, list | tuple):
        return ", ".join(_cell(name, v) for v in value)
    return escape(str(value))  # names and descriptions are the users': no console markup


def _number_text(value: Decimal, *, money: bool = True) -> str:
    """`value` without the padding zeros of a NUMERIC(38, 6) column; money keeps two decimals."""
    text = format(value, "f")
    if not value.is_finite() or "." not in text:
        return text
    whole, fraction = text.split(".")
    fraction = fraction.rstrip("0")
    if money:
        fraction = fraction.ljust(2, "0")
    return f"{whole}.{fraction}" if fraction else whole


def _write(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _emit(
    frame: pl.DataFrame,
    fmt: str,
    *,
    columns: Sequence[str] | None = None,
    empty: str = "Nothing to show.",
) -> None:
    """Print `frame` as a table (of `columns`), a JSON array of objects, or CSV."""
    rows = frame.to_dicts()
    if fmt == "json":
        _write(json.dumps(_plain(rows), indent=2))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=frame.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows([{k: _csv_value(v) for k, v in row.items()} for row in rows])
        _write(buffer.getvalue())
    elif not rows:
        out.print(empty, highlight=False)
    else:
        shown = [c for c in (columns or frame.columns) if c in frame.columns]
        table = Table(*shown)
        for row in rows:
            table.add_row(*(_cell(c, row[c]) for c in shown))
        out.print(table)


def _month_or_day(value: str, option: str, *, end: bool) -> date:
    """`YYYY-MM` (the month's first day; for an end, the next month's) or `YYYY-MM-DD`."""
    month = re.fullmatch(r"(\d{4})-(\d{2})", value.strip())
    try:
        if month:
            year, number = int(month.group(1)), int(month.group(2))
            first = date(year, number, 1)
            if not end:
                return first
            return date(year + number // 12, number % 12 + 1, 1)
        return date.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither a month (YYYY-MM) nor a day (YYYY-MM-DD)", param_hint=option
        ) from None


def _instant(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO time such as 2026-11-01 or 2026-11-01T00:00:00+00:00",
            param_hint=option,
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _id(value: str, field: str, listed_by: str, *, row: str | None = None) -> uuid.UUID:
    """`value` as an id of `field` (``invoice_id``, ``tax_rate_id``...), listed by `listed_by`."""
    from workbench.billing.errors import BillingInputError

    try:
        return uuid.UUID(value)
    except ValueError:
        noun = field.removesuffix("_id").replace("_", " ")
        raise BillingInputError(
            value if row is None else row,
            field,
            value,
            f"is not {'an' if noun[0] in 'aeiou' else 'a'} {noun} id",
            remedy=f"pass an id as `{listed_by}` shows it.",
        ) from None


def _invoice_id(value: str) -> uuid.UUID:
    return _id(value, "invoice_id", "dictamesh billing invoices list --org ORG")


def _number(value: str, row: str, field: str, example: str) -> Decimal:
    """`value` as an exact Decimal; a bad one names the row and the field."""
    from workbench.billing.errors import BillingInputError

    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise BillingInputError(
            row, field, value, "is not a number", remedy=f"write it like {example}."
        ) from None
    if not number.is_finite():
        raise BillingInputError(
            row, field, value, "is not a finite number", remedy=f"write it like {example}."
        )
    return number


@contextmanager
def _options_named() -> Iterator[None]:
    """A service error about a field also names the option that sets it (``--months``)."""
    from workbench.billing.errors import BillingInputError

    try:
        yield
    except BillingInputError as exc:
        option = OPTIONS.get(exc.field)
        if option is not None:
            exc.remedy = f"{(exc.remedy or '').rstrip('.')} (option {option})."
        raise


def _organization(workbench: Workbench, org: str) -> None:
    """Stop with a did-you-mean when `org` is not a billing organization."""
    workbench.billing.require_organization(org)


def _customer_id(workbench: Workbench, org: str, external_id: str) -> uuid.UUID:
    """The id of the organization's customer `external_id` (the service's error when unknown)."""
    from workbench.billing.service import Billing

    _organization(workbench, org)
    with workbench.billing.engine.connect() as conn:
        return uuid.UUID(str(Billing._customer(conn, org, external_id)["id"]))


def _subscription_of(workbench: Workbench, org: str, value: str) -> dict[str, Any]:
    """The subscription `value` (an id), refused when it is not one of `org`'s."""
    from workbench.billing.errors import BillingInputError

    key = _id(value, "subscription_id", f"dictamesh billing subscriptions list --org {org}")
    _organization(workbench, org)
    sub = workbench.billing.subscription(key)
    if sub["organization_id"] != org:
        raise BillingInputError(
            value,
            "subscription_id",
            value,
            f"is not a subscription of {org!r}",
            remedy="check --org and the subscription id.",
        )
    return sub


def _located(exc: DictaMeshError, intervals: Path, fx: Path | None) -> DictaMeshError:
    """A bad-row error of an imported file, also naming the file and its line."""
    from workbench.billing.errors import BillingError, BillingInputError

    if not isinstance(exc, BillingInputError):
        return exc
    label = str(exc.row)
    first = re.match(r"\d+", label)
    path = fx if "of the FX table" in label else intervals
    if first is None or path is None:
        return exc
    where = path.name
    if path.suffix.lower() != ".parquet":  # the header is line 1, the row numbered 0 is line 2
        where += f", line {int(first.group()) + 2}"
    remedy = exc.remedy
    if fx is None and "no FX table" in exc.message:
        remedy = "pass --fx FILE, a CSV with currency, date, rate_to_reporting."
    return BillingError(f"{where}: {exc.message}", remedy=remedy)


def _analysis(
    start: str,
    end: str,
    currency: str,
    churn_recognition: str,
    org: str | None,
    intervals: Path | None,
    fx: Path | None,
) -> MrrAnalysis:
    from workbench.billing.errors import BillingError

    window_start = _month_or_day(start, "--start", end=False)
    window_end = _month_or_day(end, "--end", end=True)
    if intervals is None:
        if fx is not None:
            raise BillingError(
                "--fx goes with --intervals; the workbench's own data uses its FX table.",
                remedy="add rates with `dictamesh billing fx set`, or pass --intervals FILE.",
            )
        with _workbench() as workbench:
            return workbench.billing.analysis(
                start=window_start,
                end=window_end,
                organization_id=org,
                reporting_currency=currency,
                churn_recognition=churn_recognition,
            )
    if org is not None:
        raise BillingError(
            "--org reads the workbench's own data; it does not apply to --intervals.",
            remedy="drop --org, or filter the file to the customers you want.",
        )
    from workbench.billing.mrr import analyse, read_fx, read_intervals

    try:
        return analyse(
            read_intervals(intervals),
            None if fx is None else read_fx(fx),
            reporting_currency=currency,
            churn_recognition=churn_recognition,
            start=window_start,
            end=window_end,
        )
    except DictaMeshError as exc:
        raise _located(exc, intervals, fx) from None


# -- analytics ------------------------------------------------------------------------------------
@billing_app.command("metrics")
@handles_errors
def metrics(
    start: Start,
    end: End,
    currency: Currency = "USD",
    churn_recognition: Churn = "at_subscription_end",
    org: MaybeOrg = None,
    intervals: Intervals = None,
    fx: Fx = None,
    fmt: Format = "table",
) -> None:
    """Monthly SaaS metrics: MRR and its movements, customers, churn rates, NRR, GRR, ARPA,
    LTV and quick ratio, of your own subscriptions or of an imported history."""
    _check_format(fmt)
    analysis = _analysis(start, end, currency, churn_recognition, org, intervals, fx)
    _emit(analysis.metrics, fmt, columns=METRIC_COLUMNS)


@billing_app.command("movements")
@handles_errors
def movements(
    start: Start,
    end: End,
    currency: Currency = "USD",
    churn_recognition: Churn = "at_subscription_end",
    org: MaybeOrg = None,
    intervals: Intervals = None,
    fx: Fx = None,
    fmt: Format = "table",
) -> None:
    """MRR movements, one row per customer and movement (new, expansion, contraction, churn,
    reactivation, fx_impact) with its date, amount and the customer's MRR around it."""
    _check_format(fmt)
    analysis = _analysis(start, end, currency, churn_recognition, org, intervals, fx)
    _emit(analysis.movements, fmt, empty="No MRR movement in the window.")


# -- invoices -------------------------------------------------------------------------------------
@invoices_app.command("list")
@handles_errors
def invoices_list(
    org: Org,
    status: Annotated[
        str | None,
        typer.Option(help="Only this status: draft, open, paid, void or uncollectible."),
    ] = None,
    fmt: Format = "table",
) -> None:
    """The organization's invoices, newest first."""
    _check_format(fmt)
    if status is not None:
        from workbench.billing.service import TRANSITIONS

        if status not in TRANSITIONS:
            raise UnknownNameError("invoice status", status, list(TRANSITIONS))
    with _workbench() as workbench:
        frame = workbench.billing.invoices(org, status=status)
    _emit(frame, fmt, columns=INVOICE_COLUMNS, empty=f"No invoice of {org!r}.")


@invoices_app.command("generate")
@handles_errors
def invoices_generate(
    org: Org,
    at: Annotated[
        str | None, typer.Option("--at", help="Issue time (ISO 8601; default now, naive = UTC).")
    ] = None,
    draft: Annotated[
        bool, typer.Option("--draft", help="Leave drafts: no numbers, periods not advanced.")
    ] = False,
    fmt: Format = "table",
) -> None:
    """Invoice the current period of the organization's active, past-due and trialing
    subscriptions (plan fees, usage, proration, tax, credits) and advance them."""
    import polars as pl

    _check_format(fmt)
    issued = _instant(at, "--at")
    with _workbench() as workbench:
        invoices = workbench.billing.generate_invoices(org, finalize=not draft, at=issued)
    rows = [
        {f.name: getattr(invoice, f.name) for f in fields(invoice) if f.name != "lines"}
        for invoice in invoices
    ]
    frame = pl.DataFrame(
        [{k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in r.items()} for r in rows],
        infer_schema_length=None,
    )
    _emit(
        frame,
        fmt,
        columns=("number", "status", "currency", "subtotal", "tax", "total", "amount_due", "id"),
        empty=f"No subscription of {org!r} to invoice.",
    )


@billing_app.command("notify-trials")
@handles_errors
def notify_trials(
    org: MaybeOrg = None,
    within_days: Annotated[
        float, typer.Option("--within-days", help="Trials ending this many days ahead.")
    ] = 3,
    at: At = None,
    fmt: Format = "table",
) -> None:
    """Send `subscription.trial_ending` (outbox and hooks) once for each trial ending soon;
    run it on a schedule (cron, a systemd timer): a trial already notified is skipped."""
    import polars as pl

    _check_format(fmt)
    when = _instant(at, "--at")
    with _workbench() as workbench:
        notified = workbench.billing.notify_trials_ending(
            within=timedelta(days=within_days), at=when, organization_id=org
        )
    _emit(
        pl.DataFrame(
            {"subscription_id": [str(s) for s in notified]}, schema={"subscription_id": pl.String}
        ),
        fmt,
        empty="No trial ends in that window that was not notified already.",
    )


@invoices_app.command("show")
@handles_errors
def invoices_show(
    invoice_id: Annotated[str, typer.Argument(metavar="INVOICE_ID", help="The invoice's id.")],
    fmt: Format = "table",
) -> None:
    """One invoice: totals, line items, the tax of each tax rate, what each coupon took off,
    and payments (CSV: the line items)."""
    import polars as pl

    _check_format(fmt)
    key = _invoice_id(invoice_id)
    with _workbench() as workbench:
        invoice = workbench.billing.invoice(key)
        payments = workbench.billing.payments(key)
    header = {f.name: getattr(invoice, f.name) for f in fields(invoice) if f.name not in NESTED}
    lines = [dict(line) for line in invoice.lines]
    if fmt == "json":
        document = header | {
            "tax_breakdown": list(invoice.tax_breakdown),
            "coupons": list(invoice.coupons),
            "lines": lines,
            "payments": payments.to_dicts(),
        }
        _write(json.dumps(_plain(document), indent=2))
        return
    line_frame = pl.DataFrame(lines, infer_schema_length=None) if lines else pl.DataFrame()
    if fmt == "csv":
        _emit(line_frame, fmt)
        return
    summary = Table("field", "value", title=f"Invoice {escape(invoice.number or '(draft)')}")
    for name, value in header.items():
        summary.add_row(name, _cell(name, value))
    out.print(summary)
    _emit(line_frame, fmt, empty="No line items.")
    if invoice.tax_breakdown:
        taxes = Table("tax rate", "percentage", "kind", "taxable amount", "tax", title="Tax")
        for rate in invoice.tax_breakdown:
            taxes.add_row(
                escape(str(rate["display_name"])),
                f"{_number_text(Decimal(rate['percentage']), money=False)} %",
                "inclusive" if rate["inclusive"] else "exclusive",
                _cell("taxable_amount", Decimal(rate["taxable_amount"])),
                _cell("amount", Decimal(rate["amount"])),
            )
        out.print(taxes)
    if invoice.coupons:
        coupons = Table("coupon", "amount off", title="Coupons")
        for coupon in invoice.coupons:
            amount = coupon.get("amount")
            coupons.add_row(
                escape(str(coupon["code"])),
                "" if amount is None else f"{_cell('amount', Decimal(amount))} {invoice.currency}",
            )
        out.print(coupons)
    if payments.height:
        _emit(payments, fmt)


# -- coupons and discounts ------------------------------------------------------------------------
@coupons_app.command("create")
@handles_errors
def coupons_create(
    code: Annotated[
        str, typer.Argument(metavar="CODE", help="The coupon's code, unique in the organization.")
    ],
    org: Org,
    duration: Annotated[
        str, typer.Option("--duration", help="once, repeating (with --months) or forever.")
    ],
    percent_off: Annotated[
        str | None, typer.Option("--percent-off", metavar="P", help="Percent off, in (0, 100].")
    ] = None,
    amount_off: Annotated[
        str | None,
        typer.Option("--amount-off", metavar="A", help="Amount off (with --currency)."),
    ] = None,
    currency: Annotated[
        str | None, typer.Option("--currency", help="Currency of --amount-off (ISO 4217).")
    ] = None,
    months: Annotated[
        int | None, typer.Option("--months", help="How many months a repeating coupon lasts.")
    ] = None,
    max_redemptions: Annotated[
        int | None, typer.Option("--max-redemptions", help="How often it can be applied.")
    ] = None,
    redeem_by: Annotated[
        str | None,
        typer.Option("--redeem-by", help="Last time it can be applied (ISO 8601, naive = UTC)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="A readable name (default: the code).")
    ] = None,
    fmt: Format = "table",
) -> None:
    """Create a coupon with Stripe's terms; its terms do not change once created."""
    import polars as pl

    _check_format(fmt)
    until = _instant(redeem_by, "--redeem-by")
    percent = None if percent_off is None else _number(percent_off, code, "percent_off", "10")
    amount = None if amount_off is None else _number(amount_off, code, "amount_off", "25.00")
    with _workbench() as workbench, _options_named():
        _organization(workbench, org)
        coupon_id = workbench.billing.create_coupon(
            org,
            code,
            percent_off=percent,
            amount_off=amount,
            currency=currency,
            duration=cast(Any, duration),  # the service names the field when it is not one
            duration_in_months=months,
            max_redemptions=max_redemptions,
            redeem_by=until,
            name=name,
        )
        frame = workbench.billing.coupons(org).filter(pl.col("id") == str(coupon_id))
    _emit(frame, fmt, columns=COUPON_COLUMNS)


@coupons_app.command("list")
@handles_errors
def coupons_list(org: Org, fmt: Format = "table") -> None:
    """The organization's coupons with how often each was redeemed."""
    _check_format(fmt)
    with _workbench() as workbench:
        _organization(workbench, org)
        frame = workbench.billing.coupons(org)
    _emit(frame, fmt, columns=COUPON_COLUMNS, empty=f"No coupon of {org!r}.")


@coupons_app.command("apply")
@handles_errors
def coupons_apply(
    code: Annotated[str, typer.Argument(metavar="CODE", help="The coupon's code.")],
    org: Org,
    customer: MaybeCustomer = None,
    subscription: Annotated[
        str | None,
        typer.Option("--subscription", metavar="ID", help="One subscription (its id)."),
    ] = None,
    at: At = None,
    fmt: Format = "table",
) -> None:
    """Apply a coupon to a customer (all its subscriptions) or to one subscription; prints the
    discount."""
    import polars as pl

    _check_format(fmt)
    if (customer is None) == (subscription is None):
        raise typer.BadParameter(
            "give exactly one of --customer EXTERNAL_ID and --subscription ID",
            param_hint="--customer / --subscription",
        )
    when = _instant(at, "--at")
    with _workbench() as workbench:
        billing = workbench.billing
        if customer is not None:
            customer_id = target = _customer_id(workbench, org, customer)
        else:
            sub = _subscription_of(workbench, org, subscription or "")
            target = sub["id"]
            customer_id = uuid.UUID(str(sub["customer_id"]))
        discount_id = billing.apply_coupon(target, code, at=when)
        frame = billing.discounts(customer_id, at=when).filter(pl.col("id") == str(discount_id))
    _emit(frame, fmt, columns=DISCOUNT_COLUMNS)


@discounts_app.command("list")
@handles_errors
def discounts_list(org: Org, customer: Customer, at: At = None, fmt: Format = "table") -> None:
    """The customer's discounts, removed and used-up ones too; `active` is as of --at."""
    _check_format(fmt)
    when = _instant(at, "--at")
    with _workbench() as workbench:
        frame = workbench.billing.discounts(_customer_id(workbench, org, customer), at=when)
    _emit(frame, fmt, columns=DISCOUNT_COLUMNS, empty=f"No discount of {customer!r}.")


@discounts_app.command("remove")
@handles_errors
def discounts_remove(
    discount_id: Annotated[str, typer.Argument(metavar="DISCOUNT_ID", help="The discount's id.")],
    at: At = None,
) -> None:
    """End a discount: invoices generated from --at on no longer get it."""
    key = _id(
        discount_id,
        "discount_id",
        "dictamesh billing discounts list --org ORG --customer EXTERNAL_ID",
    )
    when = _instant(at, "--at") or datetime.now(UTC)
    with _workbench() as workbench:
        workbench.billing.remove_discount(key, at=when)
    out.print(f"Discount {key} removed from {when.isoformat()} on.", highlight=False)


@billing_app.command("demo")
@handles_errors
def demo(
    org: Annotated[str, typer.Option("--org", help="The demo organization's id.")] = "demo-saas",
    customers: Annotated[int, typer.Option(help="How many customers.", min=1)] = 40,
    months: Annotated[int, typer.Option(help="How many months of history.", min=1)] = 18,
    seed: Annotated[int, typer.Option(help="Seed of the generated history.")] = 7,
) -> None:
    """Load a demo SaaS organization through the billing service: customers arriving over the
    months, trials, a coupon, tax, upgrades, downgrades, pauses, cancellations and comebacks,
    every period invoiced with its usage and paid (a few payments fail). Loaded once."""
    from workbench.billing.demo import load_demo

    with _workbench() as workbench:
        workbench.billing.ensure_topics()
        summary = load_demo(
            workbench.billing, organization_id=org, customers=customers, months=months, seed=seed
        )
    if summary.already_loaded:
        out.print(f"{org!r} is loaded already: nothing changed.", highlight=False)
    out.print(
        f"{org!r}: {summary.customers} customers, {summary.subscriptions} subscriptions, "
        f"{summary.invoices} invoices ({summary.failed_payments} payments failed on the way).",
        highlight=False,
    )


# -- customers, plans, subscriptions --------------------------------------------------------------
SubscriptionId = Annotated[
    str, typer.Argument(metavar="SUBSCRIPTION_ID", help="The subscription's id.")
]


@organizations_app.command("list")
@handles_errors
def organizations_list(fmt: Format = "table") -> None:
    """Every billing organization with its currency, invoice prefix and customer count."""
    _check_format(fmt)
    with _workbench() as workbench:
        frame = workbench.billing.organizations()
    _emit(frame, fmt, empty="No billing organization yet.")


@organizations_app.command("create")
@handles_errors
def organizations_create(
    org: Annotated[str, typer.Argument(metavar="ORG", help="The organization's id, e.g. acme.")],
    name: Annotated[str, typer.Option("--name", help="The organization's name.")],
    currency: Annotated[
        str, typer.Option("--currency", help="Its reporting currency (ISO 4217).")
    ] = "USD",
    invoice_prefix: Annotated[
        str | None,
        typer.Option("--invoice-prefix", help="Invoice numbers' prefix (default: the id)."),
    ] = None,
    fmt: Format = "table",
) -> None:
    """Create a billing organization (an existing id is left as it is)."""
    import polars as pl

    _check_format(fmt)
    with _workbench() as workbench, _options_named():
        workbench.billing.create_organization(org, name, currency, invoice_prefix=invoice_prefix)
        frame = workbench.billing.organizations().filter(pl.col("id") == org)
    _emit(frame, fmt)


@customers_app.command("list")
@handles_errors
def customers_list(org: Org, fmt: Format = "table") -> None:
    """The organization's customers."""
    _check_format(fmt)
    with _workbench() as workbench:
        frame = workbench.billing.customers(org)
    _emit(frame, fmt, columns=CUSTOMER_COLUMNS, empty=f"No customer of {org!r}.")


@customers_app.command("create")
@handles_errors
def customers_create(
    external_id: Annotated[
        str, typer.Argument(metavar="EXTERNAL_ID", help="Your id for the customer, e.g. cus_42.")
    ],
    org: Org,
    name: Annotated[str, typer.Option("--name", help="The customer's name.")],
    currency: Annotated[
        str, typer.Option("--currency", help="The customer's currency (ISO 4217).")
    ] = "USD",
    email: Annotated[str | None, typer.Option("--email", help="Where invoices go.")] = None,
    fmt: Format = "table",
) -> None:
    """Create a customer (an existing external id keeps its record and takes the new name)."""
    import polars as pl

    _check_format(fmt)
    with _workbench() as workbench, _options_named():
        _organization(workbench, org)
        workbench.billing.create_customer(org, external_id, name, currency=currency, email=email)
        frame = workbench.billing.customers(org).filter(pl.col("external_id") == external_id)
    _emit(frame, fmt, columns=CUSTOMER_COLUMNS)


@plans_app.command("list")
@handles_errors
def plans_list(
    org: Org,
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="Every version, not only the newest.")
    ] = False,
    fmt: Format = "table",
) -> None:
    """The organization's plans with their live subscriptions."""
    _check_format(fmt)
    with _workbench() as workbench:
        frame = workbench.billing.plans(org, all_versions=all_versions)
    _emit(frame, fmt, columns=PLAN_COLUMNS, empty=f"No plan of {org!r}.")


@plans_app.command("create")
@handles_errors
def plans_create(
    code: Annotated[str, typer.Argument(metavar="CODE", help="The plan's code, e.g. pro.")],
    org: Org,
    name: Annotated[str, typer.Option("--name", help="Shown on invoices.")],
    amount: Annotated[str, typer.Option("--amount", help="The price per interval, e.g. 49.90.")],
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217.")] = "USD",
    interval: Annotated[
        str, typer.Option("--interval", help="week, month, quarter or year.")
    ] = "month",
    trial_days: Annotated[int, typer.Option("--trial-days", help="Default trial.", min=0)] = 0,
    fmt: Format = "table",
) -> None:
    """Create a plan, or a new version of it (its subscriptions keep theirs). Usage charges are
    defined from Python (`wb.billing.create_plan(..., charges=[...])`)."""
    import polars as pl

    _check_format(fmt)
    price = _number(amount, code, "amount", "49.90")
    with _workbench() as workbench, _options_named():
        _organization(workbench, org)
        version = workbench.billing.create_plan(
            org,
            code,
            name,
            amount=price,
            currency=currency,
            interval=interval,
            trial_days=trial_days,
        )
        frame = workbench.billing.plans(org, all_versions=True).filter(
            (pl.col("code") == code) & (pl.col("version") == version)
        )
    _emit(frame, fmt, columns=PLAN_COLUMNS)


@subscriptions_app.command("list")
@handles_errors
def subscriptions_list(
    org: Org,
    status: Annotated[
        str | None,
        typer.Option(help="Only this status: trialing, active, past_due, paused or canceled."),
    ] = None,
    customer: MaybeCustomer = None,
    fmt: Format = "table",
) -> None:
    """The organization's subscriptions, newest first."""
    _check_format(fmt)
    with _workbench() as workbench:
        frame = workbench.billing.subscriptions(org, status=status, customer_external_id=customer)
    _emit(frame, fmt, columns=SUBSCRIPTION_COLUMNS, empty=f"No subscription of {org!r}.")


def _show_subscription(workbench: Workbench, org: str, subscription_id: Any, fmt: str) -> None:
    import polars as pl

    frame = workbench.billing.subscriptions(org).filter(pl.col("id") == str(subscription_id))
    _emit(frame, fmt, columns=SUBSCRIPTION_COLUMNS)


def _change_subscription(
    org: str,
    subscription_id: str,
    at: str | None,
    fmt: str,
    change: Callable[[Billing, uuid.UUID, datetime | None], Any],
) -> None:
    """Apply `change` to one of `org`'s subscriptions at --at, then print the subscription."""
    _check_format(fmt)
    when = _instant(at, "--at")
    with _workbench() as workbench:
        sub = _subscription_of(workbench, org, subscription_id)
        change(workbench.billing, sub["id"], when)
        _show_subscription(workbench, org, sub["id"], fmt)


@subscriptions_app.command("create")
@handles_errors
def subscriptions_create(
    org: Org,
    customer: Customer,
    plan: Annotated[str, typer.Option("--plan", help="The plan's code (its newest version).")],
    trial_days: Annotated[
        int | None, typer.Option("--trial-days", help="Trial length (default: the plan's).")
    ] = None,
    at: At = None,
    fmt: Format = "table",
) -> None:
    """Start a subscription; prints it with its id."""
    _check_format(fmt)
    when = _instant(at, "--at")
    with _workbench() as workbench:
        _organization(workbench, org)
        sub = workbench.billing.subscribe(org, customer, plan, at=when, trial_days=trial_days)
        _show_subscription(workbench, org, sub, fmt)


@subscriptions_app.command("change-plan")
@handles_errors
def subscriptions_change_plan(
    subscription_id: SubscriptionId,
    org: Org,
    plan: Annotated[str, typer.Option("--plan", help="The new plan's code.")],
    at: At = None,
    fmt: Format = "table",
) -> None:
    """Upgrade or downgrade now; the proration lines go on the next invoice."""

    def change(billing: Billing, key: uuid.UUID, when: datetime | None) -> None:
        lines = billing.change_plan(key, plan, at=when)
        if fmt == "table":
            out.print(
                f"Proration: credit {_number_text(lines['credit'])}, "
                f"charge {_number_text(lines['charge'])}.",
                highlight=False,
            )

    _change_subscription(org, subscription_id, at, fmt, change)


@subscriptions_app.command("cancel")
@handles_errors
def subscriptions_cancel(
    subscription_id: SubscriptionId,
    org: Org,
    at_period_end: Annotated[
        bool, typer.Option("--at-period-end", help="Cancel when the current period ends.")
    ] = False,
    at: At = None,
    fmt: Format = "table",
) -> None:
    """Cancel now (the time served is invoiced at once) or at the end of the period."""
    _change_subscription(
        org,
        subscription_id,
        at,
        fmt,
        lambda billing, key, when: billing.cancel(key, at=when, at_period_end=at_period_end),
    )


@subscriptions_app.command("pause")
@handles_errors
def subscriptions_pause(
    subscription_id: SubscriptionId, org: Org, at: At = None, fmt: Format = "table"
) -> None:
    """Pause: the time served is invoiced at once, then no invoices and no MRR until resumed."""
    _change_subscription(
        org, subscription_id, at, fmt, lambda billing, key, when: billing.pause(key, at=when)
    )


@subscriptions_app.command("resume")
@handles_errors
def subscriptions_resume(
    subscription_id: SubscriptionId, org: Org, at: At = None, fmt: Format = "table"
) -> None:
    """Resume a paused subscription: a new period starts at --at."""
    _change_subscription(
        org, subscription_id, at, fmt, lambda billing, key, when: billing.resume(key, at=when)
    )


# -- tax rates ------------------------------------------------------------------------------------
@tax_rates_app.command("create")
@handles_errors
def tax_rates_create(
    org: Org,
    name: Annotated[str, typer.Option("--name", help="Shown on invoices, e.g. 'VAT DE'.")],
    percentage: Annotated[
        str, typer.Option("--percentage", metavar="P", help="In percent, 0-100, e.g. 19 or 7.5.")
    ],
    inclusive: Annotated[
        bool,
        typer.Option("--inclusive", help="Contained in the prices (default: added on top)."),
    ] = False,
    jurisdiction: Annotated[
        str | None, typer.Option("--jurisdiction", help="Where it applies, e.g. 'Ontario'.")
    ] = None,
    country: Annotated[
        str | None,
        typer.Option("--country", metavar="CC", help="ISO 3166 country code, e.g. DE."),
    ] = None,
    fmt: Format = "table",
) -> None:
    """Create a tax rate; give it to customers with `tax-rates assign`."""
    import polars as pl

    _check_format(fmt)
    rate = _number(percentage, name, "percentage", "19 or 7.5")
    with _workbench() as workbench, _options_named():
        _organization(workbench, org)
        rate_id = workbench.billing.create_tax_rate(
            org, name, rate, inclusive=inclusive, jurisdiction=jurisdiction, country=country
        )
        frame = workbench.billing.tax_rates(org).filter(pl.col("id") == str(rate_id))
    _emit(frame, fmt, columns=TAX_RATE_COLUMNS)


@tax_rates_app.command("list")
@handles_errors
def tax_rates_list(org: Org, customer: MaybeCustomer = None, fmt: Format = "table") -> None:
    """The organization's tax rates, or one customer's in the order they apply."""
    _check_format(fmt)
    with _workbench() as workbench:
        if customer is None:
            _organization(workbench, org)
            frame = workbench.billing.tax_rates(org)
        else:
            customer_id = _customer_id(workbench, org, customer)
            frame = workbench.billing.tax_rates(org, customer_id=customer_id)
    owner = org if customer is None else customer
    _emit(frame, fmt, columns=TAX_RATE_COLUMNS, empty=f"No tax rate of {owner!r}.")


@tax_rates_app.command("assign")
@handles_errors
def tax_rates_assign(
    org: Org,
    customer: Customer,
    rate_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="RATE_ID", help="The customer's rates, in order; none clears them."),
    ] = None,
    fmt: Format = "table",
) -> None:
    """Replace the customer's tax rates (applied in this order to every invoice line)."""
    _check_format(fmt)
    listed_by = f"dictamesh billing tax-rates list --org {org}"
    ids = [
        _id(value, "tax_rate_id", listed_by, row=f"tax_rate_ids[{i}]")
        for i, value in enumerate(rate_ids or [])
    ]
    with _workbench() as workbench:
        customer_id = _customer_id(workbench, org, customer)
        workbench.billing.set_tax_rates(customer_id, ids)
        frame = workbench.billing.tax_rates(org, customer_id=customer_id)
    _emit(frame, fmt, columns=TAX_RATE_COLUMNS, empty=f"{customer!r} has no tax rate now.")


@tax_rates_app.command("archive")
@handles_errors
def tax_rates_archive(
    rate_id: Annotated[str, typer.Argument(metavar="RATE_ID", help="The tax rate's id.")],
) -> None:
    """Archive a tax rate: it can no longer be assigned; customers who have it keep it."""
    key = _id(rate_id, "tax_rate_id", "dictamesh billing tax-rates list --org ORG")
    with _workbench() as workbench:
        workbench.billing.archive_tax_rate(key)
    out.print(
        f"Tax rate {key} archived: no new customers get it; those who have it keep it.",
        highlight=False,
    )


# -- FX -------------------------------------------------------------------------------------------
@fx_app.command("set")
@handles_errors
def fx_set(
    currency: Annotated[str, typer.Argument(help="The foreign currency (ISO 4217), e.g. EUR.")],
    day: Annotated[str, typer.Argument(metavar="DATE", help="From this day on (YYYY-MM-DD).")],
    rate: Annotated[str, typer.Argument(help="Units of the reporting currency per unit.")],
    reporting: Annotated[str, typer.Option("--reporting", help="The reporting currency.")] = "USD",
) -> None:
    """Record (or replace) the rate of CURRENCY to the reporting currency from DATE on."""
    from workbench.billing.errors import BillingInputError

    where = f"{currency}@{day}"
    try:
        on = date.fromisoformat(day)
    except ValueError:
        raise BillingInputError(
            where, "date", day, "is not a date", remedy="write it as YYYY-MM-DD."
        ) from None
    value = _number(rate, where, "rate", "1.0842")
    with _workbench() as workbench:
        workbench.billing.set_fx_rate(currency, on, value, reporting_currency=reporting)
    out.print(f"1 {currency} = {value} {reporting} from {on.isoformat()}", highlight=False)


@fx_app.command("list")
@handles_errors
def fx_list(
    reporting: Annotated[str, typer.Option("--reporting", help="The reporting currency.")] = "USD",
    fmt: Format = "table",
) -> None:
    """The recorded rates to the reporting currency, by currency and date."""
    _check_format(fmt)
    with _workbench() as workbench:
        frame = workbench.billing.fx_rates(reporting)
    _emit(frame, fmt, empty=f"No FX rate to {reporting} recorded.")
