"""The Event Monitor's rates read the last hour of the log, not all of it."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from workbench.dashboards.events import RATES

pytestmark = pytest.mark.stack


def test_the_rates_query_reads_the_last_hour_through_an_index(workbench: Any) -> None:
    with psycopg.connect(workbench.endpoints.postgres_url) as conn:
        conn.execute("SET enable_seqscan = off")  # an index, if one serves, whatever the size
        ((plan,),) = conn.execute(f"EXPLAIN (FORMAT JSON) {RATES}").fetchall()
    assert "idx_dictamesh_event_log_recorded" in json.dumps(plan)
