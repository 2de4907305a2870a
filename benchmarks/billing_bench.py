"""MRR movements and monthly SaaS metrics: workbench (Polars) vs a straightforward pandas version.

    python -m benchmarks.billing_bench --customers 100000 --months 36

Both implement the same ChartMogul definitions (docs/billing.md): normalisation to cents, FX at
each service period's start, merge within an hour, new/reactivation/churn/expansion/contraction
and fx_impact. The pandas version walks each customer's changes in Python, the way one would
write it by hand; the benchmark asserts that both give the same movements and metrics.

    python -m benchmarks.billing_bench --invoices 10000

times invoice generation (pricing engine, usage charges, tax, discounts) for 10,000
subscriptions with usage.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import polars as pl
from dateutil.relativedelta import relativedelta

from benchmarks.common import Machine
from workbench.billing.mrr import INTERVAL_SCHEMA

HOUR = timedelta(hours=1)
US = timedelta(microseconds=1)
NORMALISATION = {"week": (52, 12), "month": (1, 1), "quarter": (1, 3), "year": (1, 12)}
MONTHS = {"week": 0, "month": 1, "quarter": 3, "year": 12}


# -- synthetic history ---------------------------------------------------------------------------
def generate_history(
    customers: int, months: int, *, seed: int = 7, start: date = date(2023, 1, 1)
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A subscription history (one row per price interval) and a monthly FX table."""
    rng = random.Random(seed)
    origin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    horizon = origin + relativedelta(months=months)
    rows: dict[str, list[Any]] = defaultdict(list)

    def add(**row: Any) -> None:
        for key, value in row.items():
            rows[key].append(value)

    for c in range(customers):
        customer = f"cus_{c:06d}"
        currency = rng.choices(["USD", "EUR", "GBP"], weights=[75, 15, 10])[0]
        t = origin + timedelta(days=rng.randrange(months * 30), seconds=rng.randrange(86_400))
        n_sub = 0
        while t < horizon:
            n_sub += 1
            subscription = f"sub_{c:06d}_{n_sub}"
            interval = rng.choices(["month", "year", "quarter", "week"], weights=[70, 15, 10, 5])[0]
            price = float(rng.choice([0, 19, 49, 99, 199, 499]))
            if interval == "year":
                price *= 10
            if rng.random() < 0.2:  # trial first
                trial_end = t + timedelta(days=14)
                add(
                    customer_id=customer,
                    subscription_id=subscription,
                    valid_from=t,
                    valid_to=trial_end,
                    amount=price,
                    currency=currency,
                    interval=interval,
                    discount_amount=0.0,
                    is_trial=True,
                    cancel_scheduled_at=None,
                )
                t = trial_end
            while t < horizon:
                length = timedelta(days=rng.randrange(20, 500))
                ends = rng.random() < 0.35
                change_at = t + length
                valid_to = change_at if change_at < horizon or ends else None
                discount = round(price * 0.2, 2) if rng.random() < 0.1 else 0.0
                add(
                    customer_id=customer,
                    subscription_id=subscription,
                    valid_from=t,
                    valid_to=valid_to,
                    amount=price,
                    currency=currency,
                    interval=interval,
                    discount_amount=discount,
                    is_trial=False,
                    cancel_scheduled_at=(change_at - timedelta(days=rng.randrange(1, 15)))
                    if ends
                    else None,
                )
                if valid_to is None:
                    t = horizon
                    break
                t = change_at
                if ends:
                    break
                price = max(0.0, price + rng.choice([-30.0, 20.0, 50.0, 100.0]))
            if rng.random() < 0.7:  # most churned customers do not return
                break
            t += timedelta(days=rng.randrange(1, 300))
    intervals = pl.DataFrame(rows, schema=INTERVAL_SCHEMA)
    fx_rows = []
    for m in range(-1, months + 1):
        day = (origin + relativedelta(months=m)).date()
        fx_rows.append(("EUR", day, round(1.05 + 0.05 * math.sin(m / 3), 4)))
        fx_rows.append(("GBP", day, round(1.25 + 0.04 * math.cos(m / 4), 4)))
    fx = pl.DataFrame(
        fx_rows, schema={"currency": pl.String, "date": pl.Date, "rate": pl.Float64}, orient="row"
    ).rename({"rate": "rate_to_reporting"})
    return intervals, fx


# -- the straightforward pandas version ---------------------------------------------------------
def _half_up(numerator: int, denominator: int) -> int:
    return (numerator * 2 + denominator) // (2 * denominator)


def _to_cents(value: float) -> int:
    return math.floor(value * 100 + 0.5)


def _convert(cents: int, rate: float) -> int:
    return math.floor(float(cents) * rate + 0.5)


def _period(anchor: datetime, k: int, months: int) -> datetime:
    if months == 0:
        return anchor + timedelta(weeks=k)
    return anchor + relativedelta(months=k * months)


def _ts(value: Any) -> datetime | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def pandas_analysis(  # noqa: PLR0912, PLR0915 - written out on purpose, as one would by hand
    intervals: pd.DataFrame,
    fx: pd.DataFrame | None,
    *,
    reporting_currency: str = "USD",
    churn_recognition: str = "at_subscription_end",
    start: datetime,
    end: datetime,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Movements and monthly metrics (amounts in cents), customer by customer."""
    df = intervals.copy()
    for column, default in (
        ("valid_to", None),
        ("discount_amount", 0.0),
        ("is_trial", False),
        ("cancel_scheduled_at", None),
    ):
        if column not in df:
            df[column] = default
    df = df.sort_values(["subscription_id", "valid_from"], kind="stable").reset_index(drop=True)
    df["next_from"] = df.groupby("subscription_id")["valid_from"].shift(-1)
    rates: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    if fx is not None:
        for row in fx.sort_values("date").itertuples():
            rates[row.currency].append((_ts(row.date), float(row.rate_to_reporting)))  # type: ignore[arg-type]

    def rate_at(currency: str, when: datetime) -> float:
        if currency == reporting_currency:
            return 1.0
        found = None
        for day, rate in rates[currency]:
            if day <= when:
                found = rate
            else:
                break
        if found is None:
            raise ValueError(f"no FX rate for {currency} on {when}")
        return found

    segments: dict[str, list[tuple[datetime, datetime, str, str, int, float]]] = defaultdict(list)
    for row in df.itertuples(index=False):
        num, den = NORMALISATION[row.interval]
        discount = 0.0 if pd.isna(row.discount_amount) else float(row.discount_amount)
        net = _to_cents(max(float(row.amount) - discount, 0.0))
        mrr = 0 if bool(row.is_trial) else _half_up(net * num, den)
        if mrr <= 0:
            continue
        months = MONTHS[row.interval]
        valid_from = _ts(row.valid_from)
        assert valid_from is not None
        stop = _ts(row.valid_to)
        nxt = _ts(row.next_from)
        if churn_recognition == "at_schedule":
            scheduled = _ts(row.cancel_scheduled_at)
            if scheduled is not None:
                stop = scheduled if stop is None else min(stop, scheduled)
                stop = max(stop, valid_from)
        elif (
            churn_recognition == "end_of_service_period"
            and stop is not None
            and (nxt is None or nxt > stop)
        ):
            k = 0
            while _period(valid_from, k + 1, months) <= stop - US:
                k += 1
            paid_until = _period(valid_from, k + 1, months)
            stop = paid_until if nxt is None else min(paid_until, nxt)
        stop = end if stop is None else min(stop, end)
        if valid_from >= end or stop <= valid_from:
            continue
        if row.currency == reporting_currency:
            pieces = [(valid_from, stop)]
        else:
            pieces = []
            k = 0
            while (p := _period(valid_from, k, months)) < stop:
                pieces.append((p, min(_period(valid_from, k + 1, months), stop)))
                k += 1
        for a, b in pieces:
            segments[row.customer_id].append(
                (a, b, row.subscription_id, row.currency, mrr, rate_at(row.currency, a))
            )

    movements: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    for customer, pieces in segments.items():
        records = []
        for a, b, sub, currency, mrr, rate in pieces:
            value = _convert(mrr, rate)
            records.append((a, value, True, a, b, sub, currency, mrr, rate, value))
            if b < end:
                records.append((b, -value, False, a, b, sub, currency, mrr, rate, value))
        records.sort(key=lambda r: r[0])
        groups: list[list[Any]] = []
        for record in records:
            if groups and record[0] - groups[-1][-1][0] < HOUR:
                groups[-1].append(record)
            else:
                groups.append([record])
        mrr_now = 0
        ever_paid = False
        for group in groups:
            first_t, last_t = group[0][0], group[-1][0]
            before = mrr_now
            after = before + sum(r[1] for r in group)
            old = {
                (r[5], r[6]): r for r in group if not r[2] and r[3] < first_t
            }  # ends of pieces that ran into the change
            fx_total = 0
            for r in group:
                if r[2] and r[4] > last_t and (r[5], r[6]) in old:
                    o = old[(r[5], r[6])]
                    fx_total += _convert(o[7], r[8]) - o[9]
            if not (before > 0 and after > 0):
                fx_total = 0
            diff = after - before - fx_total
            if before == 0 and after > 0:
                kind = "reactivation" if ever_paid else "new"
            elif before > 0 and after == 0:
                kind = "churn"
            elif before > 0 and diff > 0:
                kind = "expansion"
            elif before > 0 and diff < 0:
                kind = "contraction"
            else:
                kind = None
            clusters.append(
                {
                    "customer_id": customer,
                    "date": first_t,
                    "before": before,
                    "after": after,
                    "movement": kind,
                    "amount": abs(diff),
                    "fx": fx_total,
                }
            )
            if start <= first_t < end:
                if kind is not None:
                    movements.append(
                        {
                            "customer_id": customer,
                            "date": first_t,
                            "movement": kind,
                            "amount": abs(diff),
                        }
                    )
                if fx_total:
                    movements.append(
                        {
                            "customer_id": customer,
                            "date": first_t,
                            "movement": "fx_impact",
                            "amount": fx_total,
                        }
                    )
            ever_paid = ever_paid or after > 0
            mrr_now = after

    moves = pd.DataFrame(movements, columns=["customer_id", "date", "movement", "amount"])
    table = pd.DataFrame(
        clusters, columns=["customer_id", "date", "before", "after", "movement", "amount", "fx"]
    )
    metrics = _pandas_metrics(table, start, end)
    # Retention and churn rates count only customers paying at the start of the month (the
    # window's start for its first month): their first change in the month starts from it.
    paying_at_start: dict[tuple[Any, Any], bool] = {}
    retained: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    churned: dict[Any, set[Any]] = defaultdict(set)
    for cluster in clusters:  # customer by customer, in date order
        if not start <= cluster["date"] < end:
            continue
        month = cluster["date"].date().replace(day=1)
        key = (month, cluster["customer_id"])
        paying_at_start.setdefault(key, cluster["before"] > 0)
        if paying_at_start[key] and cluster["movement"] is not None:
            retained[month][cluster["movement"]] += cluster["amount"]
            if cluster["movement"] == "churn":
                churned[month].add(cluster["customer_id"])
    columns: dict[str, list[Any]] = defaultdict(list)
    for row in metrics.itertuples(index=False):
        moved, base = retained[row.month], row.start_mrr
        lost = moved["churn"] + moved["contraction"]
        columns["churned_start_customers"].append(len(churned[row.month]))
        columns["logo_churn_rate"].append(
            len(churned[row.month]) / row.customers_start if row.customers_start else None
        )
        columns["gross_mrr_churn_rate"].append(lost / base if base else None)
        columns["net_mrr_churn_rate"].append(
            (lost - moved["expansion"] - moved["reactivation"]) / base if base else None
        )
        columns["nrr"].append((base + moved["expansion"] - lost) / base if base else None)
        columns["grr"].append(min((base - lost) / base, 1.0) if base else None)
    for name, values in columns.items():
        metrics[name] = pd.Series(values, index=metrics.index, dtype="object")
    return moves.sort_values(["date", "customer_id", "movement"]).reset_index(drop=True), metrics


def _pandas_metrics(table: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    month = datetime(start.year, start.month, 1, tzinfo=UTC)
    months = []
    while month < end:
        months.append(month)
        month += relativedelta(months=1)
    table = table.assign(
        change=table["after"] - table["before"],
        logo=(table["after"] > 0).astype(int) - (table["before"] > 0).astype(int),
    )
    dates = table["date"]
    prior = table[dates < start]
    mrr = int(prior["change"].sum())
    customers = int(prior["logo"].sum())
    rows = []
    for i, first in enumerate(months):
        last = months[i + 1] if i + 1 < len(months) else end
        part = table[(dates >= max(first, start)) & (dates < last)]

        def total(kind: str, frame: pd.DataFrame = part) -> int:
            return int(frame.loc[frame["movement"] == kind, "amount"].sum())

        row = {
            "month": first.date(),
            "start_mrr": mrr,
            "new": total("new"),
            "expansion": total("expansion"),
            "reactivation": total("reactivation"),
            "contraction": total("contraction"),
            "churn": total("churn"),
            "fx_impact": int(part["fx"].sum()),
            "customers_start": customers,
            "churned_customers": int((part["movement"] == "churn").sum()),
        }
        mrr += int(part["change"].sum())
        customers += int(part["logo"].sum())
        row["end_mrr"] = mrr
        row["customers_end"] = customers
        lost = row["churn"] + row["contraction"]
        row["logo_churn_rate"] = (
            row["churned_customers"] / row["customers_start"] if row["customers_start"] else None
        )
        row["nrr"] = (
            (row["start_mrr"] + row["expansion"] - lost) / row["start_mrr"]
            if row["start_mrr"]
            else None
        )
        rows.append(row)
    return pd.DataFrame(rows)


# -- comparison and timing ----------------------------------------------------------------------
def polars_in_cents(analysis: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The workbench's results in the reference's shape (amounts in integer cents)."""
    moves = (
        analysis.movements.select(
            "customer_id",
            "date",
            pl.col("movement").cast(pl.String),
            (pl.col("amount") * 100).cast(pl.Int64).alias("amount"),
        )
        .to_pandas()
        .sort_values(["date", "customer_id", "movement"])
        .reset_index(drop=True)
    )
    metrics = analysis.metrics.with_columns(
        [
            (pl.col(c) * 100).cast(pl.Int64)
            for c in (
                "start_mrr",
                "new",
                "expansion",
                "reactivation",
                "contraction",
                "churn",
                "fx_impact",
                "end_mrr",
            )
        ]
    ).to_pandas()
    return moves, metrics


def assert_same(polars_result: Any, reference: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    moves, metrics = polars_in_cents(polars_result)
    ref_moves, ref_metrics = reference
    ref_moves = ref_moves.astype({"amount": "int64"})
    moves["date"] = pd.to_datetime(moves["date"], utc=True)
    ref_moves["date"] = pd.to_datetime(ref_moves["date"], utc=True)
    pd.testing.assert_frame_equal(
        moves[["customer_id", "date", "movement", "amount"]],
        ref_moves[["customer_id", "date", "movement", "amount"]],
        check_dtype=False,
    )
    columns = [
        "start_mrr",
        "new",
        "expansion",
        "reactivation",
        "contraction",
        "churn",
        "fx_impact",
        "end_mrr",
        "customers_start",
        "customers_end",
        "churned_customers",
    ]
    pd.testing.assert_frame_equal(
        metrics[columns].reset_index(drop=True),
        ref_metrics[columns].reset_index(drop=True),
        check_dtype=False,
    )
    for column in ("logo_churn_rate", "nrr"):
        left = metrics[column].astype("float64").fillna(-1.0).to_numpy()
        right = ref_metrics[column].astype("float64").fillna(-1.0).to_numpy()
        assert (abs(left - right) < 1e-9).all(), column


def bench_mrr(customers: int, months: int) -> None:
    from workbench.billing import analyse

    print(f"generating {customers:,} customers over {months} months ...", flush=True)
    intervals, fx = generate_history(customers, months)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    end = start + relativedelta(months=months)
    print(f"{intervals.height:,} price intervals", flush=True)
    _ = analyse(intervals.head(1000), fx, start=start, end=end).metrics  # warm-up: imports

    runs, cpu = [], []
    for _ in range(3):
        began, began_cpu = time.perf_counter(), time.process_time()
        result = analyse(intervals, fx, start=start, end=end)
        moves, metrics = result.movements, result.metrics
        runs.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    polars_s = min(runs)
    polars_cpu = min(cpu)
    print(
        f"workbench (Polars): {polars_s:.2f} s wall best of 3 "
        f"({', '.join(f'{r:.2f}' for r in runs)}), {polars_cpu:.2f} s CPU (all threads); "
        f"{moves.height:,} movements, {metrics.height} months",
        flush=True,
    )

    frame = intervals.to_pandas()
    fx_frame = fx.to_pandas()
    began, began_cpu = time.perf_counter(), time.process_time()
    reference = pandas_analysis(frame, fx_frame, start=start, end=end)
    pandas_s = time.perf_counter() - began
    pandas_cpu = time.process_time() - began_cpu
    print(f"pandas reference: {pandas_s:.2f} s wall, {pandas_cpu:.2f} s CPU", flush=True)
    assert_same(result, reference)
    print("results identical (movements and monthly metrics)")
    print(
        f"ratio pandas / workbench: {pandas_s / polars_s:.1f}x wall, "
        f"{pandas_cpu / polars_cpu:.1f}x CPU; target <= 2 s and >= 10x (wall): "
        f"{'met' if polars_s <= 2 and pandas_s / polars_s >= 10 else 'NOT met'}"
    )
    print(f"load average during the run: {os.getloadavg()[0]:.1f}")
    print(f"machine: {Machine.current().description}; date: {date.today()}")


def bench_invoices(count: int) -> None:
    from benchmarks.billing_invoices import run_invoice_benchmark

    run_invoice_benchmark(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=36)
    parser.add_argument("--invoices", type=int, default=0, help="time invoice generation instead")
    args = parser.parse_args()
    if args.invoices:
        bench_invoices(args.invoices)
    else:
        bench_mrr(args.customers, args.months)


if __name__ == "__main__":
    main()
