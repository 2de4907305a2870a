"""The projector's COPY text formatters store exactly what psycopg's own row writer stores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.catalog.projector import (
    copy_array,
    copy_bool,
    copy_json,
    copy_line,
    copy_text,
    copy_time,
)
from workbench.stack import Endpoints

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
rows = st.tuples(
    st.none() | text,
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.datetimes(timezones=st.just(UTC), min_value=datetime(1, 1, 2)),
    st.lists(text, max_size=4),
    st.uuids(),
    st.none() | st.dictionaries(text, json_values, max_size=3),
)
TABLE = (
    "CREATE TEMP TABLE t (a text, b bigint, c boolean, d timestamptz, e text[], f uuid, g jsonb)"
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(row=rows)
def test_formatted_rows_read_back_like_psycopg_rows(stack: Endpoints, row: tuple[Any, ...]) -> None:
    a, b, c, d, e, f, g = row
    line = copy_line(
        copy_text(a), str(b), copy_bool(c), copy_time(d), copy_array(e), str(f), copy_json(g)
    )
    with psycopg.connect(stack.postgres_url) as conn:
        conn.execute(TABLE)
        with conn.cursor().copy("COPY t FROM STDIN") as copy:
            copy.write(line)
        with conn.cursor().copy("COPY t FROM STDIN") as copy:
            copy.write_row((a, b, c, d, e, f, None if g is None else orjson.dumps(g).decode()))
        ours, theirs = conn.execute("SELECT * FROM t").fetchall()
    assert ours == theirs
    assert ours == (a, b, c, d, e, f, g)
