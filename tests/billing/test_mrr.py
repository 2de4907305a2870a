"""MRR movements and SaaS metrics: hand-worked examples, bad input, properties."""

from __future__ import annotations

import inspect
import tempfile
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from workbench.billing import BillingInputError, analyse, mrr_movements, saas_metrics
from workbench.billing.errors import BillingError
from workbench.billing.mrr import FX_SCHEMA, INTERVAL_SCHEMA, read_fx, read_intervals

START, END = date(2024, 1, 1), date(2025, 1, 1)


def _row(
    customer: str,
    subscription: str,
    valid_from: datetime | date,
    valid_to: datetime | date | None,
    amount: float,
    *,
    currency: str = "USD",
    interval: str = "month",
    discount: float = 0.0,
    trial: bool = False,
    cancel_scheduled_at: datetime | None = None,
) -> dict[str, Any]:
    def ts(value: datetime | date | None) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return datetime(value.year, value.month, value.day, tzinfo=UTC)

    return {
        "customer_id": customer,
        "subscription_id": subscription,
        "valid_from": ts(valid_from),
        "valid_to": ts(valid_to),
        "amount": amount,
        "currency": currency,
        "interval": interval,
        "discount_amount": discount,
        "is_trial": trial,
        "cancel_scheduled_at": cancel_scheduled_at,
    }


def frame(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=INTERVAL_SCHEMA)


def moves(
    intervals: pl.DataFrame, fx: pl.DataFrame | None = None, **kw: Any
) -> list[tuple[str, str, str]]:
    kw.setdefault("start", START)
    kw.setdefault("end", END)
    result = mrr_movements(intervals, fx, **kw)
    return [
        (row["customer_id"], str(row["movement"]), str(row["amount"]))
        for row in result.iter_rows(named=True)
    ]


def fx_table(*rows: tuple[str, date, float]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema=FX_SCHEMA,
        orient="row",
    )


# -- hand-worked examples -------------------------------------------------------------------------
def test_normalisation_week_quarter_year_and_discounts() -> None:
    intervals = frame(
        _row("w", "w1", date(2024, 1, 1), None, 12.0, interval="week"),  # 12 * 52/12 = 52.00
        _row("q", "q1", date(2024, 1, 1), None, 300.0, interval="quarter"),  # 100.00
        _row("y", "y1", date(2024, 1, 1), None, 1000.0, interval="year"),  # 83.333 -> 83.33
        _row("d", "d1", date(2024, 1, 1), None, 100.0, discount=25.0),  # 75.00
        _row("z", "z1", date(2024, 1, 1), None, 10.0, discount=50.0),  # never below 0: not MRR
    )
    assert sorted(moves(intervals)) == [
        ("d", "new", "75.00"),
        ("q", "new", "100.00"),
        ("w", "new", "52.00"),
        ("y", "new", "83.33"),
    ]


def test_trial_then_paid_is_new_and_paid_to_free_is_churn_free_to_paid_reactivation() -> None:
    intervals = frame(
        _row("a", "s", date(2024, 1, 1), date(2024, 1, 15), 50.0, trial=True),
        _row("a", "s", date(2024, 1, 15), date(2024, 3, 1), 50.0),
        _row("a", "s", date(2024, 3, 1), date(2024, 5, 1), 0.0),  # $0 plan
        _row("a", "s", date(2024, 5, 1), None, 80.0),
    )
    result = mrr_movements(intervals, start=START, end=END)
    assert [
        (str(r["movement"]), r["date"].date(), r["amount"]) for r in result.iter_rows(named=True)
    ] == [
        ("new", date(2024, 1, 15), Decimal("50.00")),
        ("churn", date(2024, 3, 1), Decimal("50.00")),
        ("reactivation", date(2024, 5, 1), Decimal("80.00")),
    ]


def test_expansion_contraction_and_one_time_charges_ignored() -> None:
    intervals = frame(
        _row("a", "s", date(2024, 1, 1), date(2024, 2, 1), 100.0),
        _row("a", "s", date(2024, 2, 1), date(2024, 3, 1), 150.0),
        _row("a", "s", date(2024, 3, 1), None, 120.0),
    ).with_columns(charge_type=pl.lit("recurring"))
    one_time = frame(_row("a", "setup", date(2024, 1, 1), None, 999.0)).with_columns(
        charge_type=pl.lit("one_time")
    )
    assert moves(pl.concat([intervals, one_time])) == [
        ("a", "new", "100.00"),
        ("a", "expansion", "50.00"),
        ("a", "contraction", "30.00"),
    ]


def test_changes_within_an_hour_merge_into_one_movement() -> None:
    t = datetime(2024, 2, 10, 9, 0, tzinfo=UTC)
    intervals = frame(
        _row("a", "old", date(2024, 1, 1), t, 100.0),
        _row("a", "new", t + timedelta(minutes=40), None, 60.0),  # downgrade, not churn + new
        _row("b", "b1", date(2024, 1, 1), t, 100.0),
        _row("b", "b2", t + timedelta(hours=2), None, 100.0),  # two hours: churn then reactivation
    )
    assert moves(intervals) == [
        ("a", "new", "100.00"),
        ("b", "new", "100.00"),
        ("a", "contraction", "40.00"),
        ("b", "churn", "100.00"),
        ("b", "reactivation", "100.00"),
    ]


def test_fx_at_service_period_start_and_fx_only_change_is_fx_impact() -> None:
    fx = fx_table(("EUR", date(2024, 1, 1), 1.10), ("EUR", date(2024, 2, 10), 1.20))
    intervals = frame(
        _row("e", "s", date(2024, 1, 5), date(2024, 3, 5), 100.0, currency="EUR"),
        _row("e", "s", date(2024, 3, 5), None, 150.0, currency="EUR"),
    )
    result = mrr_movements(intervals, fx, start=START, end=date(2024, 4, 1))
    assert [
        (str(r["movement"]), r["date"].date(), r["amount"]) for r in result.iter_rows(named=True)
    ] == [
        ("new", date(2024, 1, 5), Decimal("110.00")),  # rate of Jan 1
        # Feb 5: the second period starts before the Feb 10 rate, so nothing changes.
        # Mar 5: price change and a new period at 1.20: (150 - 100) x 1.20 and 100 x 0.10
        ("expansion", date(2024, 3, 5), Decimal("60.00")),
        ("fx_impact", date(2024, 3, 5), Decimal("10.00")),
    ]
    yearly = frame(_row("y", "y", date(2024, 1, 5), None, 1200.0, currency="EUR", interval="year"))
    # a yearly plan keeps the rate of its period start: no fx_impact within the year
    assert moves(yearly, fx, start=START, end=date(2024, 12, 1)) == [("y", "new", "110.00")]


def test_fx_decrease_is_negative_fx_impact_and_metrics_include_it() -> None:
    fx = fx_table(("GBP", date(2024, 1, 1), 1.30), ("GBP", date(2024, 2, 1), 1.20))
    intervals = frame(_row("g", "s", date(2024, 1, 1), None, 100.0, currency="GBP"))
    result = analyse(intervals, fx, start=START, end=date(2024, 3, 1))
    assert moves(intervals, fx, start=START, end=date(2024, 3, 1)) == [
        ("g", "new", "130.00"),
        ("g", "fx_impact", "-10.00"),
    ]
    february = result.metrics.row(1, named=True)
    assert february["start_mrr"] == Decimal("130.00")
    assert february["fx_impact"] == Decimal("-10.00")
    assert february["end_mrr"] == Decimal("120.00")
    assert february["net_new_mrr"] == Decimal("0.00")


def test_churn_recognition_modes() -> None:
    scheduled = datetime(2024, 3, 10, tzinfo=UTC)
    intervals = frame(
        _row("a", "s", date(2024, 1, 1), date(2024, 4, 20), 100.0, cancel_scheduled_at=scheduled)
    )

    def churn_date(mode: str) -> date:
        result = mrr_movements(intervals, start=START, end=END, churn_recognition=mode)
        return next(
            r["date"].date() for r in result.iter_rows(named=True) if r["movement"] == "churn"
        )

    assert churn_date("at_subscription_end") == date(2024, 4, 20)
    assert churn_date("end_of_service_period") == date(2024, 5, 1)  # paid through the period
    assert churn_date("at_schedule") == date(2024, 3, 10)
    with pytest.raises(BillingInputError, match="churn_recognition"):
        mrr_movements(intervals, start=START, end=END, churn_recognition="whenever")


def test_saas_metrics_hand_worked() -> None:
    intervals = frame(
        _row("a", "a", date(2023, 12, 1), None, 100.0),
        _row("b", "b", date(2023, 12, 1), date(2024, 1, 20), 100.0),
        _row("c", "c", date(2023, 12, 1), date(2024, 1, 10), 200.0),
        _row("c", "c", date(2024, 1, 10), None, 100.0),
        _row("d", "d", date(2024, 1, 5), None, 50.0),
        _row("e", "e", date(2023, 12, 1), date(2024, 1, 3), 100.0),
        _row("e", "e", date(2024, 1, 3), None, 250.0),
    )
    # January: a, b, c and e pay 500.00 at the start; d is new. e expands 150, c contracts
    # 100, b churns 100. d is new and does not move again, so restricting the retention and
    # churn numerators to the customers paying at the start changes none of these figures:
    # NRR = (500 + 150 - 100 - 100) / 500, GRR = (500 - 100 - 100) / 500, logo churn 1 / 4.
    jan = saas_metrics(intervals, start=date(2024, 1, 1), end=date(2024, 2, 1)).row(0, named=True)
    assert jan["start_mrr"] == Decimal("500.00")
    assert (jan["new"], jan["expansion"], jan["contraction"], jan["churn"]) == (
        Decimal("50.00"),
        Decimal("150.00"),
        Decimal("100.00"),
        Decimal("100.00"),
    )
    assert jan["end_mrr"] == Decimal("500.00")
    assert jan["net_new_mrr"] == Decimal("0.00")
    assert (jan["customers_start"], jan["customers_end"], jan["churned_customers"]) == (4, 4, 1)
    assert jan["churned_start_customers"] == 1
    assert jan["logo_churn_rate"] == pytest.approx(0.25)
    assert jan["gross_mrr_churn_rate"] == pytest.approx(0.4)
    assert jan["net_mrr_churn_rate"] == pytest.approx(0.1)
    assert jan["nrr"] == pytest.approx(0.9)
    assert jan["grr"] == pytest.approx(0.6)
    assert jan["arpa"] == Decimal("125.00")
    assert jan["ltv"] == Decimal("500.00")
    assert jan["quick_ratio"] == pytest.approx(1.0)
    no_churn = saas_metrics(
        frame(_row("a", "a", date(2024, 1, 1), None, 10.0)), start=START, end=date(2024, 3, 1)
    )
    assert no_churn["ltv"].to_list() == [None, None]  # undefined at zero churn


def test_customers_new_in_the_month_count_in_net_new_mrr_not_in_retention() -> None:
    existing = [
        _row("a", "a", date(2023, 12, 1), date(2024, 1, 15), 100.0),
        _row("a", "a", date(2024, 1, 15), None, 150.0),  # expansion 50
        _row("b", "b", date(2023, 12, 1), date(2024, 1, 20), 100.0),  # churn 100
    ]
    newcomers = [
        _row("n", "n", date(2024, 1, 5), date(2024, 1, 20), 50.0),  # new 50 ...
        _row("n", "n", date(2024, 1, 20), None, 80.0),  # ... and expansion 30, same month
        _row("m", "m", date(2024, 1, 3), date(2024, 1, 25), 40.0),  # new 40, churn 40
        _row("r", "r", date(2023, 10, 1), date(2023, 11, 1), 90.0),  # churned before January
        _row("r", "r", date(2024, 1, 10), date(2024, 1, 12), 70.0),  # reactivation 70, churn 70
        _row("r", "r", date(2024, 1, 14), None, 60.0),  # reactivation 60 (two days later)
    ]
    window = {"start": date(2024, 1, 1), "end": date(2024, 2, 1)}
    jan = saas_metrics(frame(*existing, *newcomers), **window).row(0, named=True)
    # every movement counts in the MRR bridge and net new MRR
    assert jan["start_mrr"] == Decimal("200.00")
    assert (jan["new"], jan["expansion"], jan["reactivation"]) == (
        Decimal("90.00"),
        Decimal("80.00"),
        Decimal("130.00"),
    )
    assert (jan["contraction"], jan["churn"]) == (Decimal("0.00"), Decimal("210.00"))
    assert jan["net_new_mrr"] == Decimal("90.00")
    assert jan["end_mrr"] == Decimal("290.00")  # a 150 + n 80 + r 60
    assert (jan["customers_start"], jan["customers_end"]) == (2, 3)
    assert (jan["churned_customers"], jan["churned_start_customers"]) == (3, 1)
    # retention: only a and b, who paid at the start. NRR = (200 + 50 - 100) / 200 (counting
    # n's expansion and m's and r's churn would give (200 + 80 - 210) / 200 = 0.35);
    # GRR = (200 - 100) / 200; logo churn = 1 (b) / 2 (not 3 / 2).
    assert jan["nrr"] == pytest.approx(0.75)
    assert jan["grr"] == pytest.approx(0.5)
    assert jan["logo_churn_rate"] == pytest.approx(0.5)
    assert jan["gross_mrr_churn_rate"] == pytest.approx(0.5)
    assert jan["net_mrr_churn_rate"] == pytest.approx(0.25)  # (100 - 50) / 200
    assert jan["quick_ratio"] == pytest.approx((90 + 80 + 130) / 210)  # growth: all customers
    assert jan["ltv"] == Decimal("193.33")  # ARPA 290 / 3 = 96.67 over logo churn 0.5
    # the same figures as without the customers who started paying in January
    alone = saas_metrics(frame(*existing), **window).row(0, named=True)
    for name in ("nrr", "grr", "logo_churn_rate", "gross_mrr_churn_rate", "net_mrr_churn_rate"):
        assert jan[name] == pytest.approx(alone[name]), name


def test_public_signatures() -> None:
    import workbench.billing

    def shape(function: Any) -> list[tuple[str, Any, Any]]:
        return [
            (p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()
        ]

    positional, keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
    expected = [
        ("intervals", positional, inspect.Parameter.empty),
        ("fx", positional, None),
        ("reporting_currency", keyword, "USD"),
        ("churn_recognition", keyword, "at_subscription_end"),
        ("start", keyword, inspect.Parameter.empty),
        ("end", keyword, inspect.Parameter.empty),
    ]
    for function in (
        workbench.billing.mrr_movements,
        workbench.billing.saas_metrics,
        workbench.billing.cohort_matrix,
        workbench.billing.analyse,
    ):
        assert shape(function) == expected, function.__name__


def test_cohort_matrix() -> None:
    intervals = frame(
        _row("a", "a", date(2024, 1, 1), date(2024, 3, 1), 100.0),
        _row("b", "b", date(2024, 1, 2), None, 100.0),
        _row("b", "b2", date(2024, 2, 1), None, 50.0),
        _row("c", "c", date(2024, 2, 1), None, 10.0),
    )
    result = analyse(intervals, start=START, end=date(2024, 4, 1))
    matrix = result.cohort_matrix()
    assert matrix["cohort"].to_list() == [date(2024, 1, 1), date(2024, 2, 1)]
    assert matrix.row(0) == (date(2024, 1, 1), 1.0, 1.25, 0.75)
    assert matrix.row(1) == (date(2024, 2, 1), 1.0, 1.0, None)
    customers = result.cohorts.filter(pl.col("cohort") == date(2024, 1, 1))["customers"].to_list()
    assert customers == [2, 2, 1]


# -- bad input: an error naming the row and the field -------------------------------------------
@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"amount": -5.0}, "amount", "negative"),
        ({"discount_amount": -1.0}, "discount_amount", "negative"),
        ({"currency": "XYZ"}, "currency", "ISO 4217"),
        ({"interval": "fortnight"}, "interval", "billing interval"),
        ({"valid_to": datetime(2023, 1, 1, tzinfo=UTC)}, "valid_to", "before valid_from"),
    ],
)
def test_bad_rows_name_row_and_field(change: dict[str, Any], field: str, message: str) -> None:
    rows = [
        _row("a", "s1", date(2024, 1, 1), None, 10.0),
        _row("b", "s2", date(2024, 1, 1), None, 10.0),
    ]
    rows[1].update(change)
    with pytest.raises(BillingInputError, match=message) as caught:
        mrr_movements(frame(*rows), start=START, end=END)
    assert caught.value.field == field
    assert str(caught.value).startswith("Row 1 (customer_id='b', subscription_id='s2')")
    assert "Remedy:" in str(caught.value)


def test_overlapping_intervals_of_one_subscription_are_rejected() -> None:
    intervals = frame(
        _row("a", "s", date(2024, 1, 1), date(2024, 3, 1), 10.0),
        _row("a", "s", date(2024, 2, 1), None, 20.0),
    )
    with pytest.raises(BillingInputError, match="overlaps") as caught:
        mrr_movements(intervals, start=START, end=END)
    assert caught.value.field == "valid_from"
    assert "Row 1" in str(caught.value)
    open_then_next = frame(
        _row("a", "s", date(2024, 1, 1), None, 10.0), _row("a", "s", date(2024, 2, 1), None, 20.0)
    )
    with pytest.raises(BillingInputError, match="overlaps"):
        mrr_movements(open_then_next, start=START, end=END)


def test_foreign_currency_needs_fx_rates() -> None:
    intervals = frame(_row("a", "s", date(2024, 1, 1), None, 10.0, currency="EUR"))
    with pytest.raises(BillingInputError, match="no FX table"):
        mrr_movements(intervals, start=START, end=END)
    with pytest.raises(BillingInputError, match="no FX rate on or before 2024-01-01"):
        mrr_movements(intervals, fx_table(("EUR", date(2024, 6, 1), 1.1)), start=START, end=END)


def test_missing_column_and_plain_python_rows() -> None:
    with pytest.raises(BillingInputError, match="required column missing"):
        mrr_movements(pl.DataFrame({"customer_id": ["a"]}), start=START, end=END)
    rows = [
        {
            "customer_id": 1,
            "subscription_id": 1,
            "valid_from": date(2024, 1, 1),
            "valid_to": None,
            "amount": Decimal("19.99"),
            "currency": "USD",
            "interval": "month",
        }
    ]
    result = mrr_movements(rows, start=START, end=END)
    assert result["amount"].to_list() == [Decimal("19.99")]


# -- properties ----------------------------------------------------------------------------------
DAY0 = datetime(2023, 10, 1, tzinfo=UTC)


@st.composite
def histories(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = []
    for c in range(draw(st.integers(1, 6))):
        for s in range(draw(st.integers(1, 2))):
            t = DAY0 + timedelta(hours=draw(st.integers(0, 24 * 400)))
            currency = draw(st.sampled_from(["USD", "USD", "EUR", "GBP"]))
            interval = draw(st.sampled_from(["week", "month", "quarter", "year"]))
            for _ in range(draw(st.integers(1, 4))):
                length = timedelta(minutes=draw(st.integers(1, 60 * 24 * 200)))
                last = draw(st.booleans())
                rows.append(
                    _row(
                        f"c{c}",
                        f"c{c}s{s}",
                        t,
                        None if last and draw(st.booleans()) else t + length,
                        float(draw(st.sampled_from([0, 5, 10, 99.99, 120, 1000]))),
                        currency=currency,
                        interval=interval,
                        discount=float(draw(st.sampled_from([0, 0, 2.5, 20]))),
                        trial=draw(st.integers(0, 5)) == 0,
                        cancel_scheduled_at=t + length / 2 if draw(st.booleans()) else None,
                    )
                )
                if rows[-1]["valid_to"] is None:
                    break
                gap = draw(st.sampled_from([0, 0, 10, 50, 60 * 24 * 20]))
                t = t + length + timedelta(minutes=gap)
    fx_rows = []
    for currency in ("EUR", "GBP"):
        day = date(2023, 9, 1)
        while day < date(2025, 6, 1):
            fx_rows.append((currency, day, draw(st.sampled_from([0.9, 1.1, 1.17, 1.3]))))
            day += timedelta(days=draw(st.integers(5, 60)))
    return frame(*rows), fx_table(*fx_rows)


MODES = st.sampled_from(["at_subscription_end", "end_of_service_period", "at_schedule"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), MODES, st.integers(0, 300), st.integers(1, 400))
def test_invariant_end_equals_start_plus_movements(
    history: tuple[pl.DataFrame, pl.DataFrame], mode: str, offset: int, length: int
) -> None:
    intervals, fx = history
    start = DAY0 + timedelta(days=offset)
    end = start + timedelta(days=length)
    result = analyse(intervals, fx, start=start, end=end, churn_recognition=mode)
    metrics = result.metrics
    for row in metrics.iter_rows(named=True):
        assert row["end_mrr"] == (
            row["start_mrr"]
            + row["new"]
            + row["expansion"]
            + row["reactivation"]
            - row["contraction"]
            - row["churn"]
            + row["fx_impact"]
        )
        assert row["end_mrr"] >= 0
        if row["grr"] is not None:
            assert row["grr"] <= 1.0 + 1e-12
    # movement amounts are positive (fx_impact may be negative) and per customer chain up
    movements = result.movements
    assert (movements.filter(pl.col("movement") != "fx_impact")["amount"] > 0).all()
    for (customer,), group in movements.group_by("customer_id"):
        rows = group.sort("date").to_dicts()
        for row in rows:
            if row["movement"] in ("new", "reactivation"):  # from nothing: the whole new MRR
                assert (row["mrr_before"], row["amount"]) == (0, row["mrr_after"])
            elif row["movement"] == "churn":  # to nothing: the whole old MRR
                assert (row["mrr_after"], row["amount"]) == (0, row["mrr_before"])
            elif row["movement"] in ("expansion", "contraction"):  # paying before and after
                assert row["mrr_before"] > 0
                assert row["mrr_after"] > 0
        dated: dict[Any, Decimal] = {}
        for row in rows:
            sign = -1 if row["movement"] in ("contraction", "churn") else 1
            dated[row["date"]] = dated.get(row["date"], Decimal(0)) + sign * row["amount"]
        for row in rows:
            assert row["mrr_after"] - row["mrr_before"] == dated[row["date"]], customer


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), MODES, st.integers(0, 300), st.integers(1, 400))
def test_same_results_as_the_reference_implementation(
    history: tuple[pl.DataFrame, pl.DataFrame], mode: str, offset: int, length: int
) -> None:
    pytest.importorskip("pandas", reason="the reference implementation needs the bench extra")
    from benchmarks.billing_bench import assert_same, pandas_analysis

    intervals, fx = history
    start = DAY0 + timedelta(days=offset)
    end = start + timedelta(days=length)
    result = analyse(intervals, fx, start=start, end=end, churn_recognition=mode)
    reference = pandas_analysis(
        intervals.to_pandas(), fx.to_pandas(), start=start, end=end, churn_recognition=mode
    )
    assert_same(result, reference)
    # the retention and churn rates beyond the two `assert_same` compares
    metrics, expected = result.metrics, reference[1]
    assert metrics["churned_start_customers"].to_list() == [
        int(n) for n in expected["churned_start_customers"]
    ]
    for column in ("gross_mrr_churn_rate", "net_mrr_churn_rate", "grr"):
        for ours, theirs in zip(metrics[column].to_list(), expected[column], strict=True):
            assert (ours is None) == (theirs is None), column
            if ours is not None:
                assert ours == pytest.approx(theirs, abs=1e-12), column


@settings(max_examples=40, deadline=None)
@given(histories(), st.integers(1, 10))
def test_splitting_the_window_gives_the_same_movements(
    history: tuple[pl.DataFrame, pl.DataFrame], split_month: int
) -> None:
    intervals, fx = history
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 12, 1, tzinfo=UTC)
    middle = datetime(2024, 1 + split_month, 1, tzinfo=UTC)
    whole = mrr_movements(intervals, fx, start=start, end=end)
    parts = pl.concat(
        [
            mrr_movements(intervals, fx, start=start, end=middle),
            mrr_movements(intervals, fx, start=middle, end=end),
        ]
    )
    assert whole.to_dicts() == parts.to_dicts()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.sampled_from(["csv", "parquet"]))
def test_files_read_back_as_the_frame_they_were_written_from(
    history: tuple[pl.DataFrame, pl.DataFrame], suffix: str
) -> None:
    intervals, fx = history
    with tempfile.TemporaryDirectory() as folder:
        intervals_file, fx_file = Path(folder, f"i.{suffix}"), Path(folder, f"fx.{suffix}")
        if suffix == "csv":
            intervals.write_csv(intervals_file)
            fx.write_csv(fx_file)
        else:
            intervals.write_parquet(intervals_file)
            fx.write_parquet(fx_file)
        assert_frame_equal(read_intervals(intervals_file), intervals)
        assert_frame_equal(read_fx(fx_file), fx)


def test_file_values_of_the_wrong_type_name_row_and_field(tmp_path: Path) -> None:
    header = "customer_id,subscription_id,valid_from,valid_to,amount,currency,interval,is_trial"
    good = "c1,s1,2024-01-01,,10,USD,month,no"
    cases = [
        ("c2,s2,2024-02-30,,10,USD,month,no", "valid_from", "'2024-02-30'"),
        ("c2,s2,2024-02-01,soon,10,USD,month,no", "valid_to", "'soon'"),
        ("c2,s2,2024-02-01,,1'000,USD,month,no", "amount", '"1\'000"'),
        ("c2,s2,2024-02-01,,10,USD,month,maybe", "is_trial", "'maybe'"),
    ]
    for bad, field, shown in cases:
        path = tmp_path / "history.csv"
        path.write_text(f"{header}\n{good}\n{bad}\n")
        with pytest.raises(BillingInputError) as caught:
            read_intervals(path)
        assert caught.value.field == field
        assert str(caught.value).startswith(
            f"Row 1 (customer_id='c2', subscription_id='s2'), field {field!r} = {shown}: is not"
        )
    path.write_text(f"{header}\n{good}\n c2 , s2 ,2024-02-01T10:00:00+02:00,, 12.5 ,USD,year,\n")
    read = read_intervals(path)
    assert read.row(1) == (
        "c2",
        "s2",
        datetime(2024, 2, 1, 8, tzinfo=UTC),
        None,
        12.5,
        "USD",
        "year",
        None,
    )
    with pytest.raises(BillingError, match="does not exist"):
        read_intervals(tmp_path / "nowhere.csv")
    rates = tmp_path / "fx.csv"
    rates.write_text("currency,date,rate_to_reporting\nEUR,2024-01-01,1.1\nEUR,01/02/2024,1.2\n")
    with pytest.raises(BillingInputError, match="Row 1 of the FX table, field 'date'"):
        read_fx(rates)
