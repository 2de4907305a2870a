"""Billing services over Postgres: customers, plans, subscriptions, usage, invoices, payments.

Every command runs in one transaction together with its outbox rows (`workbench.events.outbox`),
so the subscription, invoice and payment events on Kafka match the database exactly. Hooks
registered with `Billing.on` (notifications: invoice issued, payment failed, trial ending) run
after the commit.
"""

from __future__ import annotations

import calendar
import itertools
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

import orjson
import polars as pl
from sqlalchemy import Connection, Engine, text

from workbench.billing.currencies import is_currency
from workbench.billing.errors import BillingError, BillingInputError
from workbench.billing.mrr import FX_SCHEMA, INTERVAL_SCHEMA, INTERVALS, MrrAnalysis, analyse
from workbench.billing.pricing import (
    Charge,
    Coupon,
    LineInput,
    TaxRate,
    charge_from_json,
    charge_to_json,
    invoice_totals,
    price,
    prorate,
    proration_for_change,
    round_money,
)
from workbench.errors import UnknownNameError
from workbench.events.envelope import CloudEvent
from workbench.events.outbox import OUTBOX_CHANNEL, enqueue
from workbench.events.topics import BILLING_TOPICS, TopicSpec, dead_letter_topic, ensure_topics

SOURCE = "/dictamesh/billing"
SUBSCRIPTION_TOPIC, INVOICE_TOPIC, PAYMENT_TOPIC, USAGE_TOPIC = BILLING_TOPICS
AGGREGATIONS = ("count", "sum", "max", "unique_count", "latest")
Aggregation = Literal["count", "sum", "max", "unique_count", "latest"]
ZERO = Decimal(0)

# Invoice lifecycle (Stripe): draft -> open -> paid | void | uncollectible;
# uncollectible -> paid | void.
TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"open", "void"}),  # a void draft never had a number
    "open": frozenset({"paid", "void", "uncollectible"}),
    "uncollectible": frozenset({"paid", "void"}),
    "paid": frozenset(),
    "void": frozenset(),
}


def billing_topics() -> list[TopicSpec]:
    specs = [TopicSpec(name) for name in BILLING_TOPICS]
    return specs + [TopicSpec(dead_letter_topic(name), 1) for name in BILLING_TOPICS]


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def add_interval(start: datetime, interval: str, count: int = 1) -> datetime:
    """`start` plus `count` billing intervals (calendar months, end-of-month clamped)."""
    if interval == "week":
        return start + timedelta(weeks=count)
    months = start.month - 1 + INTERVALS[interval] * count
    year, month = start.year + months // 12, months % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


@dataclass(frozen=True)
class PlanCharge:
    """A usage charge of a plan: how much `metric` costs per billing period."""

    metric: str
    charge: Charge
    description: str = ""


@dataclass(frozen=True)
class Invoice:
    id: uuid.UUID
    organization_id: str
    customer_id: uuid.UUID
    subscription_id: uuid.UUID | None
    number: str | None
    status: str
    currency: str
    period_start: datetime | None
    period_end: datetime | None
    subtotal: Decimal
    discount: Decimal
    tax: Decimal
    total: Decimal
    credits_applied: Decimal
    amount_due: Decimal
    amount_paid: Decimal
    lines: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    tax_inclusive: Decimal = ZERO  # contained in the lines; `tax` is the exclusive tax added
    tax_breakdown: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    coupons: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    # the stored discounts behind `coupons` (a draft uses them up when it is finalized)
    discount_ids: tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:
        return (
            f"Invoice({self.number or 'draft'}, {self.status}, {self.amount_due} {self.currency})"
        )


@dataclass(frozen=True)
class ProviderResult:
    succeeded: bool
    reference: str | None = None
    failure_reason: str | None = None


class PaymentProvider(Protocol):
    """Collects and refunds money; the workbench records what it answers."""

    name: str

    def charge(self, invoice: Invoice, amount: Decimal, idempotency_key: str) -> ProviderResult:
        """Collect `amount` for `invoice`."""
        ...

    def refund(
        self, reference: str | None, amount: Decimal, idempotency_key: str
    ) -> ProviderResult:
        """Give back `amount` of an earlier payment."""
        ...


@dataclass
class ManualProvider:
    """Payments recorded by hand (bank transfer, cheque): they succeed unless told to fail."""

    name: str = "manual"
    fail_with: str | None = None

    def charge(self, invoice: Invoice, amount: Decimal, idempotency_key: str) -> ProviderResult:
        if self.fail_with:
            return ProviderResult(False, None, self.fail_with)
        return ProviderResult(True, f"manual-{idempotency_key}")

    def refund(
        self, reference: str | None, amount: Decimal, idempotency_key: str
    ) -> ProviderResult:
        return ProviderResult(True, f"manual-refund-{idempotency_key}")


Hook = Callable[[str, dict[str, Any]], None]


class Billing:
    """The billing services of one installation (``wb.billing``)."""

    def __init__(self, engine: Engine, bootstrap: str | None = None) -> None:
        self.engine = engine
        self.bootstrap = bootstrap
        self._hooks: dict[str, list[Hook]] = defaultdict(list)

    def __repr__(self) -> str:
        return "Billing()"

    # -- plumbing --------------------------------------------------------------------------------
    def ensure_topics(self) -> list[str]:
        if self.bootstrap is None:
            return []
        return ensure_topics(self.bootstrap, billing_topics())

    def on(self, event_type: str, hook: Hook) -> None:
        """Call `hook(event_type, data)` after a commit that emitted `event_type` (or "*")."""
        self._hooks[event_type].append(hook)

    def _emit(
        self,
        conn: Connection,
        pending: list[tuple[str, dict[str, Any]]],
        topic: str,
        event_type: str,
        key: str,
        data: dict[str, Any],
    ) -> None:
        event = CloudEvent(
            source=SOURCE,
            type=f"dictamesh.billing.{event_type}",
            partitionkey=key,
            subject=key,
            data=orjson.loads(orjson.dumps(data, default=str)),
        )
        enqueue(conn, topic, event)
        pending.append((event_type, data))

    def _emit_many(
        self,
        conn: Connection,
        pending: list[tuple[str, dict[str, Any]]],
        topic: str,
        event_type: str,
        items: Sequence[tuple[str, dict[str, Any]]],
    ) -> None:
        """`_emit` for a batch: one multi-row outbox insert and one wake-up of the relay."""
        rows = []
        for key, data in items:
            event = CloudEvent(
                source=SOURCE,
                type=f"dictamesh.billing.{event_type}",
                partitionkey=key,
                subject=key,
                data=orjson.loads(orjson.dumps(data, default=str)),
            )
            record = event.to_kafka("binary")
            headers = [
                [name, value.decode() if isinstance(value, bytes) else value]
                for name, value in record.headers
            ]
            rows.append(
                {
                    "topic": topic,
                    "event_id": event.id,
                    "key": record.key,
                    "value": record.value,
                    "headers": orjson.dumps(headers).decode(),
                }
            )
            pending.append((event_type, data))
        if not rows:
            return
        conn.execute(
            text(
                "INSERT INTO dictamesh_outbox (topic, event_id, record_key, record_value, headers) "
                "VALUES (:topic, :event_id, :key, :value, CAST(:headers AS jsonb))"
            ),
            rows,
        )
        conn.execute(
            text("SELECT pg_notify(:channel, :topic)"), {"channel": OUTBOX_CHANNEL, "topic": topic}
        )

    def _run_hooks(self, pending: list[tuple[str, dict[str, Any]]]) -> None:
        for event_type, data in pending:
            for hook in [*self._hooks.get(event_type, []), *self._hooks.get("*", [])]:
                hook(event_type, data)

    # -- organizations, customers, metrics, plans -------------------------------------------------
    def create_organization(
        self,
        organization_id: str,
        name: str,
        currency: str = "USD",
        invoice_prefix: str | None = None,
    ) -> None:
        _check_currency(currency, organization_id)
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO dictamesh_billing_organizations (id, name, currency, "
                    "invoice_prefix) "
                    "VALUES (:id, :name, :currency, :prefix) ON CONFLICT (id) DO NOTHING"
                ),
                {
                    "id": organization_id,
                    "name": name,
                    "currency": currency,
                    "prefix": invoice_prefix or organization_id.upper()[:8],
                },
            )

    def create_customer(
        self,
        organization_id: str,
        external_id: str,
        name: str,
        *,
        currency: str = "USD",
        email: str | None = None,
        credit_balance: Decimal = ZERO,
    ) -> uuid.UUID:
        """Create (or return) the customer `external_id` of the organization.

        Taxes are tax-rate objects: `create_tax_rate`, then `set_tax_rates(customer, [ids])`.
        """
        _check_currency(currency, external_id)
        with self.engine.begin() as conn:
            _require_organization(conn, organization_id)
            row = conn.execute(
                text(
                    "INSERT INTO dictamesh_billing_customers (organization_id, external_id, name, "
                    "email, currency, credit_balance) VALUES (:org, :ext, :name, :email, "
                    ":currency, :credit) ON CONFLICT (organization_id, external_id) "
                    "DO UPDATE SET name = EXCLUDED.name RETURNING id"
                ),
                {
                    "org": organization_id,
                    "ext": external_id,
                    "name": name,
                    "email": email,
                    "currency": currency,
                    "credit": credit_balance,
                },
            ).scalar_one()
        return uuid.UUID(str(row))

    def create_metric(
        self,
        organization_id: str,
        code: str,
        aggregation: Aggregation,
        *,
        name: str | None = None,
        field_name: str | None = None,
    ) -> None:
        """A billable metric: usage of `code` aggregated by count, sum, max, unique or latest."""
        if aggregation not in AGGREGATIONS:
            raise BillingInputError(
                code,
                "aggregation",
                aggregation,
                "is not an aggregation",
                remedy=f"use one of {', '.join(AGGREGATIONS)}.",
            )
        if aggregation == "unique_count" and not field_name:
            raise BillingInputError(
                code,
                "field_name",
                field_name,
                "is required for unique_count",
                remedy="name the event property whose distinct values are counted.",
            )
        with self.engine.begin() as conn:
            _require_organization(conn, organization_id)
            conn.execute(
                text(
                    "INSERT INTO dictamesh_billing_metrics (organization_id, code, name, "
                    "aggregation, "
                    "field_name) VALUES (:org, :code, :name, :agg, :field) "
                    "ON CONFLICT (organization_id, code) DO UPDATE SET aggregation = "
                    "EXCLUDED.aggregation, "
                    "field_name = EXCLUDED.field_name"
                ),
                {
                    "org": organization_id,
                    "code": code,
                    "name": name or code,
                    "agg": aggregation,
                    "field": field_name,
                },
            )

    def create_plan(
        self,
        organization_id: str,
        code: str,
        name: str,
        *,
        amount: Decimal,
        currency: str = "USD",
        interval: str = "month",
        trial_days: int = 0,
        charges: Sequence[PlanCharge] = (),
    ) -> int:
        """A new version of plan `code` (1 for a new plan); existing subscriptions keep theirs."""
        _check_currency(currency, code)
        if interval not in INTERVALS:
            raise BillingInputError(
                code,
                "interval",
                interval,
                "is not a billing interval",
                remedy=f"use one of {', '.join(INTERVALS)}.",
            )
        if amount < 0:
            raise BillingInputError(code, "amount", amount, "is negative", remedy="use >= 0.")
        with self.engine.begin() as conn:
            _require_organization(conn, organization_id)
            known = set(
                conn.execute(
                    text("SELECT code FROM dictamesh_billing_metrics WHERE organization_id = :org"),
                    {"org": organization_id},
                ).scalars()
            )
            for i, pc in enumerate(charges):
                if pc.metric not in known:
                    raise BillingInputError(
                        f"{code} charge {i}",
                        "metric",
                        pc.metric,
                        "is not a billable metric",
                        remedy="create it first with create_metric.",
                    )
            version = conn.execute(
                text(
                    "SELECT coalesce(max(version), 0) + 1 FROM dictamesh_billing_plans "
                    "WHERE organization_id = :org AND code = :code"
                ),
                {"org": organization_id, "code": code},
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO dictamesh_billing_plans (organization_id, code, version, name, "
                    "currency, interval, amount, trial_days, charges) VALUES (:org, :code, "
                    ":version, "
                    ":name, :currency, :interval, :amount, :trial, CAST(:charges AS jsonb))"
                ),
                {
                    "org": organization_id,
                    "code": code,
                    "version": version,
                    "name": name,
                    "currency": currency,
                    "interval": interval,
                    "amount": amount,
                    "trial": trial_days,
                    "charges": orjson.dumps(
                        [
                            {
                                "metric": c.metric,
                                "description": c.description,
                                "charge": charge_to_json(c.charge),
                            }
                            for c in charges
                        ]
                    ).decode(),
                },
            )
        return int(version)

    # -- subscriptions -----------------------------------------------------------------------------
    def subscribe(
        self,
        organization_id: str,
        customer_external_id: str,
        plan_code: str,
        *,
        at: datetime | None = None,
        trial_days: int | None = None,
    ) -> uuid.UUID:
        """Start a subscription on the newest version of `plan_code` (trialing with a trial).

        Discounts are coupons: `apply_coupon(subscription_id, code)`.
        """
        at = _utc(at)
        discount_amount = ZERO
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            customer = self._customer(conn, organization_id, customer_external_id)
            plan = self._plan(conn, organization_id, plan_code)
            trial = plan["trial_days"] if trial_days is None else trial_days
            trial_end = at + timedelta(days=trial) if trial > 0 else None
            period_end = trial_end or add_interval(at, plan["interval"])
            sub_id = conn.execute(
                text(
                    "INSERT INTO dictamesh_billing_subscriptions (organization_id, customer_id, "
                    "plan_id, "
                    "status, started_at, current_period_start, current_period_end, trial_end, "
                    "discount_amount) VALUES (:org, :customer, :plan, :status, :at, :at, :end, "
                    ":trial_end, :discount) RETURNING id"
                ),
                {
                    "org": organization_id,
                    "customer": customer["id"],
                    "plan": plan["id"],
                    "status": "trialing" if trial_end else "active",
                    "at": at,
                    "end": period_end,
                    "trial_end": trial_end,
                    "discount": discount_amount,
                },
            ).scalar_one()
            if trial_end:
                self._open_interval(
                    conn,
                    organization_id,
                    sub_id,
                    customer["id"],
                    plan,
                    at,
                    discount_amount,
                    trial=True,
                    until=trial_end,
                )
            self._open_interval(
                conn,
                organization_id,
                sub_id,
                customer["id"],
                plan,
                trial_end or at,
                discount_amount,
            )
            data = {
                "subscription_id": str(sub_id),
                "organization_id": organization_id,
                "customer": customer_external_id,
                "plan": plan_code,
                "plan_version": plan["version"],
                "status": "trialing" if trial_end else "active",
                "at": at.isoformat(),
            }
            self._emit(conn, pending, SUBSCRIPTION_TOPIC, "subscription.created", str(sub_id), data)
        self._run_hooks(pending)
        return uuid.UUID(str(sub_id))

    def change_plan(
        self, subscription_id: uuid.UUID, plan_code: str, *, at: datetime | None = None
    ) -> dict[str, Decimal]:
        """Upgrade or downgrade now: prorated credit and charge lines go on the next invoice."""
        at = _utc(at)
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            sub = self._subscription(conn, subscription_id, lock=True)
            self._require_status(sub, {"active", "trialing", "past_due"}, "change its plan")
            old = self._plan_by_id(conn, sub["plan_id"])
            new = self._plan(conn, sub["organization_id"], plan_code)
            if new["currency"] != old["currency"]:
                raise BillingInputError(
                    str(subscription_id),
                    "plan",
                    plan_code,
                    f"is in {new['currency']}, the subscription in {old['currency']}",
                    remedy="cancel and start a new subscription to change currency.",
                )
            lines = proration_for_change(
                Decimal(old["amount"]),
                Decimal(new["amount"]),
                sub["current_period_start"],
                sub["current_period_end"],
                at,
                old["currency"],
            )
            items = list(sub["pending_items"]) if sub["status"] != "trialing" else []
            if sub["status"] != "trialing":
                # Each line keeps its price per period and the time it covers, so an invoice of
                # a period cut short (pause, cancel) prorates it again to the cut. The period is
                # invoiced at the plan it started on: with these lines, that bills each plan for
                # the time it was held.
                span = {
                    "kind": "proration",
                    "from": at.isoformat(),
                    "to": sub["current_period_end"].isoformat(),
                    "period_start": sub["current_period_start"].isoformat(),
                }
                first = {}
                if not any("period_fee" in item for item in items):
                    first = {"period_fee": str(old["amount"]), "period_plan": old["name"]}
                items += [
                    span
                    | first
                    | {
                        "description": f"Unused time on {old['name']}",
                        "amount": str(lines.credit),
                        "rate": str(-Decimal(old["amount"])),
                    },
                    span
                    | {
                        "description": f"Remaining time on {new['name']}",
                        "amount": str(lines.charge),
                        "rate": str(Decimal(new["amount"])),
                    },
                ]
            conn.execute(
                text(
                    "UPDATE dictamesh_billing_subscriptions SET plan_id = :plan, pending_items = "
                    "CAST(:items AS jsonb), updated_at = now() WHERE id = :id"
                ),
                {"plan": new["id"], "items": orjson.dumps(items).decode(), "id": subscription_id},
            )
            self._close_intervals(conn, subscription_id, at)
            self._open_interval(
                conn,
                sub["organization_id"],
                subscription_id,
                sub["customer_id"],
                new,
                at,
                Decimal(sub["discount_amount"]),
                trial=sub["status"] == "trialing",
                until=sub["trial_end"],
            )
            if sub["status"] == "trialing" and sub["trial_end"]:
                self._open_interval(
                    conn,
                    sub["organization_id"],
                    subscription_id,
                    sub["customer_id"],
                    new,
                    sub["trial_end"],
                    Decimal(sub["discount_amount"]),
                )
            kind = "upgraded" if Decimal(new["amount"]) >= Decimal(old["amount"]) else "downgraded"
            self._emit(
                conn,
                pending,
                SUBSCRIPTION_TOPIC,
                f"subscription.{kind}",
                str(subscription_id),
                {
                    "subscription_id": str(subscription_id),
                    "from": old["code"],
                    "to": plan_code,
                    "credit": lines.credit,
                    "charge": lines.charge,
                    "at": at.isoformat(),
                },
            )
        self._run_hooks(pending)
        return {"credit": lines.credit, "charge": lines.charge}

    def cancel(
        self, subscription_id: uuid.UUID, *, at: datetime | None = None, at_period_end: bool = False
    ) -> None:
        """Cancel now, or at the end of the current period (MRR ends then)."""
        at = _utc(at)
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            sub = self._subscription(conn, subscription_id, lock=True)
            self._require_status(sub, {"active", "trialing", "past_due", "paused"}, "cancel it")
            if at_period_end:
                ends = sub["current_period_end"]
                conn.execute(
                    text(
                        "UPDATE dictamesh_billing_subscriptions SET cancel_at_period_end = true, "
                        "cancel_scheduled_at = :at, updated_at = now() WHERE id = :id"
                    ),
                    {"at": at, "id": subscription_id},
                )
                self._close_intervals(conn, subscription_id, ends, scheduled=at)
                event = "subscription.cancel_scheduled"
            else:
                self._invoice_served_time(conn, sub, at, pending)
                conn.execute(
                    text(
                        "UPDATE dictamesh_billing_subscriptions SET status = 'canceled', ended_at "
                        "= :at, "
                        "updated_at = now() WHERE id = :id"
                    ),
                    {"at": at, "id": subscription_id},
                )
                self._close_intervals(conn, subscription_id, at)
                event = "subscription.canceled"
            self._emit(
                conn,
                pending,
                SUBSCRIPTION_TOPIC,
                event,
                str(subscription_id),
                {
                    "subscription_id": str(subscription_id),
                    "at": at.isoformat(),
                    "at_period_end": at_period_end,
                },
            )
        self._run_hooks(pending)

    def pause(self, subscription_id: uuid.UUID, *, at: datetime | None = None) -> None:
        """Pause collection: no MRR and no invoices until `resume`.

        The time served since the last invoice is invoiced at once (the fee prorated to the
        second, the usage until `at`), so nothing goes unbilled however long the pause lasts.
        """
        at = _utc(at)
        self._set_status(subscription_id, "paused", {"active", "past_due"}, at, close=True)

    def _invoice_served_time(
        self,
        conn: Connection,
        sub: dict[str, Any],
        at: datetime,
        pending: list[tuple[str, dict[str, Any]]],
    ) -> None:
        """Invoice every period, or part of one, the subscription served before `at`.

        The caller ends or pauses the subscription at `at`, so a cancellation scheduled for the
        period's end is superseded: it must not take effect when the cut period is invoiced.
        """
        if sub["status"] not in {"active", "past_due"}:
            return
        conn.execute(
            text(
                "UPDATE dictamesh_billing_subscriptions SET cancel_at_period_end = false "
                "WHERE id = :id"
            ),
            {"id": sub["id"]},
        )
        while sub["current_period_start"] < at:
            if at < sub["current_period_end"]:
                conn.execute(
                    text(
                        "UPDATE dictamesh_billing_subscriptions SET current_period_end = :at "
                        "WHERE id = :id"
                    ),
                    {"at": at, "id": sub["id"]},
                )
            if not self._invoice_periods(
                conn, sub["organization_id"], [sub["id"]], finalize=True, at=at, pending=pending
            ):
                return
            sub = self._subscription(conn, sub["id"], lock=True)

    def resume(self, subscription_id: uuid.UUID, *, at: datetime | None = None) -> None:
        at = _utc(at)
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            sub = self._subscription(conn, subscription_id, lock=True)
            self._require_status(sub, {"paused"}, "resume it")
            plan = self._plan_by_id(conn, sub["plan_id"])
            conn.execute(
                text(
                    "UPDATE dictamesh_billing_subscriptions SET status = 'active', "
                    "current_period_start = :at, "
                    "current_period_end = :end, updated_at = now() WHERE id = :id"
                ),
                {"at": at, "end": add_interval(at, plan["interval"]), "id": subscription_id},
            )
            self._open_interval(
                conn,
                sub["organization_id"],
                subscription_id,
                sub["customer_id"],
                plan,
                at,
                Decimal(sub["discount_amount"]),
            )
            self._emit(
                conn,
                pending,
                SUBSCRIPTION_TOPIC,
                "subscription.resumed",
                str(subscription_id),
                {"subscription_id": str(subscription_id), "at": at.isoformat()},
            )
        self._run_hooks(pending)

    def trials_ending(
        self,
        organization_id: str,
        *,
        within: timedelta = timedelta(days=3),
        now: datetime | None = None,
    ) -> list[uuid.UUID]:
        """The organization's trials ending within `within` and not notified yet, notified now.

        The organization-scoped form of `notify_trials_ending`: each trial is notified once.
        """
        return self.notify_trials_ending(within=within, at=now, organization_id=organization_id)

    def notify_trials_ending(
        self,
        *,
        within: timedelta = timedelta(days=3),
        at: datetime | None = None,
        organization_id: str | None = None,
    ) -> list[uuid.UUID]:
        """Emit ``subscription.trial_ending`` once for every trial ending in ``(at, at+within]``.

        Meant to run on a schedule (e.g. hourly): the subscription records when it was notified
        (``trial_ending_notified_at``, set in the same transaction as the outbox row), so later
        runs skip it and concurrent runs cannot notify it twice. Returns the subscriptions
        notified by this call, in trial-end order.
        """
        if within <= timedelta(0):
            raise BillingInputError(
                "notify_trials_ending",
                "within",
                within,
                "must be positive",
                remedy="give how far ahead to look, e.g. timedelta(days=3).",
            )
        at = _utc(at)
        query = (
            "UPDATE dictamesh_billing_subscriptions SET trial_ending_notified_at = :at, "
            "updated_at = now() WHERE status = 'trialing' AND trial_end > :at "
            "AND trial_end <= :until AND trial_ending_notified_at IS NULL"
        )
        params: dict[str, Any] = {"at": at, "until": at + within}
        if organization_id is not None:
            query += " AND organization_id = :org"
            params["org"] = organization_id
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            rows = sorted(
                conn.execute(
                    text(query + " RETURNING id, organization_id, trial_end"), params
                ).all(),
                key=lambda r: (r[2], str(r[0])),
            )
            self._emit_many(
                conn,
                pending,
                SUBSCRIPTION_TOPIC,
                "subscription.trial_ending",
                [
                    (
                        str(sub_id),
                        {
                            "subscription_id": str(sub_id),
                            "organization_id": org,
                            "trial_end": trial_end.isoformat(),
                        },
                    )
                    for sub_id, org, trial_end in rows
                ],
            )
        self._run_hooks(pending)
        return [uuid.UUID(str(r[0])) for r in rows]

    def subscription(self, subscription_id: uuid.UUID) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return self._subscription(conn, subscription_id)

    def organizations(self) -> pl.DataFrame:
        """Every billing organization with its currency, invoice prefix and customer count."""
        return self._listing(
            "SELECT o.id, o.name, o.currency, o.invoice_prefix, (SELECT count(*) "
            "FROM dictamesh_billing_customers c WHERE c.organization_id = o.id) AS customers, "
            "o.created_at FROM dictamesh_billing_organizations o ORDER BY o.id",
            {},
            ORGANIZATION_SCHEMA,
        )

    def customers(self, organization_id: str) -> pl.DataFrame:
        """The organization's customers: external id, name, currency, credit balance."""
        return self._listing(
            "SELECT id::text AS id, external_id, name, email, currency, credit_balance, "
            "created_at FROM dictamesh_billing_customers WHERE organization_id = :org "
            "ORDER BY created_at, external_id",
            {"org": organization_id},
            CUSTOMER_SCHEMA,
        )

    def plans(self, organization_id: str, *, all_versions: bool = False) -> pl.DataFrame:
        """The organization's plans, the newest version of each (every version with
        `all_versions`), with how many live subscriptions each version has."""
        return self._listing(
            "SELECT p.code, p.version, p.name, p.amount, p.currency, p.interval, p.trial_days, "
            "jsonb_array_length(p.charges) AS usage_charges, (SELECT count(*) FROM "
            "dictamesh_billing_subscriptions s WHERE s.plan_id = p.id AND s.status <> 'canceled') "
            "AS live_subscriptions, p.id::text AS id, p.created_at "
            "FROM dictamesh_billing_plans p WHERE p.organization_id = :org AND (:all OR "
            "p.version = (SELECT max(version) FROM dictamesh_billing_plans v "
            "WHERE v.organization_id = p.organization_id AND v.code = p.code)) "
            "ORDER BY p.code, p.version",
            {"org": organization_id, "all": all_versions},
            PLAN_SCHEMA,
        )

    def subscriptions(
        self,
        organization_id: str,
        *,
        status: str | None = None,
        customer_external_id: str | None = None,
    ) -> pl.DataFrame:
        """The organization's subscriptions, newest first, with customer and plan."""
        if status is not None and status not in SUBSCRIPTION_STATUSES:
            raise UnknownNameError("subscription status", status, list(SUBSCRIPTION_STATUSES))
        return self._listing(
            "SELECT s.id::text AS id, c.external_id AS customer, p.code AS plan, "
            "p.version AS plan_version, s.status, p.amount, p.currency, p.interval, s.started_at, "
            "s.current_period_start, s.current_period_end, s.trial_end, s.cancel_at_period_end, "
            "s.ended_at FROM dictamesh_billing_subscriptions s "
            "JOIN dictamesh_billing_customers c ON c.id = s.customer_id "
            "JOIN dictamesh_billing_plans p ON p.id = s.plan_id WHERE s.organization_id = :org "
            "AND (CAST(:status AS text) IS NULL OR s.status = :status) "
            "AND (CAST(:customer AS text) IS NULL OR c.external_id = :customer) "
            "ORDER BY s.created_at DESC, s.id",
            {"org": organization_id, "status": status, "customer": customer_external_id},
            SUBSCRIPTION_SCHEMA,
        )

    def _listing(self, query: str, params: dict[str, Any], schema: dict[str, Any]) -> pl.DataFrame:
        """The rows of `query` as a frame; an unknown ``org`` parameter gets a did-you-mean."""
        with self.engine.connect() as conn:
            if "org" in params:
                _require_organization(conn, params["org"])
            rows = [dict(r._mapping) for r in conn.execute(text(query), params)]
        return pl.DataFrame(rows, schema=schema, orient="row")

    # -- usage -------------------------------------------------------------------------------------
    def record_usage(
        self,
        organization_id: str,
        event_id: str,
        customer_external_id: str,
        metric_code: str,
        value: Decimal | int | str | None = None,
        *,
        occurred_at: datetime | None = None,
        properties: dict[str, Any] | None = None,
    ) -> bool:
        """Record one usage event; False when `event_id` was already recorded (no second effect)."""
        with self.engine.begin() as conn:
            return record_usage(
                conn,
                organization_id,
                event_id,
                customer_external_id,
                metric_code,
                value,
                occurred_at=_utc(occurred_at),
                properties=properties,
            )

    def usage(
        self, customer_id: uuid.UUID, metric_code: str, start: datetime, end: datetime
    ) -> Decimal:
        """The metric's aggregate over ``[start, end)`` for one customer."""
        with self.engine.connect() as conn:
            aggregates = _usage_aggregates(conn, [customer_id], start, end)
        return aggregates.get((customer_id, metric_code), ZERO)

    # -- invoices ----------------------------------------------------------------------------------
    def generate_invoices(
        self,
        organization_id: str,
        *,
        subscription_ids: Sequence[uuid.UUID] | None = None,
        finalize: bool = True,
        at: datetime | None = None,
    ) -> list[Invoice]:
        """Invoice the current period of the organization's subscriptions, then advance them.

        One transaction for the whole batch: plan fees, usage charges (aggregated in SQL),
        pending proration lines, the stored discounts active for each invoice's service period
        (`apply_coupon`), every tax rate of the customer (`set_tax_rates`) and credits; numbers
        are sequential per organization. Subscriptions set to cancel at period end are canceled.
        """
        at = _utc(at)
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            invoices = self._invoice_periods(
                conn, organization_id, subscription_ids, finalize=finalize, at=at, pending=pending
            )
        self._run_hooks(pending)
        return invoices

    def _invoice_periods(  # noqa: PLR0912, PLR0915 - one transaction, read top to bottom
        self,
        conn: Connection,
        organization_id: str,
        subscription_ids: Sequence[uuid.UUID] | None,
        *,
        finalize: bool,
        at: datetime,
        pending: list[tuple[str, dict[str, Any]]],
    ) -> list[Invoice]:
        """`generate_invoices` inside the caller's transaction; events are added to `pending`."""
        invoices: list[Invoice] = []
        query = (
            "SELECT s.*, p.code AS plan_code, p.name AS plan_name, p.amount AS plan_amount, "
            "p.currency, p.interval, p.charges, c.credit_balance, c.external_id "
            "FROM dictamesh_billing_subscriptions s JOIN dictamesh_billing_plans p ON p.id = "
            "s.plan_id "
            "JOIN dictamesh_billing_customers c ON c.id = s.customer_id "
            "WHERE s.organization_id = :org AND s.status IN ('active', 'past_due', 'trialing') "
        )
        params: dict[str, Any] = {"org": organization_id}
        if subscription_ids is not None:
            query += "AND s.id = ANY(:ids) "
            params["ids"] = list(subscription_ids)
        subs = [
            dict(r._mapping)
            for r in conn.execute(
                text(query + "ORDER BY s.created_at, s.id FOR UPDATE OF s"), params
            )
        ]
        if not subs:
            return []
        periods = {(s["current_period_start"], s["current_period_end"]) for s in subs}
        usage: dict[tuple[uuid.UUID, str], tuple[Decimal, int]] = {}
        for start, end in periods:
            customers = [
                s["customer_id"]
                for s in subs
                if (s["current_period_start"], s["current_period_end"]) == (start, end)
            ]
            usage.update(_usage_totals(conn, customers, start, end))
        customer_ids = list({s["customer_id"] for s in subs})
        rates_of = _tax_rates_of(conn, customer_ids)
        discounts_of = _discounts_of(conn, customer_ids, at)
        once_used: set[Any] = set()
        applied: list[Any] = []
        credit_left: dict[uuid.UUID, Decimal] = {}
        plan_charges: dict[Any, list[tuple[dict[str, Any], Charge]]] = {}
        initial_credit = {s["customer_id"]: Decimal(s["credit_balance"]) for s in subs}
        drafts: list[tuple[dict[str, Any], Any, list[Any]]] = []
        for sub in subs:
            lines: list[LineInput] = []
            start, end = sub["current_period_start"], sub["current_period_end"]
            changed = next((i for i in sub["pending_items"] if "period_fee" in i), None)
            if sub["status"] != "trialing":
                # after a plan change the period is billed at the plan it started on, and the
                # proration lines move it to the new one from the change on
                period_price, name = Decimal(sub["plan_amount"]), sub["plan_name"]
                full_end = add_interval(start, sub["interval"])
                if changed is not None:
                    period_price, name = Decimal(changed["period_fee"]), changed["period_plan"]
                    full_end = datetime.fromisoformat(changed["to"])
                fee = max(period_price - Decimal(sub["discount_amount"]), ZERO)
                description = f"{name} ({sub['interval']}ly)"
                if end < full_end:  # a period cut short by a pause or a cancellation
                    fee = prorate(fee, start, full_end, start, end)
                    description += f", prorated to {end:%Y-%m-%d %H:%M} UTC"
                lines.append(LineInput(description, fee, "subscription"))
            if sub["plan_id"] not in plan_charges:
                plan_charges[sub["plan_id"]] = [
                    (pc, charge_from_json(pc["charge"])) for pc in sub["charges"]
                ]
            for pc, charge in plan_charges[sub["plan_id"]]:
                quantity, events = usage.get((sub["customer_id"], pc["metric"]), (ZERO, 0))
                # a percentage charge (also nested in flat_usage) prices the summed
                # amount plus its fixed fee per usage event
                amount = price(charge, quantity, amount=quantity, transactions=events)
                lines.append(
                    LineInput(pc.get("description") or pc["metric"], amount, "usage", quantity)
                )
            for item in sub["pending_items"]:
                lines.append(
                    LineInput(
                        item["description"],
                        _pending_amount(item, end),
                        item.get("kind", "proration"),
                        discountable=False,
                    )
                )
            has_base = any(
                line.discountable and round_money(line.amount, sub["currency"]) > 0
                for line in lines
            )
            active = [
                d
                for d in discounts_of.get(sub["customer_id"], ())
                if _discount_covers(d, sub, has_base, once_used)
            ]
            for d in active:
                applied.append(d["id"])
                if d["duration"] == "once":
                    once_used.add(d["id"])
            balance = credit_left.setdefault(sub["customer_id"], Decimal(sub["credit_balance"]))
            totals = invoice_totals(
                lines,
                sub["currency"],
                coupons=[d["coupon"] for d in active],
                tax_rates=rates_of.get(sub["customer_id"], ()),
                credit_balance=balance,
            )
            credit_left[sub["customer_id"]] = (
                balance - totals.credits_applied + totals.credit_to_balance
            )
            drafts.append((sub, totals, [d["id"] for d in active]))
        numbers: list[str | None] = [None] * len(drafts)
        if finalize:
            numbers = list(_next_invoice_numbers(conn, organization_id, len(drafts)))
        invoice_rows = []
        line_rows = []
        for (sub, totals, used_discounts), number in zip(drafts, numbers, strict=True):
            invoice_id = uuid.uuid4()
            status = "draft" if not finalize else ("paid" if totals.amount_due == 0 else "open")
            # the discount ids let `finalize_invoice` use up a draft's discounts later
            coupon_json = [
                {"code": code, "amount": str(amount), "discount_id": str(discount_id)}
                for code, amount, discount_id in zip(
                    totals.coupons, totals.coupon_amounts, used_discounts, strict=True
                )
            ]
            breakdown = [t.to_json() for t in totals.tax_breakdown]
            invoice_rows.append(
                (
                    invoice_id,
                    organization_id,
                    sub["customer_id"],
                    sub["id"],
                    number,
                    status,
                    totals.currency,
                    sub["current_period_start"],
                    sub["current_period_end"],
                    totals.subtotal,
                    totals.discount,
                    totals.tax,
                    totals.total,
                    totals.credits_applied,
                    totals.amount_due,
                    orjson.dumps(coupon_json).decode(),
                    totals.tax_inclusive,
                    orjson.dumps(breakdown).decode(),
                    at if finalize else None,
                    at + timedelta(days=30) if finalize else None,
                    at if status == "paid" else None,
                )
            )
            for position, line in enumerate(totals.lines):
                line_rows.append(
                    (
                        invoice_id,
                        position,
                        line.description,
                        line.kind,
                        line.quantity,
                        line.amount,
                        line.discount,
                        line.tax_rate,
                        line.tax,
                        line.tax_inclusive,
                    )
                )
            invoices.append(
                Invoice(
                    invoice_id,
                    organization_id,
                    sub["customer_id"],
                    sub["id"],
                    number,
                    status,
                    totals.currency,
                    sub["current_period_start"],
                    sub["current_period_end"],
                    totals.subtotal,
                    totals.discount,
                    totals.tax,
                    totals.total,
                    totals.credits_applied,
                    totals.amount_due,
                    ZERO,
                    tuple(line.__dict__ for line in totals.lines),
                    totals.tax_inclusive,
                    tuple(breakdown),
                    tuple({"code": c["code"], "amount": c["amount"]} for c in coupon_json),
                    tuple(c["discount_id"] for c in coupon_json),
                )
            )
        _copy_rows(conn, "dictamesh_billing_invoices", INVOICE_COLUMNS, invoice_rows)
        _copy_rows(conn, "dictamesh_billing_invoice_lines", LINE_COLUMNS, line_rows)
        if finalize and applied:
            counts: dict[Any, int] = defaultdict(int)
            for discount_id in applied:
                counts[discount_id] += 1
            conn.execute(
                text(
                    "UPDATE dictamesh_billing_discounts d SET times_applied = times_applied + "
                    "u.n FROM unnest(CAST(:ids AS uuid[]), CAST(:ns AS int[])) AS u(id, n) "
                    "WHERE d.id = u.id"
                ),
                {"ids": list(counts), "ns": list(counts.values())},
            )
        if finalize:
            used = [
                {"id": customer, "balance": balance}
                for customer, balance in credit_left.items()
                if balance != initial_credit[customer]
            ]
            if used:
                conn.execute(
                    text(
                        "UPDATE dictamesh_billing_customers SET credit_balance = :balance "
                        "WHERE id = :id"
                    ),
                    used,
                )
            self._advance_periods(conn, subs, pending)
            self._emit_many(
                conn,
                pending,
                INVOICE_TOPIC,
                "invoice.issued",
                [(str(invoice.id), _invoice_event(invoice)) for invoice in invoices],
            )
        return invoices

    def _advance_periods(
        self,
        conn: Connection,
        subs: list[dict[str, Any]],
        pending: list[tuple[str, dict[str, Any]]],
    ) -> None:
        """Move the subscriptions to their next period: trials become active, scheduled
        cancellations take effect; ``subscription.activated`` / ``subscription.canceled`` go
        through the outbox in one batch each."""
        ids, starts, ends, statuses, ended = [], [], [], [], []
        activated: list[tuple[str, dict[str, Any]]] = []
        canceled: list[tuple[str, dict[str, Any]]] = []
        for sub in subs:
            start = sub["current_period_end"]
            ending = sub["cancel_at_period_end"]
            ids.append(sub["id"])
            starts.append(start)
            ends.append(add_interval(start, sub["interval"]))
            status = (
                "canceled"
                if ending
                else ("active" if sub["status"] == "trialing" else sub["status"])
            )
            statuses.append(status)
            ended.append(start if ending else None)
            data = {
                "subscription_id": str(sub["id"]),
                "organization_id": sub["organization_id"],
                "at": start.isoformat(),
            }
            if status == "canceled":
                canceled.append((str(sub["id"]), data | {"at_period_end": True}))
            elif status == "active" and sub["status"] == "trialing":
                activated.append((str(sub["id"]), data))
        conn.execute(
            text(
                "UPDATE dictamesh_billing_subscriptions s SET current_period_start = u.start, "
                "current_period_end = u.stop, status = u.status, ended_at = u.ended, "
                "pending_items = '[]'::jsonb, updated_at = now() FROM unnest(CAST(:ids AS uuid[]), "
                "CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]), CAST(:statuses AS "
                "text[]), "
                "CAST(:ended AS timestamptz[])) AS u(id, start, stop, status, ended) WHERE s.id = "
                "u.id"
            ),
            {"ids": ids, "starts": starts, "ends": ends, "statuses": statuses, "ended": ended},
        )
        self._emit_many(conn, pending, SUBSCRIPTION_TOPIC, "subscription.activated", activated)
        self._emit_many(conn, pending, SUBSCRIPTION_TOPIC, "subscription.canceled", canceled)

    def invoice(self, invoice_id: uuid.UUID) -> Invoice:
        with self.engine.connect() as conn:
            return _load_invoice(conn, invoice_id)

    def invoices(self, organization_id: str, *, status: str | None = None) -> pl.DataFrame:
        """Invoices of the organization, newest first, with the customer's external id."""
        query = (
            "SELECT i.number, i.status, c.external_id AS customer, i.currency, i.subtotal, "
            "i.discount, "
            "i.tax, i.total, i.credits_applied, i.amount_due, i.amount_paid, i.amount_refunded, "
            "i.period_start, i.period_end, i.issued_at, i.paid_at, i.id::text AS id, "
            "i.created_at FROM "
            "dictamesh_billing_invoices i "
            "JOIN dictamesh_billing_customers c ON c.id = i.customer_id WHERE i.organization_id = "
            ":org"
        )
        params: dict[str, Any] = {"org": organization_id}
        if status:
            query += " AND i.status = :status"
            params["status"] = status
        with self.engine.connect() as conn:
            rows = [
                dict(r._mapping)
                for r in conn.execute(
                    text(query + " ORDER BY i.created_at DESC, i.number DESC"), params
                )
            ]
        schema: dict[str, Any] = {
            "number": pl.String,
            "status": pl.String,
            "customer": pl.String,
            "currency": pl.String,
            **{
                k: pl.Decimal(38, 6)
                for k in (
                    "subtotal",
                    "discount",
                    "tax",
                    "total",
                    "credits_applied",
                    "amount_due",
                    "amount_paid",
                    "amount_refunded",
                )
            },
            "period_start": pl.Datetime("us", "UTC"),
            "period_end": pl.Datetime("us", "UTC"),
            "issued_at": pl.Datetime("us", "UTC"),
            "paid_at": pl.Datetime("us", "UTC"),
            "id": pl.String,
            "created_at": pl.Datetime("us", "UTC"),
        }
        return pl.DataFrame(rows, schema=schema, orient="row")

    def finalize_invoice(self, invoice_id: uuid.UUID, *, at: datetime | None = None) -> Invoice:
        """Issue a draft invoice, as `generate_invoices(finalize=True)` issues a new one.

        It takes the organization's next sequential number, is issued at `at` and due 30 days
        later (paid at once when nothing is due), uses up its ``once`` discounts, takes the
        credits it applied from the customer's balance, moves the subscription past the invoiced
        period when it is still in it, and emits ``invoice.issued``.
        """
        at = _utc(at)
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            invoice = _load_invoice(conn, invoice_id, lock=True)
            invoice = self._finalize(conn, invoice, at, pending)
        self._run_hooks(pending)
        return invoice

    def _finalize(
        self,
        conn: Connection,
        invoice: Invoice,
        at: datetime,
        pending: list[tuple[str, dict[str, Any]]],
    ) -> Invoice:
        """`finalize_invoice` inside the caller's transaction (`invoice` loaded with its lock)."""
        if invoice.status != "draft":
            raise BillingInputError(
                str(invoice.id),
                "status",
                invoice.status,
                f"invoice {invoice.number or invoice.id} is not a draft",
                remedy="only draft invoices are finalized; this one was issued already.",
            )
        if invoice.subscription_id is not None:
            issued = conn.execute(
                text(
                    "SELECT number FROM dictamesh_billing_invoices WHERE subscription_id = :sub "
                    "AND id <> :id AND status IN ('open', 'paid', 'uncollectible') "
                    "AND period_start < :end AND :start < period_end ORDER BY number LIMIT 1"
                ),
                {
                    "sub": invoice.subscription_id,
                    "id": invoice.id,
                    "start": invoice.period_start,
                    "end": invoice.period_end,
                },
            ).scalar()
            if issued is not None:
                raise BillingInputError(
                    str(invoice.id),
                    "period",
                    f"{invoice.period_start:%Y-%m-%d} to {invoice.period_end:%Y-%m-%d}",
                    f"was invoiced meanwhile by invoice {issued}",
                    remedy="void this draft (`transition(invoice_id, 'void')`) instead.",
                )
        # locks in the order generate_invoices takes them (subscription, discounts, organization,
        # customer), so the two cannot deadlock
        subs: list[dict[str, Any]] = []
        if invoice.subscription_id is not None:
            subs = [
                dict(r._mapping)
                for r in conn.execute(
                    text(
                        "SELECT s.*, p.interval FROM dictamesh_billing_subscriptions s JOIN "
                        "dictamesh_billing_plans p ON p.id = s.plan_id WHERE s.id = :id AND "
                        "s.current_period_start = :start AND s.status IN ('active', "
                        "'past_due', 'trialing') FOR UPDATE OF s"
                    ),
                    {"id": invoice.subscription_id, "start": invoice.period_start},
                )
            ]
        if invoice.discount_ids:
            conn.execute(
                text(
                    "UPDATE dictamesh_billing_discounts SET times_applied = times_applied + 1 "
                    "WHERE id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": list(invoice.discount_ids)},
            )
        (number,) = _next_invoice_numbers(conn, invoice.organization_id, 1)
        status = "paid" if invoice.amount_due == 0 else "open"
        conn.execute(
            text(
                "UPDATE dictamesh_billing_invoices SET number = :number, status = :status, "
                "issued_at = :at, due_at = :due, paid_at = CASE WHEN :status = 'paid' THEN "
                "CAST(:at AS timestamptz) ELSE paid_at END WHERE id = :id"
            ),
            {
                "number": number,
                "status": status,
                "at": at,
                "due": at + timedelta(days=30),
                "id": invoice.id,
            },
        )
        owed = max(-invoice.total, ZERO)  # a negative total goes to the balance (Stripe)
        if invoice.credits_applied > 0 or owed > 0:
            conn.execute(
                text(
                    "UPDATE dictamesh_billing_customers SET credit_balance = "
                    "greatest(credit_balance - :used, 0) + :owed WHERE id = :id"
                ),
                {"used": invoice.credits_applied, "owed": owed, "id": invoice.customer_id},
            )
        if subs:  # still in the invoiced period: move it on, as generate_invoices does
            self._advance_periods(conn, subs, pending)
        issued = _load_invoice(conn, invoice.id)
        self._emit_many(
            conn,
            pending,
            INVOICE_TOPIC,
            "invoice.issued",
            [(str(issued.id), _invoice_event(issued))],
        )
        return issued

    def transition(
        self, invoice_id: uuid.UUID, status: str, *, at: datetime | None = None
    ) -> Invoice:
        """Move an invoice along its lifecycle; invalid moves raise.

        ``open`` from ``draft`` issues the invoice (`finalize_invoice`); ``void`` (a draft too:
        it is discarded without taking a number), ``uncollectible`` and ``paid`` only change
        its status.
        """
        at = _utc(at)
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            invoice = _load_invoice(conn, invoice_id, lock=True)
            _check_transition(invoice, status)
            if invoice.status == "draft" and status == "open":
                invoice = self._finalize(conn, invoice, at, pending)
            else:
                conn.execute(
                    text(
                        "UPDATE dictamesh_billing_invoices SET status = :status, "
                        "voided_at = CASE WHEN :status = 'void' THEN CAST(:at AS timestamptz) "
                        "ELSE voided_at END "
                        "WHERE id = :id"
                    ),
                    {"status": status, "at": at, "id": invoice_id},
                )
                self._emit(
                    conn,
                    pending,
                    INVOICE_TOPIC,
                    f"invoice.{status}",
                    str(invoice_id),
                    _invoice_event(invoice) | {"status": status},
                )
                invoice = _load_invoice(conn, invoice_id)
        self._run_hooks(pending)
        return invoice

    def credit_note(self, invoice_id: uuid.UUID, amount: Decimal, reason: str) -> None:
        """Reduce what an open invoice asks for, or credit the customer for a paid one.

        An open invoice whose amount due falls to what was already paid becomes ``paid``
        (``invoice.paid``), and a past-due subscription it belongs to becomes active again.
        """
        if amount <= 0:
            raise BillingInputError(
                str(invoice_id),
                "amount",
                amount,
                "must be positive",
                remedy="give the amount to credit.",
            )
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            invoice = _load_invoice(conn, invoice_id, lock=True)
            if invoice.status not in ("open", "paid"):
                raise BillingError(
                    f"Invoice {invoice.number or invoice_id} is {invoice.status}; credit notes "
                    "apply to open or paid invoices."
                )
            if amount > invoice.total:
                raise BillingInputError(
                    str(invoice_id),
                    "amount",
                    amount,
                    f"exceeds the invoice total {invoice.total}",
                    remedy="credit at most the total.",
                )
            conn.execute(
                text(
                    "INSERT INTO dictamesh_billing_credit_notes (organization_id, invoice_id, "
                    "amount, reason) VALUES (:org, :id, :amount, :reason)"
                ),
                {
                    "org": invoice.organization_id,
                    "id": invoice_id,
                    "amount": amount,
                    "reason": reason,
                },
            )
            settled = False
            if invoice.status == "open":
                due = max(invoice.amount_due - amount, ZERO)
                settled = due <= invoice.amount_paid
                conn.execute(
                    text(
                        "UPDATE dictamesh_billing_invoices SET amount_due = :due, "
                        "status = CASE WHEN :settled THEN 'paid' ELSE status END, "
                        "paid_at = CASE WHEN :settled THEN now() ELSE paid_at END WHERE id = :id"
                    ),
                    {"due": due, "settled": settled, "id": invoice_id},
                )
            else:
                conn.execute(
                    text(
                        "UPDATE dictamesh_billing_customers SET credit_balance = credit_balance + "
                        ":amount WHERE id = :id"
                    ),
                    {"amount": amount, "id": invoice.customer_id},
                )
            self._emit(
                conn,
                pending,
                INVOICE_TOPIC,
                "invoice.credit_note",
                str(invoice_id),
                {"invoice_id": str(invoice_id), "amount": amount, "reason": reason},
            )
            if settled:  # nothing left to pay: the open invoice is paid
                self._emit(
                    conn,
                    pending,
                    INVOICE_TOPIC,
                    "invoice.paid",
                    str(invoice_id),
                    _invoice_event(invoice) | {"status": "paid", "amount_due": due},
                )
                _move_invoice_subscription(
                    self, conn, pending, invoice, to="active", when=("past_due",)
                )
        self._run_hooks(pending)

    # -- payments ----------------------------------------------------------------------------------
    def pay(
        self,
        invoice_id: uuid.UUID,
        *,
        idempotency_key: str,
        provider: PaymentProvider | None = None,
        amount: Decimal | None = None,
    ) -> dict[str, Any]:
        """Collect an invoice through `provider` (default: manual). The same key pays once."""
        provider = provider or ManualProvider()
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            # the invoice lock first: a second request with the same key waits here, then finds
            # the first one's payment instead of calling the provider again
            invoice = _load_invoice(conn, invoice_id, lock=True)
            existing = _payment_by_key(conn, invoice_id, idempotency_key)
            if existing is not None:
                return existing
            if invoice.status not in ("open", "uncollectible"):
                raise BillingError(
                    f"Invoice {invoice.number or invoice_id} is {invoice.status} and cannot be "
                    "paid.",
                    remedy="only open or uncollectible invoices take payments.",
                )
            outstanding = invoice.amount_due - invoice.amount_paid
            amount = outstanding if amount is None else amount
            if amount <= 0:
                raise BillingInputError(
                    idempotency_key,
                    "amount",
                    amount,
                    "must be positive",
                    remedy="pay a positive amount.",
                )
            result = provider.charge(invoice, amount, idempotency_key)
            payment = record_payment(
                conn, invoice, provider.name, idempotency_key, amount, result, self, pending
            )
        self._run_hooks(pending)
        return payment

    def refund(
        self,
        payment_id: uuid.UUID,
        *,
        idempotency_key: str,
        amount: Decimal | None = None,
        provider: PaymentProvider | None = None,
    ) -> dict[str, Any]:
        """Refund (part of) a payment; the same key refunds once."""
        provider = provider or ManualProvider()
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            original = conn.execute(
                text("SELECT * FROM dictamesh_billing_payments WHERE id = :id"), {"id": payment_id}
            ).one_or_none()
            if original is None or original.kind != "payment" or original.status != "succeeded":
                raise BillingError(
                    f"Payment {payment_id} is not a succeeded payment.",
                    remedy="refund a succeeded payment.",
                )
            invoice = _load_invoice(conn, original.invoice_id, lock=True)  # before the key
            existing = _payment_by_key(conn, original.invoice_id, idempotency_key)
            if existing is not None:
                return existing
            amount = Decimal(original.amount) if amount is None else amount
            if not ZERO < amount <= Decimal(original.amount):
                raise BillingInputError(
                    idempotency_key,
                    "amount",
                    amount,
                    f"must be in (0, {original.amount}]",
                    remedy="refund at most the payment.",
                )
            result = provider.refund(original.provider_reference, amount, idempotency_key)
            payment = record_refund(
                conn, invoice, provider.name, idempotency_key, amount, result, self, pending
            )
        self._run_hooks(pending)
        return payment

    def payments(self, invoice_id: uuid.UUID) -> pl.DataFrame:
        with self.engine.connect() as conn:
            rows = [
                dict(r._mapping)
                for r in conn.execute(
                    text(
                        "SELECT id::text AS id, kind, provider, provider_reference, amount, "
                        "currency, status, failure_reason, created_at FROM "
                        "dictamesh_billing_payments WHERE invoice_id = :id ORDER BY created_at"
                    ),
                    {"id": invoice_id},
                )
            ]
        return (
            pl.DataFrame(rows, infer_schema_length=None)
            if rows
            else pl.DataFrame(
                schema={
                    "id": pl.String,
                    "kind": pl.String,
                    "amount": pl.Decimal(38, 6),
                    "status": pl.String,
                }
            )
        )

    # -- coupons and discounts ---------------------------------------------------------------------
    def create_coupon(
        self,
        organization_id: str,
        code: str,
        *,
        percent_off: Decimal | None = None,
        amount_off: Decimal | None = None,
        currency: str | None = None,
        duration: Literal["once", "repeating", "forever"] = "once",
        duration_in_months: int | None = None,
        max_redemptions: int | None = None,
        redeem_by: datetime | None = None,
        name: str | None = None,
    ) -> uuid.UUID:
        """Store a coupon (Stripe semantics); `apply_coupon` turns it into a discount."""
        coupon = Coupon(
            code,
            percent_off,
            amount_off,
            currency,
            duration,
            duration_in_months,
            max_redemptions,
            None if redeem_by is None else _utc(redeem_by),
            name or code,
        )
        with self.engine.begin() as conn:
            _require_organization(conn, organization_id)
            row = conn.execute(
                text(
                    "INSERT INTO dictamesh_billing_coupons (organization_id, code, name, "
                    "percent_off, amount_off, currency, duration, duration_in_months, "
                    "max_redemptions, redeem_by) VALUES (:org, :code, :name, :pct, :amt, :cur, "
                    ":duration, :months, :max, :redeem_by) "
                    "ON CONFLICT (organization_id, code) DO NOTHING RETURNING id"
                ),
                {
                    "org": organization_id,
                    "code": code,
                    "name": coupon.name,
                    "pct": percent_off,
                    "amt": amount_off,
                    "cur": currency,
                    "duration": duration,
                    "months": duration_in_months,
                    "max": max_redemptions,
                    "redeem_by": coupon.redeem_by,
                },
            ).scalar_one_or_none()
        if row is None:
            raise BillingInputError(
                code,
                "code",
                code,
                f"is already a coupon of {organization_id!r}",
                remedy="choose another code (coupons keep their terms once created).",
            )
        return uuid.UUID(str(row))

    def coupons(self, organization_id: str) -> pl.DataFrame:
        """The organization's coupons with how often each was redeemed."""
        return self._listing(
            "SELECT id::text AS id, code, name, percent_off, amount_off, currency, duration, "
            "duration_in_months, max_redemptions, redeem_by, times_redeemed, created_at "
            "FROM dictamesh_billing_coupons WHERE organization_id = :org ORDER BY created_at, code",
            {"org": organization_id},
            COUPON_SCHEMA,
        )

    def apply_coupon(
        self, target: uuid.UUID, code: str, *, at: datetime | None = None
    ) -> uuid.UUID:
        """Apply coupon `code` to a customer (all its subscriptions) or to one subscription.

        `target` is a customer id (`create_customer`) or a subscription id (`subscribe`).
        Returns the discount id. A ``repeating`` coupon applied to a subscription counts its
        months from the start of the subscription's current (not yet invoiced) period.
        """
        at = _utc(at)
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            sub = conn.execute(
                text(
                    "SELECT s.*, p.currency FROM dictamesh_billing_subscriptions s JOIN "
                    "dictamesh_billing_plans p ON p.id = s.plan_id WHERE s.id = :id"
                ),
                {"id": target},
            ).one_or_none()
            if sub is not None:
                org, customer_id, currency = sub.organization_id, sub.customer_id, sub.currency
                if sub.status == "canceled":
                    raise BillingError(
                        f"Subscription {target} is canceled; a coupon cannot apply to it.",
                        remedy="apply the coupon to an active subscription or to the customer.",
                    )
            else:
                customer = conn.execute(
                    text(
                        "SELECT organization_id, id, currency FROM dictamesh_billing_customers "
                        "WHERE id = :id"
                    ),
                    {"id": target},
                ).one_or_none()
                if customer is None:
                    raise BillingInputError(
                        str(target),
                        "target",
                        target,
                        "is neither a customer id nor a subscription id",
                        remedy="pass the id returned by create_customer or subscribe.",
                    )
                org, customer_id, currency = customer
            coupon = conn.execute(
                text(
                    "SELECT * FROM dictamesh_billing_coupons WHERE organization_id = :org AND "
                    "code = :code FOR UPDATE"
                ),
                {"org": org, "code": code},
            ).one_or_none()
            if coupon is None:
                known = conn.execute(
                    text("SELECT code FROM dictamesh_billing_coupons WHERE organization_id = :org"),
                    {"org": org},
                ).scalars()
                raise UnknownNameError("coupon", code, known)
            if coupon.redeem_by is not None and at > coupon.redeem_by:
                raise BillingInputError(
                    code,
                    "redeem_by",
                    coupon.redeem_by.isoformat(),
                    f"has passed (applying at {at.isoformat()})",
                    remedy="the coupon can no longer be redeemed; create a new coupon.",
                )
            if (
                coupon.max_redemptions is not None
                and coupon.times_redeemed >= coupon.max_redemptions
            ):
                raise BillingInputError(
                    code,
                    "max_redemptions",
                    coupon.max_redemptions,
                    f"is reached (redeemed {coupon.times_redeemed} times)",
                    remedy="the coupon is used up; create a new coupon.",
                )
            if coupon.amount_off is not None and coupon.currency != currency:
                raise BillingInputError(
                    code,
                    "currency",
                    coupon.currency,
                    f"does not match {currency}, the currency of {target}",
                    remedy=f"use a percent_off coupon or an amount_off coupon in {currency}.",
                )
            duplicate = conn.execute(
                text(
                    "SELECT id FROM dictamesh_billing_discounts WHERE coupon_id = :coupon AND "
                    "customer_id = :customer AND subscription_id IS NOT DISTINCT FROM :sub AND "
                    "removed_at IS NULL AND (ends_at IS NULL OR ends_at > :at) AND NOT "
                    "(:once AND times_applied > 0)"
                ),
                {
                    "coupon": coupon.id,
                    "customer": customer_id,
                    "sub": None if sub is None else sub.id,
                    "at": at,
                    "once": coupon.duration == "once",
                },
            ).scalar_one_or_none()
            if duplicate is not None:
                raise BillingError(
                    f"Coupon {code!r} is already applied to {target} (discount {duplicate}).",
                    remedy="remove that discount first (remove_discount) to apply it again.",
                )
            ends: datetime | None = None
            if coupon.duration == "repeating":
                anchor = at
                if sub is not None and sub.current_period_start <= at < sub.current_period_end:
                    anchor = sub.current_period_start
                ends = add_interval(anchor, "month", coupon.duration_in_months)
                if ends <= at:
                    ends = add_interval(at, "month", coupon.duration_in_months)
            discount_id = conn.execute(
                text(
                    "INSERT INTO dictamesh_billing_discounts (organization_id, coupon_id, "
                    "customer_id, subscription_id, starts_at, ends_at) VALUES (:org, :coupon, "
                    ":customer, :sub, :starts, :ends) RETURNING id"
                ),
                {
                    "org": org,
                    "coupon": coupon.id,
                    "customer": customer_id,
                    "sub": None if sub is None else sub.id,
                    "starts": at,
                    "ends": ends,
                },
            ).scalar_one()
            conn.execute(
                text(
                    "UPDATE dictamesh_billing_coupons SET times_redeemed = times_redeemed + 1 "
                    "WHERE id = :id"
                ),
                {"id": coupon.id},
            )
            key = str(target)
            self._emit(
                conn,
                pending,
                SUBSCRIPTION_TOPIC,
                "discount.applied",
                key,
                {
                    "discount_id": str(discount_id),
                    "organization_id": org,
                    "customer_id": str(customer_id),
                    "subscription_id": None if sub is None else str(sub.id),
                    "coupon": code,
                    "starts_at": at.isoformat(),
                    "ends_at": None if ends is None else ends.isoformat(),
                },
            )
        self._run_hooks(pending)
        return uuid.UUID(str(discount_id))

    def remove_discount(self, discount_id: uuid.UUID, *, at: datetime | None = None) -> None:
        """End a discount: invoices generated from `at` on no longer get it."""
        at = _utc(at)
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            row = conn.execute(
                text(
                    "SELECT customer_id, subscription_id, removed_at FROM "
                    "dictamesh_billing_discounts WHERE id = :id FOR UPDATE"
                ),
                {"id": discount_id},
            ).one_or_none()
            if row is None:
                raise BillingInputError(
                    str(discount_id),
                    "discount_id",
                    discount_id,
                    "is not a discount",
                    remedy="check the id (wb.billing.discounts(customer_id) lists them).",
                )
            if row.removed_at is not None:
                raise BillingError(
                    f"Discount {discount_id} was already removed at {row.removed_at.isoformat()}.",
                    remedy="nothing to do.",
                )
            conn.execute(
                text("UPDATE dictamesh_billing_discounts SET removed_at = :at WHERE id = :id"),
                {"at": at, "id": discount_id},
            )
            key = str(row.subscription_id or row.customer_id)
            self._emit(
                conn,
                pending,
                SUBSCRIPTION_TOPIC,
                "discount.removed",
                key,
                {"discount_id": str(discount_id), "at": at.isoformat()},
            )
        self._run_hooks(pending)

    def discounts(self, customer_id: uuid.UUID, *, at: datetime | None = None) -> pl.DataFrame:
        """The customer's discounts (also removed and used-up ones); `active` is as of `at`."""
        at = _utc(at)
        with self.engine.connect() as conn:
            rows = [
                dict(r._mapping)
                for r in conn.execute(
                    text(
                        "SELECT d.id::text AS id, c.code, c.name, c.percent_off, c.amount_off, "
                        "c.currency, c.duration, c.duration_in_months, "
                        "d.subscription_id::text AS subscription_id, d.starts_at, d.ends_at, "
                        "d.removed_at, d.times_applied, (d.removed_at IS NULL AND d.starts_at <= "
                        ":at AND (d.ends_at IS NULL OR d.ends_at > :at) AND NOT (c.duration = "
                        "'once' AND d.times_applied > 0)) AS active "
                        "FROM dictamesh_billing_discounts d JOIN dictamesh_billing_coupons c ON "
                        "c.id = d.coupon_id WHERE d.customer_id = :customer "
                        "ORDER BY d.starts_at, d.created_at, d.id"
                    ),
                    {"customer": customer_id, "at": at},
                )
            ]
        return pl.DataFrame(rows, schema=DISCOUNT_SCHEMA, orient="row")

    # -- tax rates ---------------------------------------------------------------------------------
    def create_tax_rate(
        self,
        organization_id: str,
        display_name: str,
        percentage: Decimal,
        *,
        inclusive: bool = False,
        jurisdiction: str | None = None,
        country: str | None = None,
    ) -> uuid.UUID:
        """A tax rate in percent (0-100); exclusive rates add tax, inclusive ones are contained."""
        TaxRate(display_name, display_name, percentage, inclusive)
        if country is not None and not (len(country) == 2 and country.isalpha()):
            raise BillingInputError(
                display_name,
                "country",
                country,
                "is not a two-letter ISO 3166 country code",
                remedy="use e.g. 'DE' or 'US', or leave it out.",
            )
        with self.engine.begin() as conn:
            _require_organization(conn, organization_id)
            row = conn.execute(
                text(
                    "INSERT INTO dictamesh_billing_tax_rates (organization_id, display_name, "
                    "percentage, inclusive, jurisdiction, country) VALUES (:org, :name, :pct, "
                    ":inclusive, :jurisdiction, :country) RETURNING id"
                ),
                {
                    "org": organization_id,
                    "name": display_name,
                    "pct": percentage,
                    "inclusive": inclusive,
                    "jurisdiction": jurisdiction,
                    "country": None if country is None else country.upper(),
                },
            ).scalar_one()
        return uuid.UUID(str(row))

    def archive_tax_rate(self, tax_rate_id: uuid.UUID) -> None:
        """Deactivate a rate: it can no longer be given to customers; those who have it keep it."""
        with self.engine.begin() as conn:
            done = conn.execute(
                text(
                    "UPDATE dictamesh_billing_tax_rates SET active = false WHERE id = :id "
                    "RETURNING id"
                ),
                {"id": tax_rate_id},
            ).scalar_one_or_none()
        if done is None:
            raise BillingInputError(
                str(tax_rate_id),
                "tax_rate_id",
                tax_rate_id,
                "is not a tax rate",
                remedy="check the id (wb.billing.tax_rates(org) lists them).",
            )

    def set_tax_rates(self, customer_id: uuid.UUID, tax_rate_ids: Sequence[uuid.UUID]) -> None:
        """Replace the customer's tax rates (applied in this order to every invoice line)."""
        ids = list(tax_rate_ids)
        with self.engine.begin() as conn:
            customer = conn.execute(
                text(
                    "SELECT organization_id FROM dictamesh_billing_customers WHERE id = :id "
                    "FOR UPDATE"
                ),
                {"id": customer_id},
            ).scalar_one_or_none()
            if customer is None:
                raise BillingInputError(
                    str(customer_id),
                    "customer_id",
                    customer_id,
                    "is not a customer",
                    remedy="pass the id returned by create_customer.",
                )
            rates = {
                r.id: r
                for r in conn.execute(
                    text(
                        "SELECT id, organization_id, active FROM dictamesh_billing_tax_rates "
                        "WHERE id = ANY(:ids)"
                    ),
                    {"ids": ids},
                )
            }
            current = set(
                conn.execute(
                    text(
                        "SELECT tax_rate_id FROM dictamesh_billing_customer_tax_rates WHERE "
                        "customer_id = :id"
                    ),
                    {"id": customer_id},
                ).scalars()
            )
            for i, rate_id in enumerate(ids):
                rate = rates.get(rate_id)
                problem = None
                if rate is None or rate.organization_id != customer:
                    problem = f"is not a tax rate of {customer!r}"
                elif not rate.active and rate_id not in current:
                    problem = "is archived"
                elif rate_id in ids[:i]:
                    problem = "is listed twice"
                if problem:
                    raise BillingInputError(
                        f"tax_rate_ids[{i}]",
                        "tax_rate_id",
                        rate_id,
                        problem,
                        remedy="pass active tax rates of the customer's organization, once each "
                        "(wb.billing.tax_rates(org) lists them).",
                    )
            conn.execute(
                text("DELETE FROM dictamesh_billing_customer_tax_rates WHERE customer_id = :id"),
                {"id": customer_id},
            )
            if ids:
                conn.execute(
                    text(
                        "INSERT INTO dictamesh_billing_customer_tax_rates (customer_id, "
                        "tax_rate_id, position) VALUES (:customer, :rate, :position)"
                    ),
                    [
                        {"customer": customer_id, "rate": rate_id, "position": i}
                        for i, rate_id in enumerate(ids)
                    ],
                )

    def tax_rates(
        self, organization_id: str, *, customer_id: uuid.UUID | None = None
    ) -> pl.DataFrame:
        """The organization's tax rates, or those of one customer (in their order)."""
        if customer_id is None:
            query = (
                "SELECT t.id::text AS id, t.display_name, t.percentage, t.inclusive, "
                "t.jurisdiction, t.country, t.active, t.created_at FROM "
                "dictamesh_billing_tax_rates t WHERE t.organization_id = :org "
                "ORDER BY t.created_at, t.id"
            )
        else:
            query = (
                "SELECT t.id::text AS id, t.display_name, t.percentage, t.inclusive, "
                "t.jurisdiction, t.country, t.active, t.created_at FROM "
                "dictamesh_billing_customer_tax_rates l JOIN dictamesh_billing_tax_rates t ON "
                "t.id = l.tax_rate_id WHERE t.organization_id = :org AND l.customer_id = "
                ":customer ORDER BY l.position"
            )
        with self.engine.connect() as conn:
            rows = [
                dict(r._mapping)
                for r in conn.execute(
                    text(query), {"org": organization_id, "customer": customer_id}
                )
            ]
        return pl.DataFrame(rows, schema=TAX_RATE_SCHEMA, orient="row")

    # -- FX and analytics --------------------------------------------------------------------------
    def set_fx_rate(
        self, currency: str, day: date, rate: Decimal, *, reporting_currency: str = "USD"
    ) -> None:
        _check_currency(currency, f"{currency}@{day}")
        _check_currency(reporting_currency, f"{currency}@{day}")
        if rate <= 0:
            raise BillingInputError(
                f"{currency}@{day}",
                "rate",
                rate,
                "must be positive",
                remedy="give units of the reporting currency per unit.",
            )
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO dictamesh_billing_fx_rates (currency, reporting_currency, date, "
                    "rate) VALUES "
                    "(:c, :r, :d, :rate) ON CONFLICT (currency, reporting_currency, date) DO "
                    "UPDATE SET rate = EXCLUDED.rate"
                ),
                {"c": currency, "r": reporting_currency, "d": day, "rate": rate},
            )

    def fx_rates(self, reporting_currency: str = "USD") -> pl.DataFrame:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT currency, date, rate FROM dictamesh_billing_fx_rates WHERE "
                    "reporting_currency = :r ORDER BY currency, date"
                ),
                {"r": reporting_currency},
            ).all()
        return pl.DataFrame(
            [(r[0], r[1], float(r[2])) for r in rows],
            schema=FX_SCHEMA,
            orient="row",
        )

    def intervals(self, organization_id: str | None = None) -> pl.DataFrame:
        """The subscription price history in the shape `mrr_movements` reads.

        Recurring discounts (``repeating`` and ``forever`` coupons applied with `apply_coupon`)
        are deducted in ``discount_amount`` while they run: an interval is split where one
        starts, ends or is removed. ``once`` discounts are not recurring and do not count.
        """
        query = (
            "SELECT c.external_id AS customer_id, i.subscription_id::text AS subscription_id, "
            "i.valid_from, "
            "i.valid_to, i.amount, i.currency, i.interval, i.discount_amount, i.is_trial, "
            "i.cancel_scheduled_at, i.customer_id AS customer "
            "FROM dictamesh_billing_subscription_intervals i JOIN dictamesh_billing_customers c ON "
            "c.id = i.customer_id"
        )
        discounts_query = (
            "SELECT d.customer_id, d.subscription_id::text, d.starts_at, "
            "least(d.ends_at, d.removed_at), c.code, c.percent_off, c.amount_off, c.currency "
            "FROM dictamesh_billing_discounts d JOIN dictamesh_billing_coupons c ON "
            "c.id = d.coupon_id WHERE c.duration <> 'once' AND (d.removed_at IS NULL OR "
            "d.removed_at > d.starts_at)"
        )
        params: dict[str, Any] = {}
        if organization_id:
            query += " WHERE i.organization_id = :org"
            discounts_query += " AND d.organization_id = :org"
            params["org"] = organization_id
        with self.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(text(query + " ORDER BY i.valid_from"), params)]
            windows: dict[Any, list[tuple[str | None, datetime, datetime | None, Coupon]]] = (
                defaultdict(list)
            )
            for customer, sub, starts, stops, code, pct, amt, cur in conn.execute(
                text(discounts_query + " ORDER BY d.starts_at, d.created_at, d.id"), params
            ):
                coupon = Coupon(
                    code,
                    None if pct is None else Decimal(pct),
                    None if amt is None else Decimal(amt),
                    cur,
                )
                windows[customer].append((sub, starts, stops, coupon))
        out = []
        for r in rows:
            valid_from, valid_to, amount, currency = r[2], r[3], Decimal(r[4]), r[5]
            legacy = Decimal(r[7])
            mine = [w for w in windows.get(r[10], ()) if w[0] is None or w[0] == r[1]]
            if not mine:
                out.append((*r[:4], float(amount), r[5], r[6], float(legacy), r[8], r[9]))
                continue
            cuts = sorted(
                {
                    t
                    for _, starts, stops, _ in mine
                    for t in (starts, stops)
                    if t is not None and valid_from < t and (valid_to is None or t < valid_to)
                }
            )
            bounds: list[datetime] = [valid_from, *cuts]
            for lo, hi in itertools.zip_longest(bounds, [*cuts, valid_to]):
                active = [
                    coupon
                    for _, starts, stops, coupon in mine
                    if starts <= lo and (stops is None or lo < stops)
                ]
                off = legacy + _recurring_discount(amount - legacy, active, currency)
                out.append((r[0], r[1], lo, hi, float(amount), r[5], r[6], float(off), r[8], r[9]))
        return pl.DataFrame(
            out,
            schema=INTERVAL_SCHEMA,
            orient="row",
        )

    def analysis(
        self,
        *,
        start: date | datetime,
        end: date | datetime,
        organization_id: str | None = None,
        reporting_currency: str = "USD",
        churn_recognition: str = "at_subscription_end",
    ) -> MrrAnalysis:
        """MRR movements, metrics and cohorts of the workbench's own subscriptions."""
        fx = self.fx_rates(reporting_currency)
        return analyse(
            self.intervals(organization_id),
            fx if fx.height else None,
            reporting_currency=reporting_currency,
            churn_recognition=churn_recognition,
            start=start,
            end=end,
        )

    # -- internals ---------------------------------------------------------------------------------
    def _set_status(
        self,
        subscription_id: uuid.UUID,
        status: str,
        allowed: set[str],
        at: datetime,
        *,
        close: bool,
    ) -> None:
        pending: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            sub = self._subscription(conn, subscription_id, lock=True)
            self._require_status(sub, allowed, f"mark it {status}")
            if close and sub["cancel_at_period_end"]:
                raise BillingError(
                    f"Subscription {sub['id']} is set to cancel at the end of its period; "
                    f"cannot mark it {status}.",
                    remedy="cancel it now (`cancel(subscription)`) or let the period end.",
                )
            if close:
                self._invoice_served_time(conn, sub, at, pending)
            conn.execute(
                text(
                    "UPDATE dictamesh_billing_subscriptions SET status = :s, updated_at = now() "
                    "WHERE id = :id"
                ),
                {"s": status, "id": subscription_id},
            )
            if close:
                self._close_intervals(conn, subscription_id, at)
            self._emit(
                conn,
                pending,
                SUBSCRIPTION_TOPIC,
                f"subscription.{status}",
                str(subscription_id),
                {"subscription_id": str(subscription_id), "at": at.isoformat()},
            )
        self._run_hooks(pending)

    @staticmethod
    def _require_status(sub: dict[str, Any], allowed: set[str], action: str) -> None:
        if sub["status"] not in allowed:
            raise BillingError(
                f"Subscription {sub['id']} is {sub['status']}; cannot {action}.",
                remedy=f"this needs a subscription that is {' or '.join(sorted(allowed))}.",
            )

    def require_organization(self, organization_id: str) -> None:
        """Stop with a did-you-mean when `organization_id` is not a billing organization."""
        with self.engine.connect() as conn:
            _require_organization(conn, organization_id)

    @staticmethod
    def _customer(conn: Connection, organization_id: str, external_id: str) -> dict[str, Any]:
        row = conn.execute(
            text(
                "SELECT * FROM dictamesh_billing_customers WHERE organization_id = :org AND "
                "external_id = :ext"
            ),
            {"org": organization_id, "ext": external_id},
        ).one_or_none()
        if row is None:
            raise BillingInputError(
                external_id,
                "customer",
                external_id,
                f"is not a customer of {organization_id!r}",
                remedy="create it with create_customer.",
            )
        return dict(row._mapping)

    @staticmethod
    def _plan(conn: Connection, organization_id: str, code: str) -> dict[str, Any]:
        row = conn.execute(
            text(
                "SELECT * FROM dictamesh_billing_plans WHERE organization_id = :org AND code = "
                ":code ORDER BY version DESC LIMIT 1"
            ),
            {"org": organization_id, "code": code},
        ).one_or_none()
        if row is None:
            known = (
                conn.execute(
                    text(
                        "SELECT DISTINCT code FROM dictamesh_billing_plans WHERE organization_id = "
                        ":org"
                    ),
                    {"org": organization_id},
                )
                .scalars()
                .all()
            )
            raise BillingInputError(
                code,
                "plan",
                code,
                f"is not a plan of {organization_id!r}",
                remedy=f"use one of: {', '.join(known) or 'none yet (create_plan)'}.",
            )
        return dict(row._mapping)

    @staticmethod
    def _plan_by_id(conn: Connection, plan_id: uuid.UUID) -> dict[str, Any]:
        return dict(
            conn.execute(
                text("SELECT * FROM dictamesh_billing_plans WHERE id = :id"), {"id": plan_id}
            )
            .one()
            ._mapping
        )

    @staticmethod
    def _subscription(
        conn: Connection, subscription_id: uuid.UUID, *, lock: bool = False
    ) -> dict[str, Any]:
        row = conn.execute(
            text(
                "SELECT * FROM dictamesh_billing_subscriptions WHERE id = :id FOR UPDATE"
                if lock
                else "SELECT * FROM dictamesh_billing_subscriptions WHERE id = :id"
            ),
            {"id": subscription_id},
        ).one_or_none()
        if row is None:
            raise BillingInputError(
                str(subscription_id),
                "subscription_id",
                subscription_id,
                "is not a subscription",
                remedy="check the id (wb.billing.intervals() lists them).",
            )
        return dict(row._mapping)

    @staticmethod
    def _open_interval(
        conn: Connection,
        organization_id: str,
        subscription_id: Any,
        customer_id: Any,
        plan: dict[str, Any],
        start: datetime,
        discount: Decimal,
        *,
        trial: bool = False,
        until: datetime | None = None,
    ) -> None:
        conn.execute(
            text(
                "INSERT INTO dictamesh_billing_subscription_intervals (organization_id, "
                "subscription_id, "
                "customer_id, plan_id, valid_from, valid_to, amount, currency, interval, "
                "discount_amount, "
                "is_trial) VALUES (:org, :sub, :customer, :plan, :start, :until, :amount, "
                ":currency, "
                ":interval, :discount, :trial)"
            ),
            {
                "org": organization_id,
                "sub": subscription_id,
                "customer": customer_id,
                "plan": plan["id"],
                "start": start,
                "until": until if trial else None,
                "amount": plan["amount"],
                "currency": plan["currency"],
                "interval": plan["interval"],
                "discount": discount,
                "trial": trial,
            },
        )

    @staticmethod
    def _close_intervals(
        conn: Connection, subscription_id: Any, at: datetime, *, scheduled: datetime | None = None
    ) -> None:
        """End the subscription's price history at `at`: later intervals go, the current closes."""
        conn.execute(
            text(
                "DELETE FROM dictamesh_billing_subscription_intervals WHERE subscription_id = :sub "
                "AND valid_from >= :at"
            ),
            {"sub": subscription_id, "at": at},
        )
        conn.execute(
            text(
                "UPDATE dictamesh_billing_subscription_intervals SET valid_to = :at, "
                "cancel_scheduled_at = coalesce(CAST(:scheduled AS timestamptz), "
                "cancel_scheduled_at) "
                "WHERE subscription_id = :sub AND valid_from < :at AND (valid_to IS NULL OR "
                "valid_to > :at)"
            ),
            {"sub": subscription_id, "at": at, "scheduled": scheduled},
        )


# -- shared by services, the usage sink and webhooks ----------------------------------------------
INVOICE_COLUMNS = (
    "id",
    "organization_id",
    "customer_id",
    "subscription_id",
    "number",
    "status",
    "currency",
    "period_start",
    "period_end",
    "subtotal",
    "discount",
    "tax",
    "total",
    "credits_applied",
    "amount_due",
    "coupons",
    "tax_inclusive",
    "tax_breakdown",
    "issued_at",
    "due_at",
    "paid_at",
)
LINE_COLUMNS = (
    "invoice_id",
    "position",
    "description",
    "kind",
    "quantity",
    "amount",
    "discount",
    "tax_rate",
    "tax",
    "tax_inclusive",
)


MONEY = pl.Decimal(38, 6)
ORGANIZATION_SCHEMA: dict[str, Any] = {
    "id": pl.String,
    "name": pl.String,
    "currency": pl.String,
    "invoice_prefix": pl.String,
    "customers": pl.Int64,
    "created_at": pl.Datetime("us", "UTC"),
}
SUBSCRIPTION_STATUSES = ("trialing", "active", "past_due", "paused", "canceled")
CUSTOMER_SCHEMA: dict[str, Any] = {
    "id": pl.String,
    "external_id": pl.String,
    "name": pl.String,
    "email": pl.String,
    "currency": pl.String,
    "credit_balance": MONEY,
    "created_at": pl.Datetime("us", "UTC"),
}
PLAN_SCHEMA: dict[str, Any] = {
    "code": pl.String,
    "version": pl.Int64,
    "name": pl.String,
    "amount": MONEY,
    "currency": pl.String,
    "interval": pl.String,
    "trial_days": pl.Int64,
    "usage_charges": pl.Int64,
    "live_subscriptions": pl.Int64,
    "id": pl.String,
    "created_at": pl.Datetime("us", "UTC"),
}
SUBSCRIPTION_SCHEMA: dict[str, Any] = {
    "id": pl.String,
    "customer": pl.String,
    "plan": pl.String,
    "plan_version": pl.Int64,
    "status": pl.String,
    "amount": MONEY,
    "currency": pl.String,
    "interval": pl.String,
    "started_at": pl.Datetime("us", "UTC"),
    "current_period_start": pl.Datetime("us", "UTC"),
    "current_period_end": pl.Datetime("us", "UTC"),
    "trial_end": pl.Datetime("us", "UTC"),
    "cancel_at_period_end": pl.Boolean,
    "ended_at": pl.Datetime("us", "UTC"),
}
COUPON_SCHEMA: dict[str, Any] = {
    "id": pl.String,
    "code": pl.String,
    "name": pl.String,
    "percent_off": MONEY,
    "amount_off": MONEY,
    "currency": pl.String,
    "duration": pl.String,
    "duration_in_months": pl.Int64,
    "max_redemptions": pl.Int64,
    "redeem_by": pl.Datetime("us", "UTC"),
    "times_redeemed": pl.Int64,
    "created_at": pl.Datetime("us", "UTC"),
}
DISCOUNT_SCHEMA: dict[str, Any] = {
    "id": pl.String,
    "code": pl.String,
    "name": pl.String,
    "percent_off": MONEY,
    "amount_off": MONEY,
    "currency": pl.String,
    "duration": pl.String,
    "duration_in_months": pl.Int64,
    "subscription_id": pl.String,
    "starts_at": pl.Datetime("us", "UTC"),
    "ends_at": pl.Datetime("us", "UTC"),
    "removed_at": pl.Datetime("us", "UTC"),
    "times_applied": pl.Int64,
    "active": pl.Boolean,
}
TAX_RATE_SCHEMA: dict[str, Any] = {
    "id": pl.String,
    "display_name": pl.String,
    "percentage": MONEY,
    "inclusive": pl.Boolean,
    "jurisdiction": pl.String,
    "country": pl.String,
    "active": pl.Boolean,
    "created_at": pl.Datetime("us", "UTC"),
}


def _tax_rates_of(
    conn: Connection, customers: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[TaxRate]]:
    """Every tax rate of the customers, in their order: one query for a whole batch."""
    rates: dict[uuid.UUID, list[TaxRate]] = defaultdict(list)
    rows = conn.execute(
        text(
            "SELECT l.customer_id, t.id::text, t.display_name, t.percentage, t.inclusive FROM "
            "dictamesh_billing_customer_tax_rates l JOIN dictamesh_billing_tax_rates t ON t.id = "
            "l.tax_rate_id WHERE l.customer_id = ANY(:customers) ORDER BY l.customer_id, "
            "l.position"
        ),
        {"customers": list(customers)},
    )
    cache: dict[str, TaxRate] = {}
    for customer, rate_id, name, percentage, inclusive in rows:
        if rate_id not in cache:
            cache[rate_id] = TaxRate(rate_id, name, Decimal(percentage), bool(inclusive))
        rates[customer].append(cache[rate_id])
    return rates


def _discounts_of(
    conn: Connection, customers: Sequence[uuid.UUID], at: datetime
) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """The customers' discounts that can still apply at `at` (locked): one query per batch."""
    found: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    rows = conn.execute(
        text(
            "SELECT d.id, d.customer_id, d.subscription_id, d.starts_at, d.ends_at, "
            "d.times_applied, c.code, c.name, c.percent_off, c.amount_off, c.currency, "
            "c.duration FROM dictamesh_billing_discounts d JOIN dictamesh_billing_coupons c ON "
            "c.id = d.coupon_id WHERE d.customer_id = ANY(:customers) AND (d.removed_at IS NULL "
            "OR d.removed_at > :at) AND d.starts_at <= :at "
            "AND NOT (c.duration = 'once' AND d.times_applied > 0) "
            "ORDER BY d.starts_at, d.created_at, d.id FOR UPDATE OF d"
        ),
        {"customers": list(customers), "at": at},
    )
    coupons: dict[str, Coupon] = {}
    for row in rows:
        discount_id, customer, sub, starts, ends, _, code, name, pct, amt, cur, duration = row
        coupon = coupons.get(code)
        if coupon is None:
            coupon = coupons[code] = Coupon(
                code,
                None if pct is None else Decimal(pct),
                None if amt is None else Decimal(amt),
                cur,
                name=name,
            )
        found[customer].append(
            {
                "id": discount_id,
                "subscription_id": sub,
                "starts_at": starts,
                "ends_at": ends,
                "duration": duration,
                "coupon": coupon,
            }
        )
    return found


def _discount_covers(
    discount: dict[str, Any], sub: dict[str, Any], has_base: bool, once_used: set[Any]
) -> bool:
    """Whether `discount` applies to the invoice of `sub`'s current service period.

    ``once``: the first invoice (with something to discount) generated after it was applied.
    ``repeating`` / ``forever``: periods that end after the discount started and start before
    it ends. An ``amount_off`` in another currency than the invoice's is skipped.
    """
    if discount["subscription_id"] is not None and discount["subscription_id"] != sub["id"]:
        return False
    coupon: Coupon = discount["coupon"]
    if coupon.amount_off is not None and coupon.currency != sub["currency"]:
        return False
    if discount["duration"] == "once":
        return has_base and discount["id"] not in once_used
    ends = discount["ends_at"]
    return bool(
        discount["starts_at"] < sub["current_period_end"]
        and (ends is None or sub["current_period_start"] < ends)
    )


def _recurring_discount(amount: Decimal, coupons: Sequence[Coupon], currency: str) -> Decimal:
    """What recurring coupons take off `amount`, in the order the invoice applies them."""
    off = ZERO
    for coupon in coupons:
        remaining = amount - off
        if remaining <= 0:
            break
        if coupon.percent_off is not None:
            cut = round_money(remaining * coupon.percent_off / 100, currency)
        elif coupon.currency == currency:
            cut = round_money(coupon.amount_off or ZERO, currency)
        else:
            continue
        off += min(cut, remaining)
    return off


def _copy_rows(
    conn: Connection, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Bulk insert with COPY on the transaction's own connection (fixed table and column names)."""
    if not rows:
        return
    raw = conn.connection.driver_connection
    if raw is None:  # pragma: no cover - a live transaction always has its connection
        raise BillingError("The database connection was closed during the transaction.")
    with (
        raw.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


def _require_organization(conn: Connection, organization_id: str) -> None:
    known = list(conn.execute(text("SELECT id FROM dictamesh_billing_organizations")).scalars())
    if organization_id not in known:
        raise UnknownNameError("organization", organization_id, known)


def _check_currency(currency: str, row: str) -> None:
    if not is_currency(currency):
        raise BillingInputError(
            row,
            "currency",
            currency,
            "is not an ISO 4217 currency code",
            remedy="use e.g. USD or EUR.",
        )


def record_usage(
    conn: Connection,
    organization_id: str,
    event_id: str,
    customer_external_id: str,
    metric_code: str,
    value: Decimal | int | str | None,
    *,
    occurred_at: datetime,
    properties: dict[str, Any] | None = None,
) -> bool:
    metric = conn.execute(
        text(
            "SELECT aggregation FROM dictamesh_billing_metrics WHERE organization_id = :org AND "
            "code = :code"
        ),
        {"org": organization_id, "code": metric_code},
    ).one_or_none()
    if metric is None:
        raise BillingInputError(
            event_id,
            "metric",
            metric_code,
            f"is not a billable metric of {organization_id!r}",
            remedy="create it with create_metric, or fix the event.",
        )
    number: Decimal | None = None
    if value is not None:
        if isinstance(value, float):
            value = str(value)
        try:
            number = Decimal(value)
        except Exception:
            raise BillingInputError(
                event_id, "value", value, "is not a number", remedy="send a decimal number."
            ) from None
        if number < 0:
            raise BillingInputError(
                event_id, "value", number, "is negative", remedy="usage quantities are >= 0."
            )
    elif metric.aggregation in ("sum", "max", "latest"):
        raise BillingInputError(
            event_id,
            "value",
            None,
            f"is required by a {metric.aggregation} metric",
            remedy="send the measured value.",
        )
    customer = conn.execute(
        text(
            "SELECT id FROM dictamesh_billing_customers WHERE organization_id = :org AND "
            "external_id = :ext"
        ),
        {"org": organization_id, "ext": customer_external_id},
    ).scalar_one_or_none()
    if customer is None:
        raise BillingInputError(
            event_id,
            "customer",
            customer_external_id,
            f"is not a customer of {organization_id!r}",
            remedy="create the customer first.",
        )
    inserted = conn.execute(
        text(
            "INSERT INTO dictamesh_billing_usage_events (organization_id, event_id, customer_id, "
            "metric_code, "
            "value, properties, occurred_at) VALUES (:org, :event, :customer, :metric, :value, "
            "CAST(:props AS jsonb), :at) ON CONFLICT DO NOTHING RETURNING event_id"
        ),
        {
            "org": organization_id,
            "event": event_id,
            "customer": customer,
            "metric": metric_code,
            "value": number,
            "props": orjson.dumps(properties or {}).decode(),
            "at": occurred_at,
        },
    ).scalar_one_or_none()
    return inserted is not None


def _usage_aggregates(
    conn: Connection, customers: Iterable[uuid.UUID], start: datetime, end: datetime
) -> dict[tuple[uuid.UUID, str], Decimal]:
    """Every metric of the customers over ``[start, end)``, aggregated as the metric says."""
    return {key: value for key, (value, _) in _usage_totals(conn, customers, start, end).items()}


def _usage_totals(
    conn: Connection, customers: Iterable[uuid.UUID], start: datetime, end: datetime
) -> dict[tuple[uuid.UUID, str], tuple[Decimal, int]]:
    """`_usage_aggregates` with the number of usage events (the transactions of a
    ``percentage`` charge), in the same single query."""
    rows = conn.execute(
        text(
            "SELECT u.customer_id, u.metric_code, CASE m.aggregation "
            "WHEN 'count' THEN count(*)::numeric WHEN 'sum' THEN coalesce(sum(u.value), 0) "
            "WHEN 'max' THEN coalesce(max(u.value), 0) "
            "WHEN 'unique_count' THEN count(DISTINCT u.properties ->> m.field_name)::numeric "
            "ELSE coalesce((array_agg(u.value ORDER BY u.occurred_at DESC, u.event_id DESC))[1], "
            "0) END, count(*) "
            "FROM dictamesh_billing_usage_events u JOIN dictamesh_billing_metrics m "
            "ON m.organization_id = u.organization_id AND m.code = u.metric_code "
            "WHERE u.customer_id = ANY(:customers) AND u.occurred_at >= :start AND u.occurred_at < "
            ":end "
            "GROUP BY u.customer_id, u.metric_code, m.aggregation, m.field_name"
        ),
        {"customers": list(customers), "start": start, "end": end},
    )
    return {(uuid.UUID(str(r[0])), r[1]): (Decimal(r[2]), int(r[3])) for r in rows}


def _load_invoice(conn: Connection, invoice_id: uuid.UUID, *, lock: bool = False) -> Invoice:
    row = conn.execute(
        text(
            "SELECT * FROM dictamesh_billing_invoices WHERE id = :id FOR UPDATE"
            if lock
            else "SELECT * FROM dictamesh_billing_invoices WHERE id = :id"
        ),
        {"id": invoice_id},
    ).one_or_none()
    if row is None:
        raise BillingInputError(
            str(invoice_id),
            "invoice_id",
            invoice_id,
            "is not an invoice",
            remedy="check the id (wb.billing.invoices(org) lists them).",
        )
    lines = tuple(
        dict(r._mapping)
        for r in conn.execute(
            text(
                "SELECT position, description, kind, quantity, amount, discount, tax_rate, tax, "
                "tax_inclusive FROM dictamesh_billing_invoice_lines WHERE invoice_id = :id "
                "ORDER BY position"
            ),
            {"id": invoice_id},
        )
    )
    m = row._mapping
    return Invoice(
        m["id"],
        m["organization_id"],
        m["customer_id"],
        m["subscription_id"],
        m["number"],
        m["status"],
        m["currency"],
        m["period_start"],
        m["period_end"],
        m["subtotal"],
        m["discount"],
        m["tax"],
        m["total"],
        m["credits_applied"],
        m["amount_due"],
        m["amount_paid"],
        lines,
        m["tax_inclusive"],
        tuple(m["tax_breakdown"]),
        tuple(
            {"code": c["code"], "amount": c.get("amount")}
            if isinstance(c, dict)
            else {"code": c, "amount": None}
            for c in m["coupons"]
        ),
        tuple(
            str(c["discount_id"])
            for c in m["coupons"]
            if isinstance(c, dict) and c.get("discount_id")
        ),
    )


def _next_invoice_numbers(conn: Connection, organization_id: str, count: int) -> list[str]:
    """`count` sequential invoice numbers of the organization (its row stays locked to commit)."""
    if count <= 0:
        return []
    row = conn.execute(
        text(
            "UPDATE dictamesh_billing_organizations SET next_invoice_number = "
            "next_invoice_number + :n "
            "WHERE id = :org RETURNING next_invoice_number - :n, invoice_prefix"
        ),
        {"n": count, "org": organization_id},
    ).one()
    return [f"{row[1]}-{int(row[0]) + i:06d}" for i in range(count)]


def _check_transition(invoice: Invoice, status: str) -> None:
    if status not in TRANSITIONS:
        raise BillingInputError(
            str(invoice.id),
            "status",
            status,
            "is not an invoice status",
            remedy=f"use one of {', '.join(TRANSITIONS)}.",
        )
    allowed = ", ".join(sorted(TRANSITIONS[invoice.status]))
    if status not in TRANSITIONS[invoice.status]:
        raise BillingError(
            f"Invoice {invoice.number or invoice.id} is {invoice.status}; it cannot become "
            f"{status}.",
            remedy=f"from {invoice.status} it can become: {allowed or 'nothing (final)'}.",
        )


def _move_invoice_subscription(
    billing: Billing,
    conn: Connection,
    pending: list[tuple[str, dict[str, Any]]],
    invoice: Invoice,
    *,
    to: str,
    when: Sequence[str],
    **details: Any,
) -> None:
    """Set the invoice's subscription to `to` if it is in one of `when`; `subscription.<to>`.

    Payments drive it: a failure makes an active subscription past due, a settled invoice brings
    a past-due one back (`subscription.recovered`).
    """
    if invoice.subscription_id is None:
        return
    moved = conn.execute(
        text(
            "UPDATE dictamesh_billing_subscriptions SET status = :to, updated_at = now() "
            "WHERE id = :id AND status = ANY(:when) RETURNING id, organization_id"
        ),
        {"to": to, "id": invoice.subscription_id, "when": list(when)},
    ).all()
    billing._emit_many(
        conn,
        pending,
        SUBSCRIPTION_TOPIC,
        "subscription.recovered" if to == "active" else f"subscription.{to}",
        [
            (
                str(sub_id),
                {
                    "subscription_id": str(sub_id),
                    "organization_id": org,
                    "invoice_id": str(invoice.id),
                }
                | details,
            )
            for sub_id, org in moved
        ],
    )


def _pending_amount(item: dict[str, Any], period_end: datetime) -> Decimal:
    """A pending line's amount; a proration line covers its time up to the period's end, which
    a pause or a cancellation may have brought forward."""
    if "rate" not in item:
        return Decimal(item["amount"])
    covered_to = datetime.fromisoformat(item["to"])
    if period_end >= covered_to:
        return Decimal(item["amount"])
    return prorate(
        Decimal(item["rate"]),
        datetime.fromisoformat(item["period_start"]),
        covered_to,
        datetime.fromisoformat(item["from"]),
        period_end,
    )


def _invoice_event(invoice: Invoice) -> dict[str, Any]:
    return {
        "invoice_id": str(invoice.id),
        "organization_id": invoice.organization_id,
        "customer_id": str(invoice.customer_id),
        "subscription_id": str(invoice.subscription_id) if invoice.subscription_id else None,
        "number": invoice.number,
        "status": invoice.status,
        "currency": invoice.currency,
        "total": invoice.total,
        "amount_due": invoice.amount_due,
    }


def _payment_by_key(conn: Connection, invoice_id: uuid.UUID, key: str) -> dict[str, Any] | None:
    row = conn.execute(
        text(
            "SELECT p.* FROM dictamesh_billing_payments p JOIN dictamesh_billing_invoices i ON "
            "i.id = :invoice "
            "WHERE p.organization_id = i.organization_id AND p.idempotency_key = :key"
        ),
        {"invoice": invoice_id, "key": key},
    ).one_or_none()
    return None if row is None else dict(row._mapping)


def record_payment(
    conn: Connection,
    invoice: Invoice,
    provider: str,
    key: str,
    amount: Decimal,
    result: ProviderResult,
    billing: Billing,
    pending: list[tuple[str, dict[str, Any]]],
) -> dict[str, Any]:
    """Store a provider's answer about a payment and move the invoice and subscription on.

    Draft and void invoices take no payments (a draft is not issued yet, a void one is
    cancelled): the caller's transaction is refused with a `BillingInputError`.
    """
    if invoice.status in ("draft", "void"):
        raise BillingInputError(
            key,
            "status",
            invoice.status,
            f"invoice {invoice.number or invoice.id} is {invoice.status} and takes no payments",
            remedy=(
                "finalize the draft first (wb.billing.finalize_invoice)"
                if invoice.status == "draft"
                else "refund the payment with the provider; a void invoice cannot be paid"
            )
            + ".",
        )
    row = conn.execute(
        text(
            "INSERT INTO dictamesh_billing_payments (organization_id, invoice_id, kind, provider, "
            "provider_reference, idempotency_key, amount, currency, status, failure_reason) VALUES "
            "(:org, :invoice, 'payment', :provider, :ref, :key, :amount, :currency, :status, "
            ":reason) "
            "RETURNING *"
        ),
        {
            "org": invoice.organization_id,
            "invoice": invoice.id,
            "provider": provider,
            "ref": result.reference,
            "key": key,
            "amount": amount,
            "currency": invoice.currency,
            "status": "succeeded" if result.succeeded else "failed",
            "reason": result.failure_reason,
        },
    ).one()
    data = {
        "payment_id": str(row.id),
        "invoice_id": str(invoice.id),
        "amount": amount,
        "currency": invoice.currency,
        "provider": provider,
    }
    if result.succeeded:
        paid = invoice.amount_paid + amount
        fully = paid >= invoice.amount_due
        conn.execute(
            text(
                "UPDATE dictamesh_billing_invoices SET amount_paid = :paid, status = CASE WHEN "
                ":fully THEN 'paid' ELSE status END, "
                "paid_at = CASE WHEN :fully THEN now() ELSE paid_at END WHERE id = :id"
            ),
            {"paid": paid, "fully": fully, "id": invoice.id},
        )
        billing._emit(conn, pending, PAYMENT_TOPIC, "payment.succeeded", str(invoice.id), data)
        if fully:
            billing._emit(
                conn,
                pending,
                INVOICE_TOPIC,
                "invoice.paid",
                str(invoice.id),
                _invoice_event(invoice) | {"status": "paid"},
            )
            _move_invoice_subscription(
                billing, conn, pending, invoice, to="active", when=("past_due",)
            )
    else:
        _move_invoice_subscription(
            billing,
            conn,
            pending,
            invoice,
            to="past_due",
            when=("active", "trialing"),
            reason=result.failure_reason,
        )
        billing._emit(
            conn,
            pending,
            PAYMENT_TOPIC,
            "payment.failed",
            str(invoice.id),
            data | {"reason": result.failure_reason},
        )
    return dict(row._mapping)


def record_refund(
    conn: Connection,
    invoice: Invoice,
    provider: str,
    key: str,
    amount: Decimal,
    result: ProviderResult,
    billing: Billing,
    pending: list[tuple[str, dict[str, Any]]],
) -> dict[str, Any]:
    row = conn.execute(
        text(
            "INSERT INTO dictamesh_billing_payments (organization_id, invoice_id, kind, provider, "
            "provider_reference, idempotency_key, amount, currency, status, failure_reason) VALUES "
            "(:org, :invoice, 'refund', :provider, :ref, :key, :amount, :currency, :status, "
            ":reason) RETURNING *"
        ),
        {
            "org": invoice.organization_id,
            "invoice": invoice.id,
            "provider": provider,
            "ref": result.reference,
            "key": key,
            "amount": amount,
            "currency": invoice.currency,
            "status": "succeeded" if result.succeeded else "failed",
            "reason": result.failure_reason,
        },
    ).one()
    if result.succeeded:
        conn.execute(
            text(
                "UPDATE dictamesh_billing_invoices SET amount_refunded = amount_refunded + :amount "
                "WHERE id = :id"
            ),
            {"amount": amount, "id": invoice.id},
        )
        billing._emit(
            conn,
            pending,
            PAYMENT_TOPIC,
            "payment.refunded",
            str(invoice.id),
            {"payment_id": str(row.id), "invoice_id": str(invoice.id), "amount": amount},
        )
    return dict(row._mapping)
