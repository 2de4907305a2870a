"""A demo SaaS organization with months of history, made through the billing service itself.

Customers arrive over the window, some on trials or a launch coupon, some taxed; they upgrade,
downgrade, pause, resume, cancel and come back; every period is invoiced when it ends, with
metered usage, and paid (a few payments fail first). Every step is a call a user could make, so
the outbox carries the same events to Kafka and the Billing page, the report and the MRR
analytics have something real to show. Deterministic for a seed and a `now`.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, cast

from workbench.billing.errors import BillingError
from workbench.billing.pricing import Charge, Tier
from workbench.billing.service import ManualProvider, PlanCharge
from workbench.errors import UnknownNameError

if TYPE_CHECKING:
    from workbench.billing.service import Billing, Invoice

DEMO_ORGANIZATION = "demo-saas"
# plan code, monthly price, arrival weight
PLANS = (("starter", 29, 5), ("pro", 99, 4), ("business", 299, 1))
LADDER = [code for code, _, _ in PLANS]
FAILED_PAYMENT_SHARE = 0.08


@dataclass(frozen=True)
class DemoSummary:
    organization: str
    customers: int
    subscriptions: int
    invoices: int
    failed_payments: int
    already_loaded: bool


@dataclass(order=True)
class _Step:
    at: datetime
    order: int
    kind: str  # subscribe, upgrade, downgrade, pause, resume, cancel, cancel_at_period_end
    customer: str


def load_demo(
    billing: Billing,
    *,
    organization_id: str = DEMO_ORGANIZATION,
    customers: int = 40,
    months: int = 18,
    seed: int = 7,
    now: datetime | None = None,
) -> DemoSummary:
    """Create `organization_id` with `customers` customers over the last `months` months.

    Loading an organization that already has customers changes nothing (the summary says so).
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if _exists(billing, organization_id):
        return _summary(billing, organization_id, already_loaded=True, failed=0)
    start = _months_before(now, months)
    _setup(billing, organization_id)
    demo = _Demo(billing, organization_id, random.Random(seed))  # noqa: S311 - reproducible demo data, not secrets
    demo.plan_lives(customers, start, now)
    demo.run(now)
    return _summary(billing, organization_id, already_loaded=False, failed=demo.failed)


def _exists(billing: Billing, organization_id: str) -> bool:
    try:
        return billing.customers(organization_id).height > 0
    except UnknownNameError:
        return False


def _summary(billing: Billing, org: str, *, already_loaded: bool, failed: int) -> DemoSummary:
    return DemoSummary(
        organization=org,
        customers=billing.customers(org).height,
        subscriptions=billing.subscriptions(org).height,
        invoices=billing.invoices(org).height,
        failed_payments=failed,
        already_loaded=already_loaded,
    )


def _months_before(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 - months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _setup(billing: Billing, org: str) -> None:
    billing.create_organization(org, "Demo SaaS", "USD", invoice_prefix="DEMO")
    billing.create_metric(org, "api_calls", "sum", name="API calls")
    api_calls = PlanCharge(
        "api_calls",
        Charge(
            "graduated",
            tiers=(Tier(Decimal(10_000)), Tier(None, unit_amount=Decimal("0.002"))),
        ),
        "API calls beyond 10,000",
    )
    for code, price, _ in PLANS:
        billing.create_plan(
            org,
            code,
            code.title(),
            amount=Decimal(price),
            currency="USD",
            charges=[api_calls] if code != "starter" else [],
        )
    billing.create_coupon(
        org, "LAUNCH20", percent_off=Decimal(20), duration="repeating", duration_in_months=3
    )


class _Demo:
    def __init__(self, billing: Billing, org: str, rng: random.Random) -> None:
        self.billing, self.org, self.rng = billing, org, rng
        self.steps: list[_Step] = []
        self.subscription: dict[str, uuid.UUID] = {}
        self.plan: dict[str, str] = {}
        self.failed = 0

    def _add(self, at: datetime, kind: str, customer: str) -> None:
        self.steps.append(_Step(at, len(self.steps), kind, customer))

    def plan_lives(self, customers: int, start: datetime, now: datetime) -> None:
        """Draw each customer's arrival and later changes; the steps run in time order."""
        rng, window = self.rng, (now - start).total_seconds()
        vat = self.billing.create_tax_rate(self.org, "VAT DE", Decimal(19), country="DE")
        for i in range(customers):
            name = f"cus_{i + 1:03d}"
            taxed = rng.random() < 0.3
            customer = self.billing.create_customer(
                self.org, name, f"Customer {i + 1}", currency="USD", email=f"{name}@example.com"
            )
            if taxed:
                self.billing.set_tax_rates(customer, [vat])
            at = start + timedelta(seconds=rng.uniform(0, window * 0.9))
            self._add(at, "subscribe", name)
            for _ in range(rng.choice((0, 1, 1, 2, 3))):
                at += timedelta(days=rng.uniform(25, 150))
                kind = rng.choices(
                    ("upgrade", "downgrade", "pause", "cancel", "cancel_at_period_end"),
                    weights=(5, 2, 1, 2, 2),
                )[0]
                self._add(at, kind, name)
                if kind == "pause":
                    at += timedelta(days=rng.uniform(20, 60))
                    self._add(at, "resume", name)
                elif kind.startswith("cancel") and rng.random() < 0.4:
                    at += timedelta(days=rng.uniform(35, 120))
                    self._add(at, "subscribe", name)  # a reactivation

    def run(self, now: datetime) -> None:
        for step in sorted(s for s in self.steps if s.at < now):
            self._invoice_due(step.at)
            try:
                self._apply(step)
            except BillingError:
                continue  # e.g. a change drawn for a subscription that has ended meanwhile
        self._invoice_due(now)

    def _apply(self, step: _Step) -> None:
        billing, name, at = self.billing, step.customer, step.at
        sub = self.subscription.get(name)
        if step.kind == "subscribe":
            if sub is not None and billing.subscription(sub)["status"] != "canceled":
                return
            code = self.rng.choices(LADDER, weights=[w for _, _, w in PLANS])[0]
            trial = 14 if self.rng.random() < 0.3 else 0
            self.subscription[name] = billing.subscribe(
                self.org, name, code, at=at, trial_days=trial
            )
            self.plan[name] = code
            if self.rng.random() < 0.2:
                billing.apply_coupon(self.subscription[name], "LAUNCH20", at=at)
        elif sub is None:
            return
        elif step.kind in ("upgrade", "downgrade"):
            rung = LADDER.index(self.plan[name]) + (1 if step.kind == "upgrade" else -1)
            if 0 <= rung < len(LADDER):
                billing.change_plan(sub, LADDER[rung], at=at)
                self.plan[name] = LADDER[rung]
        elif step.kind == "pause":
            billing.pause(sub, at=at)
        elif step.kind == "resume":
            billing.resume(sub, at=at)
        else:
            billing.cancel(sub, at=at, at_period_end=step.kind == "cancel_at_period_end")
        self._collect(at)

    def _invoice_due(self, until: datetime) -> None:
        """Invoice, in time order, every period that ended by `until`, with its usage."""
        import polars as pl

        while True:
            due = self.billing.subscriptions(self.org).filter(
                pl.col("status").is_in(["trialing", "active", "past_due"])
                & (pl.col("current_period_end") <= until)
            )
            if due.is_empty():
                return
            end = cast(datetime, due["current_period_end"].min())
            batch = due.filter(pl.col("current_period_end") == end)
            for row in batch.iter_rows(named=True):
                if row["plan"] != "starter":
                    self.billing.record_usage(
                        self.org,
                        f"demo-{row['id']}-{end:%Y%m%d}",
                        row["customer"],
                        "api_calls",
                        self.rng.randrange(2_000, 60_000),
                        occurred_at=end - timedelta(days=2),
                    )
            ids = [uuid.UUID(value) for value in batch["id"]]
            self._pay(self.billing.generate_invoices(self.org, subscription_ids=ids, at=end))

    def _collect(self, at: datetime) -> None:
        """Pay the invoices a change issued at once (a pause or a cancellation)."""
        import polars as pl

        issued = self.billing.invoices(self.org, status="open").filter(pl.col("issued_at") == at)
        self._pay([self.billing.invoice(uuid.UUID(value)) for value in issued["id"]])

    def _pay(self, invoices: list[Invoice]) -> None:
        for invoice in invoices:
            if invoice.status != "open":
                continue
            key = f"demo-{invoice.id}"
            if self.rng.random() < FAILED_PAYMENT_SHARE:
                self.failed += 1
                self.billing.pay(
                    invoice.id,
                    idempotency_key=f"{key}-declined",
                    provider=ManualProvider(fail_with="card_declined"),
                )
                if self.rng.random() < 0.5:
                    continue  # left open: the subscription stays past due
            self.billing.pay(invoice.id, idempotency_key=key)
