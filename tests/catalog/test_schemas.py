"""The schema registry: Avro and JSON Schema compatibility, and registration on the database."""

from __future__ import annotations

import copy
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from workbench.catalog.schemas import (
    MODES,
    CompatibilityReport,
    IncompatibleSchemaError,
    InvalidSchemaError,
    RegisteredSchema,
    SchemaNotFoundError,
    SchemaRegistry,
    UnknownSubjectError,
    canonical_form,
    check_compatibility,
    fingerprint,
)
from workbench.errors import TerminalError, UnknownNameError


def _found(previous: Any, candidate: Any, fmt: str, mode: str) -> list[tuple[str, str]]:
    return [
        (i.kind, i.path)
        for i in check_compatibility(previous, candidate, schema_format=fmt, mode=mode)
    ]


def _record(*fields: dict[str, Any], name: str = "User", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "shop", "fields": list(fields), **extra}


ID = {"name": "id", "type": "int"}
EMAIL = {"name": "email", "type": "string"}
STATUS_AB = {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["A", "B"]}}
STATUS_ABC = {
    "name": "status",
    "type": {"type": "enum", "name": "Status", "symbols": ["A", "B", "C"]},
}
STATUS_A_DEFAULT = {
    "name": "status",
    "type": {"type": "enum", "name": "Status", "symbols": ["A", "UNKNOWN"], "default": "UNKNOWN"},
}


def _line(sku: bool, sku_default: bool = False) -> dict[str, Any]:
    fields: list[dict[str, Any]] = [{"name": "qty", "type": "int"}]
    if sku:
        fields.append({"name": "sku", "type": "string", **({"default": ""} if sku_default else {})})
    item = {"type": "record", "name": "Line", "fields": fields}
    return {"name": "lines", "type": {"type": "array", "items": item}}


def _hash(size: int) -> dict[str, Any]:
    return {"name": "h", "type": {"type": "fixed", "name": "Hash", "size": size}}


MISSING = "READER_FIELD_MISSING_DEFAULT_VALUE"

# (id, old, new, mode, expected (kind, path) in order)
AVRO_CASES: list[tuple[str, Any, Any, str, list[tuple[str, str]]]] = [
    (
        "field added with default, backward",
        _record(ID),
        _record(ID, {"name": "age", "type": "int", "default": 0}),
        "BACKWARD",
        [],
    ),
    (
        "field added with default, full",
        _record(ID),
        _record(ID, {"name": "age", "type": "int", "default": 0}),
        "FULL",
        [],
    ),
    (
        "field added without default, backward",
        _record(ID),
        _record(ID, EMAIL),
        "BACKWARD",
        [(MISSING, "/fields/email")],
    ),
    ("field added without default, forward", _record(ID), _record(ID, EMAIL), "FORWARD", []),
    ("field removed, backward", _record(ID, EMAIL), _record(ID), "BACKWARD", []),
    (
        "field without default removed, forward",
        _record(ID, EMAIL),
        _record(ID),
        "FORWARD",
        [(MISSING, "/fields/email")],
    ),
    (
        "field with default removed, forward",
        _record(ID, {**EMAIL, "default": ""}),
        _record(ID),
        "FORWARD",
        [],
    ),
    (
        "field removed, full",
        _record(ID, EMAIL),
        _record(ID),
        "FULL",
        [(MISSING, "/fields/email")],
    ),
    (
        "int to long, backward",
        _record(ID),
        _record({"name": "id", "type": "long"}),
        "BACKWARD",
        [],
    ),
    (
        "int to long, forward",
        _record(ID),
        _record({"name": "id", "type": "long"}),
        "FORWARD",
        [("TYPE_NARROWED", "/fields/id/type")],
    ),
    (
        "long to int, backward",
        _record({"name": "id", "type": "long"}),
        _record(ID),
        "BACKWARD",
        [("TYPE_NARROWED", "/fields/id/type")],
    ),
    ("long to int, forward", _record({"name": "id", "type": "long"}), _record(ID), "FORWARD", []),
    ("int to double at the root", '"int"', '"double"', "BACKWARD", []),
    ("float to double", '"float"', '"double"', "BACKWARD", []),
    ("double to float", '"double"', '"float"', "BACKWARD", [("TYPE_NARROWED", "/")]),
    ("string and bytes both ways", '"string"', '"bytes"', "FULL", []),
    (
        "int to string",
        _record(ID),
        _record({"name": "id", "type": "string"}),
        "FULL",
        [("TYPE_MISMATCH", "/fields/id/type"), ("TYPE_MISMATCH", "/fields/id/type")],
    ),
    ("enum symbol added, backward", _record(STATUS_AB), _record(STATUS_ABC), "BACKWARD", []),
    (
        "enum symbol added, forward",
        _record(STATUS_AB),
        _record(STATUS_ABC),
        "FORWARD",
        [("MISSING_ENUM_SYMBOLS", "/fields/status/type/symbols")],
    ),
    (
        "enum symbol removed, backward",
        _record(STATUS_ABC),
        _record(STATUS_AB),
        "BACKWARD",
        [("MISSING_ENUM_SYMBOLS", "/fields/status/type/symbols")],
    ),
    (
        "enum symbol removed, reader has a default",
        _record(STATUS_ABC),
        _record(STATUS_A_DEFAULT),
        "BACKWARD",
        [],
    ),
    (
        "union widened, backward",
        _record({"name": "x", "type": ["null", "string"]}),
        _record({"name": "x", "type": ["null", "string", "int"]}),
        "BACKWARD",
        [],
    ),
    (
        "union widened, forward",
        _record({"name": "x", "type": ["null", "string"]}),
        _record({"name": "x", "type": ["null", "string", "int"]}),
        "FORWARD",
        [("MISSING_UNION_BRANCH", "/fields/x/type")],
    ),
    (
        "union narrowed, backward",
        _record({"name": "x", "type": ["null", "string", "int"]}),
        _record({"name": "x", "type": ["null", "string"]}),
        "BACKWARD",
        [("MISSING_UNION_BRANCH", "/fields/x/type")],
    ),
    (
        "type made optional, backward",
        _record(EMAIL),
        _record({"name": "email", "type": ["null", "string"], "default": None}),
        "BACKWARD",
        [],
    ),
    (
        "type made optional, forward",
        _record(EMAIL),
        _record({"name": "email", "type": ["null", "string"], "default": None}),
        "FORWARD",
        [("MISSING_UNION_BRANCH", "/fields/email/type")],
    ),
    (
        "union branch promoted: int read as long",
        '["null", "int"]',
        '["null", "long"]',
        "BACKWARD",
        [],
    ),
    (
        "nested record in array gains a field without default",
        _record(_line(sku=False), name="Order"),
        _record(_line(sku=True), name="Order"),
        "BACKWARD",
        [(MISSING, "/fields/lines/type/items/fields/sku")],
    ),
    (
        "nested record in array gains a field with default",
        _record(_line(sku=False), name="Order"),
        _record(_line(sku=True, sku_default=True), name="Order"),
        "FULL",
        [],
    ),
    (
        "map values change type",
        _record({"name": "m", "type": {"type": "map", "values": "int"}}),
        _record({"name": "m", "type": {"type": "map", "values": "string"}}),
        "BACKWARD",
        [("TYPE_MISMATCH", "/fields/m/type/values")],
    ),
    (
        "field renamed with an alias, backward",
        _record(ID, EMAIL),
        _record(ID, {"name": "email_address", "type": "string", "aliases": ["email"]}),
        "BACKWARD",
        [],
    ),
    (
        "field renamed with an alias, forward",
        _record(ID, EMAIL),
        _record(ID, {"name": "email_address", "type": "string", "aliases": ["email"]}),
        "FORWARD",
        [(MISSING, "/fields/email")],
    ),
    (
        "field renamed without an alias",
        _record(ID, EMAIL),
        _record(ID, {"name": "email_address", "type": "string"}),
        "BACKWARD",
        [(MISSING, "/fields/email_address")],
    ),
    (
        "record renamed with an alias, backward",
        _record(ID),
        _record(ID, name="Customer", aliases=["User"]),
        "BACKWARD",
        [],
    ),
    (
        "record renamed with an alias, forward",
        _record(ID),
        _record(ID, name="Customer", aliases=["User"]),
        "FORWARD",
        [("NAME_MISMATCH", "/name")],
    ),
    (
        "record moved to another namespace",
        _record(ID),
        {**_record(ID), "namespace": "billing"},
        "FULL",
        [],
    ),
    (
        "fixed size changed",
        _record(_hash(16)),
        _record(_hash(32)),
        "FULL",
        [("FIXED_SIZE_MISMATCH", "/fields/h/type/size")] * 2,
    ),
    ("fixed unchanged", _record(_hash(16)), _record(_hash(16)), "FULL", []),
    (
        "recursive record gains an optional field",
        _record(ID, {"name": "next", "type": ["null", "shop.User"], "default": None}, name="User"),
        _record(
            ID,
            {"name": "next", "type": ["null", "User"], "default": None},
            {"name": "tag", "type": "string", "default": ""},
        ),
        "FULL",
        [],
    ),
    ("anything goes with NONE", _record(ID), '"string"', "NONE", []),
]


@pytest.mark.parametrize(
    ("old", "new", "mode", "expected"),
    [case[1:] for case in AVRO_CASES],
    ids=[case[0] for case in AVRO_CASES],
)
def test_avro_compatibility(old: Any, new: Any, mode: str, expected: list[tuple[str, str]]) -> None:
    assert _found(old, new, "AVRO", mode) == expected


def _obj(props: dict[str, Any], *, required: list[str] | None = None, **extra: Any) -> Any:
    schema: dict[str, Any] = {"type": "object", "properties": props, **extra}
    if required:
        schema["required"] = required
    return schema


S = {"type": "string"}
I = {"type": "integer"}  # noqa: E741
CLOSED = {"additionalProperties": False}
ADDRESS = _obj({"zip": {"type": "string", "maxLength": 10}})

JSON_CASES: list[tuple[str, Any, Any, str, list[tuple[str, str]]]] = [
    (
        "property added to an open model, backward",
        _obj({"a": S}),
        _obj({"a": S, "c": I}),
        "BACKWARD",
        [("PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL", "/properties/c")],
    ),
    (
        "property added to an open model, forward",
        _obj({"a": S}),
        _obj({"a": S, "c": I}),
        "FORWARD",
        [],
    ),
    (
        "property without constraints added to an open model",
        _obj({"a": S}),
        _obj({"a": S, "c": {"description": "anything"}}),
        "BACKWARD",
        [],
    ),
    (
        "property added to a closed model, backward",
        _obj({"a": S}, **CLOSED),
        _obj({"a": S, "c": I}, **CLOSED),
        "BACKWARD",
        [],
    ),
    (
        "property added to a closed model, forward",
        _obj({"a": S}, **CLOSED),
        _obj({"a": S, "c": I}, **CLOSED),
        "FORWARD",
        [("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", "/properties/c")],
    ),
    (
        "property removed from a closed model",
        _obj({"a": S, "b": I}, **CLOSED),
        _obj({"a": S}, **CLOSED),
        "BACKWARD",
        [("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", "/properties/b")],
    ),
    (
        "property removed from an open model, backward",
        _obj({"a": S, "b": I}),
        _obj({"a": S}),
        "BACKWARD",
        [],
    ),
    (
        "property removed from an open model, forward",
        _obj({"a": S, "b": I}),
        _obj({"a": S}),
        "FORWARD",
        [("PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL", "/properties/b")],
    ),
    (
        "model closed",
        _obj({"a": S}),
        _obj({"a": S}, **CLOSED),
        "BACKWARD",
        [("ADDITIONAL_PROPERTIES_REMOVED", "/additionalProperties")],
    ),
    (
        "additional properties narrowed to a schema",
        _obj({"a": S}),
        _obj({"a": S}, additionalProperties=S),
        "BACKWARD",
        [("ADDITIONAL_PROPERTIES_NARROWED", "/additionalProperties")],
    ),
    (
        "required added",
        _obj({"a": S, "b": I}, required=["a"]),
        _obj({"a": S, "b": I}, required=["a", "b"]),
        "BACKWARD",
        [("REQUIRED_ATTRIBUTE_ADDED", "/required")],
    ),
    (
        "required added with a default (Confluent: compatible)",
        _obj({"a": S, "b": I}, required=["a"]),
        _obj({"a": S, "b": {"type": "integer", "default": 0}}, required=["a", "b"]),
        "BACKWARD",
        [],
    ),
    (
        "required removed, backward",
        _obj({"a": S, "b": I}, required=["a", "b"]),
        _obj({"a": S, "b": I}, required=["a"]),
        "BACKWARD",
        [],
    ),
    (
        "required removed, forward",
        _obj({"a": S, "b": I}, required=["a", "b"]),
        _obj({"a": S, "b": I}, required=["a"]),
        "FORWARD",
        [("REQUIRED_ATTRIBUTE_ADDED", "/required")],
    ),
    ("integer widened to number, backward", I, {"type": "number"}, "BACKWARD", []),
    (
        "integer widened to number, forward",
        _obj({"n": I}),
        _obj({"n": {"type": "number"}}),
        "FORWARD",
        [("TYPE_NARROWED", "/properties/n/type")],
    ),
    ("string to integer", S, I, "BACKWARD", [("TYPE_CHANGED", "/type")]),
    (
        "null removed from a type list",
        {"type": ["string", "null"]},
        S,
        "BACKWARD",
        [("TYPE_NARROWED", "/type")],
    ),
    ("null added to a type list", S, {"type": ["string", "null"]}, "BACKWARD", []),
    (
        "enum extended, backward",
        {"enum": ["a", "b"]},
        {"enum": ["a", "b", "c"]},
        "BACKWARD",
        [],
    ),
    (
        "enum extended, forward",
        _obj({"s": {"enum": ["a", "b"]}}),
        _obj({"s": {"enum": ["a", "b", "c"]}}),
        "FORWARD",
        [("ENUM_ARRAY_NARROWED", "/properties/s/enum")],
    ),
    (
        "enum changed",
        {"enum": ["a", "b"]},
        {"enum": ["a", "c"]},
        "BACKWARD",
        [("ENUM_ARRAY_CHANGED", "/enum")],
    ),
    (
        "enum added",
        S,
        {"type": "string", "enum": ["a"]},
        "BACKWARD",
        [("ENUM_ARRAY_NARROWED", "/enum")],
    ),
    (
        "maxLength decreased",
        _obj({"name": {"type": "string", "maxLength": 20}}),
        _obj({"name": {"type": "string", "maxLength": 10}}),
        "BACKWARD",
        [("MAX_LENGTH_DECREASED", "/properties/name/maxLength")],
    ),
    (
        "maxLength added",
        S,
        {"type": "string", "maxLength": 10},
        "BACKWARD",
        [("MAX_LENGTH_ADDED", "/maxLength")],
    ),
    (
        "maxLength increased",
        {"type": "string", "maxLength": 10},
        {"type": "string", "maxLength": 20},
        "BACKWARD",
        [],
    ),
    (
        "minLength increased",
        {"type": "string", "minLength": 1},
        {"type": "string", "minLength": 3},
        "BACKWARD",
        [("MIN_LENGTH_INCREASED", "/minLength")],
    ),
    (
        "minimum increased",
        {"type": "number", "minimum": 0},
        {"type": "number", "minimum": 5},
        "BACKWARD",
        [("MINIMUM_INCREASED", "/minimum")],
    ),
    (
        "maximum decreased",
        {"type": "number", "maximum": 100},
        {"type": "number", "maximum": 10},
        "FULL",
        [("MAXIMUM_DECREASED", "/maximum")],
    ),
    (
        "maximum added",
        {"type": "number"},
        {"type": "number", "exclusiveMaximum": 10},
        "BACKWARD",
        [("EXCLUSIVE_MAXIMUM_ADDED", "/exclusiveMaximum")],
    ),
    (
        "enum values checked against a new bound",
        {"type": "string", "enum": ["a", "toolong"]},
        {"type": "string", "enum": ["a", "toolong"], "maxLength": 3},
        "BACKWARD",
        [("MAX_LENGTH_ADDED", "/maxLength")],
    ),
    (
        "enum values within a new bound",
        {"type": "string", "enum": ["a", "bb"]},
        {"type": "string", "maxLength": 3},
        "BACKWARD",
        [],
    ),
    (
        "nested property type changed",
        _obj({"address": _obj({"zip": I})}),
        _obj({"address": _obj({"zip": S})}),
        "BACKWARD",
        [("TYPE_CHANGED", "/properties/address/properties/zip/type")],
    ),
    (
        "array items narrowed",
        _obj({"tags": {"type": "array", "items": {"type": "number"}}}),
        _obj({"tags": {"type": "array", "items": I}}),
        "BACKWARD",
        [("TYPE_NARROWED", "/properties/tags/items/type")],
    ),
    (
        "array of closed objects gains an optional property",
        {"type": "array", "items": _obj({"a": S}, **CLOSED)},
        {"type": "array", "items": _obj({"a": S, "b": I}, **CLOSED)},
        "BACKWARD",
        [],
    ),
    (
        "$ref to definitions, inlined and narrowed",
        {
            "definitions": {"Address": ADDRESS},
            **_obj({"address": {"$ref": "#/definitions/Address"}}),
        },
        _obj({"address": _obj({"zip": {"type": "string", "maxLength": 5}})}),
        "BACKWARD",
        [("MAX_LENGTH_DECREASED", "/properties/address/properties/zip/maxLength")],
    ),
    (
        "$ref to $defs, unchanged",
        {"$defs": {"Address": ADDRESS}, **_obj({"address": {"$ref": "#/$defs/Address"}})},
        {"definitions": {"A": ADDRESS}, **_obj({"address": {"$ref": "#/definitions/A"}})},
        "FULL",
        [],
    ),
    (
        "recursive $ref",
        {
            "$defs": {"node": _obj({"v": I, "next": {"$ref": "#/$defs/node"}})},
            "$ref": "#/$defs/node",
        },
        {
            "$defs": {"node": _obj({"v": S, "next": {"$ref": "#/$defs/node"}})},
            "$ref": "#/$defs/node",
        },
        "BACKWARD",
        [("TYPE_CHANGED", "/properties/v/type")],
    ),
    (
        "anyOf branch removed",
        {"anyOf": [S, I]},
        {"anyOf": [S]},
        "BACKWARD",
        [("SUM_TYPE_NARROWED", "/anyOf")],
    ),
    ("anyOf branch added", {"anyOf": [S]}, {"anyOf": [S, I]}, "BACKWARD", []),
    ("oneOf of the same type", S, {"oneOf": [S, {"type": "null"}]}, "BACKWARD", []),
    (
        "oneOf whose branches both take every old value",
        S,
        {"oneOf": [S, {"type": ["string", "null"]}]},
        "BACKWARD",
        [("ONE_OF_AMBIGUOUS", "/oneOf")],
    ),
    (
        "anyOf whose branches overlap",
        S,
        {"anyOf": [S, {"type": ["string", "null"]}]},
        "BACKWARD",
        [],
    ),
    (
        "allOf on the reader checks every part",
        S,
        {"allOf": [S, {"maxLength": 4}]},
        "BACKWARD",
        [("MAX_LENGTH_ADDED", "/allOf/1/maxLength")],
    ),
    (
        "true schema to a typed one",
        True,
        S,
        "BACKWARD",
        [("TYPE_NARROWED", "/type")],
    ),
    (
        "pattern properties dropped from a closed model, backward",
        _obj({}, patternProperties={"^x_": S}, **CLOSED),
        _obj({}, **CLOSED),
        "BACKWARD",
        [("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", "/patternProperties/^x_")],
    ),
    (
        "pattern properties dropped from a closed model, forward",
        _obj({}, patternProperties={"^x_": S}, **CLOSED),
        _obj({}, **CLOSED),
        "FORWARD",
        [],
    ),
    (
        "pattern narrowed to a longer prefix in a closed model",
        _obj({}, patternProperties={"^x_": S}, **CLOSED),
        _obj({}, patternProperties={"^x_a": S}, **CLOSED),
        "BACKWARD",
        [("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", "/patternProperties/^x_")],
    ),
    (
        "pattern widened to a shorter prefix in a closed model",
        _obj({}, patternProperties={"^x_a": S}, **CLOSED),
        _obj({}, patternProperties={"^x_": S}, **CLOSED),
        "BACKWARD",
        [],
    ),
    (
        "pattern schema narrowed",
        _obj({}, patternProperties={"^x_": S}, **CLOSED),
        _obj({}, patternProperties={"^x_": {"type": "string", "maxLength": 3}}, **CLOSED),
        "FULL",
        [("MAX_LENGTH_ADDED", "/patternProperties/^x_/maxLength")],
    ),
    (
        "property added that an old pattern wrote as another type, backward",
        _obj({}, patternProperties={"^x_": S}, **CLOSED),
        _obj({"x_a": I}, patternProperties={"^x_": S}, **CLOSED),
        "BACKWARD",
        [("TYPE_CHANGED", "/properties/x_a/type")],
    ),
    (
        # The new schema's x_a must be an integer and a string: it is never written.
        "property added that an old pattern wrote as another type, forward",
        _obj({}, patternProperties={"^x_": S}, **CLOSED),
        _obj({"x_a": I}, patternProperties={"^x_": S}, **CLOSED),
        "FORWARD",
        [],
    ),
    (
        "property added that an old pattern wrote as the same type",
        _obj({}, patternProperties={"^x_": S}, **CLOSED),
        _obj({"x_a": S}, patternProperties={"^x_": S}, **CLOSED),
        "FULL",
        [],
    ),
    (
        "property added matching a pattern the old schema lacks",
        _obj({"a": S}),
        _obj({"a": S}, patternProperties={"^x_": I}),
        "BACKWARD",
        [("ADDITIONAL_PROPERTIES_NARROWED", "/patternProperties/^x_")],
    ),
    (
        "declared property meets a new pattern",
        _obj({"x_a": S}),
        _obj({"x_a": S}, patternProperties={"^x_": I}),
        "BACKWARD",
        [
            ("TYPE_CHANGED", "/properties/x_a/type"),
            ("ADDITIONAL_PROPERTIES_NARROWED", "/patternProperties/^x_"),
        ],
    ),
    (
        "new pattern overlapping an old one",
        _obj({}, patternProperties={"^x_": S}, **CLOSED),
        _obj({}, patternProperties={"^x_": S, "^x_n": I}, **CLOSED),
        "BACKWARD",
        [("TYPE_CHANGED", "/patternProperties/^x_n/type")],
    ),
    (
        "new pattern disjoint from the old one",
        _obj({}, patternProperties={"^x_": S}, **CLOSED),
        _obj({}, patternProperties={"^x_": S, "^y_": I}, **CLOSED),
        "BACKWARD",
        [],
    ),
    (
        "type list rewritten as the equivalent anyOf",
        {"type": ["string", "integer"]},
        {"anyOf": [S, I]},
        "FULL",
        [],
    ),
    (
        "type list rewritten as an anyOf missing a type",
        {"type": ["string", "integer", "null"]},
        {"anyOf": [S, I]},
        "BACKWARD",
        [("TYPE_NARROWED", "/anyOf/0/type")],
    ),
    ("anything goes with NONE", _obj({"a": S}), I, "NONE", []),
]


@pytest.mark.parametrize(
    ("old", "new", "mode", "expected"),
    [case[1:] for case in JSON_CASES],
    ids=[case[0] for case in JSON_CASES],
)
def test_json_schema_compatibility(
    old: Any, new: Any, mode: str, expected: list[tuple[str, str]]
) -> None:
    assert _found(old, new, "JSON", mode) == expected


def test_reasons_name_old_and_new_and_the_direction() -> None:
    [backward] = check_compatibility(
        _record({"name": "id", "type": "long"}), _record(ID), schema_format="AVRO", mode="BACKWARD"
    )
    assert backward.direction == "BACKWARD"
    assert "long in the old schema and int in the new one" in backward.reason
    assert "the new schema cannot read data written with the old one" in backward.reason
    [forward] = check_compatibility(
        _record(ID), _record({"name": "id", "type": "long"}), schema_format="AVRO", mode="FORWARD"
    )
    assert "int in the old schema and long in the new one" in forward.reason
    assert "readers using the old schema" in forward.reason
    [json_issue] = check_compatibility(
        {"type": "string", "maxLength": 20},
        {"type": "string", "maxLength": 10},
        schema_format="JSON",
        mode="BACKWARD",
    )
    assert "20 in the old schema and 10 in the new one" in json_issue.reason
    assert str(json_issue).startswith("/maxLength: ")


# -- transitive modes -----------------------------------------------------------------------

AVRO_CHAIN = [
    _record(ID),
    _record(ID, {"name": "b", "type": "string", "default": "x"}),
    _record(ID, {"name": "b", "type": "string"}),
]
JSON_CHAIN = [
    _obj({"a": S}, **CLOSED),
    _obj({"a": S, "b": {"type": "string", "default": ""}}, required=["b"], **CLOSED),
    _obj({"a": S, "b": S}, required=["b"], **CLOSED),
]


@pytest.mark.parametrize(("fmt", "chain"), [("AVRO", AVRO_CHAIN), ("JSON", JSON_CHAIN)])
def test_transitive_modes_check_every_earlier_version(fmt: str, chain: list[Any]) -> None:
    v1, v2, v3 = chain
    assert check_compatibility(v1, v2, schema_format=fmt, mode="BACKWARD") == []
    assert check_compatibility(v2, v3, schema_format=fmt, mode="BACKWARD") == []
    assert check_compatibility([v1, v2], v3, schema_format=fmt, mode="BACKWARD") == []
    transitive = check_compatibility([v1, v2], v3, schema_format=fmt, mode="BACKWARD_TRANSITIVE")
    assert [i.version for i in transitive] == [1]
    assert transitive[0].kind in ("READER_FIELD_MISSING_DEFAULT_VALUE", "REQUIRED_ATTRIBUTE_ADDED")
    full = check_compatibility([v1, v2], v3, schema_format=fmt, mode="FULL_TRANSITIVE")
    assert {i.version for i in full} == {1}
    assert check_compatibility([], v3, schema_format=fmt, mode="FULL_TRANSITIVE") == []


def test_forward_transitive() -> None:
    v1 = _record(ID, {"name": "b", "type": "string"})
    v2 = _record(ID, {"name": "b", "type": "string"}, {"name": "c", "type": "int", "default": 0})
    v3 = _record(ID, {"name": "c", "type": "int", "default": 0})
    assert _found([v1, v2], v3, "AVRO", "FORWARD") == [(MISSING, "/fields/b")]
    assert _found([v2, v2], v3, "AVRO", "FORWARD") == [(MISSING, "/fields/b")]
    assert [
        i.version
        for i in check_compatibility([v1, v2], v3, schema_format="AVRO", mode="FORWARD_TRANSITIVE")
    ] == [1, 2]


# -- names and invalid input ----------------------------------------------------------------


def test_unknown_mode_and_format_suggest_a_close_name() -> None:
    with pytest.raises(UnknownNameError) as mode_error:
        check_compatibility('"int"', '"int"', schema_format="AVRO", mode="BACKWARDS")
    assert mode_error.value.suggestion == "BACKWARD"
    assert "FULL_TRANSITIVE" in str(mode_error.value)
    with pytest.raises(UnknownNameError) as format_error:
        check_compatibility('"int"', '"int"', schema_format="AVR0", mode="FULL")
    assert format_error.value.suggestion == "AVRO"
    assert check_compatibility('"int"', '"long"', schema_format="avro", mode="backward") == []


@pytest.mark.parametrize(
    ("fmt", "text", "where", "words"),
    [
        ("AVRO", '{"type": "record", "name": "X", "fields": [', "line 1", "not valid JSON"),
        ("AVRO", "int long", "line 1 column 1", "not valid JSON"),
        (
            "AVRO",
            '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "strng"}]}',
            "/fields/a/type",
            "Did you mean 'string'?",
        ),
        ("AVRO", '{"type": "record", "name": "X"}', "/fields", '"fields" list'),
        (
            "AVRO",
            '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "int", '
            '"default": "zero"}]}',
            "/fields/a/default",
            "'zero'",
        ),
        (
            "AVRO",
            '{"type": "record", "name": "X", "fields": [{"name": "a", '
            '"type": ["null", "string"], "default": "x"}]}',
            "/fields/a/default",
            "first branch",
        ),
        ("AVRO", '{"type": "enum", "name": "E", "symbols": ["A", "A"]}', "/symbols", "repeat"),
        ("AVRO", '["null", "null"]', "/1", "two null branches"),
        ("AVRO", '{"type": "fixed", "name": "F", "size": -1}', "/size", "non-negative"),
        ("JSON", '{"type": "object",}', "line 1 column 19", "not valid JSON"),
        (
            "JSON",
            '{"properties": {"a": {"type": "integr"}}}',
            "/properties/a/type",
            "Did you mean 'integer'?",
        ),
        ("JSON", '{"required": "a"}', "/required", "not of type 'array'"),
        ("JSON", '{"$ref": "#/$defs/missing"}', "/$ref", "does not resolve"),
        ("JSON", '{"$ref": "https://example.com/other.json"}', "/$ref", "outside this document"),
        ("JSON", "42", "/", "object or a boolean"),
    ],
)
def test_invalid_schemas_say_where(fmt: str, text: str, where: str, words: str) -> None:
    with pytest.raises(InvalidSchemaError) as error:
        check_compatibility([], text, schema_format=fmt, mode="NONE")
    assert isinstance(error.value, TerminalError)
    assert error.value.where.startswith(where)
    assert words in str(error.value)
    assert error.value.remedy


def test_bare_avro_type_names_are_accepted() -> None:
    assert check_compatibility("int", "long", schema_format="AVRO", mode="BACKWARD") == []
    assert _found("null", '["null", "string"]', "AVRO", "BACKWARD") == []
    with pytest.raises(InvalidSchemaError, match=r"unknown type 'com\.acme\.Missing'"):
        check_compatibility([], "com.acme.Missing", schema_format="AVRO", mode="NONE")


def test_invalid_previous_version_is_named() -> None:
    with pytest.raises(InvalidSchemaError, match="previous schema 2"):
        check_compatibility(['"int"', '"intt"'], '"long"', schema_format="AVRO", mode="BACKWARD")


def test_canonical_form_ignores_spelling() -> None:
    a = '{"type": "record", "name": "R", "fields": [{"name": "x", "type": {"type": "int"}}]}'
    b = {"fields": [{"type": "int", "name": "x"}], "name": "R", "type": "record"}
    assert canonical_form(a, schema_format="AVRO") == canonical_form(b, schema_format="AVRO")
    assert fingerprint(a, schema_format="AVRO") == fingerprint(b, schema_format="AVRO")
    assert fingerprint({"type": "string"}, schema_format="JSON") != fingerprint(
        {"type": "integer"}, schema_format="JSON"
    )


# -- properties -----------------------------------------------------------------------------

AVRO_PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
FIELD_NAMES = st.sampled_from(["a", "b", "c", "d", "e"])


def _rename(schema: Any) -> Any:
    """Give every named type a unique name, as a generated schema may repeat them."""
    schema = copy.deepcopy(schema)
    counter = iter(range(1, 10_000))

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if node.get("type") in ("record", "enum", "fixed"):
                node["name"] = f"{node['type'].capitalize()}{next(counter)}"
            for key in ("fields", "items", "values"):
                if key in node:
                    walk(node[key])
            if isinstance(node.get("type"), dict | list):
                walk(node["type"])

    walk(schema)
    return schema


def _union_ok(branches: list[Any]) -> bool:
    keys = []
    for branch in branches:
        if isinstance(branch, list):
            return False
        if isinstance(branch, str):
            keys.append(branch)
        elif branch["type"] in ("array", "map"):
            keys.append(branch["type"])
    return len(keys) == len(set(keys))


AVRO_LEAVES = st.one_of(
    st.sampled_from(AVRO_PRIMITIVES),
    st.lists(st.sampled_from(["A", "B", "C", "D"]), min_size=1, max_size=4, unique=True).map(
        lambda symbols: {"type": "enum", "name": "E", "symbols": symbols}
    ),
    st.integers(0, 8).map(lambda size: {"type": "fixed", "name": "F", "size": size}),
)


def _avro_records(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(st.tuples(FIELD_NAMES, inner), max_size=4, unique_by=lambda f: f[0]).map(
        lambda fields: {
            "type": "record",
            "name": "R",
            "fields": [{"name": n, "type": t} for n, t in fields],
        }
    )


AVRO_TYPES = st.recursive(
    AVRO_LEAVES,
    lambda inner: st.one_of(
        _avro_records(inner),
        inner.map(lambda t: {"type": "array", "items": t}),
        inner.map(lambda t: {"type": "map", "values": t}),
        st.lists(inner, min_size=1, max_size=3).filter(_union_ok),
    ),
    max_leaves=8,
).map(_rename)
AVRO_RECORDS = _avro_records(AVRO_TYPES).map(_rename)

TYPES_WITH_DEFAULTS = st.one_of(
    st.tuples(st.just("null"), st.none()),
    st.tuples(st.just("boolean"), st.booleans()),
    st.tuples(st.just("int"), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just("long"), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(
        st.sampled_from(["float", "double"]), st.floats(allow_nan=False, allow_infinity=False)
    ),
    st.tuples(st.sampled_from(["string", "bytes"]), st.text(max_size=5)),
    st.tuples(st.just(["null", "string"]), st.none()),
    st.tuples(st.just(["string", "null"]), st.text(max_size=3)),
    st.tuples(st.just({"type": "array", "items": "int"}), st.lists(st.integers(0, 9), max_size=3)),
    st.tuples(
        st.just({"type": "map", "values": "string"}),
        st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    ),
    st.tuples(
        st.just({"type": "enum", "name": "AddedEnum", "symbols": ["X", "Y"]}),
        st.sampled_from(["X", "Y"]),
    ),
    st.tuples(
        st.just(
            {
                "type": "record",
                "name": "AddedRecord",
                "fields": [{"name": "n", "type": "int", "default": 1}],
            }
        ),
        st.sampled_from([{}, {"n": 5}]),
    ),
)

JSON_LEAVES = st.one_of(
    st.just({}),
    st.just(True),
    st.sampled_from([{"type": t} for t in ("null", "boolean", "integer", "number", "string")]),
    st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={
            "maxLength": st.integers(0, 20),
            "minLength": st.integers(0, 5),
            "pattern": st.sampled_from(["^a", "[0-9]+", "x$"]),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["number", "integer"])},
        optional={
            "minimum": st.integers(-10, 10),
            "maximum": st.integers(-10, 10),
            "exclusiveMaximum": st.integers(-10, 10),
            "multipleOf": st.sampled_from([1, 2, 0.5]),
        },
    ),
    st.lists(
        st.one_of(st.integers(-3, 3), st.sampled_from(["a", "bb", "ccc"]), st.none()),
        min_size=1,
        max_size=4,
        unique=True,
    ).map(lambda values: {"enum": values}),
    st.sampled_from([{"type": ["string", "null"]}, {"type": ["integer", "string"]}]),
)


# Overlapping, nested, disjoint and unanchored patterns; "^a" matches a declared name.
NAME_PATTERNS = st.sampled_from(["^x_", "^x_a", "^y", "_id$", "^a"])


@st.composite
def _json_objects(draw: st.DrawFn, inner: st.SearchStrategy[Any]) -> Any:
    props = draw(st.dictionaries(FIELD_NAMES, inner, max_size=4))
    schema: dict[str, Any] = {"type": "object", "properties": props}
    required = draw(st.lists(st.sampled_from(sorted(props)), unique=True)) if props else []
    if required:
        schema["required"] = required
    patterns = draw(st.dictionaries(NAME_PATTERNS, inner, max_size=2))
    if patterns:
        schema["patternProperties"] = patterns
    extra = draw(st.sampled_from(["absent", "true", "false", "schema"]))
    if extra == "schema":
        schema["additionalProperties"] = draw(inner)
    elif extra != "absent":
        schema["additionalProperties"] = extra == "true"
    return schema


JSON_TREES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(
        _json_objects(inner),
        st.fixed_dictionaries(
            {"type": st.just("array"), "items": inner},
            optional={"maxItems": st.integers(0, 5), "uniqueItems": st.booleans()},
        ),
        st.lists(inner, min_size=1, max_size=3).map(lambda branches: {"anyOf": branches}),
        st.lists(inner, min_size=1, max_size=3).map(lambda branches: {"oneOf": branches}),
    ),
    max_leaves=8,
)
# Definitions live at the root, where `#/$defs/...` points.
JSON_SCHEMAS = st.one_of(
    JSON_TREES, JSON_TREES.map(lambda s: {"$defs": {"d": s}, "$ref": "#/$defs/d"})
)
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(AVRO_TYPES)
def test_every_avro_schema_is_fully_compatible_with_itself(schema: Any) -> None:
    # A Python list always means versions: a union goes in as JSON text.
    text = json.dumps(schema)
    assert check_compatibility(text, schema, schema_format="AVRO", mode="FULL_TRANSITIVE") == []
    assert check_compatibility([text, text], text, schema_format="AVRO", mode="FULL") == []


@PROPERTY_SETTINGS
@given(JSON_SCHEMAS)
def test_every_json_schema_is_fully_compatible_with_itself(schema: Any) -> None:
    assert check_compatibility(schema, schema, schema_format="JSON", mode="FULL") == []


@PROPERTY_SETTINGS
@given(AVRO_RECORDS, TYPES_WITH_DEFAULTS)
def test_adding_an_avro_field_with_a_default_is_compatible(
    record: Any, added: tuple[Any, Any]
) -> None:
    kind, default = added
    grown = copy.deepcopy(record)
    grown["fields"].append({"name": "added_zz", "type": kind, "default": default})
    assert check_compatibility(record, grown, schema_format="AVRO", mode="BACKWARD") == []
    assert check_compatibility(record, grown, schema_format="AVRO", mode="FULL") == []


@PROPERTY_SETTINGS
@given(st.data())
def test_none_never_reports_anything(data: st.DataObject) -> None:
    fmt, schemas = data.draw(st.sampled_from([("AVRO", AVRO_TYPES), ("JSON", JSON_SCHEMAS)]))
    old, new = data.draw(schemas), data.draw(schemas)
    assert check_compatibility(json.dumps(old), new, schema_format=fmt, mode="NONE") == []


def _kinds(found: list[Any]) -> list[tuple[str, str]]:
    return sorted((i.kind, i.path) for i in found)


@PROPERTY_SETTINGS
@given(AVRO_TYPES, AVRO_TYPES)
def test_avro_backward_equals_forward_reversed(a: Any, b: Any) -> None:
    backward = check_compatibility(json.dumps(a), b, schema_format="AVRO", mode="BACKWARD")
    forward = check_compatibility(json.dumps(b), a, schema_format="AVRO", mode="FORWARD")
    assert _kinds(backward) == _kinds(forward)


@PROPERTY_SETTINGS
@given(JSON_SCHEMAS, JSON_SCHEMAS)
def test_json_backward_equals_forward_reversed(a: Any, b: Any) -> None:
    backward = check_compatibility(a, b, schema_format="JSON", mode="BACKWARD")
    forward = check_compatibility(b, a, schema_format="JSON", mode="FORWARD")
    assert _kinds(backward) == _kinds(forward)


@PROPERTY_SETTINGS
@given(JSON_SCHEMAS, JSON_SCHEMAS)
def test_json_full_is_backward_plus_forward(a: Any, b: Any) -> None:
    full = check_compatibility(a, b, schema_format="JSON", mode="FULL")
    parts = check_compatibility(a, b, schema_format="JSON", mode="BACKWARD") + check_compatibility(
        a, b, schema_format="JSON", mode="FORWARD"
    )
    assert full == parts


def _closed(**keywords: Any) -> dict[str, Any]:
    return {"type": "object", **keywords, "additionalProperties": False}


@PROPERTY_SETTINGS
@given(JSON_TREES)
def test_dropping_a_pattern_from_a_closed_model_loses_what_it_wrote(written: Any) -> None:
    old = _closed(patternProperties={"^x_": written})
    removed = [("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", "/patternProperties/^x_")]
    assert _found(old, _closed(), "JSON", "BACKWARD") == removed
    assert _found(old, _closed(), "JSON", "FORWARD") == []


@PROPERTY_SETTINGS
@given(JSON_TREES, JSON_TREES)
def test_a_property_added_under_an_old_pattern_must_read_what_the_pattern_wrote(
    written: Any, declared: Any
) -> None:
    assume(not (written is True or written == {}))  # open values: checked as an open model
    patterns = {"^x_": written}
    old = _closed(patternProperties=patterns)
    new = _closed(patternProperties=patterns, properties={"x_k": declared})
    # Exactly what reading the pattern's values with the declared schema finds, at x_k.
    expected = [
        (kind, "/properties/x_k" + path.rstrip("/"))
        for kind, path in _found(written, declared, "JSON", "BACKWARD")
    ]
    assert _found(old, new, "JSON", "BACKWARD") == expected


JSON_TYPES = ["null", "boolean", "object", "array", "number", "integer", "string"]


@PROPERTY_SETTINGS
@given(
    st.lists(st.sampled_from(JSON_TYPES), min_size=2, unique=True),
    st.sampled_from([{}, {"maxLength": 3}, {"minimum": 0}, {"description": "shared"}]),
)
def test_a_type_list_is_fully_compatible_with_its_anyof(
    types: list[str], shared: dict[str, Any]
) -> None:
    listed = {"type": types, **shared}
    branches = {"anyOf": [{"type": t, **shared} for t in reversed(types)]}
    assert check_compatibility(listed, branches, schema_format="JSON", mode="FULL") == []
    assert check_compatibility(branches, listed, schema_format="JSON", mode="FULL") == []


# -- the registry on the real database ------------------------------------------------------


@pytest.fixture(scope="module")
def registry(workbench: Any) -> SchemaRegistry:
    return SchemaRegistry(workbench.engine)


def _subject() -> str:
    return f"test-{uuid.uuid4().hex[:12]}-value"


USER_V1 = _record(ID, EMAIL)
USER_V2 = _record(ID, EMAIL, {"name": "age", "type": ["null", "int"], "default": None})
USER_V3_BAD = _record(
    {"name": "id", "type": "string"}, EMAIL, {"name": "country", "type": "string"}
)


@pytest.mark.stack
def test_register_compatible_versions_and_reject_an_incompatible_one(
    registry: SchemaRegistry,
) -> None:
    subject = _subject()
    first = registry.register(subject, json.dumps(USER_V1), schema_format="AVRO")
    assert (first.version, first.schema_format, first.compatibility) == (1, "AVRO", "BACKWARD")
    assert first.document == USER_V1
    second = registry.register(subject, USER_V2, schema_format="AVRO")
    assert second.version == 2
    assert second.fingerprint != first.fingerprint
    with pytest.raises(IncompatibleSchemaError) as error:
        registry.register(subject, USER_V3_BAD, schema_format="AVRO")
    problems = error.value.incompatibilities
    assert [(p.kind, p.path, p.version) for p in problems] == [
        ("TYPE_MISMATCH", "/fields/id/type", 2),
        ("READER_FIELD_MISSING_DEFAULT_VALUE", "/fields/country", 2),
    ]
    message = str(error.value)
    assert "/fields/id/type" in message
    assert "/fields/country" in message
    assert "nothing was registered" in message
    assert registry.versions(subject) == [1, 2]
    assert registry.get(subject).version == 2
    assert registry.get(subject, 1).id == first.id
    assert subject in registry.subjects()


@pytest.mark.stack
def test_registering_the_same_schema_again_returns_the_stored_version(
    registry: SchemaRegistry,
) -> None:
    subject = _subject()
    first = registry.register(subject, {"type": "object", "properties": {"a": {"type": "string"}}})
    registry.register(
        subject, {"type": "object", "properties": {"a": {"type": "string"}, "b": True}}
    )
    # Same schema, other key order and spacing: the existing version comes back.
    again = registry.register(
        subject, '{"properties": {"a": {"type": "string"}},   "type": "object"}'
    )
    assert (again.id, again.version) == (first.id, 1)
    assert registry.versions(subject) == [1, 2]


@pytest.mark.stack
def test_check_lists_what_breaks_and_who_is_impacted(registry: SchemaRegistry) -> None:
    subject = _subject()
    registry.register(subject, USER_V1, schema_format="AVRO")
    calls: list[str] = []

    def downstream(name: str) -> list[str]:
        calls.append(name)
        return ["warehouse.users", "dashboard:growth", "warehouse.users"]

    fine = registry.check(subject, USER_V2, downstream=downstream)
    assert fine.compatible
    assert (fine.schema_format, fine.mode, fine.versions_checked) == ("AVRO", "BACKWARD", [1])
    assert fine.incompatibilities == []
    assert fine.impacted == []
    assert calls == []  # lineage is asked only when something breaks
    broken = registry.check(subject, USER_V3_BAD, downstream=downstream)
    assert not broken.compatible
    assert [i.kind for i in broken.incompatibilities] == [
        "TYPE_MISMATCH",
        "READER_FIELD_MISSING_DEFAULT_VALUE",
    ]
    assert broken.impacted == ["warehouse.users", "dashboard:growth"]
    assert calls == [subject]
    assert broken.to_frame().height == 2
    assert "incompatible" in repr(broken)
    # By default lineage is asked, but a 'topic-value' subject without metadata names no dataset.
    default = registry.check(subject, USER_V3_BAD)
    assert (default.dataset, default.impacted) == (None, [])
    assert registry.check(subject, USER_V3_BAD, downstream=None).impacted == []
    with pytest.raises(UnknownNameError, match="Did you mean 'lineage'"):
        registry.check(subject, USER_V3_BAD, downstream="lineag")  # type: ignore[arg-type]
    assert registry.check(subject, USER_V3_BAD, compatibility="NONE").compatible
    assert registry.versions(subject) == [1]  # checking stores nothing


def _record_runs(workbench: Any, ns: str, runs: list[tuple[str, str, str]]) -> None:
    """Completed OpenLineage runs of jobs in `ns`: (job, input, output), datasets as 'ns/name'."""
    import psycopg

    from workbench.catalog.lineage import ingest_run_event

    def dataset(identity: str) -> dict[str, str]:
        namespace, name = identity.rsplit("/", 1)
        return {"namespace": namespace, "name": name}

    with psycopg.connect(workbench.endpoints.postgres_url) as conn:
        for job, source, target in runs:
            ingest_run_event(
                conn,
                {
                    "eventType": "COMPLETE",
                    "eventTime": "2026-11-26T10:00:00Z",
                    "run": {"runId": str(uuid.uuid4())},
                    "job": {"namespace": ns, "name": job},
                    "inputs": [dataset(source)],
                    "outputs": [dataset(target)],
                },
            )


@pytest.mark.stack
def test_check_reports_the_datasets_and_jobs_lineage_says_a_change_breaks(
    registry: SchemaRegistry, workbench: Any
) -> None:
    ns = f"impact-{uuid.uuid4().hex[:8]}"
    topic = f"orders{uuid.uuid4().hex[:6]}"
    # A Kafka topic's dataset is kafka://broker:9092/<topic>; its subject is '<topic>-value'.
    dataset = f"kafka://broker:9092/{topic}"
    staging, mart = f"{ns}/staging", f"{ns}/mart"
    _record_runs(workbench, ns, [("load", dataset, staging), ("publish", staging, mart)])
    subject = f"{topic}-value"
    registry.register(subject, USER_V1, schema_format="AVRO", metadata={"dataset": dataset})
    assert registry.dataset(subject) == dataset

    report = registry.check(subject, USER_V3_BAD)
    assert not report.compatible
    assert report.dataset == dataset
    assert report.impacted_datasets == [staging, mart]
    assert report.impacted_jobs == [f"{ns}/load", f"{ns}/publish"]
    assert report.impacted == [staging, mart, f"{ns}/load", f"{ns}/publish"]
    assert registry.check(subject, USER_V2).impacted == [], "only a breaking change impacts"

    # Confluent's metadata shape names the dataset too; a dataset lineage never saw: no impact.
    other = _subject()
    registry.register(
        other, USER_V1, schema_format="AVRO", metadata={"properties": {"dataset": f"{ns}/none"}}
    )
    unseen = registry.check(other, USER_V3_BAD)
    assert (unseen.dataset, unseen.impacted, unseen.compatible) == (f"{ns}/none", [], False)


@pytest.mark.stack
def test_check_of_a_new_subject_must_say_so(registry: SchemaRegistry) -> None:
    report = registry.check(_subject(), {"type": "string"}, new_subject=True)
    assert isinstance(report, CompatibilityReport)
    assert (report.compatible, report.schema_format, report.versions_checked) == (True, "JSON", [])


@pytest.mark.stack
def test_check_of_a_misspelt_subject_says_it_does_not_exist(registry: SchemaRegistry) -> None:
    subject = _subject()
    registry.register(subject, {"type": "string"})
    misspelt = subject.replace("-value", "-valeu")
    with pytest.raises(UnknownSubjectError) as caught:
        registry.check(misspelt, {"type": "integer"})
    assert caught.value.suggestion == subject
    assert isinstance(caught.value, UnknownNameError)
    assert isinstance(caught.value, SchemaNotFoundError)
    message = str(caught.value)
    assert f"Unknown schema subject {misspelt!r}. Did you mean {subject!r}?" in message
    assert "new_subject=True" in message
    assert registry.versions(misspelt) == []
    # An existing subject checked as new is still checked against its versions.
    existing = registry.check(subject, {"type": "integer"}, new_subject=True)
    assert (existing.compatible, existing.versions_checked) == (False, [1])


@pytest.mark.stack
def test_modes_per_subject(registry: SchemaRegistry) -> None:
    subject = _subject()
    registry.register(subject, {"type": "integer"}, compatibility="FORWARD")
    assert registry.compatibility(subject) == "FORWARD"
    with pytest.raises(IncompatibleSchemaError, match="not FORWARD compatible"):
        registry.register(subject, {"type": "number"})
    registry.set_compatibility(subject, "backward")
    assert registry.get(subject).compatibility == "BACKWARD"
    widened = registry.register(subject, {"type": "number"})
    assert (widened.version, widened.compatibility) == (2, "BACKWARD")
    registry.set_compatibility(subject, "NONE")
    assert registry.register(subject, {"type": "string"}).version == 3
    registry.register(subject, {"type": "string", "maxLength": 5})
    registry.set_compatibility(subject, "FULL_TRANSITIVE")
    with pytest.raises(IncompatibleSchemaError) as error:
        registry.register(subject, {"type": "string", "maxLength": 3})
    assert {i.version for i in error.value.incompatibilities} == {1, 2, 3, 4}


@pytest.mark.stack
def test_a_subject_keeps_its_format(registry: SchemaRegistry) -> None:
    subject = _subject()
    registry.register(subject, {"type": "string"})
    with pytest.raises(IncompatibleSchemaError) as error:
        registry.register(subject, '"string"', schema_format="AVRO")
    assert [i.kind for i in error.value.incompatibilities] == ["SCHEMA_FORMAT_CHANGED"]
    report = registry.check(subject, {"type": "string", "maxLength": 2})
    assert report.schema_format == "JSON"
    assert [i.kind for i in report.incompatibilities] == ["MAX_LENGTH_ADDED"]


@pytest.mark.stack
def test_unknown_names_suggest_close_ones(registry: SchemaRegistry) -> None:
    subject = _subject()
    with pytest.raises(UnknownNameError) as error:
        registry.register(subject, {"type": "string"}, compatibility="FULL_TRANSITVE")
    assert error.value.suggestion == "FULL_TRANSITIVE"
    registry.register(subject, {"type": "string"})
    with pytest.raises(UnknownNameError, match="Did you mean 'FORWARD'"):
        registry.set_compatibility(subject, "FORWRD")
    with pytest.raises(UnknownNameError, match="schema format"):
        registry.register(subject, {"type": "string"}, schema_format="PROTOBUF")
    with pytest.raises(UnknownSubjectError, match=f"Did you mean {subject!r}") as caught:
        registry.get(subject[:-1])
    assert caught.value.suggestion == subject
    with pytest.raises(SchemaNotFoundError, match="versions: 1"):
        registry.get(subject, 7)
    with pytest.raises(SchemaNotFoundError, match="register its first version"):
        registry.set_compatibility(_subject(), "NONE")
    assert registry.versions(_subject()) == []


@pytest.mark.stack
def test_invalid_schema_text_is_rejected_with_its_position(registry: SchemaRegistry) -> None:
    subject = _subject()
    with pytest.raises(InvalidSchemaError) as error:
        registry.register(
            subject,
            '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "lng"}]}',
            schema_format="AVRO",
        )
    assert error.value.where == "/fields/a/type"
    assert "Did you mean 'long'?" in str(error.value)
    with pytest.raises(InvalidSchemaError, match="line 2 column"):
        registry.register(subject, '{"type": "object",\n "properties": }')
    with pytest.raises(InvalidSchemaError, match="/properties/a/minLength"):
        registry.check(subject, {"properties": {"a": {"minLength": -1}}}, new_subject=True)
    assert registry.versions(subject) == []


@pytest.mark.stack
def test_concurrent_registrations_get_distinct_versions(registry: SchemaRegistry) -> None:
    subject = _subject()
    registry.register(subject, {"type": "object"}, compatibility="NONE")
    start = threading.Barrier(8)

    def register(n: int) -> RegisteredSchema:
        start.wait()
        return registry.register(subject, {"type": "object", "title": f"v{n}"})

    with ThreadPoolExecutor(8) as pool:
        versions = sorted(r.version for r in pool.map(register, range(8)))
    assert versions == list(range(2, 10))
    same = threading.Barrier(6)

    def register_same(_: int) -> RegisteredSchema:
        same.wait()
        return registry.register(subject, {"type": "object", "title": "same"})

    with ThreadPoolExecutor(6) as pool:
        assert len({r.id for r in pool.map(register_same, range(6))}) == 1
    assert registry.versions(subject) == list(range(1, 11))


@pytest.mark.stack
def test_reprs(registry: SchemaRegistry) -> None:
    subject = _subject()
    stored = registry.register(subject, {"type": "string"})
    assert repr(stored) == f"RegisteredSchema({subject} v1 JSON BACKWARD)"
    assert repr(registry) == "SchemaRegistry()"
    assert repr(registry.check(subject, {"type": "string"})).endswith(": compatible)")
    assert set(MODES) >= {"BACKWARD", "NONE"}
