"""MRR movements and SaaS metrics with ChartMogul's definitions, in Polars.

Input is a subscription history with one row per subscription price interval (imported from
Stripe, Lago or a spreadsheet, or built from the workbench's own subscriptions):

``customer_id, subscription_id, valid_from, valid_to`` (null = still open), ``amount, currency,
interval`` (``week|month|quarter|year``), ``discount_amount`` (recurring discount per interval,
optional), ``is_trial`` (optional), ``cancel_scheduled_at`` (optional) and ``charge_type``
(optional: only ``recurring`` rows count; ``one_time`` and ``usage`` are not MRR).

Rules (ChartMogul):

* monthly normalisation: week x 52/12, quarter / 3, year / 12; recurring discounts are deducted
  (never below zero); trials and $0 intervals are not MRR;
* amounts are kept in integer hundredths ("cents") of the reporting currency, rounded half up
  once per service period, so every sum below is exact;
* a foreign-currency interval is converted at the rate on the day each of its service periods
  starts (the last rate on or before that day); when only the rate changes, the difference is
  ``fx_impact``, never a movement;
* a customer whose MRR goes from 0 to positive is ``new`` the first time and ``reactivation``
  afterwards; positive to 0 is ``churn``; otherwise ``expansion`` / ``contraction``;
* changes of one customer less than an hour apart (chained) merge into one movement, dated at
  the first change;
* churn recognition: ``at_subscription_end`` (MRR stops at ``valid_to``),
  ``end_of_service_period`` (a subscription ending mid-period keeps its MRR until the period it
  paid for ends) or ``at_schedule`` (MRR stops when the cancellation was scheduled,
  ``cancel_scheduled_at``).

Invariant (tested): end MRR = start MRR + new + expansion + reactivation - contraction - churn +
fx_impact, for every window and every month.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import polars as pl

from workbench.billing.currencies import ISO_CURRENCIES
from workbench.billing.errors import BillingError, BillingInputError

ChurnRecognition = Literal["at_subscription_end", "end_of_service_period", "at_schedule"]
CHURN_RECOGNITION: tuple[str, ...] = ("at_subscription_end", "end_of_service_period", "at_schedule")
INTERVALS: dict[str, int] = {"week": 0, "month": 1, "quarter": 3, "year": 12}  # months per period
# Monthly normalisation as an exact fraction (numerator, denominator).
NORMALISATION: dict[str, tuple[int, int]] = {
    "week": (52, 12),
    "month": (1, 1),
    "quarter": (1, 3),
    "year": (1, 12),
}
MOVEMENTS: tuple[str, ...] = (
    "new",
    "expansion",
    "contraction",
    "churn",
    "reactivation",
    "fx_impact",
)
MERGE_WINDOW = timedelta(hours=1)
REQUIRED = ("customer_id", "subscription_id", "valid_from", "amount", "currency", "interval")
# The interval table's columns and their Polars types (the optional ones may be left out).
INTERVAL_SCHEMA: Mapping[str, pl.DataType | type[pl.DataType]] = MappingProxyType(
    {
        "customer_id": pl.String,
        "subscription_id": pl.String,
        "valid_from": pl.Datetime("us", "UTC"),
        "valid_to": pl.Datetime("us", "UTC"),
        "amount": pl.Float64,
        "currency": pl.String,
        "interval": pl.String,
        "discount_amount": pl.Float64,
        "is_trial": pl.Boolean,
        "cancel_scheduled_at": pl.Datetime("us", "UTC"),
    }
)
# The FX table: units of the reporting currency one unit of `currency` is worth from `date` on.
FX_SCHEMA: Mapping[str, pl.DataType | type[pl.DataType]] = MappingProxyType(
    {"currency": pl.String, "date": pl.Date, "rate_to_reporting": pl.Float64}
)
MONEY = pl.Decimal(38, 2)
_US = timedelta(microseconds=1)
_TS = pl.Datetime("us", "UTC")


# -- helpers ------------------------------------------------------------------------------------
def _utc(value: date | datetime, name: str) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise BillingInputError(
        "-", name, value, "is not a date", remedy="pass a datetime.date or datetime.datetime."
    )


def _as_utc(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A Date/Datetime/String column as microsecond UTC timestamps (naive = UTC)."""
    if dtype == pl.Date:
        return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return expr.dt.cast_time_unit("us").dt.replace_time_zone("UTC")
        return expr.dt.cast_time_unit("us").dt.convert_time_zone("UTC")
    if dtype == pl.Null:
        return expr.cast(_TS)
    if dtype == pl.String:
        return expr.str.to_datetime(time_unit="us", time_zone="UTC")
    return expr.cast(_TS)


def _round_half_up_div(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """numerator / denominator rounded half up, for non-negative integers (exact)."""
    return (numerator * 2 + denominator) // (2 * denominator)


def _convert(cents: pl.Expr, rate: pl.Expr) -> pl.Expr:
    """cents x rate, rounded half up to a whole cent."""
    return (cents.cast(pl.Float64) * rate + 0.5).floor().cast(pl.Int64)


def _period_start(anchor: pl.Expr, k: pl.Expr, months: pl.Expr) -> pl.Expr:
    """Start of the k-th service period after `anchor` (calendar months, end-of-month clamped)."""
    by_months = anchor.dt.offset_by(pl.format("{}mo", k * months))
    by_weeks = anchor + pl.duration(weeks=k)
    return pl.when(months == 0).then(by_weeks).otherwise(by_months)


def _periods_le(anchor: pl.Expr, t: pl.Expr, months: pl.Expr) -> pl.Expr:
    """The largest k with period_start(anchor, k) <= t (t >= anchor)."""
    week_us = 7 * 86_400 * 1_000_000
    weeks = (t - anchor).dt.total_microseconds() // week_us
    month_diff = (t.dt.year().cast(pl.Int64) - anchor.dt.year().cast(pl.Int64)) * 12 + (
        t.dt.month().cast(pl.Int64) - anchor.dt.month().cast(pl.Int64)
    )
    k = month_diff // pl.when(months == 0).then(1).otherwise(months)
    k = pl.when(_period_start(anchor, k, months) > t).then(k - 1).otherwise(k)
    return pl.when(months == 0).then(weeks).otherwise(k)


def _same_as_next(column: str) -> pl.Expr:
    """On a frame sorted by `column`: whether the next row has the same value."""
    return (pl.col(column) == pl.col(column).shift(-1)).fill_null(False)


def _money(cents: pl.Expr) -> pl.Expr:
    return (cents.cast(MONEY) / 100).cast(MONEY)


def _fail(frame: pl.DataFrame, condition: pl.Expr, field: str, problem: str, remedy: str) -> None:
    bad = frame.filter(condition).head(1)
    if bad.height:
        row = bad.row(0, named=True)
        where = (
            f"{row['_row']} (customer_id={row['customer_id']!r}, "
            f"subscription_id={row['subscription_id']!r})"
        )
        raise BillingInputError(
            where, field, row.get(f"_orig_{field}", row.get(field)), problem, remedy=remedy
        )


# -- preparation --------------------------------------------------------------------------------
def prepare_intervals(
    intervals: pl.DataFrame | Any, *, churn_recognition: str = "at_subscription_end"
) -> tuple[pl.DataFrame, pl.Series, pl.Series]:
    """Validate the interval table; one row per interval with its MRR in cents.

    Columns of the frame: ``_row, customer_id, subscription_id`` (1-based codes into the two
    returned series of sorted distinct ids), ``currency, months, mrr_cents, valid_from, end``
    (the MRR end under `churn_recognition`, null = open).
    """
    if churn_recognition not in CHURN_RECOGNITION:
        raise BillingInputError(
            "-",
            "churn_recognition",
            churn_recognition,
            "is not a churn recognition mode",
            remedy=f"use one of {', '.join(CHURN_RECOGNITION)}.",
        )
    frame = intervals if isinstance(intervals, pl.DataFrame) else pl.DataFrame(intervals)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise BillingInputError(
            "-",
            missing[0],
            None,
            f"required column missing (have {', '.join(frame.columns) or 'none'})",
            remedy=f"provide the columns {', '.join(REQUIRED)}.",
        )
    defaults: dict[str, pl.Expr] = {
        "valid_to": pl.lit(None, dtype=_TS),
        "discount_amount": pl.lit(0.0),
        "is_trial": pl.lit(False),
        "cancel_scheduled_at": pl.lit(None, dtype=_TS),
        "charge_type": pl.lit("recurring"),
    }
    frame = frame.with_columns(
        [expr.alias(name) for name, expr in defaults.items() if name not in frame.columns]
    ).with_row_index("_row")
    schema = frame.schema
    frame = frame.with_columns(
        _orig_amount=pl.col("amount"),
        _orig_discount_amount=pl.col("discount_amount"),
        _orig_valid_to=pl.col("valid_to"),
        amount=pl.col("amount").cast(pl.Float64),
        discount_amount=pl.col("discount_amount").cast(pl.Float64).fill_null(0.0),
        is_trial=pl.col("is_trial").cast(pl.Boolean).fill_null(False),
        currency=pl.col("currency").cast(pl.String),
        interval=pl.col("interval").cast(pl.String),
        charge_type=pl.col("charge_type").cast(pl.String).fill_null("recurring"),
        valid_from=_as_utc(pl.col("valid_from"), schema["valid_from"]),
        valid_to=_as_utc(pl.col("valid_to"), schema["valid_to"]),
        cancel_scheduled_at=_as_utc(pl.col("cancel_scheduled_at"), schema["cancel_scheduled_at"]),
    )
    _validate(frame)
    frame = frame.filter(pl.col("charge_type") == "recurring")
    numerator = pl.col("interval").replace_strict(
        {k: v[0] for k, v in NORMALISATION.items()}, return_dtype=pl.Int64
    )
    denominator = pl.col("interval").replace_strict(
        {k: v[1] for k, v in NORMALISATION.items()}, return_dtype=pl.Int64
    )
    net_cents = (
        ((pl.col("amount") - pl.col("discount_amount")).clip(lower_bound=0.0) * 100 + 0.5)
        .floor()
        .cast(pl.Int64)
    )
    frame = frame.sort("subscription_id", "valid_from", "_row").with_columns(
        months=pl.col("interval").replace_strict(INTERVALS, return_dtype=pl.Int64),
        mrr_cents=pl.when(pl.col("is_trial"))
        .then(0)
        .otherwise(_round_half_up_div(net_cents * numerator, denominator)),
        _next_from=pl.when(_same_as_next("subscription_id")).then(pl.col("valid_from").shift(-1)),
        # dense integer codes: sorting and joining on them is much faster than on strings
        _customer=pl.col("customer_id").rank("dense").cast(pl.Int64),
        _subscription=pl.col("subscription_id").rank("dense").cast(pl.Int64),
    )
    end = pl.col("valid_to")
    if churn_recognition == "at_schedule":
        end = (
            pl.when(pl.col("cancel_scheduled_at").is_null())
            .then(end)
            .otherwise(pl.min_horizontal(end, pl.col("cancel_scheduled_at")))
        )
        end = pl.when(end.is_null()).then(None).otherwise(pl.max_horizontal(end, "valid_from"))
    elif churn_recognition == "end_of_service_period":
        subscription_ends = pl.col("valid_to").is_not_null() & (
            pl.col("_next_from").is_null() | (pl.col("_next_from") > pl.col("valid_to"))
        )
        paid_until = _period_start(
            pl.col("valid_from"),
            _periods_le(pl.col("valid_from"), pl.col("valid_to") - _US, pl.col("months")) + 1,
            pl.col("months"),
        )
        paid_until = pl.min_horizontal(paid_until, pl.col("_next_from"))
        end = pl.when(subscription_ends).then(paid_until).otherwise(end)
    return (
        frame.with_columns(end=end).select(
            "_row",
            customer_id="_customer",
            subscription_id="_subscription",
            currency="currency",
            months="months",
            mrr_cents="mrr_cents",
            valid_from="valid_from",
            end="end",
        ),
        frame["customer_id"].unique().sort(),
        frame["subscription_id"].unique().sort(),
    )


def _validate(frame: pl.DataFrame) -> None:
    for field in ("customer_id", "subscription_id", "valid_from", "amount", "currency", "interval"):
        _fail(
            frame,
            pl.col(field).is_null(),
            field,
            "is missing",
            remedy="every interval needs a value here.",
        )
    _fail(
        frame,
        pl.col("amount") < 0,
        "amount",
        "is negative",
        remedy="amounts are prices per interval, >= 0; record refunds and credits separately.",
    )
    _fail(
        frame,
        pl.col("discount_amount") < 0,
        "discount_amount",
        "is negative",
        remedy="give the discount as a positive amount deducted from the price.",
    )
    _fail(
        frame,
        ~pl.col("currency").is_in(sorted(ISO_CURRENCIES)),
        "currency",
        "is not an ISO 4217 currency code",
        remedy="use an upper-case ISO 4217 code such as USD or EUR.",
    )
    _fail(
        frame,
        ~pl.col("interval").is_in(list(INTERVALS)),
        "interval",
        "is not a billing interval",
        remedy=f"use one of {', '.join(INTERVALS)}.",
    )
    _fail(
        frame,
        pl.col("valid_to") < pl.col("valid_from"),
        "valid_to",
        "is before valid_from",
        remedy="swap the dates or fix the interval's end.",
    )
    ordered = frame.sort("subscription_id", "valid_from", "_row").with_columns(
        _prev_to=pl.col("valid_to").shift(1),
        _has_prev=_same_as_next("subscription_id").shift(1).fill_null(False),
    )
    _fail(
        ordered,
        pl.col("_has_prev")
        & (pl.col("_prev_to").is_null() | (pl.col("valid_from") < pl.col("_prev_to"))),
        "valid_from",
        "overlaps the previous interval of the same subscription",
        remedy="close the previous interval (valid_to) at or before this one starts.",
    )


# -- segments: constant-MRR pieces in the reporting currency -------------------------------------
def _segments(
    rows: pl.DataFrame,
    fx: pl.DataFrame | None,
    reporting_currency: str,
    start: datetime,
    end: datetime,
    customers: pl.Series,
    subscriptions: pl.Series,
) -> pl.DataFrame:
    def fail(row: dict[str, Any], problem: str, remedy: str) -> None:
        where = (
            f"{row['_row']} (customer_id={customers[row['customer_id'] - 1]!r}, "
            f"subscription_id={subscriptions[row['subscription_id'] - 1]!r})"
        )
        raise BillingInputError(where, "currency", row["currency"], problem, remedy=remedy)

    rows = (
        rows.filter(pl.col("mrr_cents") > 0, pl.col("valid_from") < end)
        .with_columns(end=pl.col("end").fill_null(end).clip(upper_bound=end))
        .filter(pl.col("end") > pl.col("valid_from"))
    )
    columns = ["_row", "customer_id", "subscription_id", "currency", "mrr_cents"]
    columns += ["seg_start", "seg_end"]
    domestic = rows.filter(pl.col("currency") == reporting_currency).select(
        *columns[:5],
        seg_start=pl.col("valid_from"),
        seg_end=pl.col("end"),
        rate=pl.lit(1.0),
        foreign=pl.lit(False),
    )
    foreign = rows.filter(pl.col("currency") != reporting_currency)
    if foreign.height == 0:
        return domestic
    if fx is None:
        fail(
            foreign.sort("_row").row(0, named=True),
            f"differs from the reporting currency {reporting_currency} and no FX table was given",
            "pass fx=<DataFrame with currency, date, rate_to_reporting>.",
        )
    cutoff = start - _US
    history = foreign.filter(pl.col("end") <= start).select(
        *columns[:5], seg_start=pl.col("valid_from"), seg_end=pl.col("end")
    )
    live = foreign.filter(pl.col("end") > start)
    anchor, months = pl.col("valid_from"), pl.col("months")
    live = live.with_columns(
        k_lo=pl.when(anchor > cutoff)
        .then(0)
        .otherwise(_periods_le(anchor, pl.lit(cutoff), months)),
        k_hi=_periods_le(anchor, pl.col("end") - _US, months),
    )
    prefix = live.filter(pl.col("k_lo") > 0).select(
        *columns[:5], seg_start=anchor, seg_end=_period_start(anchor, pl.col("k_lo"), months)
    )
    periods = (
        live.with_columns(k=pl.int_ranges(pl.col("k_lo"), pl.col("k_hi") + 1))
        .explode("k")
        .select(
            *columns[:5],
            seg_start=_period_start(anchor, pl.col("k"), months),
            seg_end=pl.min_horizontal(
                _period_start(anchor, pl.col("k") + 1, months), pl.col("end")
            ),
        )
    )
    pieces = pl.concat([history, prefix, periods]).sort("seg_start")
    rates = _fx_table(fx).filter(pl.col("currency") != reporting_currency)
    priced = pieces.join_asof(
        rates,
        left_on="seg_start",
        right_on="fx_date",
        by="currency",
        strategy="backward",
        check_sortedness=False,
    )
    missing = priced.filter(pl.col("rate").is_null()).sort("_row", "seg_start").head(1)
    if missing.height:
        row = missing.row(0, named=True)
        fail(
            row,
            f"has no FX rate on or before {row['seg_start']:%Y-%m-%d}",
            "add a rate_to_reporting for that currency and date (or earlier) to the FX table.",
        )
    return pl.concat([domestic, priced.select(*columns, "rate", foreign=pl.lit(True))])


def _fx_table(fx: pl.DataFrame | Any) -> pl.DataFrame:
    frame = fx if isinstance(fx, pl.DataFrame) else pl.DataFrame(fx)
    for name in ("currency", "date", "rate_to_reporting"):
        if name not in frame.columns:
            raise BillingInputError(
                "-",
                name,
                None,
                "required FX column missing",
                remedy="the FX table needs currency, date, rate_to_reporting.",
            )
    frame = frame.select(
        currency=pl.col("currency").cast(pl.String),
        fx_date=_as_utc(pl.col("date"), frame.schema["date"]),
        rate=pl.col("rate_to_reporting").cast(pl.Float64),
    ).with_row_index("_row")
    bad = frame.filter(pl.col("rate").is_null() | (pl.col("rate") <= 0)).head(1)
    if bad.height:
        row = bad.row(0, named=True)
        raise BillingInputError(
            f"{row['_row']} of the FX table",
            "rate_to_reporting",
            row["rate"],
            "must be a positive number",
            remedy="give how many units of the reporting currency one unit is worth.",
        )
    return frame.drop("_row").sort("fx_date")


# -- clusters: one merged change of one customer -----------------------------------------------
def _clusters(segments: pl.DataFrame, end: datetime) -> pl.DataFrame:
    """One row per merged change of a customer: date, MRR before/after, fx impact (cents)."""
    segments = segments.with_columns(
        value=_convert(pl.col("mrr_cents"), pl.col("rate")),
        currency=pl.col("currency").rank("dense").cast(pl.Int32),
    ).with_row_index("seg")
    narrow = segments.select("seg", "customer_id", "seg_start", "seg_end", "value")
    starts = narrow.select(
        "seg", "customer_id", t=pl.col("seg_start"), delta="value", is_start=pl.lit(True)
    )
    ends = narrow.filter(pl.col("seg_end") < end).select(
        "seg", "customer_id", t=pl.col("seg_end"), delta=-pl.col("value"), is_start=pl.lit(False)
    )
    new_customer = (pl.col("customer_id") != pl.col("customer_id").shift(1)).fill_null(True)
    new_cluster = (new_customer | ((pl.col("t") - pl.col("t").shift(1)) >= MERGE_WINDOW)).fill_null(
        True
    )
    # One integer sort key (customer, time) when it fits in 64 bits: much cheaper than two keys.
    t_min = segments["seg_start"].min()
    span_us = int((end - t_min).total_seconds() * 1e6) + 1 if isinstance(t_min, datetime) else 1
    customers_bits = int(segments["customer_id"].max() or 0).bit_length()  # type: ignore[arg-type]
    concatenated = pl.concat([starts, ends])
    if isinstance(t_min, datetime) and customers_bits + span_us.bit_length() <= 63:
        shift = 2 ** span_us.bit_length()
        offset = (pl.col("t") - pl.lit(t_min)).dt.total_microseconds()
        ordered = (
            concatenated.with_columns(_key=pl.col("customer_id") * shift + offset)
            .sort("_key")
            .drop("_key")
        )
    else:
        ordered = concatenated.sort("customer_id", "t")
    records = (
        ordered.with_columns(_new_customer=new_customer, _new_cluster=new_cluster)
        .with_columns(
            cluster=pl.col("_new_cluster").cum_sum(),
            _last=pl.col("_new_cluster").shift(-1).fill_null(True),
            _cum=pl.col("delta").cum_sum(),
        )
        .with_columns(
            first_t=pl.when(pl.col("_new_cluster")).then(pl.col("t")).forward_fill(),
            last_t=pl.when(pl.col("_last")).then(pl.col("t")).backward_fill(),
            _customer_base=pl.when(pl.col("_new_customer"))
            .then(pl.col("_cum") - pl.col("delta"))
            .forward_fill(),
            _cluster_base=pl.when(pl.col("_new_cluster"))
            .then(pl.col("_cum") - pl.col("delta"))
            .forward_fill(),
        )
    )
    # FX impact: per subscription, the piece running into the change (old) against the piece
    # running out of it (new), same currency: old MRR at the new rate minus its old value.
    # Only converted pieces can move with FX.
    foreign_segments = segments.filter(pl.col("foreign")).select(
        "seg", "subscription_id", "currency", "mrr_cents", "rate", "value", "seg_start", "seg_end"
    )
    fx: pl.DataFrame | pl.LazyFrame
    if foreign_segments.height:
        first_foreign = int(foreign_segments["seg"].min())  # type: ignore[arg-type]
        picked = records.filter(pl.col("seg") >= first_foreign).select(
            "seg", "cluster", "is_start", "first_t", "last_t"
        )
        # converted pieces are the last rows of `segments`: look them up by position
        positions = picked["seg"].cast(pl.Int64) - first_foreign
        attributes = foreign_segments.drop("seg").select(pl.all().gather(positions))
        foreign = pl.concat([picked, attributes], how="horizontal").lazy()
        old = foreign.filter(~pl.col("is_start"), pl.col("seg_start") < pl.col("first_t")).select(
            "cluster", "subscription_id", "currency", "mrr_cents", "value"
        )
        new = foreign.filter(pl.col("is_start"), pl.col("seg_end") > pl.col("last_t")).select(
            "cluster", "subscription_id", "currency", new_rate=pl.col("rate")
        )
        fx = (
            old.join(new, on=["cluster", "subscription_id", "currency"], how="inner")
            .with_columns(fx=_convert(pl.col("mrr_cents"), pl.col("new_rate")) - pl.col("value"))
            .group_by("cluster")
            .agg(pl.col("fx").sum())
            .collect()
        )
    else:
        fx = pl.DataFrame(schema={"cluster": records.schema["cluster"], "fx": pl.Int64})
    clusters = (
        records.filter(pl.col("_last"))
        .select(
            "cluster",
            "customer_id",
            date=pl.col("first_t"),
            mrr_after=pl.col("_cum") - pl.col("_customer_base"),
            change=pl.col("_cum") - pl.col("_cluster_base"),
            first_of_customer=pl.col("customer_id") != pl.col("customer_id").shift(1),
        )
        .with_columns(
            mrr_before=pl.col("mrr_after") - pl.col("change"),
            first_of_customer=pl.col("first_of_customer").fill_null(True),
        )
        .join(fx, on="cluster", how="left", maintain_order="left")
    )
    paid = (pl.col("mrr_after") > 0).cast(pl.Int64)
    clusters = clusters.with_columns(
        fx=pl.when((pl.col("mrr_before") > 0) & (pl.col("mrr_after") > 0))
        .then(pl.col("fx").fill_null(0))
        .otherwise(0),
        _paid_cum=paid.cum_sum(),
        _paid=paid,
    ).with_columns(
        _paid_base=pl.when(pl.col("first_of_customer"))
        .then(pl.col("_paid_cum") - pl.col("_paid"))
        .forward_fill(),
    )
    diff = pl.col("change") - pl.col("fx")
    was_paying = pl.col("mrr_before") > 0
    is_paying = pl.col("mrr_after") > 0
    ever_paid = (pl.col("_paid_cum") - pl.col("_paid") - pl.col("_paid_base")) > 0
    movement = (
        pl.when(~was_paying & is_paying & ever_paid)
        .then(pl.lit("reactivation"))
        .when(~was_paying & is_paying)
        .then(pl.lit("new"))
        .when(was_paying & ~is_paying)
        .then(pl.lit("churn"))
        .when(was_paying & (diff > 0))
        .then(pl.lit("expansion"))
        .when(was_paying & (diff < 0))
        .then(pl.lit("contraction"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    return clusters.select(
        "customer_id",
        "date",
        "mrr_before",
        "mrr_after",
        "fx",
        movement=movement,
        amount=diff.abs(),
    )


# -- public API ---------------------------------------------------------------------------------
@dataclass
class MrrAnalysis:
    """MRR movements, monthly metrics and cohorts of one history, computed once and shared.

    All amounts are in the reporting currency; windows are ``[start, end)``.
    """

    clusters: pl.DataFrame
    start: datetime
    end: datetime
    reporting_currency: str
    customers: pl.Series

    def __repr__(self) -> str:
        try:
            return (
                f"MrrAnalysis({self.start:%Y-%m-%d}..{self.end:%Y-%m-%d}, "
                f"{self.reporting_currency}, {self.clusters.height} changes)"
            )
        except Exception:
            return "MrrAnalysis(<unavailable>)"

    @cached_property
    def _window(self) -> pl.DataFrame:
        return self.clusters.filter(pl.col("date") >= self.start, pl.col("date") < self.end)

    @cached_property
    def movements(self) -> pl.DataFrame:
        """One row per customer and movement: customer_id, date, movement, amount, MRR around it."""
        window = self._window
        main = window.filter(pl.col("movement").is_not_null()).select(
            "customer_id", "date", "movement", "amount", "mrr_before", "mrr_after"
        )
        fx = window.filter(pl.col("fx") != 0).select(
            "customer_id",
            "date",
            movement=pl.lit("fx_impact"),
            amount=pl.col("fx"),
            mrr_before="mrr_before",
            mrr_after="mrr_after",
        )
        ids = self.customers
        return (
            pl.concat([main, fx])
            .sort("date", "customer_id", "movement")
            .select(
                pl.col("customer_id").map_batches(
                    lambda codes: ids.gather(codes - 1), return_dtype=ids.dtype
                ),
                "date",
                pl.col("movement").cast(pl.Enum(list(MOVEMENTS))),
                _money(pl.col("amount")).alias("amount"),
                pl.lit(self.reporting_currency).alias("currency"),
                _money(pl.col("mrr_before")).alias("mrr_before"),
                _money(pl.col("mrr_after")).alias("mrr_after"),
            )
        )

    def _months(self) -> pl.Series:
        first = datetime(self.start.year, self.start.month, 1, tzinfo=UTC)
        return pl.datetime_range(
            first, self.end - _US, interval="1mo", time_unit="us", time_zone="UTC", eager=True
        ).alias("month")

    @cached_property
    def _flags(self) -> pl.DataFrame:
        movement = pl.col("movement")
        return self.clusters.with_columns(
            month=pl.col("date").dt.truncate("1mo"),
            change=pl.col("mrr_after") - pl.col("mrr_before"),
            logo=(pl.col("mrr_after") > 0).cast(pl.Int64)
            - (pl.col("mrr_before") > 0).cast(pl.Int64),
            **{
                name: pl.when(movement == name).then(pl.col("amount")).otherwise(0)
                for name in MOVEMENTS[:-1]
            },
        )

    @cached_property
    def metrics(self) -> pl.DataFrame:
        """One row per month of the window with MRR, movements and the SaaS ratios."""
        flags = self._flags
        before = flags.filter(pl.col("date") < self.start)
        opening_mrr = int(before["change"].sum() or 0)
        opening_customers = int(before["logo"].sum() or 0)
        movement = pl.col("movement")
        # `clusters` is sorted by customer and date, so the first change of a customer in a
        # month of the window carries, as its `mrr_before`, the customer's MRR at the start of
        # that month (or at `start`, for the window's first month).
        window = flags.filter(pl.col("date") >= self.start, pl.col("date") < self.end)
        first_in_month = (
            (pl.col("customer_id") != pl.col("customer_id").shift(1))
            | (pl.col("month") != pl.col("month").shift(1))
        ).fill_null(True)
        window = window.with_columns(
            _existing=pl.when(first_in_month).then(pl.col("mrr_before")).forward_fill() > 0
        )
        existing = pl.col("_existing")
        monthly = window.group_by("month").agg(
            *[pl.col(name).sum() for name in MOVEMENTS[:-1]],
            # movements of customers paying at the start of the month (retention numerators)
            *[
                pl.col(name).filter(existing).sum().alias(f"_{name}_retained")
                for name in ("expansion", "reactivation", "contraction", "churn")
            ],
            pl.col("fx").sum().alias("fx_impact"),
            pl.col("change").sum(),
            pl.col("logo").sum(),
            (movement == "new").sum().alias("new_customers"),
            (movement == "reactivation").sum().alias("reactivated_customers"),
            (movement == "churn").sum().alias("churned_customers"),
            pl.col("customer_id")
            .filter(existing & (movement == "churn"))
            .n_unique()
            .cast(pl.Int64)
            .alias("churned_start_customers"),
        )
        grid = self._months().to_frame().join(monthly, on="month", how="left").fill_null(0)
        grid = grid.with_columns(
            end_mrr=opening_mrr + pl.col("change").cum_sum(),
            customers_end=opening_customers + pl.col("logo").cum_sum(),
        ).with_columns(
            start_mrr=pl.col("end_mrr") - pl.col("change"),
            customers_start=pl.col("customers_end") - pl.col("logo"),
        )
        start_mrr = pl.col("start_mrr").cast(pl.Float64)
        lost = (pl.col("churn") + pl.col("contraction")).cast(pl.Float64)
        gained = (pl.col("new") + pl.col("expansion") + pl.col("reactivation")).cast(pl.Float64)
        # retention and churn rates: only movements of customers paying at the month's start
        lost_retained = (pl.col("_churn_retained") + pl.col("_contraction_retained")).cast(
            pl.Float64
        )
        expansion_retained = pl.col("_expansion_retained").cast(pl.Float64)
        reactivation_retained = pl.col("_reactivation_retained").cast(pl.Float64)
        positive = pl.col("start_mrr") > 0
        logo_churn = (
            pl.when(pl.col("customers_start") > 0)
            .then(pl.col("churned_start_customers") / pl.col("customers_start"))
            .otherwise(None)
        )
        grid = grid.with_columns(
            net_new_mrr=pl.col("new")
            + pl.col("expansion")
            + pl.col("reactivation")
            - pl.col("contraction")
            - pl.col("churn"),
            logo_churn_rate=logo_churn,
            gross_mrr_churn_rate=pl.when(positive).then(lost_retained / start_mrr).otherwise(None),
            net_mrr_churn_rate=pl.when(positive)
            .then((lost_retained - expansion_retained - reactivation_retained) / start_mrr)
            .otherwise(None),
            nrr=pl.when(positive)
            .then((start_mrr + expansion_retained - lost_retained) / start_mrr)
            .otherwise(None),
            grr=pl.when(positive)
            .then(((start_mrr - lost_retained) / start_mrr).clip(upper_bound=1.0))
            .otherwise(None),
            quick_ratio=pl.when(lost > 0).then(gained / lost).otherwise(None),
            _arpa=pl.when(pl.col("customers_end") > 0)
            .then(pl.col("end_mrr").cast(pl.Float64) / pl.col("customers_end"))
            .otherwise(None),
        ).with_columns(
            _ltv=pl.when(pl.col("logo_churn_rate") > 0)
            .then(pl.col("_arpa") / pl.col("logo_churn_rate"))
            .otherwise(None),
        )
        cents_to_money = {
            name: _money(pl.col(name))
            for name in (
                "start_mrr",
                "new",
                "expansion",
                "reactivation",
                "contraction",
                "churn",
                "fx_impact",
                "end_mrr",
                "net_new_mrr",
            )
        }
        return grid.select(
            pl.col("month").dt.date(),
            pl.lit(self.reporting_currency).alias("currency"),
            cents_to_money["start_mrr"],
            cents_to_money["new"],
            cents_to_money["expansion"],
            cents_to_money["reactivation"],
            cents_to_money["contraction"],
            cents_to_money["churn"],
            cents_to_money["fx_impact"],
            cents_to_money["end_mrr"],
            cents_to_money["net_new_mrr"],
            "customers_start",
            "customers_end",
            "new_customers",
            "reactivated_customers",
            "churned_customers",
            "churned_start_customers",
            "logo_churn_rate",
            "gross_mrr_churn_rate",
            "net_mrr_churn_rate",
            "nrr",
            "grr",
            _money((pl.col("_arpa") + 0.5).floor().cast(pl.Int64)).alias("arpa"),
            _money((pl.col("_ltv") + 0.5).floor().cast(pl.Int64)).alias("ltv"),
            "quick_ratio",
        )

    @cached_property
    def cohorts(self) -> pl.DataFrame:
        """Net MRR retention by cohort (month of a customer's first paid MRR), long format.

        Columns: cohort, month, months_since, customers (paying at month end), mrr (month end),
        net_mrr_retention (mrr / the cohort's MRR at the end of its first month).
        """
        flags = self._flags.filter(pl.col("date") < self.end)
        cohort_of = (
            flags.filter(pl.col("movement") == "new")
            .group_by("customer_id")
            .agg(cohort=pl.col("month").min())
            .filter(pl.col("cohort") >= datetime(self.start.year, self.start.month, 1, tzinfo=UTC))
        )
        changes = (
            flags.join(cohort_of, on="customer_id", how="inner")
            .group_by("cohort", "month")
            .agg(pl.col("change").sum(), pl.col("logo").sum())
        )
        months = self._months().to_frame()
        grid = (
            cohort_of.select("cohort")
            .unique()
            .join(months, how="cross")
            .filter(pl.col("month") >= pl.col("cohort"))
            .join(changes, on=["cohort", "month"], how="left")
            .fill_null(0)
            .sort("cohort", "month")
            .with_columns(
                mrr=pl.col("change").cum_sum().over("cohort"),
                customers=pl.col("logo").cum_sum().over("cohort"),
                months_since=(pl.col("month").dt.year() - pl.col("cohort").dt.year()) * 12
                + pl.col("month").dt.month().cast(pl.Int32)
                - pl.col("cohort").dt.month().cast(pl.Int32),
            )
        )
        initial = pl.col("mrr").first().over("cohort")
        return grid.select(
            pl.col("cohort").dt.date(),
            pl.col("month").dt.date(),
            pl.col("months_since").cast(pl.Int32),
            "customers",
            _money(pl.col("mrr")).alias("mrr"),
            net_mrr_retention=pl.when(initial > 0)
            .then(pl.col("mrr").cast(pl.Float64) / initial)
            .otherwise(None),
        )

    def customer_mrr(self, top: int | None = None) -> pl.DataFrame:
        """Each customer's MRR at the end of the window, largest first (paying customers only)."""
        latest = (
            self.clusters.filter(pl.col("date") < self.end)
            .group_by("customer_id")
            .agg(pl.col("mrr_after").sort_by("date").last(), pl.col("date").min().alias("since"))
            .filter(pl.col("mrr_after") > 0)
            .sort("mrr_after", "customer_id", descending=[True, False])
        )
        if top is not None:
            latest = latest.head(top)
        ids = self.customers
        return latest.select(
            pl.col("customer_id").map_batches(
                lambda codes: ids.gather(codes - 1), return_dtype=ids.dtype
            ),
            _money(pl.col("mrr_after")).alias("mrr"),
            pl.lit(self.reporting_currency).alias("currency"),
            "since",
        )

    def cohort_matrix(self, value: str = "net_mrr_retention") -> pl.DataFrame:
        """The cohort table pivoted: one row per cohort, one column per months-since."""
        cohorts = self.cohorts
        if cohorts.height == 0:
            return pl.DataFrame({"cohort": []}, schema={"cohort": pl.Date})
        return cohorts.pivot(
            on="months_since", index="cohort", values=value, sort_columns=True
        ).sort("cohort")


def analyse(
    intervals: pl.DataFrame | Any,
    fx: pl.DataFrame | Any | None = None,
    *,
    reporting_currency: str = "USD",
    churn_recognition: ChurnRecognition | str = "at_subscription_end",
    start: date | datetime,
    end: date | datetime,
) -> MrrAnalysis:
    """Validate a subscription history and compute its merged MRR changes once.

    ``.movements``, ``.metrics``, ``.cohorts`` and ``.cohort_matrix()`` read from the result.
    """
    if reporting_currency not in ISO_CURRENCIES:
        raise BillingInputError(
            "-",
            "reporting_currency",
            reporting_currency,
            "is not an ISO 4217 currency code",
            remedy="use an upper-case ISO 4217 code such as USD or EUR.",
        )
    start_at, end_at = _utc(start, "start"), _utc(end, "end")
    if end_at <= start_at:
        raise BillingInputError(
            "-", "end", end, f"is not after start ({start})", remedy="pass end > start."
        )
    rows, customers, subscriptions = prepare_intervals(
        intervals, churn_recognition=churn_recognition
    )
    fx_frame = None if fx is None else (fx if isinstance(fx, pl.DataFrame) else pl.DataFrame(fx))
    segments = _segments(
        rows, fx_frame, reporting_currency, start_at, end_at, customers, subscriptions
    )
    return MrrAnalysis(_clusters(segments, end_at), start_at, end_at, reporting_currency, customers)


def mrr_movements(
    intervals: pl.DataFrame | Any,
    fx: pl.DataFrame | Any | None = None,
    *,
    reporting_currency: str = "USD",
    churn_recognition: ChurnRecognition | str = "at_subscription_end",
    start: date | datetime,
    end: date | datetime,
) -> pl.DataFrame:
    """One row per customer and MRR movement in ``[start, end)`` (see the module's rules).

    Columns: customer_id, date (UTC), movement (new, expansion, contraction, churn,
    reactivation, fx_impact), amount (Decimal, positive except a negative fx_impact), currency
    (the reporting currency), mrr_before, mrr_after (the customer's MRR around the change).
    """
    return analyse(
        intervals,
        fx,
        reporting_currency=reporting_currency,
        churn_recognition=churn_recognition,
        start=start,
        end=end,
    ).movements


def saas_metrics(
    intervals: pl.DataFrame | Any,
    fx: pl.DataFrame | Any | None = None,
    *,
    reporting_currency: str = "USD",
    churn_recognition: ChurnRecognition | str = "at_subscription_end",
    start: date | datetime,
    end: date | datetime,
) -> pl.DataFrame:
    """One row per month in ``[start, end)``: MRR, movements, customers and SaaS ratios.

    Retention and churn rates look only at the customers paying at the start of the month (the
    window's ``start`` for its first month): the movements of a customer who started paying
    during the month (``new`` or ``reactivation``) count in ``net_new_mrr`` and the quick ratio,
    never in these numerators. With ``*_s`` for the movements of those customers in the month:

    ``logo_churn_rate`` = ``churned_start_customers`` (customers paying at month start with a
    churn in the month) / ``customers_start``; ``gross_mrr_churn_rate`` = (churn_s +
    contraction_s) / start MRR; ``net_mrr_churn_rate`` = (churn_s + contraction_s - expansion_s
    - reactivation_s) / start MRR; ``nrr`` = (start MRR + expansion_s - contraction_s - churn_s)
    / start MRR (new business and reactivation excluded); ``grr`` = (start MRR - contraction_s -
    churn_s) / start MRR (at most 1); ``arpa`` = end MRR / paying customers at month end;
    ``ltv`` = ARPA / logo churn rate (null at zero churn); ``quick_ratio`` = (new + expansion +
    reactivation) / (churn + contraction), all customers (null when nothing was lost).
    ``churned_customers`` counts every churn movement of the month.
    """
    return analyse(
        intervals,
        fx,
        reporting_currency=reporting_currency,
        churn_recognition=churn_recognition,
        start=start,
        end=end,
    ).metrics


def cohort_matrix(
    intervals: pl.DataFrame | Any,
    fx: pl.DataFrame | Any | None = None,
    *,
    reporting_currency: str = "USD",
    churn_recognition: ChurnRecognition | str = "at_subscription_end",
    start: date | datetime,
    end: date | datetime,
) -> pl.DataFrame:
    """Cohort net-MRR-retention matrix: one row per cohort month, one column per month since."""
    return analyse(
        intervals,
        fx,
        reporting_currency=reporting_currency,
        churn_recognition=churn_recognition,
        start=start,
        end=end,
    ).cohort_matrix()


# -- files --------------------------------------------------------------------------------------
_BOOLEANS = {"true": True, "t": True, "yes": True, "y": True, "1": True}
_BOOLEANS |= {"false": False, "f": False, "no": False, "n": False, "0": False}
_EXPECTED: dict[Any, tuple[str, str]] = {
    pl.Float64: ("a number", "write it with a dot for decimals and no thousands separator."),
    pl.Boolean: ("true or false", "write true/false (yes/no and 1/0 are accepted too)."),
    pl.Date: ("an ISO 8601 date", "write dates as YYYY-MM-DD."),
}
_TIME = (
    "an ISO 8601 date or time",
    "write YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[+HH:MM] (naive = UTC).",
)


# What Polars parses natively (fast); other ISO 8601 forms go through `datetime.fromisoformat`.
_TIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d",
)


def _parse_time(value: str, *, as_date: bool) -> date | datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if as_date:
        return parsed.date()
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _parse_times(source: pl.Series, *, as_date: bool) -> pl.Series:
    """ISO 8601 text as UTC times (or dates); what does not parse becomes null."""
    target = pl.Date if as_date else _TS

    def native(values: pl.Series, form: str) -> pl.Series:
        if as_date:
            return values.str.to_date(form, strict=False)
        return values.str.to_datetime(form, strict=False, time_unit="us", time_zone="UTC")

    parsed = native(source, _TIME_FORMATS[0])
    # Each further form only for what is still unparsed: a file usually uses one form throughout.
    for form in (*_TIME_FORMATS[1:], None):
        missing = (source.is_not_null() & parsed.is_null()).arg_true()
        if missing.len() == 0:
            break
        rest = source.gather(missing)
        if form is not None:
            found = native(rest, form)
        else:  # other ISO 8601 spellings: Python, once per distinct value
            table = {v: _parse_time(v, as_date=as_date) for v in rest.unique()}
            found = rest.replace_strict(table, default=None, return_dtype=target)
        parsed = parsed.scatter(missing, found)
    return parsed


def _typed_column(source: pl.Series, dtype: pl.DataType | type[pl.DataType]) -> pl.Series:
    """`source` as `dtype`; a value that does not convert becomes null (the caller reports it)."""
    if source.dtype == pl.String:
        source = source.str.strip_chars().replace("", None)
    if dtype == pl.String:
        return source.cast(pl.String)
    if source.dtype != pl.String:
        if dtype == pl.Date and isinstance(source.dtype, pl.Datetime):
            return source.dt.date()
        if isinstance(dtype, pl.Datetime) and (
            source.dtype in (pl.Date, pl.Null) or isinstance(source.dtype, pl.Datetime)
        ):
            return pl.select(_as_utc(pl.lit(source), source.dtype)).to_series()
    elif dtype == pl.Boolean:
        return source.str.to_lowercase().replace_strict(
            _BOOLEANS, default=None, return_dtype=pl.Boolean
        )
    elif dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return _parse_times(source, as_date=dtype == pl.Date)
    return source.cast(dtype, strict=False)


def _typed(
    frame: pl.DataFrame, schema: Mapping[str, pl.DataType | type[pl.DataType]], where: str
) -> pl.DataFrame:
    columns: dict[str, pl.Series] = {}
    for name, dtype in schema.items():
        if name not in frame.columns:
            continue
        source = frame[name]
        converted = _typed_column(source, dtype)
        failed = (source.is_not_null() & converted.is_null()).arg_true()
        if failed.len():
            i = int(failed[0])
            row = frame.row(i, named=True)
            label = f"{i}{where}"
            if "subscription_id" in row and "customer_id" in row:
                label += (
                    f" (customer_id={row['customer_id']!r}, "
                    f"subscription_id={row['subscription_id']!r})"
                )
            kind, remedy = _EXPECTED.get(dtype, _TIME) if dtype != pl.String else ("", "")
            raise BillingInputError(label, name, source[i], f"is not {kind}", remedy=remedy)
        columns[name] = converted
    return frame.with_columns(**columns)


def _read_table(path: str | Path, what: str) -> pl.DataFrame:
    file = Path(path).expanduser()
    if not file.is_file():
        raise BillingError(
            f"The {what} file {str(file)!r} does not exist.",
            remedy="check the path (a CSV file with a header row, or Parquet).",
        )
    try:
        if file.suffix.lower() == ".parquet":
            return pl.read_parquet(file)
        return pl.read_csv(file, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise BillingError(
            f"The {what} file {str(file)!r} cannot be read: {str(exc).splitlines()[0]}",
            remedy="give a UTF-8 CSV file with a header row (or a Parquet file).",
        ) from None


def read_intervals(path: str | Path) -> pl.DataFrame:
    """An interval table from a CSV (header row) or Parquet file, typed as `INTERVAL_SCHEMA`.

    Dates and times are ISO 8601 (a naive time is UTC); empty cells are nulls. A value that is
    not of its column's type raises `BillingInputError` naming the row (0-based, after the
    header) and the field; `analyse` validates the rest.
    """
    return _typed(_read_table(path, "intervals"), INTERVAL_SCHEMA, "")


def read_fx(path: str | Path) -> pl.DataFrame:
    """An FX table (``currency, date, rate_to_reporting``) from a CSV or Parquet file."""
    return _typed(_read_table(path, "FX"), FX_SCHEMA, " of the FX table")
