"""The projector's COPY text encoder stores exactly what psycopg's own row writer stores."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.catalog.projector import copy_text_line
from workbench.stack import Endpoints

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
rows = st.tuples(
    st.none() | text,
    st.integers(-(2**63), 2**63 - 1),
    st.none() | st.booleans(),
    st.datetimes(timezones=st.just(UTC), min_value=datetime(1, 1, 2)),
    st.lists(text, max_size=4),
    st.uuids(),
    st.none() | st.dictionaries(text, text | st.integers(-(2**53), 2**53), max_size=3),
)
TABLE = (
    "CREATE TEMP TABLE t (a text, b bigint, c boolean, d timestamptz, e text[], f uuid, g jsonb)"
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(row=rows)
def test_encoded_rows_read_back_like_psycopg_rows(stack: Endpoints, row: tuple[Any, ...]) -> None:
    values = (*row[:6], None if row[6] is None else orjson.dumps(row[6]).decode())
    with psycopg.connect(stack.postgres_url) as conn:
        conn.execute(TABLE)
        with conn.cursor().copy("COPY t FROM STDIN") as copy:
            copy.write(copy_text_line(values))
        with conn.cursor().copy("COPY t FROM STDIN") as copy:
            copy.write_row(values)
        ours, theirs = conn.execute("SELECT * FROM t").fetchall()
    assert ours == theirs
    assert ours[4] == row[4] and ours[5] == row[5] and ours[0] == row[0]


def test_an_unexpected_type_is_refused() -> None:
    with pytest.raises(TypeError, match="float"):
        copy_text_line([1.5])
    assert copy_text_line([uuid.UUID(int=0), None, True]) == (
        "00000000-0000-0000-0000-000000000000\t\\N\tt\n"
    )
