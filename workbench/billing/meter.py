"""The billing meter: usage events from ``dictamesh.usage.recorded`` into the usage table.

Event data: ``organization_id, customer`` (the customer's external id), ``metric`` (a billable
metric code), ``value`` (a number >= 0; optional for count and unique_count metrics),
``properties`` (object, optional), ``event_id`` (optional; defaults to the CloudEvent id) and
``occurred_at`` (optional; defaults to the CloudEvent time). The usage row's primary key is
(organization, event id), so a redelivered or re-sent event takes effect once. Events naming an
unknown metric or customer are rejected into the dead-letter topic with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import psycopg

from workbench.billing.service import USAGE_TOPIC
from workbench.events.consumer import ConsumedEvent
from workbench.events.envelope import InvalidEventError

GROUP = "dictamesh.billing-meter"


@dataclass(frozen=True)
class UsageRecord:
    organization_id: str
    event_id: str
    customer: str
    metric: str
    value: Decimal | None
    properties: dict[str, Any]
    occurred_at: datetime


def parse_usage(consumed: ConsumedEvent) -> UsageRecord:
    data = consumed.event.data
    if not isinstance(data, dict):
        raise InvalidEventError("invalid-usage", "A usage event's data must be a JSON object.")
    for name in ("organization_id", "customer", "metric"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise InvalidEventError(
                "invalid-usage", f"Usage event {consumed.event.id}: field {name!r} is missing."
            )
    value: Decimal | None = None
    if data.get("value") is not None:
        try:
            value = Decimal(str(data["value"]))
        except InvalidOperation:
            raise InvalidEventError(
                "invalid-usage",
                f"Usage event {consumed.event.id}: field 'value' = {data['value']!r} is not a "
                "number.",
            ) from None
        if value < 0 or not value.is_finite():
            raise InvalidEventError(
                "invalid-usage",
                f"Usage event {consumed.event.id}: field 'value' = {value} is negative.",
            )
    occurred = consumed.event.time
    if isinstance(data.get("occurred_at"), str):
        try:
            occurred = datetime.fromisoformat(data["occurred_at"])
        except ValueError:
            raise InvalidEventError(
                "invalid-usage",
                f"Usage event {consumed.event.id}: field 'occurred_at' is not an ISO timestamp.",
            ) from None
    return UsageRecord(
        organization_id=data["organization_id"],
        event_id=str(data.get("event_id") or consumed.event.id),
        customer=data["customer"],
        metric=data["metric"],
        value=value,
        properties=dict(data["properties"]) if isinstance(data.get("properties"), dict) else {},
        occurred_at=occurred,
    )


class UsageMeter:
    """Sink of the billing meter consumer group."""

    group: str = GROUP
    topics: Sequence[str] = (USAGE_TOPIC,)

    def __init__(self, group: str = GROUP) -> None:
        self.group = group

    def prepare(self, consumed: ConsumedEvent) -> UsageRecord:
        return parse_usage(consumed)

    def apply(
        self, conn: psycopg.Connection[Any], batch: Sequence[tuple[ConsumedEvent, UsageRecord]]
    ) -> None:
        for _consumed, usage in batch:
            metric = conn.execute(
                "SELECT aggregation FROM dictamesh_billing_metrics "
                "WHERE organization_id = %s AND code = %s",
                (usage.organization_id, usage.metric),
            ).fetchone()
            customer = conn.execute(
                "SELECT id FROM dictamesh_billing_customers "
                "WHERE organization_id = %s AND external_id = %s",
                (usage.organization_id, usage.customer),
            ).fetchone()
            if metric is None or customer is None:
                field, value = (
                    ("metric", usage.metric) if metric is None else ("customer", usage.customer)
                )
                raise psycopg.errors.ForeignKeyViolation(
                    f"usage event {usage.event_id}: field {field!r} = {value!r} is not known in "
                    f"organization {usage.organization_id!r}"
                )
            conn.execute(
                "INSERT INTO dictamesh_billing_usage_events (organization_id, event_id, "
                "customer_id, metric_code, value, properties, occurred_at) "
                "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s) ON CONFLICT DO NOTHING",
                (
                    usage.organization_id,
                    usage.event_id,
                    customer[0],
                    usage.metric,
                    usage.value,
                    orjson.dumps(usage.properties).decode(),
                    usage.occurred_at,
                ),
            )
