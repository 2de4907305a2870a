"""The schema registry: versioned subjects in JSON Schema and Avro, checked for compatibility.

Compatibility follows Confluent Schema Registry. BACKWARD: the new schema (reader) reads data
written with the old one (writer). FORWARD: the old schema reads data written with the new one.
FULL: both. The ``_TRANSITIVE`` modes check against every earlier version, the others only
against the latest; NONE checks nothing.

Avro is checked by reader/writer resolution as the Avro specification defines it (the same
algorithm as Avro's ``SchemaCompatibility``, which Confluent uses). JSON Schema is checked
structurally, keyword by keyword, with Confluent's rules: every value the writer's schema accepts
must be accepted by the reader's. A property name is compared under every schema that applies to
it: its ``properties`` entry, the ``patternProperties`` it matches, else ``additionalProperties``.

Each `Incompatibility` has:

- ``kind``: a short code describing the conflict between the reader's schema and the writer's,
  so it is the same whichever mode finds it (BACKWARD(a, b) and FORWARD(b, a) report the same
  kinds). Avro kinds are Avro's own (``READER_FIELD_MISSING_DEFAULT_VALUE``, ``TYPE_MISMATCH``,
  ``MISSING_ENUM_SYMBOLS`` ...); JSON Schema kinds are Confluent's and read as the change from the
  writer's schema to the reader's (``TYPE_NARROWED``, ``REQUIRED_ATTRIBUTE_ADDED`` ...).
- ``path``: where, following field and property names: ``/fields/email/type`` for Avro, a JSON
  pointer such as ``/properties/email/type`` for JSON Schema, ``/`` for the root. ``$ref`` is
  followed, so the path is where the data sits, not where a definition lives.
- ``reason``: a sentence naming the old and new values and the consequence.

Impact analysis. `SchemaRegistry.check` reports, for a breaking candidate, what lineage says the
change reaches: the datasets downstream of the subject's dataset and the jobs reading that dataset
or any of them (the jobs of the current lineage edges leaving them). A subject names its dataset,
the OpenLineage identity ``namespace/name`` its run events use, in one of two ways:

- its metadata: ``register(subject, schema, metadata={"dataset": "kafka://broker:9092/orders"})``,
  or Confluent's metadata shape ``{"properties": {"dataset": ...}}``; the newest version that
  names one counts. Use this for Confluent-style ``orders-value`` / ``orders-key`` subjects;
- else its own name, when that contains a ``/`` (``warehouse/orders``).

A subject naming no dataset, or one lineage has never seen, has no impact to report
(`CompatibilityReport.dataset` says which dataset was looked up).

Checking a candidate against a subject that does not exist raises `UnknownSubjectError` with the
closest subjects (Confluent answers 404 "Subject not found"), so a misspelt subject is never
reported compatible; pass ``new_subject=True`` to check the first version of a new subject.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from fractions import Fraction
from functools import cache, reduce
from typing import Any, Literal, NoReturn, TypeAlias, TypeGuard

import polars as pl
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, Engine, text

from workbench.errors import TerminalError, UnknownNameError, did_you_mean

SchemaFormat = Literal["AVRO", "JSON"]
Direction = Literal["BACKWARD", "FORWARD"]
SchemaInput: TypeAlias = str | Mapping[str, Any]

FORMATS: tuple[str, ...] = ("AVRO", "JSON")
MODES: tuple[str, ...] = (
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
)
DEFAULT_MODE = "BACKWARD"
# Per-subject registration lock: the two-int4 advisory key space never meets single-bigint keys.
_LOCK_NAMESPACE = 0x53636872  # "Schr"


# -- results and errors ---------------------------------------------------------------------


@dataclass(frozen=True)
class Incompatibility:
    """One reason a candidate schema is incompatible with an earlier version."""

    path: str
    reason: str
    kind: str
    direction: Direction = "BACKWARD"
    version: int | None = None  # which earlier version: registry version, or 1-based position

    def __str__(self) -> str:
        against = f" (version {self.version})" if self.version is not None else ""
        return f"{self.path}: {self.reason} [{self.kind}, {self.direction}{against}]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "reason": self.reason,
            "direction": self.direction,
            "version": self.version,
        }


class InvalidSchemaError(TerminalError):
    """Schema text that is not JSON, or not a valid Avro or JSON Schema document."""

    def __init__(
        self,
        schema_format: str,
        where: str,
        problem: str,
        *,
        label: str = "schema",
        remedy: str | None = None,
    ) -> None:
        super().__init__(
            f"Invalid {schema_format} {label} at {where}: {problem}",
            remedy=remedy or f"fix the {label} at {where} and try again.",
        )
        self.schema_format = schema_format
        self.where = where
        self.problem = problem


class IncompatibleSchemaError(TerminalError):
    """A candidate schema breaks the subject's compatibility mode; nothing was registered."""

    def __init__(
        self, subject: str, mode: str, incompatibilities: Sequence[Incompatibility]
    ) -> None:
        self.subject = subject
        self.mode = mode
        self.incompatibilities = list(incompatibilities)
        listed = "\n".join(f"  - {item}" for item in self.incompatibilities)
        super().__init__(
            f"Schema for subject {subject!r} is not {mode} compatible "
            f"({len(self.incompatibilities)} problem(s)); nothing was registered:\n{listed}\n",
            remedy=(
                "make the change compatible (give new Avro fields a default, keep removed "
                "fields optional, widen rather than narrow types), register it under a new "
                "subject, or change the subject's mode with set_compatibility()."
            ),
        )


class SchemaNotFoundError(TerminalError):
    """No such subject or version in the registry."""


class UnknownSubjectError(UnknownNameError, SchemaNotFoundError):
    """No live version of the subject; `suggestion` is the closest existing subject, if any."""

    def __init__(self, subject: str, subjects: Iterable[str], remedy: str) -> None:
        close = difflib.get_close_matches(subject, list(subjects), n=3, cutoff=0.6)
        super().__init__("schema subject", subject, close)
        self.remedy = f"Use one of: {', '.join(close)}; or {remedy}" if close else remedy


class InvalidSubjectError(TerminalError):
    """A subject name the registry cannot use."""


@dataclass(frozen=True)
class CompatibilityReport:
    """What checking a candidate schema against a subject found."""

    subject: str
    schema_format: str
    mode: str
    compatible: bool
    incompatibilities: list[Incompatibility]
    impacted: list[str]  # downstream datasets and consumers the change would break
    versions_checked: list[int]
    # From lineage (the default): the subject's dataset, and `impacted` split into its parts.
    dataset: str | None = None
    impacted_datasets: list[str] = field(default_factory=list)
    impacted_jobs: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        verdict = (
            "compatible"
            if self.compatible
            else f"incompatible: {len(self.incompatibilities)} problem(s), "
            f"{len(self.impacted)} impacted"
        )
        return f"CompatibilityReport({self.subject} {self.schema_format} {self.mode}: {verdict})"

    def to_frame(self) -> pl.DataFrame:
        """The incompatibilities as a Polars DataFrame (empty when compatible)."""
        schema = {
            "path": pl.Utf8,
            "kind": pl.Utf8,
            "reason": pl.Utf8,
            "direction": pl.Utf8,
            "version": pl.Int64,
        }
        return pl.DataFrame([i.to_dict() for i in self.incompatibilities], schema=schema)


# -- names ----------------------------------------------------------------------------------


def _format_name(schema_format: str) -> SchemaFormat:
    name = str(schema_format).strip().upper()
    if name == "AVRO":
        return "AVRO"
    if name in ("JSON", "JSONSCHEMA", "JSON_SCHEMA"):
        return "JSON"
    raise UnknownNameError("schema format", str(schema_format), FORMATS)


def _mode_name(mode: str) -> str:
    name = str(mode).strip().upper()
    if name not in MODES:
        raise UnknownNameError("compatibility mode", str(mode), MODES)
    return name


def _directions(mode: str) -> tuple[Direction, ...]:
    base = mode.removesuffix("_TRANSITIVE")
    if base == "FULL":
        return ("BACKWARD", "FORWARD")
    if base == "BACKWARD":
        return ("BACKWARD",)
    if base == "FORWARD":
        return ("FORWARD",)
    return ()


# -- loading --------------------------------------------------------------------------------


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _display(path: str) -> str:
    return path or "/"


_BARE_NAME = re.compile(r"[A-Za-z_][\w.]*")


def _load(source: Any, schema_format: str, label: str) -> Any:
    """The JSON value a schema input stands for: text is parsed, mappings are taken as they are.

    For Avro, a bare type name (``int``, ``com.acme.User``) and the text ``null`` also stand for
    that type: no Avro schema is JSON null or unquoted, so this cannot be ambiguous.
    """
    if isinstance(source, str):
        if schema_format == "AVRO" and _BARE_NAME.fullmatch(source.strip()):
            return source.strip()
        try:
            return json.loads(source)
        except json.JSONDecodeError as exc:
            raise InvalidSchemaError(
                schema_format,
                f"line {exc.lineno} column {exc.colno}",
                f"not valid JSON ({exc.msg}).",
                label=label,
            ) from None
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, list | bool):
        return source
    raise InvalidSchemaError(
        schema_format,
        "/",
        f"expected schema text or a dict, got {type(source).__name__}.",
        label=label,
    )


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- Avro -----------------------------------------------------------------------------------

_AVRO_PRIMITIVES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
_AVRO_NAMED = frozenset({"record", "enum", "fixed"})
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Writer types each reader type can read by promotion (Avro spec, "Schema Resolution").
_AVRO_PROMOTIONS: dict[str, frozenset[str]] = {
    "long": frozenset({"int"}),
    "float": frozenset({"int", "long"}),
    "double": frozenset({"int", "long", "float"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


@dataclass(eq=False, repr=False)
class _AvroField:
    name: str
    type: _Avro
    aliases: tuple[str, ...]
    has_default: bool


@dataclass(eq=False, repr=False)
class _Avro:
    type: str  # a primitive name, record, enum, array, map, fixed or union
    name: str | None = None  # full name of a named type
    aliases: frozenset[str] = frozenset()
    fields: list[_AvroField] = field(default_factory=list)
    symbols: tuple[str, ...] = ()
    enum_default: str | None = None
    size: int = 0
    items: _Avro | None = None  # array items or map values
    branches: list[_Avro] = field(default_factory=list)

    @property
    def simple_name(self) -> str:
        return (self.name or "").rsplit(".", 1)[-1]

    def describe(self) -> str:
        if self.type in _AVRO_NAMED:
            size = f"({self.size})" if self.type == "fixed" else ""
            return f"{self.type} {self.name}{size}"
        if self.type in ("array", "map") and self.items is not None:
            return f"{self.type}<{self.items.describe()}>"
        if self.type == "union":
            return "[" + ", ".join(b.describe() for b in self.branches) + "]"
        return self.type


class _AvroParser:
    """Parses Avro schema JSON into linked `_Avro` nodes; named references share one node."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.names: dict[str, _Avro] = {}

    def fail(self, path: str, problem: str, remedy: str | None = None) -> NoReturn:
        raise InvalidSchemaError("AVRO", _display(path), problem, label=self.label, remedy=remedy)

    def parse(self, node: Any, path: str, namespace: str | None) -> _Avro:
        if isinstance(node, str):
            return self._reference(node, path, namespace)
        if isinstance(node, list):
            return self._union(node, path, namespace)
        if not isinstance(node, dict):
            self.fail(path, f"expected a type name, an object or a union list, got {node!r}.")
        kind = node.get("type")
        if isinstance(kind, dict | list):
            return self.parse(kind, f"{path}/type", namespace)
        if not isinstance(kind, str):
            self.fail(path, 'a schema object needs a "type".')
        builders = {
            "record": self._record,
            "error": self._record,
            "enum": self._enum,
            "fixed": self._fixed,
            "array": self._container,
            "map": self._container,
        }
        if kind in builders:
            return builders[kind](node, path, namespace)
        # A primitive in object form, or {"type": "SomeName"} naming a defined type.
        return self._reference(kind, f"{path}/type", namespace)

    def _container(self, node: dict[str, Any], path: str, namespace: str | None) -> _Avro:
        kind = node["type"]
        key = "items" if kind == "array" else "values"
        if key not in node:
            self.fail(path, f'an {kind} needs "{key}".')
        return _Avro(kind, items=self.parse(node[key], f"{path}/{key}", namespace))

    def _reference(self, name: str, path: str, namespace: str | None) -> _Avro:
        if name in _AVRO_PRIMITIVES:
            return _Avro(name)
        candidates = (
            [name] if "." in name else [f"{namespace}.{name}", name] if namespace else [name]
        )
        for candidate in candidates:
            if candidate in self.names:
                return self.names[candidate]
        known = sorted(_AVRO_PRIMITIVES | set(self.names) | {"record", "enum", "array", "map"})
        guess = did_you_mean(name, known) or did_you_mean(
            name, [n.rsplit(".", 1)[-1] for n in self.names]
        )
        hint = f" Did you mean {guess!r}?" if guess else ""
        self.fail(
            path,
            f"unknown type {name!r}.{hint}",
            remedy="use a primitive type (null, boolean, int, long, float, double, bytes, "
            "string) or a named type defined earlier in the schema.",
        )

    def _full_name(
        self, node: dict[str, Any], path: str, namespace: str | None
    ) -> tuple[str, str | None]:
        name = node.get("name")
        if not isinstance(name, str) or not name:
            self.fail(f"{path}/name", f'a {node.get("type")} needs a string "name".')
        space: str | None
        if "." in name:
            full, space = name, name.rsplit(".", 1)[0]
        else:
            given = node.get("namespace", namespace)
            if given is not None and not isinstance(given, str):
                self.fail(f"{path}/namespace", f"namespace must be a string, got {given!r}.")
            space = str(given) if given else None
            full = f"{space}.{name}" if space else name
        for part in full.split("."):
            if not _AVRO_NAME.match(part):
                self.fail(
                    f"{path}/name",
                    f"{full!r} is not a valid Avro name (letters, digits and _, not "
                    "starting with a digit, dot-separated).",
                )
        if full in self.names or full in _AVRO_PRIMITIVES:
            self.fail(f"{path}/name", f"the name {full!r} is defined twice.")
        return full, space

    def _aliases(self, node: dict[str, Any], path: str, space: str | None) -> frozenset[str]:
        aliases = node.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            self.fail(f"{path}/aliases", "aliases must be a list of names.")
        return frozenset(a if "." in a or not space else f"{space}.{a}" for a in aliases)

    def _record(self, node: dict[str, Any], path: str, namespace: str | None) -> _Avro:
        full, space = self._full_name(node, path, namespace)
        fields = node.get("fields")
        if not isinstance(fields, list):
            self.fail(f"{path}/fields", 'a record needs a "fields" list.')
        record = _Avro("record", name=full, aliases=self._aliases(node, path, space))
        self.names[full] = record  # before the fields: a record may refer to itself
        seen: set[str] = set()
        for index, item in enumerate(fields):
            if not isinstance(item, dict):
                self.fail(f"{path}/fields/{index}", 'a field is an object with "name" and "type".')
            name = item.get("name")
            if not isinstance(name, str) or not _AVRO_NAME.match(name):
                self.fail(f"{path}/fields/{index}/name", f"invalid field name {name!r}.")
            where = f"{path}/fields/{name}"
            if name in seen:
                self.fail(where, f"field {name!r} is defined twice.")
            seen.add(name)
            if "type" not in item:
                self.fail(where, f'field {name!r} has no "type".')
            kind = self.parse(item["type"], f"{where}/type", space)
            aliases = item.get("aliases", [])
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                self.fail(f"{where}/aliases", "aliases must be a list of names.")
            if "default" in item:
                self._check_default(kind, item["default"], f"{where}/default")
            record.fields.append(_AvroField(name, kind, tuple(aliases), "default" in item))
        return record

    def _enum(self, node: dict[str, Any], path: str, namespace: str | None) -> _Avro:
        full, space = self._full_name(node, path, namespace)
        symbols = node.get("symbols")
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            self.fail(f"{path}/symbols", 'an enum needs a "symbols" list of names.')
        for symbol in symbols:
            if not _AVRO_NAME.match(symbol):
                self.fail(f"{path}/symbols", f"{symbol!r} is not a valid enum symbol.")
        if len(set(symbols)) != len(symbols):
            self.fail(f"{path}/symbols", f"symbols repeat: {symbols}.")
        default = node.get("default")
        if default is not None and default not in symbols:
            self.fail(f"{path}/default", f"default {default!r} is not one of {symbols}.")
        enum = _Avro(
            "enum",
            name=full,
            aliases=self._aliases(node, path, space),
            symbols=tuple(symbols),
            enum_default=default,
        )
        self.names[full] = enum
        return enum

    def _fixed(self, node: dict[str, Any], path: str, namespace: str | None) -> _Avro:
        full, space = self._full_name(node, path, namespace)
        size = node.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            self.fail(f"{path}/size", f'a fixed needs a non-negative integer "size", got {size!r}.')
        fixed = _Avro("fixed", name=full, aliases=self._aliases(node, path, space), size=size)
        self.names[full] = fixed
        return fixed

    def _union(self, node: list[Any], path: str, namespace: str | None) -> _Avro:
        if not node:
            self.fail(path, "an empty union has no values.")
        branches: list[_Avro] = []
        keys: set[str] = set()
        for index, item in enumerate(node):
            branch = self.parse(item, f"{path}/{index}", namespace)
            if branch.type == "union":
                self.fail(f"{path}/{index}", "a union may not directly contain another union.")
            key = branch.name if branch.name else branch.type
            if key in keys:
                self.fail(f"{path}/{index}", f"the union has two {key} branches.")
            keys.add(key)
            branches.append(branch)
        return _Avro("union", branches=branches)

    def _check_default(self, kind: _Avro, value: Any, path: str) -> None:
        if _avro_default_ok(kind, value):
            return
        if kind.type == "union" and any(_avro_default_ok(b, value) for b in kind.branches[1:]):
            self.fail(
                path,
                f"default {value!r} does not match the union's first branch "
                f"({kind.branches[0].describe()}).",
                remedy="a union's default must match its first branch: put the default's type "
                'first, e.g. ["string", "null"] with default "".',
            )
        self.fail(path, f"default {value!r} is not a valid {kind.describe()}.")


def _in_range(bits: int) -> Callable[[Any], bool]:
    bound = 2 ** (bits - 1)
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and -bound <= v < bound


_PRIMITIVE_DEFAULTS: dict[str, Callable[[Any], bool]] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "int": _in_range(32),
    "long": _in_range(64),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, str),  # the spec encodes bytes defaults as strings
}


def _avro_default_ok(kind: _Avro, value: Any) -> bool:
    """Is `value` a valid default for `kind`, in the JSON encoding the Avro spec gives?"""
    check = _PRIMITIVE_DEFAULTS.get(kind.type)
    if check is not None:
        return check(value)
    if kind.type in ("fixed", "enum"):
        if kind.type == "enum":
            return value in kind.symbols
        return isinstance(value, str) and len(value) == kind.size
    if kind.items is not None:  # an array or a map
        items = kind.items
        values: Iterable[Any] | None
        if kind.type == "array":
            values = value if isinstance(value, list) else None
        else:
            values = value.values() if isinstance(value, dict) else None
        return values is not None and all(_avro_default_ok(items, v) for v in values)
    if kind.type == "record":
        return isinstance(value, dict) and all(
            _avro_default_ok(f.type, value[f.name]) if f.name in value else f.has_default
            for f in kind.fields
        )
    return kind.type == "union" and _avro_default_ok(kind.branches[0], value)


def _parse_avro(document: Any, label: str) -> _Avro:
    return _AvroParser(label).parse(document, "", None)


def _avro_canonical(value: Any) -> Any:
    """Collapse ``{"type": "int"}`` to ``"int"`` so equivalent spellings fingerprint alike."""
    if isinstance(value, list):
        return [_avro_canonical(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"type"} and value["type"] in _AVRO_PRIMITIVES:
            return value["type"]
        return {k: _avro_canonical(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class _Side:
    """Says which schema is old and which new for one check direction, to word the reasons."""

    direction: Direction
    version: int | None

    @property
    def reader(self) -> str:
        return "new" if self.direction == "BACKWARD" else "old"

    @property
    def writer(self) -> str:
        return "old" if self.direction == "BACKWARD" else "new"

    @property
    def consequence(self) -> str:
        if self.direction == "BACKWARD":
            return "the new schema cannot read data written with the old one"
        return "readers using the old schema cannot read data written with the new one"

    def old_new(self, reader_value: Any, writer_value: Any) -> tuple[Any, Any]:
        if self.direction == "BACKWARD":
            return writer_value, reader_value
        return reader_value, writer_value

    def issue(self, path: str, kind: str, reason: str) -> Incompatibility:
        return Incompatibility(
            path=_display(path),
            reason=reason,
            kind=kind,
            direction=self.direction,
            version=self.version,
        )


class _AvroCompat:
    """Avro schema resolution: can `reader` read everything `writer` can write?"""

    def __init__(self, side: _Side) -> None:
        self.side = side
        self.active: set[tuple[int, int]] = set()

    def resolve(self, reader: _Avro, writer: _Avro, path: str) -> list[Incompatibility]:
        if writer.type == "union":
            found: list[Incompatibility] = []
            for branch in writer.branches:
                if reader.type == "union":
                    found += self._into_union(reader, branch, path, writer)
                else:
                    found += self._from_union(reader, branch, path, writer)
            return found
        if reader.type == "union":
            return self._into_union(reader, writer, path, None)
        if reader.type == writer.type:
            return self._same_type(reader, writer, path)
        if writer.type in _AVRO_PROMOTIONS.get(reader.type, frozenset()):
            return []
        old, new = self.side.old_new(reader.describe(), writer.describe())
        narrowed = reader.type in _AVRO_PROMOTIONS.get(writer.type, frozenset())
        why = (
            f"{reader.describe()} cannot hold every {writer.describe()} value"
            if narrowed
            else "neither promotes to the other"
        )
        return [
            self.side.issue(
                path,
                "TYPE_NARROWED" if narrowed else "TYPE_MISMATCH",
                f"Type is {old} in the old schema and {new} in the new one; {why}, so "
                f"{self.side.consequence}.",
            )
        ]

    def _same_kind(self, a: _Avro, b: _Avro) -> bool:
        return a.type == b.type and (a.type not in _AVRO_NAMED or self._names_match(a, b))

    def _names_match(self, reader: _Avro, writer: _Avro) -> bool:
        return reader.simple_name == writer.simple_name or (writer.name or "") in reader.aliases

    def _into_union(
        self, reader: _Avro, writer: _Avro, path: str, writer_union: _Avro | None
    ) -> list[Incompatibility]:
        """A writer value (maybe one branch of a writer union) must fit some reader branch."""
        attempts = [self.resolve(branch, writer, path) for branch in reader.branches]
        if any(not attempt for attempt in attempts):
            return []
        for branch, attempt in zip(reader.branches, attempts, strict=True):
            if self._same_kind(branch, writer):
                return attempt  # the branch Avro would pick: report why it does not resolve
        r_side, w_side = self.side.reader, self.side.writer
        source = (
            f"the {w_side} schema's union {writer_union.describe()} allows {writer.describe()}"
            if writer_union is not None
            else f"the {w_side} schema has {writer.describe()}"
        )
        return [
            self.side.issue(
                path,
                "MISSING_UNION_BRANCH",
                f"{source.capitalize()} but no branch of the {r_side} schema's union "
                f"{reader.describe()} can read it, so {self.side.consequence}.",
            )
        ]

    def _from_union(
        self, reader: _Avro, writer: _Avro, path: str, writer_union: _Avro
    ) -> list[Incompatibility]:
        """One branch of a writer union read by a reader that is not a union."""
        found = self.resolve(reader, writer, path)
        if not found or self._same_kind(reader, writer):
            return found
        return [
            self.side.issue(
                path,
                "MISSING_UNION_BRANCH",
                f"The {self.side.writer} schema's union {writer_union.describe()} allows "
                f"{writer.describe()}, which the {self.side.reader} schema's "
                f"{reader.describe()} cannot read, so {self.side.consequence}.",
            )
        ]

    def _same_type(self, reader: _Avro, writer: _Avro, path: str) -> list[Incompatibility]:
        t = reader.type
        if t in ("array", "map") and reader.items is not None and writer.items is not None:
            key = "items" if t == "array" else "values"
            return self.resolve(reader.items, writer.items, f"{path}/{key}")
        if t not in _AVRO_NAMED:
            return []
        if not self._names_match(reader, writer):
            old, new = self.side.old_new(reader.name, writer.name)
            return [
                self.side.issue(
                    f"{path}/name",
                    "NAME_MISMATCH",
                    f"The {t} is named {old} in the old schema and {new} in the new one and "
                    f"no alias of the {self.side.reader} one matches, so {self.side.consequence}.",
                )
            ]
        if t == "record":
            return self._record(reader, writer, path)
        return (
            self._fixed(reader, writer, path) if t == "fixed" else self._enum(reader, writer, path)
        )

    def _fixed(self, reader: _Avro, writer: _Avro, path: str) -> list[Incompatibility]:
        if reader.size == writer.size:
            return []
        old, new = self.side.old_new(reader.size, writer.size)
        return [
            self.side.issue(
                f"{path}/size",
                "FIXED_SIZE_MISMATCH",
                f"Fixed {reader.name} has size {old} in the old schema and {new} in the new "
                f"one, so {self.side.consequence}.",
            )
        ]

    def _enum(self, reader: _Avro, writer: _Avro, path: str) -> list[Incompatibility]:
        missing = [s for s in writer.symbols if s not in reader.symbols]
        if not missing or reader.enum_default is not None:
            return []
        return [
            self.side.issue(
                f"{path}/symbols",
                "MISSING_ENUM_SYMBOLS",
                f"Enum {reader.name} has symbol(s) {', '.join(missing)} in the "
                f"{self.side.writer} schema that the {self.side.reader} schema lacks, and "
                f"the {self.side.reader} enum has no default, so {self.side.consequence}.",
            )
        ]

    def _record(self, reader: _Avro, writer: _Avro, path: str) -> list[Incompatibility]:
        pair = (id(reader), id(writer))
        if pair in self.active:  # a recursive record: its other fields are being checked
            return []
        self.active.add(pair)
        try:
            written = {f.name: f for f in writer.fields}
            found: list[Incompatibility] = []
            for item in reader.fields:
                match = written.get(item.name) or next(
                    (written[a] for a in item.aliases if a in written), None
                )
                where = f"{path}/fields/{item.name}"
                if match is not None:
                    found += self.resolve(item.type, match.type, f"{where}/type")
                elif not item.has_default:
                    found.append(
                        self.side.issue(
                            where,
                            "READER_FIELD_MISSING_DEFAULT_VALUE",
                            f"Field {item.name!r} ({item.type.describe()}) is in the "
                            f"{self.side.reader} schema without a default but not in the "
                            f"{self.side.writer} schema, so {self.side.consequence}.",
                        )
                    )
            return found
        finally:
            self.active.discard(pair)


# -- JSON Schema ----------------------------------------------------------------------------

_JSON_TYPES = ("null", "boolean", "object", "array", "number", "integer", "string")
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "id",
        "$anchor",
        "$comment",
        "$vocabulary",
        "$defs",
        "definitions",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",
        "contentMediaType",
        "contentEncoding",
    }
)
# Keywords whose changes are not analysed: any change on the reader's side counts as breaking.
_UNANALYSED = (
    "dependencies",
    "dependentRequired",
    "dependentSchemas",
    "propertyNames",
    "if",
    "then",
    "else",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedProperties",
    "unevaluatedItems",
)
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
_VALUES = frozenset({"enum", "const", "default", "examples"})
# Keywords mapping property names (or name patterns) to the schemas of their values.
_NAME_MAPS = ("properties", "patternProperties")


def _json_type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _json_value_key(value: Any) -> str:
    """Equality of JSON values as JSON Schema sees it (1 == 1.0, true != 1)."""

    def norm(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v

    return _canonical_json(norm(value))


def _covers(types: set[str], t: str) -> bool:
    return t in types or (t == "integer" and "number" in types)


def _is_any(schema: Any) -> bool:
    return schema is True or (
        isinstance(schema, dict) and all(key in _ANNOTATIONS for key in schema)
    )


def _pointer(parts: Iterable[Any]) -> str:
    return "".join(f"/{_escape(str(part))}" for part in parts)


def _resolve_ref(root: Any, ref: str, path: str, label: str) -> Any:
    """The target of a same-document ``$ref`` (JSON pointer or ``$anchor``)."""
    own_id = root.get("$id") if isinstance(root, dict) else None
    if isinstance(own_id, str) and own_id and ref.startswith(own_id.split("#")[0] + "#"):
        ref = ref[len(own_id.split("#")[0]) :]
    if not ref.startswith("#"):
        raise InvalidSchemaError(
            "JSON",
            _display(path),
            f"$ref {ref!r} points outside this document.",
            label=label,
            remedy="only references within the same document are supported "
            "(#/$defs/NAME or #/definitions/NAME); inline the referenced schema under $defs.",
        )
    fragment = urllib.parse.unquote(ref[1:])
    if fragment and not fragment.startswith("/"):
        for node in _json_subschemas(root):
            if isinstance(node, dict) and fragment in (node.get("$anchor"), node.get("$id")):
                return node
        raise InvalidSchemaError(
            "JSON", _display(path), f"$ref {ref!r}: no $anchor {fragment!r}.", label=label
        )
    target = root
    for raw in fragment.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and token in target:
            target = target[token]
        elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
            target = target[int(token)]
        else:
            raise InvalidSchemaError(
                "JSON",
                _display(path),
                f"$ref {ref!r} does not resolve: {token!r} is missing.",
                label=label,
                remedy="define the referenced schema under $defs (or definitions) and point "
                "the $ref at it.",
            )
    return target


def _json_subschemas(root: Any) -> Iterator[Any]:
    """Every subschema of a document (values of enum, const, default, examples excluded)."""
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, is_map = stack.pop()
        if is_map and isinstance(node, dict):
            stack.extend((v, False) for v in node.values())
            continue
        if isinstance(node, list):
            stack.extend((v, False) for v in node)
            continue
        if not isinstance(node, dict):
            continue
        yield node
        for key, value in node.items():
            if key in _VALUES:
                continue
            stack.append((value, key in _SCHEMA_MAPS))


def _json_refs(root: Any) -> Iterator[tuple[str, str]]:
    """(path, ref) of every ``$ref`` in a document."""
    stack: list[tuple[Any, str, bool]] = [(root, "", False)]
    while stack:
        node, path, is_map = stack.pop()
        if isinstance(node, list):
            stack.extend((v, f"{path}/{i}", False) for i, v in enumerate(node))
        elif isinstance(node, dict):
            if is_map:
                stack.extend((v, f"{path}/{_escape(k)}", False) for k, v in node.items())
                continue
            ref = node.get("$ref")
            if isinstance(ref, str):
                yield f"{path}/$ref", ref
            for key, value in node.items():
                if key not in _VALUES:
                    stack.append((value, f"{path}/{_escape(key)}", key in _SCHEMA_MAPS))


@cache
def _metaschema_validator(cls: Any) -> Any:
    return cls(cls.META_SCHEMA)


def _parse_json_schema(document: Any, label: str) -> Any:
    if not isinstance(document, dict | bool):
        raise InvalidSchemaError(
            "JSON", "/", f"a JSON Schema is an object or a boolean, got {document!r}.", label=label
        )
    try:
        validators = importlib.import_module("jsonschema.validators")
        exceptions = importlib.import_module("jsonschema.exceptions")
    except ImportError:  # pragma: no cover - jsonschema is installed wherever the tests run
        validators = None
    if validators is not None:
        cls = validators.validator_for(document, default=validators.Draft202012Validator)
        error = exceptions.best_match(_metaschema_validator(cls).iter_errors(document))
        if error is not None:
            where = _display(_pointer(error.path))
            hint = ""
            if error.path and error.path[-1] == "type" and isinstance(error.instance, str):
                guess = did_you_mean(error.instance, _JSON_TYPES)
                hint = f" Did you mean {guess!r}?" if guess else ""
            raise InvalidSchemaError(
                "JSON",
                where,
                f"{error.message}.{hint}",
                label=label,
                remedy=f"make the schema valid against its metaschema ({cls.__name__}); "
                f"fix the value at {where}.",
            )
    for path, ref in _json_refs(document):
        target, hops = _resolve_ref(document, ref, path, label), 0
        while isinstance(target, dict) and isinstance(target.get("$ref"), str):
            hops += 1
            if hops > 32:
                raise InvalidSchemaError(
                    "JSON", _display(path), f"$ref {ref!r} refers to itself in a loop.", label=label
                )
            target = _resolve_ref(document, target["$ref"], path, label)
    return document


def _describe_types(types: set[str] | None) -> str:
    if types is None:
        return "any type"
    ordered = [t for t in _JSON_TYPES if t in types]
    return ordered[0] if len(ordered) == 1 else "[" + ", ".join(ordered) + "]"


def _bound(schema: dict[str, Any], upper: bool) -> tuple[float, bool, str] | None:
    """The effective maximum (or minimum): value, exclusive, and the keyword that set it."""
    plain, exclusive = ("maximum", "exclusiveMaximum") if upper else ("minimum", "exclusiveMinimum")
    found: list[tuple[float, bool, str]] = []
    value = schema.get(plain)
    if isinstance(value, int | float) and not isinstance(value, bool):
        found.append((value, schema.get(exclusive) is True, plain))  # draft 4: boolean flag
    value = schema.get(exclusive)
    if isinstance(value, int | float) and not isinstance(value, bool):
        found.append((value, True, exclusive))
    if not found:
        return None
    if upper:
        return min(found, key=lambda b: (b[0], not b[1]))
    return max(found, key=lambda b: (b[0], b[1]))


_KEYWORD_CODE = {
    "maximum": "MAXIMUM",
    "exclusiveMaximum": "EXCLUSIVE_MAXIMUM",
    "minimum": "MINIMUM",
    "exclusiveMinimum": "EXCLUSIVE_MINIMUM",
    "multipleOf": "MULTIPLE_OF",
    "maxLength": "MAX_LENGTH",
    "minLength": "MIN_LENGTH",
    "pattern": "PATTERN",
}
# How a tighter reader keyword reads as a change from the writer's value.
_VALUE_CHANGE = {
    "maximum": "DECREASED",
    "exclusiveMaximum": "DECREASED",
    "minimum": "INCREASED",
    "exclusiveMinimum": "INCREASED",
    "multipleOf": "CHANGED",
    "maxLength": "DECREASED",
    "minLength": "INCREASED",
    "pattern": "CHANGED",
}


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _divides(step: float, value: float) -> bool:
    return (Fraction(str(value)) / Fraction(str(step))).denominator == 1


def _or_absent(schema: dict[str, Any], keyword: str) -> Any:
    return (
        repr(schema[keyword])
        if keyword == "pattern" and keyword in schema
        else schema.get(keyword, "absent")
    )


def _matches(pattern: str, value: str) -> bool:
    try:
        return re.search(pattern, value) is not None
    except re.error:  # ECMA-262 syntax Python lacks: the value cannot be judged here
        return True


_REGEX_SYNTAX = frozenset(".^$*+?{}[]()|\\")


def _literal_start(pattern: str) -> tuple[str, bool] | None:
    """The text every name matching `pattern` starts with, and whether the pattern is just that.

    Known only for anchored patterns (``^x_`` gives ``("x_", True)``); None otherwise.
    """
    if not pattern.startswith("^") or "|" in pattern:
        return None  # unanchored, or an alternative that may match anywhere
    body = pattern[1:]
    for index, char in enumerate(body):
        if char in _REGEX_SYNTAX:
            optional = char in "*?{"  # a quantifier: the character before may be absent
            return body[: index - 1 if optional and index else index], False
    return body, True


def _patterns_disjoint(a: str, b: str) -> bool:
    """No name matches both patterns: known only when they pin different literal starts."""
    start_a, start_b = _literal_start(a), _literal_start(b)
    if start_a is None or start_b is None:
        return False
    return not (start_a[0].startswith(start_b[0]) or start_b[0].startswith(start_a[0]))


def _pattern_covers(wide: str, narrow: str) -> bool:
    """Every name matching `narrow` matches `wide`: known for equal patterns and plain prefixes."""
    if wide == narrow:
        return True
    start_wide, start_narrow = _literal_start(wide), _literal_start(narrow)
    if start_wide is None or start_narrow is None:
        return False
    return start_wide[1] and start_narrow[0].startswith(start_wide[0])


def _value_violations(value: Any, r: dict[str, Any]) -> list[str]:
    """The reader's string and number keywords that one concrete value breaks."""
    broken: list[str] = []
    if isinstance(value, str):
        if isinstance(r.get("maxLength"), int) and len(value) > r["maxLength"]:
            broken.append("maxLength")
        if isinstance(r.get("minLength"), int) and len(value) < r["minLength"]:
            broken.append("minLength")
        if isinstance(r.get("pattern"), str) and not _matches(r["pattern"], value):
            broken.append("pattern")
    elif _is_number(value):
        for upper in (True, False):
            bound = _bound(r, upper)
            if bound is None:
                continue
            limit, exclusive, keyword = bound
            beyond = value > limit if upper else value < limit
            if beyond or (exclusive and value == limit):
                broken.append(keyword)
        step = r.get("multipleOf")
        if _is_number(step) and step > 0 and not _divides(step, value):
            broken.append("multipleOf")
    return broken


@dataclass(frozen=True)
class _Members:
    """What an object schema says about its properties, by name, by pattern and the rest."""

    declared: dict[str, Any]  # properties
    patterns: dict[str, Any]  # patternProperties
    extra: Any  # additionalProperties, dereferenced


class _JsonCompat:
    """Is every value the writer's schema accepts also accepted by the reader's?"""

    def __init__(self, side: _Side, writer_root: Any, reader_root: Any, label: str) -> None:
        self.side = side
        self.roots = {"writer": writer_root, "reader": reader_root}
        self.label = label
        self.active: set[tuple[int, int]] = set()
        self.keep: list[Any] = []  # merged schemas stay alive so their ids stay unique
        self.synthetic: set[int] = set()  # allOf made from $ref siblings: not in any path
        self.in_writer_one_of = 0  # depth of writer oneOf branches being compared

    # -- helpers
    def deref(self, schema: Any, role: str) -> Any:
        hops = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            target = _resolve_ref(self.roots[role], schema["$ref"], "", self.label)
            siblings = {k: v for k, v in schema.items() if k != "$ref" and k not in _ANNOTATIONS}
            if siblings:  # keywords beside $ref apply as well: the two are an allOf
                schema = {"allOf": [target, siblings]}
                self.keep.append(schema)
                self.synthetic.add(id(schema))
            else:
                schema = target
            hops += 1
            if hops > 32:
                raise InvalidSchemaError("JSON", "/", "$ref loop.", label=self.label)
        return schema

    def merge(self, base: Any, extra: Any) -> Any:
        """One schema for a writer's `base` and `extra` together (an allOf of the two).

        Common keywords are intersected exactly; on other clashes the result keeps `extra`'s
        value, accepting more than the intersection: that can only over-report on the
        writer's side, where merging is used.
        """
        if base is False or extra is False:
            return False
        if base is True or not base:
            return extra
        if extra is True or not extra:
            return base
        merged = {**base, **extra}
        for key in set(base) & set(extra):
            a, b = base[key], extra[key]
            if key in _NAME_MAPS and isinstance(a, dict) and isinstance(b, dict):
                merged[key] = {
                    name: {"allOf": [a[name], b[name]]}
                    if name in a and name in b
                    else a.get(name, b.get(name))
                    for name in {**a, **b}
                }
            elif key == "required" and isinstance(a, list) and isinstance(b, list):
                merged[key] = list(dict.fromkeys([*a, *b]))
            elif key in _TIGHTER and _is_number(a) and _is_number(b):
                merged[key] = _TIGHTER[key](a, b)
            elif key == "type":
                kept = [t for t in _JSON_TYPES if _covers(_as_set(a), t) and _covers(_as_set(b), t)]
                merged[key] = kept
        self.keep.append(merged)
        return merged

    def issue(self, path: str, kind: str, reason: str) -> Incompatibility:
        return self.side.issue(path, kind, f"{reason}, so {self.side.consequence}.")

    def old_new(self, reader_value: Any, writer_value: Any) -> str:
        old, new = self.side.old_new(reader_value, writer_value)
        return f"{old} in the old schema and {new} in the new one"

    # -- the comparison
    def compare(
        self, writer: Any, reader: Any, path: str, branch: str | None = None
    ) -> list[Incompatibility]:
        writer, reader = self.deref(writer, "writer"), self.deref(reader, "reader")
        pair = (id(writer), id(reader))
        if pair in self.active:  # recursive $ref: the enclosing comparison covers it
            return []
        self.active.add(pair)
        try:
            return self._compare(writer, reader, path, branch)
        finally:
            self.active.discard(pair)

    def _compare(self, w: Any, r: Any, path: str, branch: str | None) -> list[Incompatibility]:
        if _is_any(r) or w is False:
            return []
        if r is False:
            return [
                self.issue(
                    path,
                    "TYPE_NARROWED",
                    f"The {self.side.reader} schema accepts no value here (false) where the "
                    f"{self.side.writer} schema accepts some",
                )
            ]
        w = {} if w is True else w
        if {"allOf", "anyOf", "oneOf"} & set(w):
            return self._writer_combined(w, r, path, branch)
        if "allOf" in r:
            found = self.compare(w, {k: v for k, v in r.items() if k != "allOf"}, path)
            inline = id(r) in self.synthetic
            for index, part in enumerate(r["allOf"]):
                found += self.compare(w, part, path if inline else f"{path}/allOf/{index}")
            return found
        for key in ("anyOf", "oneOf"):
            if key in r:
                return self._reader_union(w, r, key, path, branch)
        return self._keywords(w, r, path)

    def _writer_combined(
        self, w: dict[str, Any], r: Any, path: str, branch: str | None
    ) -> list[Incompatibility]:
        """Split a writer's allOf (merged into one schema) or anyOf/oneOf (each branch alone)."""
        if "allOf" in w:
            merged: Any = {k: v for k, v in w.items() if k != "allOf"}
            for part in w["allOf"]:
                merged = self.merge(merged, self.deref(part, "writer"))
            return self.compare(merged, r, path, branch)
        key = "anyOf" if "anyOf" in w else "oneOf"
        rest = {k: v for k, v in w.items() if k != key}
        found: list[Incompatibility] = []
        self.in_writer_one_of += key == "oneOf"
        try:
            for index, part in enumerate(w[key]):
                option = self.merge(rest, self.deref(part, "writer"))
                found += self.compare(option, r, path, branch=f"{key}/{index}")
        finally:
            self.in_writer_one_of -= key == "oneOf"
        return found

    def _reader_union(
        self, w: dict[str, Any], r: dict[str, Any], key: str, path: str, branch: str | None
    ) -> list[Incompatibility]:
        found = self.compare(w, {k: v for k, v in r.items() if k != key}, path)
        attempts = [
            self.compare(w, part, f"{path}/{key}/{index}") for index, part in enumerate(r[key])
        ]
        accepting = [index for index, attempt in enumerate(attempts) if not attempt]
        if key == "oneOf" and len(accepting) > 1 and not self.in_writer_one_of:
            # Every value the writer allows matches these branches at once: oneOf refuses it.
            # (Not so inside a branch of a writer's own oneOf: it may hold values the writer
            # refuses for matching another branch too.)
            first, second = accepting[:2]
            return [
                *found,
                self.issue(
                    f"{path}/{key}",
                    "ONE_OF_AMBIGUOUS",
                    f"Every value of the {self.side.writer} schema matches branches {first} "
                    f"and {second} of the {self.side.reader} schema's oneOf, which accepts a "
                    "value matching exactly one",
                ),
            ]
        if not attempts or accepting:
            return found
        if self._each_type_matches(w, r[key], path):
            return found
        if branch is None:
            return found + min(attempts, key=len)  # the closest branch says what is wrong
        return [
            *found,
            self.issue(
                f"{path}/{key}",
                "SUM_TYPE_NARROWED",
                f"Branch {branch} of the {self.side.writer} schema matches no branch of the "
                f"{self.side.reader} schema's {key}",
            ),
        ]

    def _each_type_matches(self, w: dict[str, Any], branches: list[Any], path: str) -> bool:
        """Does each type of the writer's type list match some branch of the reader's union?

        A type list accepts what an anyOf of one schema per type does, so its types may
        match different branches.
        """
        types = _types_of(w)
        if types is None or len(types) < 2:
            return False
        options = [{**w, "type": t} for t in _JSON_TYPES if t in types]
        self.keep.extend(options)  # their ids stay unique while compare() tracks them
        return all(
            any(not self.compare(option, branch, path) for branch in branches) for option in options
        )

    def _keywords(self, w: dict[str, Any], r: dict[str, Any], path: str) -> list[Incompatibility]:
        found: list[Incompatibility] = []
        w_declared = _types_of(w)
        r_types = _types_of(r)
        w_values = _enum_of(w)
        w_types = w_declared
        if w_values is not None:
            # Only the values the writer's schema itself accepts can be written.
            w_values = [
                v
                for v in w_values
                if (w_declared is None or _covers(w_declared, _json_type_of(v)))
                and not _value_violations(v, w)
            ]
            produced = {_json_type_of(v) for v in w_values}
            w_types = {t for t in produced if w_declared is None or _covers(w_declared, t)}
        possible = w_types if w_types is not None else set(_JSON_TYPES) - {"integer"}
        if r_types is not None:
            lost = {t for t in possible if not _covers(r_types, t)}
            if lost:
                narrowed = all(_covers(possible, t) for t in r_types)
                change = self.old_new(_describe_types(r_types), _describe_types(w_types))
                found.append(
                    self.issue(
                        f"{path}/type",
                        "TYPE_NARROWED" if narrowed else "TYPE_CHANGED",
                        f"Type is {change}; {_describe_types(lost)} values are no longer accepted",
                    )
                )
            possible = {t for t in possible if _covers(r_types, t)}
        found += self._enum(w, r, w_values, path)
        if "not" in r and _canonical_json(r["not"]) != _canonical_json(w.get("not")):
            found.append(
                self.issue(
                    f"{path}/not",
                    "NOT_TYPE_EXTENDED",
                    f"The {self.side.reader} schema's `not` excludes values that the "
                    f"{self.side.writer} schema may accept",
                )
            )
        if w_values is not None:
            found += self._enum_values(w_values, w, r, path)
        else:
            if "string" in possible:
                found += self._strings(w, r, path)
            if possible & {"number", "integer"}:
                found += self._numbers(w, r, path, integers_only=possible == {"integer"})
            if "object" in possible:
                found += self._objects(w, r, path)
            if "array" in possible:
                found += self._arrays(w, r, path)
        for key in _UNANALYSED:
            if key in r and _canonical_json(r[key]) != _canonical_json(w.get(key)):
                change = self.old_new(_canonical_json(r[key]), _canonical_json(w.get(key)))
                found.append(
                    self.issue(
                        f"{path}/{key}",
                        "KEYWORD_CHANGED",
                        f"`{key}` is {change}; such changes are not analysed and count as breaking",
                    )
                )
        return found

    def _enum(
        self, w: dict[str, Any], r: dict[str, Any], w_values: list[Any] | None, path: str
    ) -> list[Incompatibility]:
        r_values = _enum_of(r)
        if r_values is None:
            return []
        keyword = "enum" if "enum" in r else "const"
        allowed = {_json_value_key(v) for v in r_values}
        shown = json.dumps(r_values)
        if w_values is None:
            return [
                self.issue(
                    f"{path}/{keyword}",
                    "ENUM_ARRAY_NARROWED",
                    f"The {self.side.reader} schema restricts values to {shown} where the "
                    f"{self.side.writer} schema has no such restriction",
                )
            ]
        missing = [v for v in w_values if _json_value_key(v) not in allowed]
        if not missing:
            return []
        written = {_json_value_key(v) for v in w_values}
        kind = "ENUM_ARRAY_NARROWED" if allowed <= written else "ENUM_ARRAY_CHANGED"
        return [
            self.issue(
                f"{path}/{keyword}",
                kind,
                f"Allowed values are {self.old_new(shown, json.dumps(w_values))}; "
                f"{json.dumps(missing)} are no longer accepted",
            )
        ]

    def _enum_values(
        self, values: list[Any], w: dict[str, Any], r: dict[str, Any], path: str
    ) -> list[Incompatibility]:
        """A writer with an enum writes only those values: test each against the reader."""
        found: list[Incompatibility] = []
        for value in values:
            for keyword in _value_violations(value, r):
                change = _VALUE_CHANGE[keyword]
                kind = f"{_KEYWORD_CODE[keyword]}_{change if keyword in w else 'ADDED'}"
                found.append(
                    self.issue(
                        f"{path}/{keyword}",
                        kind,
                        f"Value {value!r} of the {self.side.writer} schema's enum breaks the "
                        f"{self.side.reader} schema's {keyword} {r[keyword]!r}",
                    )
                )
        return found

    def _strings(self, w: dict[str, Any], r: dict[str, Any], path: str) -> list[Incompatibility]:
        found: list[Incompatibility] = []
        r_max, w_max = r.get("maxLength"), w.get("maxLength")
        if isinstance(r_max, int) and (w_max is None or w_max > r_max):
            found.append(
                self.issue(
                    f"{path}/maxLength",
                    "MAX_LENGTH_ADDED" if w_max is None else "MAX_LENGTH_DECREASED",
                    f"maxLength is {self.old_new(r_max, _or_absent(w, 'maxLength'))}",
                )
            )
        r_min, w_min = r.get("minLength", 0), w.get("minLength", 0)
        if isinstance(r_min, int) and r_min > w_min:
            found.append(
                self.issue(
                    f"{path}/minLength",
                    "MIN_LENGTH_ADDED" if "minLength" not in w else "MIN_LENGTH_INCREASED",
                    f"minLength is {self.old_new(r_min, _or_absent(w, 'minLength'))}",
                )
            )
        if "pattern" in r and r["pattern"] != w.get("pattern"):
            found.append(
                self.issue(
                    f"{path}/pattern",
                    "PATTERN_ADDED" if "pattern" not in w else "PATTERN_CHANGED",
                    f"pattern is {self.old_new(repr(r['pattern']), _or_absent(w, 'pattern'))}",
                )
            )
        return found

    def _numbers(
        self, w: dict[str, Any], r: dict[str, Any], path: str, *, integers_only: bool
    ) -> list[Incompatibility]:
        found: list[Incompatibility] = []
        for upper in (True, False):
            r_bound, w_bound = _bound(r, upper), _bound(w, upper)
            if r_bound is None:
                continue
            rv, r_excl, keyword = r_bound
            if w_bound is not None:
                wv, w_excl, _ = w_bound
                inside = wv < rv if upper else wv > rv
                if inside or (wv == rv and (w_excl or not r_excl)):
                    continue
            change = _VALUE_CHANGE[keyword] if w_bound is not None else "ADDED"
            shown = f"{w_bound[2]} {w_bound[0]}" if w_bound else "no bound"
            found.append(
                self.issue(
                    f"{path}/{keyword}",
                    f"{_KEYWORD_CODE[keyword]}_{change}",
                    f"The bound is {self.old_new(f'{keyword} {rv}', shown)}",
                )
            )
        r_step = r.get("multipleOf")
        if _is_number(r_step) and r_step > 0:
            w_step = w.get("multipleOf", 1 if integers_only else None)
            if not (_is_number(w_step) and _divides(r_step, w_step)):
                found.append(
                    self.issue(
                        f"{path}/multipleOf",
                        "MULTIPLE_OF_ADDED" if w_step is None else "MULTIPLE_OF_CHANGED",
                        f"multipleOf is {self.old_new(r_step, w_step)}",
                    )
                )
        return found

    def _members(self, schema: dict[str, Any], role: str) -> _Members:
        return _Members(
            declared=schema.get("properties") or {},
            patterns=schema.get("patternProperties") or {},
            extra=self.deref(schema.get("additionalProperties", True), role),
        )

    def _objects(self, w: dict[str, Any], r: dict[str, Any], path: str) -> list[Incompatibility]:
        written, read = self._members(w, "writer"), self._members(r, "reader")
        found: list[Incompatibility] = []
        for name, schema in read.declared.items():
            where = f"{path}/properties/{_escape(name)}"
            if name in written.declared:
                found += self.compare(written.declared[name], schema, where)
                found += self._new_patterns(written.declared[name], name, written, read, where)
            else:
                found += self._property_added(name, schema, written, where)
        for name, schema in written.declared.items():
            if name not in read.declared and self.deref(schema, "writer") is not False:
                where = f"{path}/properties/{_escape(name)}"
                found += self._property_removed(name, schema, written, read, where)
        found += self._pattern_properties(written, read, path)
        if written.extra is not False:
            found += self._additional(written.extra, read.extra, f"{path}/additionalProperties")
        found += self._required(w, r, read.declared, path)
        found += self._counts(w, r, path, "Properties")
        return found

    def _written_as(self, name: str, written: _Members) -> Any:
        """The writer's schema for a name it does not declare: its patterns', else its extras'."""
        matching = [
            self.deref(schema, "writer")
            for pattern, schema in written.patterns.items()
            if _matches(pattern, name)
        ]
        return reduce(self.merge, matching, True) if matching else written.extra

    def _new_patterns(
        self, schema: Any, name: str, written: _Members, read: _Members, where: str
    ) -> list[Incompatibility]:
        """Reader patterns that match a name the writer declares also constrain its value.

        A pattern the writer has too is left to `_pattern_properties`: the writer's own pattern
        already constrains the value, and that pattern is compared once for all names.
        """
        found: list[Incompatibility] = []
        for pattern, pattern_schema in read.patterns.items():
            if pattern not in written.patterns and _matches(pattern, name):
                found += self.compare(schema, pattern_schema, where)
        return found

    def _property_added(
        self, name: str, schema: Any, written: _Members, where: str
    ) -> list[Incompatibility]:
        """A property only the reader declares: written, if at all, by a pattern or as an extra."""
        writes = self._written_as(name, written)
        if writes is False:
            return []  # the writer's closed content model never writes it
        if not _is_any(writes):
            return self.compare(writes, schema, where)
        if _is_any(self.deref(schema, "reader")):
            return []
        return [
            self.issue(
                where,
                "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
                f"Property {name!r} is constrained in the {self.side.reader} schema, but the "
                f"{self.side.writer} schema's open content model lets it hold any value",
            )
        ]

    def _property_removed(
        self, name: str, schema: Any, written: _Members, read: _Members, where: str
    ) -> list[Incompatibility]:
        """A property only the writer declares: the reader takes it by pattern or as an extra."""
        if any(_matches(pattern, name) for pattern in read.patterns):
            return self._new_patterns(schema, name, written, read, where)
        return self._taken_as_extra(f"Property {name!r} is", schema, read.extra, where)

    def _taken_as_extra(
        self, subject: str, schema: Any, r_extra: Any, where: str
    ) -> list[Incompatibility]:
        """Values the writer declares and the reader can take only as additional properties."""
        if r_extra is False:
            return [
                self.issue(
                    where,
                    "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
                    f"{subject} in the {self.side.writer} schema but not in the "
                    f"{self.side.reader} schema, whose content model is closed "
                    "(additionalProperties: false)",
                )
            ]
        return [] if _is_any(r_extra) else self.compare(schema, r_extra, where)

    def _pattern_properties(
        self, written: _Members, read: _Members, path: str
    ) -> list[Incompatibility]:
        """Names no schema declares: by the writer's patterns, and the reader's new patterns."""
        found: list[Incompatibility] = []
        for pattern, schema in written.patterns.items():
            found += self._pattern_written(pattern, schema, written, read, path)
        if written.extra is False:
            return found  # names matching no writer pattern are never written
        for pattern, schema in read.patterns.items():
            if not any(_pattern_covers(mine, pattern) for mine in written.patterns):
                # Some names it matches reach the writer only as additional properties.
                where = f"{path}/patternProperties/{_escape(pattern)}"
                found += self._additional(written.extra, self.deref(schema, "reader"), where)
        return found

    def _pattern_written(
        self, pattern: str, schema: Any, written: _Members, read: _Members, path: str
    ) -> list[Incompatibility]:
        """Names matching a writer pattern, against each reader pattern that may match them too.

        Unless one reader pattern surely covers them all, some reach the reader's additional
        properties as well.
        """
        if self.deref(schema, "writer") is False:
            return []  # the writer never writes such names
        found: list[Incompatibility] = []
        for other, other_schema in read.patterns.items():
            # A writer pattern of its own constrains the overlap: compared under that pattern.
            overlaps = other not in written.patterns and not _patterns_disjoint(pattern, other)
            if other == pattern or overlaps:
                where = f"{path}/patternProperties/{_escape(other)}"
                found += self.compare(schema, other_schema, where)
        if not any(_pattern_covers(other, pattern) for other in read.patterns):
            where = f"{path}/patternProperties/{_escape(pattern)}"
            found += self._taken_as_extra(
                f"Properties matching {pattern!r} are", schema, read.extra, where
            )
        return found

    def _additional(self, w_extra: Any, r_extra: Any, where: str) -> list[Incompatibility]:
        if r_extra is False:
            return [
                self.issue(
                    where,
                    "ADDITIONAL_PROPERTIES_REMOVED",
                    f"The {self.side.writer} schema allows additional properties and the "
                    f"{self.side.reader} schema forbids them",
                )
            ]
        if _is_any(r_extra):
            return []
        if not _is_any(w_extra):
            return self.compare(w_extra, r_extra, where)
        return [
            self.issue(
                where,
                "ADDITIONAL_PROPERTIES_NARROWED",
                f"The {self.side.reader} schema constrains additional properties that the "
                f"{self.side.writer} schema leaves open",
            )
        ]

    def _required(
        self, w: dict[str, Any], r: dict[str, Any], r_props: dict[str, Any], path: str
    ) -> list[Incompatibility]:
        found: list[Incompatibility] = []
        w_required = set(w.get("required") or [])
        for name in dict.fromkeys(r.get("required") or []):
            if name in w_required:
                continue
            declared = self.deref(r_props.get(name, True), "reader")
            if isinstance(declared, dict) and "default" in declared:
                continue  # Confluent: a required property with a default is compatible
            found.append(
                self.issue(
                    f"{path}/required",
                    "REQUIRED_ATTRIBUTE_ADDED",
                    f"Property {name!r} is required in the {self.side.reader} schema but "
                    f"optional or absent in the {self.side.writer} schema",
                )
            )
        return found

    def _counts(
        self, w: dict[str, Any], r: dict[str, Any], path: str, noun: str
    ) -> list[Incompatibility]:
        found: list[Incompatibility] = []
        code = noun.upper()
        r_max, w_max = r.get(f"max{noun}"), w.get(f"max{noun}")
        if isinstance(r_max, int) and (w_max is None or w_max > r_max):
            found.append(
                self.issue(
                    f"{path}/max{noun}",
                    f"MAX_{code}_ADDED" if w_max is None else f"MAX_{code}_DECREASED",
                    f"max{noun} is {self.old_new(r_max, w_max if w_max is not None else 'absent')}",
                )
            )
        r_min, w_min = r.get(f"min{noun}", 0), w.get(f"min{noun}", 0)
        if isinstance(r_min, int) and r_min > w_min:
            found.append(
                self.issue(
                    f"{path}/min{noun}",
                    f"MIN_{code}_ADDED" if f"min{noun}" not in w else f"MIN_{code}_INCREASED",
                    f"min{noun} is {self.old_new(r_min, w_min if f'min{noun}' in w else 'absent')}",
                )
            )
        return found

    def _arrays(self, w: dict[str, Any], r: dict[str, Any], path: str) -> list[Incompatibility]:
        found: list[Incompatibility] = []
        w_fixed, w_rest, _, _ = _array_parts(w)
        r_fixed, r_rest, r_fixed_key, r_rest_key = _array_parts(r)
        w_closed = self.deref(w_rest, "writer") is False
        for index in range(max(len(w_fixed), len(r_fixed))):
            if index >= len(w_fixed) and w_closed:
                break  # the writer never writes this position
            written = w_fixed[index] if index < len(w_fixed) else w_rest
            read = r_fixed[index] if index < len(r_fixed) else r_rest
            where = (
                f"{path}/{r_fixed_key}/{index}" if index < len(r_fixed) else f"{path}/{r_rest_key}"
            )
            found += self.compare(written, read, where)
        if not w_closed:
            found += self.compare(w_rest, r_rest, f"{path}/{r_rest_key}")
        found += self._counts(w, r, path, "Items")
        if r.get("uniqueItems") is True and w.get("uniqueItems") is not True:
            found.append(
                self.issue(
                    f"{path}/uniqueItems",
                    "UNIQUE_ITEMS_ADDED",
                    f"The {self.side.reader} schema requires unique items and the "
                    f"{self.side.writer} schema does not",
                )
            )
        return found


_TIGHTER: dict[str, Callable[[float, float], float]] = {
    **dict.fromkeys(("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"), min),
    **dict.fromkeys(("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"), max),
}


def _as_set(declared: Any) -> set[str]:
    if isinstance(declared, str):
        return {declared}
    return {t for t in declared if isinstance(t, str)} if isinstance(declared, list) else set()


def _types_of(schema: dict[str, Any]) -> set[str] | None:
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    return None


def _enum_of(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    values = schema.get("enum")
    return list(values) if isinstance(values, list) else None


def _array_parts(schema: dict[str, Any]) -> tuple[list[Any], Any, str, str]:
    """Positional item schemas, the schema of the rest, and the keywords that hold them."""
    if isinstance(schema.get("prefixItems"), list):
        return schema["prefixItems"], schema.get("items", True), "prefixItems", "items"
    items = schema.get("items", True)
    if isinstance(items, list):
        return items, schema.get("additionalItems", True), "items", "additionalItems"
    return [], items, "items", "items"


# -- the pure function ----------------------------------------------------------------------


def _parse(document: Any, schema_format: SchemaFormat, label: str) -> Any:
    if schema_format == "AVRO":
        return _parse_avro(document, label)
    return _parse_json_schema(document, label)


def _check_pair(
    previous: Any, candidate: Any, schema_format: SchemaFormat, side: _Side, label: str
) -> list[Incompatibility]:
    reader, writer = (
        (candidate, previous) if side.direction == "BACKWARD" else (previous, candidate)
    )
    if schema_format == "AVRO":
        return _AvroCompat(side).resolve(reader, writer, "")
    return _JsonCompat(side, writer, reader, label).compare(writer, reader, "")


def check_compatibility(
    previous: SchemaInput | Sequence[SchemaInput],
    candidate: SchemaInput,
    *,
    schema_format: SchemaFormat | str,
    mode: str,
) -> list[Incompatibility]:
    """Why `candidate` is not compatible with `previous` under `mode`; empty when it is.

    `previous` is one schema or a list of earlier versions, oldest first: transitive modes check
    all of them, the others only the last. Schemas are JSON text or dicts (a Python list always
    means versions; pass an Avro union as JSON text). Raises `UnknownNameError` for an unknown
    mode or format and `InvalidSchemaError` for a schema that is not valid.
    """
    fmt = _format_name(schema_format)
    chosen = _mode_name(mode)
    new = _parse(_load(candidate, fmt, "candidate schema"), fmt, "candidate schema")
    versions = list(previous) if isinstance(previous, list | tuple) else [previous]
    numbered = isinstance(previous, list | tuple)
    directions = _directions(chosen)
    if not directions or not versions:
        return []
    positions = range(len(versions)) if chosen.endswith("_TRANSITIVE") else [len(versions) - 1]
    found: list[Incompatibility] = []
    for position in positions:
        label = f"previous schema {position + 1}" if numbered else "previous schema"
        old = _parse(_load(versions[position], fmt, label), fmt, label)
        for direction in directions:
            side = _Side(direction, position + 1 if numbered else None)
            found += _check_pair(old, new, fmt, side, label)
    return found


def canonical_form(definition: SchemaInput, *, schema_format: SchemaFormat | str) -> str:
    """The schema as sorted, compact JSON: equal for equivalent spellings of one schema."""
    fmt = _format_name(schema_format)
    document = _load(definition, fmt, "schema")
    _parse(document, fmt, "schema")
    if fmt == "AVRO":
        document = _avro_canonical(document)
    return _canonical_json(document)


def fingerprint(definition: SchemaInput, *, schema_format: SchemaFormat | str) -> str:
    """sha256 (hex) of the canonical form."""
    canonical = canonical_form(definition, schema_format=schema_format)
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- the registry ---------------------------------------------------------------------------


class RegisteredSchema(BaseModel):
    """One version of a subject as the registry holds it."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    subject: str
    version: int
    schema_format: str
    definition: str
    fingerprint: str
    compatibility: str
    references: list[Any]
    metadata: dict[str, Any]
    created_at: datetime

    @property
    def document(self) -> Any:
        """The definition parsed from JSON."""
        return json.loads(self.definition)

    def __repr__(self) -> str:
        return (
            f"RegisteredSchema({self.subject} v{self.version} {self.schema_format} "
            f"{self.compatibility})"
        )


_COLUMNS = (
    'id, subject, version, schema_format, definition, fingerprint, compatibility, "references", '
    "metadata, created_at"
)


@dataclass(frozen=True)
class _Row:
    version: int
    schema_format: str
    definition: str
    compatibility: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


SCHEMA_EVENT_SOURCE = "/dictamesh/schema-registry"


def _announce(conn: Connection, schema: RegisteredSchema, change: str) -> None:
    """Publish `dictamesh.schema.changed` through the outbox, in the change's transaction."""
    from workbench.events.envelope import CloudEvent
    from workbench.events.outbox import enqueue
    from workbench.events.topics import SCHEMA_CHANGED

    event = CloudEvent(
        source=SCHEMA_EVENT_SOURCE,
        type=SCHEMA_CHANGED,
        subject=schema.subject,
        partitionkey=schema.subject,
        data={
            "change": change,
            "subject": schema.subject,
            "version": schema.version,
            "schema_format": schema.schema_format,
            "compatibility": schema.compatibility,
            "fingerprint": schema.fingerprint,
        },
    )
    enqueue(conn, SCHEMA_CHANGED, event)


class SchemaRegistry:
    """Versioned subjects in the ``dictamesh_schemas`` table, guarded by compatibility modes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __repr__(self) -> str:
        return "SchemaRegistry()"

    # -- writes
    def register(
        self,
        subject: str,
        definition: SchemaInput,
        *,
        schema_format: SchemaFormat | str = "JSON",
        compatibility: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> RegisteredSchema:
        """Store `definition` as the subject's next version, unless an equal one is there.

        The same canonical schema again returns the version already stored. `compatibility`
        overrides the subject's mode (its latest version's, else BACKWARD) for this check and
        stays with the new version. Raises `IncompatibleSchemaError` and stores nothing when the
        schema breaks the mode.
        """
        subject = _subject_name(subject)
        fmt = _format_name(schema_format)
        mode = _mode_name(compatibility) if compatibility is not None else None
        digest = fingerprint(definition, schema_format=fmt)  # validates the schema too
        stored_text = _stored_text(definition, fmt)
        with self.engine.begin() as conn:
            self._lock(conn, subject)
            existing = (
                conn.execute(
                    text(
                        f"SELECT {_COLUMNS} FROM dictamesh_schemas WHERE subject = :subject "  # noqa: S608 - fixed columns
                        "AND fingerprint = :fingerprint AND schema_format = :format "
                        "AND NOT is_deleted ORDER BY version LIMIT 1"
                    ),
                    {"subject": subject, "fingerprint": digest, "format": fmt},
                )
                .mappings()
                .first()
            )
            if existing is not None:
                return RegisteredSchema.model_validate(dict(existing))
            rows = self._live_rows(conn, subject)
            mode = mode or (rows[-1].compatibility if rows else DEFAULT_MODE)
            problems = _evaluate(rows, definition, fmt, mode)
            if problems:
                raise IncompatibleSchemaError(subject, mode, problems)
            next_version = conn.execute(
                text(
                    "SELECT coalesce(max(version), 0) + 1 FROM dictamesh_schemas "
                    "WHERE subject = :subject"
                ),
                {"subject": subject},
            ).scalar_one()
            created = (
                conn.execute(
                    text(
                        "INSERT INTO dictamesh_schemas (subject, version, schema_format, "  # noqa: S608 - fixed columns
                        'definition, fingerprint, compatibility, "references", metadata) '
                        "VALUES (:subject, :version, :format, :definition, :fingerprint, :mode, "
                        "CAST(:references AS jsonb), CAST(:metadata AS jsonb)) "
                        f"RETURNING {_COLUMNS}"
                    ),
                    {
                        "subject": subject,
                        "version": int(next_version),
                        "format": fmt,
                        "definition": stored_text,
                        "fingerprint": digest,
                        "mode": mode,
                        "references": "[]",
                        "metadata": json.dumps(dict(metadata or {})),
                    },
                )
                .mappings()
                .one()
            )
            registered = RegisteredSchema.model_validate(dict(created))
            _announce(conn, registered, "registered")
        return registered

    def set_compatibility(self, subject: str, mode: str) -> None:
        """Change the subject's mode (kept on its latest version) for the next registrations."""
        chosen = _mode_name(mode)
        with self.engine.begin() as conn:
            self._lock(conn, subject)
            changed = (
                conn.execute(
                    text(
                        "UPDATE dictamesh_schemas SET compatibility = :mode "  # noqa: S608 - fixed columns
                        "WHERE subject = :subject AND NOT is_deleted AND version = "
                        "(SELECT max(version) FROM dictamesh_schemas "
                        f"WHERE subject = :subject AND NOT is_deleted) RETURNING {_COLUMNS}"
                    ),
                    {"subject": subject, "mode": chosen},
                )
                .mappings()
                .first()
            )
            if changed is not None:
                _announce(conn, RegisteredSchema.model_validate(dict(changed)), "compatibility")
        if changed is None:
            raise self._missing(
                subject,
                remedy="register its first version with register(subject, definition, "
                f"compatibility={chosen!r}).",
            )

    # -- reads
    def get(self, subject: str, version: int | Literal["latest"] = "latest") -> RegisteredSchema:
        """One version of a subject; the newest by default."""
        if version == "latest":
            query = (
                f"SELECT {_COLUMNS} FROM dictamesh_schemas WHERE subject = :subject "  # noqa: S608 - fixed columns
                "AND NOT is_deleted ORDER BY version DESC LIMIT 1"
            )
            params: dict[str, Any] = {"subject": subject}
        elif isinstance(version, int) and not isinstance(version, bool):
            query = (
                f"SELECT {_COLUMNS} FROM dictamesh_schemas WHERE subject = :subject "  # noqa: S608 - fixed columns
                "AND version = :version AND NOT is_deleted"
            )
            params = {"subject": subject, "version": version}
        else:
            raise SchemaNotFoundError(
                f"version={version!r} is not a version number.",
                remedy="pass a positive int or 'latest'.",
            )
        with self.engine.connect() as conn:
            row = conn.execute(text(query), params).mappings().first()
        if row is not None:
            return RegisteredSchema.model_validate(dict(row))
        known = self.versions(subject)
        if not known:
            raise self._missing(subject)
        raise SchemaNotFoundError(
            f"Subject {subject!r} has no version {version!r}.",
            remedy=f"use one of its versions: {', '.join(map(str, known))}, or 'latest'.",
        )

    def versions(self, subject: str) -> list[int]:
        """The subject's live version numbers, oldest first (empty for an unknown subject)."""
        with self.engine.connect() as conn:
            return [
                int(v)
                for v in conn.execute(
                    text(
                        "SELECT version FROM dictamesh_schemas WHERE subject = :subject "
                        "AND NOT is_deleted ORDER BY version"
                    ),
                    {"subject": subject},
                ).scalars()
            ]

    def subjects(self) -> list[str]:
        """Every subject with a live version, sorted."""
        with self.engine.connect() as conn:
            return [
                str(s)
                for s in conn.execute(
                    text(
                        "SELECT DISTINCT subject FROM dictamesh_schemas WHERE NOT is_deleted "
                        "ORDER BY subject"
                    )
                ).scalars()
            ]

    def dataset(self, subject: str) -> str | None:
        """The lineage dataset the subject describes, or None (see the module docstring)."""
        with self.engine.connect() as conn:
            return _dataset_of(subject, self._live_rows(conn, subject))

    def compatibility(self, subject: str) -> str:
        """The subject's mode: its latest version's, or BACKWARD for a new subject."""
        with self.engine.connect() as conn:
            rows = self._live_rows(conn, subject)
        return rows[-1].compatibility if rows else DEFAULT_MODE

    def check(
        self,
        subject: str,
        candidate: SchemaInput,
        *,
        schema_format: SchemaFormat | str | None = None,
        compatibility: str | None = None,
        downstream: Callable[[str], Iterable[str]] | Literal["lineage"] | None = "lineage",
        new_subject: bool = False,
    ) -> CompatibilityReport:
        """Would `candidate` be accepted? Lists what breaks and, if it breaks, who is impacted.

        `downstream` says who depends on the subject, asked only when the candidate breaks it:
        ``"lineage"`` (the default) lists the datasets downstream of the subject's dataset and
        the jobs reading them (see the module docstring for how a subject names its dataset);
        a callable ``downstream(subject)`` names them itself; None skips impact analysis.

        Raises `UnknownSubjectError` (with the closest subjects) for a subject with no version,
        unless `new_subject` says the candidate is meant as a new subject's first version.
        """
        if isinstance(downstream, str) and downstream != "lineage":
            raise UnknownNameError("impact source", downstream, ["lineage"])
        with self.engine.connect() as conn:
            rows = self._live_rows(conn, subject)
        if not rows and not new_subject:
            raise self._missing(
                subject,
                remedy="pass new_subject=True to check the first version of a new subject.",
            )
        fmt = _format_name(schema_format or (rows[-1].schema_format if rows else "JSON"))
        mode = _mode_name(compatibility or (rows[-1].compatibility if rows else DEFAULT_MODE))
        _parse(_load(candidate, fmt, "candidate schema"), fmt, "candidate schema")
        problems = _evaluate(rows, candidate, fmt, mode)
        dataset = _dataset_of(subject, rows)
        impacted: list[str] = []
        datasets: list[str] = []
        jobs: list[str] = []
        if not problems or downstream is None:
            pass
        elif isinstance(downstream, str):
            if dataset is not None:
                datasets, jobs = self._lineage_impact(dataset)
            impacted = list(dict.fromkeys([*datasets, *jobs]))
        else:
            impacted = list(dict.fromkeys(str(name) for name in downstream(subject)))
        return CompatibilityReport(
            subject=subject,
            schema_format=fmt,
            mode=mode,
            compatible=not problems,
            incompatibilities=problems,
            impacted=impacted,
            versions_checked=[row.version for row in _targets(rows, mode)],
            dataset=dataset,
            impacted_datasets=datasets,
            impacted_jobs=jobs,
        )

    # -- helpers
    @staticmethod
    def _lock(conn: Connection, subject: str) -> None:
        # Serialises writers of one subject, so version numbers never collide.
        conn.execute(
            text("SELECT pg_advisory_xact_lock(CAST(:space AS integer), hashtext(:subject))"),
            {"space": _LOCK_NAMESPACE, "subject": subject},
        )

    @staticmethod
    def _live_rows(conn: Connection, subject: str) -> list[_Row]:
        result = conn.execute(
            text(
                "SELECT version, schema_format, definition, compatibility, metadata "
                "FROM dictamesh_schemas WHERE subject = :subject AND NOT is_deleted "
                "ORDER BY version"
            ),
            {"subject": subject},
        )
        return [_Row(int(r[0]), str(r[1]), str(r[2]), str(r[3]), r[4] or {}) for r in result]

    def _missing(self, subject: str, remedy: str | None = None) -> UnknownSubjectError:
        return UnknownSubjectError(
            subject,
            self.subjects(),
            remedy or "list the subjects with subjects(), or register a first version.",
        )

    def _lineage_impact(self, dataset: str) -> tuple[list[str], list[str]]:
        """Downstream datasets and reading jobs of `dataset`; none when lineage never saw it."""
        from workbench.catalog import lineage

        with self.engine.connect() as conn:
            raw: Any = conn.connection.driver_connection  # psycopg, as the lineage module uses
            try:
                found = lineage.impact(raw, dataset)
            except UnknownNameError:
                return [], []
        return found.datasets, found.jobs


def _stored_text(definition: SchemaInput, fmt: SchemaFormat) -> str:
    """The definition as the user wrote it when that is JSON text, else as JSON."""
    if isinstance(definition, str):
        try:
            json.loads(definition)
        except json.JSONDecodeError:
            return json.dumps(_load(definition, fmt, "schema"))
        return definition
    return json.dumps(_load(definition, fmt, "schema"))


def _subject_name(subject: str) -> str:
    if not isinstance(subject, str) or not subject.strip():
        raise InvalidSubjectError(
            f"Subject {subject!r} is not a usable name.",
            remedy="name the subject, e.g. 'orders-value'.",
        )
    return subject


def _dataset_of(subject: str, rows: Sequence[_Row]) -> str | None:
    """The dataset the newest version naming one gives in its metadata, else a ``ns/name``
    subject itself."""
    for row in reversed(rows):
        metadata = row.metadata if isinstance(row.metadata, Mapping) else {}
        properties = metadata.get("properties")
        for named in (
            metadata.get("dataset"),
            properties.get("dataset") if isinstance(properties, Mapping) else None,
        ):
            if isinstance(named, str) and named.strip():
                return named
    return subject if "/" in subject else None


def _targets(rows: list[_Row], mode: str) -> list[_Row]:
    if not _directions(mode) or not rows:
        return []
    return rows if mode.endswith("_TRANSITIVE") else rows[-1:]


def _evaluate(
    rows: list[_Row], candidate: SchemaInput, fmt: SchemaFormat, mode: str
) -> list[Incompatibility]:
    """Check a candidate against the stored versions the mode names, by their version numbers."""
    base = mode.removesuffix("_TRANSITIVE")
    found: list[Incompatibility] = []
    for row in _targets(rows, mode):
        if row.schema_format != fmt:
            found.append(
                Incompatibility(
                    path="/",
                    reason=f"The schema format is {row.schema_format} in version {row.version} "
                    f"and {fmt} in the new schema; a subject keeps one format unless its mode "
                    "is NONE.",
                    kind="SCHEMA_FORMAT_CHANGED",
                    direction="BACKWARD",
                    version=row.version,
                )
            )
            continue
        found += [
            replace(item, version=row.version)
            for item in check_compatibility(row.definition, candidate, schema_format=fmt, mode=base)
        ]
    return found
