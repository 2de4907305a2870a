"""JSON Schemas of inferred columns (Polars dtypes, SQL types) for the schema registry."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import polars as pl


def polars_json_type(dtype: pl.DataType) -> dict[str, Any]:
    """The JSON Schema of one Polars dtype; every column may be null."""
    if dtype == pl.Boolean:
        kind: dict[str, Any] = {"type": "boolean"}
    elif dtype.is_integer():
        kind = {"type": "integer"}
    elif dtype.is_float() or dtype.is_decimal():
        kind = {"type": "number"}
    elif dtype == pl.Datetime or isinstance(dtype, pl.Datetime):
        kind = {"type": "string", "format": "date-time"}
    elif dtype == pl.Date:
        kind = {"type": "string", "format": "date"}
    elif dtype == pl.Time:
        kind = {"type": "string", "format": "time"}
    elif isinstance(dtype, pl.List | pl.Array):
        kind = {"type": "array"}
    elif isinstance(dtype, pl.Struct):
        kind = {"type": "object"}
    else:
        kind = {"type": "string"}
    return {**kind, "type": [kind["type"], "null"]}


def polars_schema(schema: pl.Schema | dict[str, pl.DataType], title: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": {name: polars_json_type(dtype) for name, dtype in schema.items()},
    }


def python_json_type(python_type: type | None) -> dict[str, Any]:
    """The JSON Schema of a SQLAlchemy column's python_type (nullable)."""
    mapping: list[tuple[type, dict[str, Any]]] = [
        (bool, {"type": ["boolean", "null"]}),
        (int, {"type": ["integer", "null"]}),
        (float, {"type": ["number", "null"]}),
        (Decimal, {"type": ["number", "null"]}),
        (datetime, {"type": ["string", "null"], "format": "date-time"}),
        (date, {"type": ["string", "null"], "format": "date"}),
        (time, {"type": ["string", "null"], "format": "time"}),
        (dict, {"type": ["object", "null"]}),
        (list, {"type": ["array", "null"]}),
    ]
    for known, schema in mapping:
        if python_type is not None and issubclass(python_type, known):
            return schema
    return {"type": ["string", "null"]}


def jsonable(value: Any) -> Any:  # noqa: PLR0911 - one return per JSON shape
    """A value as JSON carries it: datetimes ISO 8601 (UTC when aware), Decimals as strings."""
    if isinstance(value, datetime):
        return value.isoformat() if value.tzinfo is None else value.astimezone(UTC).isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
