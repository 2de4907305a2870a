"""`dictamesh billing ...`: SaaS metrics and MRR movements, invoices, FX rates.

``metrics`` and ``movements`` read the workbench's own subscriptions (``--org`` narrows them to
one organization), or a subscription history imported from elsewhere (``--intervals FILE``, with
``--fx FILE`` for foreign currencies); both go through the same functions
(`workbench.billing.saas_metrics` / `mrr_movements`). Every command prints a table, or JSON /
CSV for scripts (``--format``); money is printed exactly (JSON carries it as strings).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from workbench.cli_support import handles_errors, out
from workbench.errors import DictaMeshError, UnknownNameError

if TYPE_CHECKING:
    import polars as pl

    from workbench.billing.mrr import MrrAnalysis
    from workbench.client import Workbench

FORMATS = ("table", "json", "csv")

billing_app = typer.Typer(
    help="Billing: SaaS metrics and MRR movements, invoices, FX rates.", no_args_is_help=True
)
invoices_app = typer.Typer(help="List, generate and show invoices.", no_args_is_help=True)
fx_app = typer.Typer(help="FX rates to the reporting currency.", no_args_is_help=True)
billing_app.add_typer(invoices_app, name="invoices")
billing_app.add_typer(fx_app, name="fx")

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


def _cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if name in RATIOS:
            return f"{value:.1%}"
        return f"{value:.2f}" if name == "quick_ratio" else str(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


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
        writer.writerows([{k: _plain(v) for k, v in row.items()} for row in rows])
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


def _invoice_id(value: str) -> uuid.UUID:
    from workbench.billing.errors import BillingInputError

    try:
        return uuid.UUID(value)
    except ValueError:
        raise BillingInputError(
            value,
            "invoice_id",
            value,
            "is not an invoice id",
            remedy="pass the id column of `dictamesh billing invoices list --org ORG`.",
        ) from None


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


@invoices_app.command("show")
@handles_errors
def invoices_show(
    invoice_id: Annotated[str, typer.Argument(metavar="INVOICE_ID", help="The invoice's id.")],
    fmt: Format = "table",
) -> None:
    """One invoice: totals, line items and payments (CSV: the line items)."""
    import polars as pl

    _check_format(fmt)
    key = _invoice_id(invoice_id)
    with _workbench() as workbench:
        invoice = workbench.billing.invoice(key)
        payments = workbench.billing.payments(key)
    header = {f.name: getattr(invoice, f.name) for f in fields(invoice) if f.name != "lines"}
    lines = [dict(line) for line in invoice.lines]
    if fmt == "json":
        document = header | {"lines": lines, "payments": payments.to_dicts()}
        _write(json.dumps(_plain(document), indent=2))
        return
    line_frame = pl.DataFrame(lines, infer_schema_length=None) if lines else pl.DataFrame()
    if fmt == "csv":
        _emit(line_frame, fmt)
        return
    summary = Table("field", "value", title=f"Invoice {invoice.number or '(draft)'}")
    for name, value in header.items():
        summary.add_row(name, _cell(name, value))
    out.print(summary)
    _emit(line_frame, fmt, empty="No line items.")
    if payments.height:
        _emit(payments, fmt)


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
    try:
        value = Decimal(rate)
    except InvalidOperation:
        raise BillingInputError(
            where, "rate", rate, "is not a number", remedy="write it like 1.0842."
        ) from None
    if not value.is_finite():
        raise BillingInputError(
            where, "rate", rate, "is not a finite number", remedy="write it like 1.0842."
        )
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
