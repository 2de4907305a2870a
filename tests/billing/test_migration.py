"""Migration 0004 (billing) goes up, down and up again on an empty database."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, inspect

from workbench import db
from workbench.stack import Endpoints

pytestmark = pytest.mark.stack
BILLING_TABLES = {
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
}


@pytest.fixture
def engine(stack: Endpoints) -> Iterator[Engine]:
    name = f"billing_{time.monotonic_ns()}"
    admin_url = stack.postgres_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = db.make_engine(stack.postgres_url.rsplit("/", 1)[0] + f"/{name}")
    yield engine
    engine.dispose()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _tables(engine: Engine) -> set[str]:
    return {t for t in inspect(engine).get_table_names() if t.startswith("dictamesh_billing")}


def test_billing_migration_round_trips(engine: Engine) -> None:
    db.migrate_up(engine, "0004")
    assert _tables(engine) == BILLING_TABLES
    inspector = inspect(engine)
    for table in BILLING_TABLES:
        for index in inspector.get_indexes(table):
            assert index["name"].startswith(("idx_dictamesh_", "uq_dictamesh_")), index["name"]
    db.migrate_down(engine, "0003")
    assert db.current_revision(engine) == "0003"
    assert _tables(engine) == set()
    db.migrate_up(engine, "0004")
    assert _tables(engine) == BILLING_TABLES
