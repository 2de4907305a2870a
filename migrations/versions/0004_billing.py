"""Billing: organizations, customers, plans, subscriptions, usage, invoices, payments.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NOW = sa.text("now()")
UUID_DEFAULT = sa.text("gen_random_uuid()")


def _id() -> sa.Column[object]:
    return sa.Column("id", UUID(as_uuid=True), primary_key=True, server_default=UUID_DEFAULT)


def _created() -> sa.Column[object]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW)


def _org() -> sa.Column[object]:
    return sa.Column(
        "organization_id",
        sa.Text,
        sa.ForeignKey("dictamesh_billing_organizations.id", ondelete="CASCADE"),
        nullable=False,
    )


def _money(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.Numeric, nullable=nullable, server_default=None if nullable else "0")


TABLES = (
    "dictamesh_billing_organizations",
    "dictamesh_billing_customers",
    "dictamesh_billing_metrics",
    "dictamesh_billing_plans",
    "dictamesh_billing_subscriptions",
    "dictamesh_billing_subscription_intervals",
    "dictamesh_billing_usage_events",
    "dictamesh_billing_invoices",
    "dictamesh_billing_invoice_lines",
    "dictamesh_billing_credit_notes",
    "dictamesh_billing_payments",
    "dictamesh_billing_webhook_events",
    "dictamesh_billing_fx_rates",
)


def upgrade() -> None:
    op.create_table(
        "dictamesh_billing_organizations",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("invoice_prefix", sa.Text, nullable=False),
        # the next invoice number; taken under a row lock, so numbers are gapless per organization
        sa.Column("next_invoice_number", sa.BigInteger, nullable=False, server_default="1"),
        _created(),
    )
    op.create_table(
        "dictamesh_billing_customers",
        _id(),
        _org(),
        sa.Column("external_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("tax_rate", sa.Numeric, nullable=False, server_default="0"),
        _money("credit_balance"),
        _created(),
        sa.UniqueConstraint(
            "organization_id", "external_id", name="uq_dictamesh_billing_customers_external"
        ),
    )
    op.create_table(
        "dictamesh_billing_metrics",
        _id(),
        _org(),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("aggregation", sa.Text, nullable=False),
        sa.Column("field_name", sa.Text, nullable=True),
        _created(),
        sa.UniqueConstraint("organization_id", "code", name="uq_dictamesh_billing_metrics_code"),
        sa.CheckConstraint(
            "aggregation IN ('count', 'sum', 'max', 'unique_count', 'latest')",
            name="ck_dictamesh_billing_metrics_aggregation",
        ),
    )
    op.create_table(
        "dictamesh_billing_plans",
        _id(),
        _org(),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("interval", sa.Text, nullable=False),
        _money("amount"),
        sa.Column("trial_days", sa.Integer, nullable=False, server_default="0"),
        sa.Column("charges", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        _created(),
        sa.UniqueConstraint(
            "organization_id", "code", "version", name="uq_dictamesh_billing_plans_version"
        ),
    )
    op.create_table(
        "dictamesh_billing_subscriptions",
        _id(),
        _org(),
        sa.Column(
            "customer_id",
            UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_billing_customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "plan_id",
            UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_billing_plans.id"),
            nullable=False,
        ),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trial_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("cancel_scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("discount_amount", sa.Numeric, nullable=False, server_default="0"),
        # unbilled proration lines of mid-period changes, added to the next invoice
        sa.Column("pending_items", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        _created(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint(
            "status IN ('trialing', 'active', 'past_due', 'paused', 'canceled')",
            name="ck_dictamesh_billing_subscriptions_status",
        ),
    )
    op.create_index(
        "idx_dictamesh_billing_subscriptions_customer",
        "dictamesh_billing_subscriptions",
        ["customer_id"],
    )
    # The subscription's price history: one row per interval, the input of the MRR analytics.
    op.create_table(
        "dictamesh_billing_subscription_intervals",
        _id(),
        _org(),
        sa.Column(
            "subscription_id",
            UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_billing_subscriptions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        sa.Column("plan_id", UUID(as_uuid=True), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        _money("amount"),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("interval", sa.Text, nullable=False),
        _money("discount_amount"),
        sa.Column("is_trial", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("cancel_scheduled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "idx_dictamesh_billing_intervals_subscription",
        "dictamesh_billing_subscription_intervals",
        ["subscription_id", "valid_from"],
    )
    op.create_table(
        "dictamesh_billing_usage_events",
        sa.Column("organization_id", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),  # idempotency: one effect per id
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        sa.Column("metric_code", sa.Text, nullable=False),
        sa.Column("value", sa.Numeric, nullable=True),
        sa.Column("properties", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_index(
        "idx_dictamesh_billing_usage_customer_metric",
        "dictamesh_billing_usage_events",
        ["customer_id", "metric_code", "occurred_at"],
    )
    op.create_table(
        "dictamesh_billing_invoices",
        _id(),
        _org(),
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        sa.Column("subscription_id", UUID(as_uuid=True), nullable=True),
        sa.Column("number", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        _money("subtotal"),
        _money("discount"),
        _money("tax"),
        _money("total"),
        _money("credits_applied"),
        _money("amount_due"),
        _money("amount_paid"),
        _money("amount_refunded"),
        sa.Column("coupons", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        _created(),
        sa.UniqueConstraint(
            "organization_id", "number", name="uq_dictamesh_billing_invoices_number"
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'open', 'paid', 'void', 'uncollectible')",
            name="ck_dictamesh_billing_invoices_status",
        ),
    )
    op.create_index(
        "idx_dictamesh_billing_invoices_customer", "dictamesh_billing_invoices", ["customer_id"]
    )
    op.create_index(
        "idx_dictamesh_billing_invoices_status", "dictamesh_billing_invoices", ["status"]
    )
    op.create_table(
        "dictamesh_billing_invoice_lines",
        _id(),
        sa.Column(
            "invoice_id",
            UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_billing_invoices.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("metric_code", sa.Text, nullable=True),
        sa.Column("quantity", sa.Numeric, nullable=False, server_default="1"),
        _money("amount"),
        _money("discount"),
        sa.Column("tax_rate", sa.Numeric, nullable=False, server_default="0"),
        _money("tax"),
    )
    op.create_index(
        "idx_dictamesh_billing_invoice_lines_invoice",
        "dictamesh_billing_invoice_lines",
        ["invoice_id", "position"],
    )
    op.create_table(
        "dictamesh_billing_credit_notes",
        _id(),
        _org(),
        sa.Column("invoice_id", UUID(as_uuid=True), nullable=False),
        _money("amount"),
        sa.Column("reason", sa.Text, nullable=False),
        _created(),
    )
    op.create_table(
        "dictamesh_billing_payments",
        _id(),
        _org(),
        sa.Column("invoice_id", UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),  # payment | refund
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("provider_reference", sa.Text, nullable=True),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        _money("amount"),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.Text, nullable=False),  # succeeded | failed
        sa.Column("failure_reason", sa.Text, nullable=True),
        _created(),
        sa.UniqueConstraint(
            "organization_id", "idempotency_key", name="uq_dictamesh_billing_payments_key"
        ),
    )
    op.create_index(
        "idx_dictamesh_billing_payments_invoice", "dictamesh_billing_payments", ["invoice_id"]
    )
    op.create_table(
        "dictamesh_billing_webhook_events",
        sa.Column("provider", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table(
        "dictamesh_billing_fx_rates",
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("reporting_currency", sa.String(3), primary_key=True),
        sa.Column("date", sa.Date, primary_key=True),
        sa.Column("rate", sa.Numeric, nullable=False),
        sa.CheckConstraint("rate > 0", name="ck_dictamesh_billing_fx_rates_positive"),
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
