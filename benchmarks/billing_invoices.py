"""Invoice generation for N subscriptions with usage (called by `benchmarks.billing_bench`).

    python -m benchmarks.billing_bench --invoices 10000

One isolated embedded stack. Set-up (not timed) writes N customers, N monthly subscriptions on a
plan with a graduated usage charge and a package charge, and five usage events per customer with
COPY. The timed part is one `Billing.generate_invoices` call: usage aggregated in SQL, every line
priced by the pricing engine, the stored discounts and tax rates loaded for the whole batch
and applied, credits applied, N invoices and their lines inserted, sequential numbers
taken, periods advanced and N `invoice.issued` events written to the outbox, in one transaction.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg

from benchmarks.common import Machine, isolated_stack
from workbench.billing.pricing import Charge, Tier
from workbench.billing.service import Billing, PlanCharge
from workbench.db import make_engine

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def run_invoice_benchmark(count: int) -> None:
    with isolated_stack() as endpoints:
        engine = make_engine(endpoints.postgres_url)
        billing = Billing(engine, endpoints.kafka_bootstrap)
        billing.create_organization("bench", "Bench Inc", "USD", invoice_prefix="BENCH")
        billing.create_metric("bench", "api_calls", "sum")
        billing.create_metric("bench", "storage_gb", "max")
        tiers = (Tier(Decimal(10_000), Decimal("0.002")), Tier(None, Decimal("0.001"), Decimal(5)))
        billing.create_plan(
            "bench",
            "growth",
            "Growth",
            amount=Decimal(49),
            currency="USD",
            charges=[
                PlanCharge("api_calls", Charge("graduated", tiers=tiers), "API calls"),
                PlanCharge(
                    "storage_gb",
                    Charge("package", package_size=Decimal(10), package_amount=Decimal(3)),
                    "Storage",
                ),
            ],
        )
        vat = billing.create_tax_rate("bench", "VAT", Decimal(20))
        coupon = billing.create_coupon(
            "bench", "LAUNCH", percent_off=Decimal(5), duration="forever"
        )
        rng = random.Random(3)
        print(f"setting up {count:,} subscriptions with usage ...", flush=True)
        with psycopg.connect(endpoints.postgres_url) as conn:
            plan_id = conn.execute(
                "SELECT id FROM dictamesh_billing_plans WHERE organization_id = 'bench'"
            ).fetchone()[0]  # type: ignore[index]
            customers = [uuid.uuid4() for _ in range(count)]
            with conn.cursor().copy(
                "COPY dictamesh_billing_customers (id, organization_id, external_id, name, "
                "currency, credit_balance) FROM STDIN"
            ) as copy:
                for i, cid in enumerate(customers):
                    copy.write_row(
                        (
                            cid,
                            "bench",
                            f"cus_{i}",
                            f"Customer {i}",
                            "USD",
                            5 if i % 10 == 0 else 0,
                        )
                    )
            with conn.cursor().copy(
                "COPY dictamesh_billing_customer_tax_rates (customer_id, tax_rate_id) FROM STDIN"
            ) as copy:
                for i, cid in enumerate(customers):
                    if i % 3:
                        copy.write_row((cid, vat))
            with conn.cursor().copy(
                "COPY dictamesh_billing_discounts (organization_id, coupon_id, customer_id, "
                "starts_at) FROM STDIN"
            ) as copy:
                for cid in customers:
                    copy.write_row(("bench", coupon, cid, T0))
            with conn.cursor().copy(
                "COPY dictamesh_billing_subscriptions (organization_id, customer_id, plan_id, "
                "status, "
                "started_at, current_period_start, current_period_end) FROM STDIN"
            ) as copy:
                for cid in customers:
                    copy.write_row(
                        ("bench", cid, plan_id, "active", T0, T0, T0 + timedelta(days=31))
                    )
            with conn.cursor().copy(
                "COPY dictamesh_billing_usage_events (organization_id, event_id, customer_id, "
                "metric_code, value, occurred_at) FROM STDIN"
            ) as copy:
                n = 0
                for cid in customers:
                    for _ in range(5):
                        n += 1
                        metric = "api_calls" if rng.random() < 0.7 else "storage_gb"
                        copy.write_row(
                            (
                                "bench",
                                f"u{n}",
                                cid,
                                metric,
                                rng.randrange(1, 8000),
                                T0 + timedelta(hours=rng.randrange(700)),
                            )
                        )
            conn.execute("ANALYZE")
        began = time.perf_counter()
        invoices = billing.generate_invoices("bench", at=T0 + timedelta(days=31))
        seconds = time.perf_counter() - began
        assert len(invoices) == count
        numbers = sorted(int((inv.number or "0").rsplit("-", 1)[1]) for inv in invoices)
        assert numbers == list(range(1, count + 1))
        print(
            f"generated and finalized {count:,} invoices in {seconds:.2f} s: "
            f"{count / seconds:,.0f} invoices/s (lines: {sum(len(i.lines) for i in invoices):,})"
        )
        print(f"machine: {Machine.current().description}")
        engine.dispose()
