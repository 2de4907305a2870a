"""Billing: stored coupons with Stripe durations, discounts, and a tax-rate table.

The per-customer ``tax_rate`` number is replaced by tax-rate rows linked to customers: upgrade
turns every distinct non-zero rate of an organization into an exclusive tax rate ("Tax 19%")
and links its customers; downgrade puts back the sum of each customer's exclusive rates.

Subscriptions get ``trial_ending_notified_at``, so the trial-ending notice goes out once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0008"
down_revision = "0007"
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


def _ref(name: str, table: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(
        name,
        UUID(as_uuid=True),
        sa.ForeignKey(f"{table}.id", ondelete="CASCADE"),
        nullable=nullable,
    )


def upgrade() -> None:
    op.create_table(
        "dictamesh_billing_coupons",
        _id(),
        _org(),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("percent_off", sa.Numeric, nullable=True),
        sa.Column("amount_off", sa.Numeric, nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("duration", sa.Text, nullable=False),
        sa.Column("duration_in_months", sa.Integer, nullable=True),
        sa.Column("max_redemptions", sa.Integer, nullable=True),
        sa.Column("redeem_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("times_redeemed", sa.Integer, nullable=False, server_default="0"),
        _created(),
        sa.UniqueConstraint("organization_id", "code", name="uq_dictamesh_billing_coupons_code"),
        sa.CheckConstraint(
            "(percent_off IS NULL) <> (amount_off IS NULL)",
            name="ck_dictamesh_billing_coupons_one_amount",
        ),
        sa.CheckConstraint(
            "percent_off IS NULL OR (percent_off > 0 AND percent_off <= 100 AND currency IS NULL)",
            name="ck_dictamesh_billing_coupons_percent",
        ),
        sa.CheckConstraint(
            "amount_off IS NULL OR (amount_off > 0 AND currency IS NOT NULL)",
            name="ck_dictamesh_billing_coupons_amount",
        ),
        sa.CheckConstraint(
            "duration IN ('once', 'repeating', 'forever')",
            name="ck_dictamesh_billing_coupons_duration",
        ),
        sa.CheckConstraint(
            "(duration = 'repeating') = (duration_in_months IS NOT NULL) "
            "AND (duration_in_months IS NULL OR duration_in_months > 0)",
            name="ck_dictamesh_billing_coupons_months",
        ),
        sa.CheckConstraint(
            "times_redeemed >= 0 AND (max_redemptions IS NULL OR "
            "(max_redemptions > 0 AND times_redeemed <= max_redemptions))",
            name="ck_dictamesh_billing_coupons_redemptions",
        ),
    )
    # A coupon applied to a customer (every subscription) or to one subscription.
    op.create_table(
        "dictamesh_billing_discounts",
        _id(),
        _org(),
        _ref("coupon_id", "dictamesh_billing_coupons"),
        _ref("customer_id", "dictamesh_billing_customers"),
        _ref("subscription_id", "dictamesh_billing_subscriptions", nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),  # null: forever/once
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        # invoices it discounted; a `once` discount is used up at 1
        sa.Column("times_applied", sa.Integer, nullable=False, server_default="0"),
        _created(),
        sa.CheckConstraint(
            "ends_at IS NULL OR ends_at > starts_at", name="ck_dictamesh_billing_discounts_window"
        ),
    )
    op.create_index(
        "idx_dictamesh_billing_discounts_customer",
        "dictamesh_billing_discounts",
        ["customer_id"],
        postgresql_where=sa.text("removed_at IS NULL"),
    )
    op.create_index(
        "idx_dictamesh_billing_discounts_subscription",
        "dictamesh_billing_discounts",
        ["subscription_id"],
    )
    op.create_table(
        "dictamesh_billing_tax_rates",
        _id(),
        _org(),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("percentage", sa.Numeric, nullable=False),
        sa.Column("inclusive", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("jurisdiction", sa.Text, nullable=True),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False, server_default="true"),
        _created(),
        sa.CheckConstraint(
            "percentage >= 0 AND percentage <= 100",
            name="ck_dictamesh_billing_tax_rates_percentage",
        ),
    )
    op.create_index(
        "idx_dictamesh_billing_tax_rates_organization",
        "dictamesh_billing_tax_rates",
        ["organization_id"],
    )
    op.create_table(
        "dictamesh_billing_customer_tax_rates",
        sa.Column(
            "customer_id",
            UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_billing_customers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "tax_rate_id",
            UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_billing_tax_rates.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index(
        "idx_dictamesh_billing_customer_tax_rates_rate",
        "dictamesh_billing_customer_tax_rates",
        ["tax_rate_id"],
    )
    op.add_column(
        "dictamesh_billing_invoices",
        sa.Column("tax_inclusive", sa.Numeric, nullable=False, server_default="0"),
    )
    op.add_column(
        "dictamesh_billing_invoices",
        sa.Column("tax_breakdown", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    )
    op.add_column(
        "dictamesh_billing_invoice_lines",
        sa.Column("tax_inclusive", sa.Numeric, nullable=False, server_default="0"),
    )
    # the per-customer number becomes tax-rate rows: one per organization and distinct rate
    op.execute(
        "INSERT INTO dictamesh_billing_tax_rates (organization_id, display_name, percentage) "
        "SELECT DISTINCT organization_id, 'Tax ' || trim_scale(tax_rate * 100) || '%', "
        "tax_rate * 100 FROM dictamesh_billing_customers WHERE tax_rate <> 0"
    )
    op.execute(
        "INSERT INTO dictamesh_billing_customer_tax_rates (customer_id, tax_rate_id) "
        "SELECT c.id, t.id FROM dictamesh_billing_customers c JOIN dictamesh_billing_tax_rates t "
        "ON t.organization_id = c.organization_id AND t.percentage = c.tax_rate * 100 "
        "WHERE c.tax_rate <> 0"
    )
    op.drop_column("dictamesh_billing_customers", "tax_rate")
    # when the trial-ending notice went out (`Billing.notify_trials_ending` sends it once)
    op.add_column(
        "dictamesh_billing_subscriptions",
        sa.Column("trial_ending_notified_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("dictamesh_billing_subscriptions", "trial_ending_notified_at")
    op.add_column(
        "dictamesh_billing_customers",
        sa.Column("tax_rate", sa.Numeric, nullable=False, server_default="0"),
    )
    op.execute(
        "UPDATE dictamesh_billing_customers c SET tax_rate = r.rate FROM ("
        "SELECT l.customer_id, sum(t.percentage) / 100 AS rate "
        "FROM dictamesh_billing_customer_tax_rates l JOIN dictamesh_billing_tax_rates t "
        "ON t.id = l.tax_rate_id WHERE NOT t.inclusive GROUP BY l.customer_id) r "
        "WHERE r.customer_id = c.id"
    )
    op.drop_column("dictamesh_billing_invoice_lines", "tax_inclusive")
    op.drop_column("dictamesh_billing_invoices", "tax_breakdown")
    op.drop_column("dictamesh_billing_invoices", "tax_inclusive")
    op.drop_index(
        "idx_dictamesh_billing_customer_tax_rates_rate",
        table_name="dictamesh_billing_customer_tax_rates",
    )
    op.drop_table("dictamesh_billing_customer_tax_rates")
    op.drop_index(
        "idx_dictamesh_billing_tax_rates_organization", table_name="dictamesh_billing_tax_rates"
    )
    op.drop_table("dictamesh_billing_tax_rates")
    op.drop_index(
        "idx_dictamesh_billing_discounts_subscription", table_name="dictamesh_billing_discounts"
    )
    op.drop_index(
        "idx_dictamesh_billing_discounts_customer", table_name="dictamesh_billing_discounts"
    )
    op.drop_table("dictamesh_billing_discounts")
    op.drop_table("dictamesh_billing_coupons")
