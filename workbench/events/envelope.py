"""The CloudEvents 1.0 envelope and its Kafka protocol binding.

Binary content mode (the default) carries the attributes as ``ce_*`` headers and the data as the
record value; structured mode carries the whole event as ``application/cloudevents+json``. On read
the mode is detected as the binding specifies: a ``content-type`` starting with
``application/cloudevents`` means structured, a ``ce_specversion`` header means binary; a record
with neither whose value is a JSON object with ``specversion`` is read as structured too (some
writers label it with the data's content type); anything else is not a CloudEvent. The
``partitionkey`` extension is the Kafka record key.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workbench.errors import TerminalError

SPEC_VERSION: Literal["1.0"] = "1.0"
JSON = "application/json"
STRUCTURED_JSON = "application/cloudevents+json"
CONTEXT_ATTRIBUTES = (
    "id",
    "source",
    "specversion",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
)
KNOWN_EXTENSIONS = ("correlationid", "causationid", "traceparent", "partitionkey")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")

ContentMode = Literal["binary", "structured"]


class InvalidEventError(TerminalError):
    """A record is not a valid CloudEvent; `reason` is the short cause in dead-letter headers."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(
            message,
            remedy="fix the producer; the record went to the dead-letter topic with this reason.",
        )
        self.reason = reason


def new_event_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class CloudEvent(BaseModel):
    """One CloudEvent. Extensions beyond the four DictaMesh ones live in `extensions`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=new_event_id, min_length=1)
    source: str = Field(min_length=1)
    specversion: Literal["1.0"] = SPEC_VERSION
    type: str = Field(min_length=1)
    time: datetime = Field(default_factory=utcnow)
    subject: str | None = None
    datacontenttype: str | None = JSON
    dataschema: str | None = None
    correlationid: str | None = None
    causationid: str | None = None
    traceparent: str | None = None
    partitionkey: str | None = None
    extensions: dict[str, str] = Field(default_factory=dict)
    data: Any = None

    @field_validator("time", mode="after")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time must carry a timezone (RFC 3339)")
        return value.astimezone(UTC)

    @field_validator("extensions", mode="after")
    @classmethod
    def _extension_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _EXTENSION_NAME.match(name) or name in CONTEXT_ATTRIBUTES + KNOWN_EXTENSIONS:
                raise ValueError(
                    f"extension name {name!r} must be 1-20 lowercase letters or digits and not a "
                    "context attribute"
                )
        return value

    # -- attribute views --------------------------------------------------------------------
    def attributes(self) -> dict[str, str]:
        """Every attribute except data, as the strings the bindings carry."""
        values: dict[str, str] = {}
        for name in (*CONTEXT_ATTRIBUTES, *KNOWN_EXTENSIONS):
            value = getattr(self, name)
            if value is None:
                continue
            values[name] = _rfc3339(value) if isinstance(value, datetime) else str(value)
        values.update(self.extensions)
        return values

    def data_bytes(self) -> bytes:
        if self.data is None:
            return b""
        if isinstance(self.data, bytes):
            return self.data
        if isinstance(self.data, str) and not _is_json(self.datacontenttype):
            return self.data.encode()
        return orjson.dumps(self.data, default=str)

    # -- Kafka binding ----------------------------------------------------------------------
    def to_kafka(self, mode: ContentMode = "binary") -> KafkaRecord:
        key = self.partitionkey.encode() if self.partitionkey is not None else None
        if mode == "structured":
            envelope: dict[str, Any] = dict(self.attributes())
            envelope.pop("partitionkey", None)
            if isinstance(self.data, bytes):
                envelope["data_base64"] = base64.b64encode(self.data).decode()
            elif self.data is not None:
                envelope["data"] = self.data
            body = json.dumps(envelope, separators=(",", ":"), default=str).encode()
            return KafkaRecord(key, body, [("content-type", STRUCTURED_JSON.encode())])
        headers: list[tuple[str, str | bytes | None]] = []
        for name, text in self.attributes().items():
            if name == "datacontenttype":
                headers.append(("content-type", text.encode()))
            elif name != "partitionkey":
                headers.append((f"ce_{name}", text.encode()))
        return KafkaRecord(key, self.data_bytes(), headers)

    @classmethod
    def from_kafka(
        cls,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | str | None]] | None,
        key: bytes | None = None,
        *,
        received: datetime | None = None,
    ) -> CloudEvent:
        """Read a record in either content mode; raise `InvalidEventError` when it is not one.

        An event without `time` takes `received` (the record's Kafka timestamp), so reading the
        same record again gives the same event; without either, the time of reading.
        """
        if headers:
            quick = cls._read_binary_quickly(value, headers, key, received)
            if quick is not None:
                return quick
        return cls._read_fully(value, headers, key, received)

    @classmethod
    def _read_fully(
        cls,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | str | None]] | None,
        key: bytes | None,
        received: datetime | None,
    ) -> CloudEvent:
        header_map = {name.lower(): _text(raw) for name, raw in (headers or [])}
        content_type = header_map.get("content-type") or ""
        if content_type.startswith("application/cloudevents"):
            return cls._from_structured(value, key, received)
        if "ce_specversion" in header_map:
            return cls._from_binary(value, header_map, key, received)
        if _looks_structured(value):
            # Some writers (the Python SDK among them) label structured events with the data's
            # content type; a JSON object carrying `specversion` is unambiguous enough.
            return cls._from_structured(value, key, received, data_type=content_type or None)
        raise InvalidEventError(
            "not-a-cloudevent",
            "The record has neither a ce_specversion header (binary mode) nor a content-type of "
            f"application/cloudevents+json (structured mode); content-type was {content_type!r}.",
        )

    @classmethod
    def _read_binary_quickly(
        cls,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | str | None]],
        key: bytes | None,
        received: datetime | None,
    ) -> CloudEvent | None:
        """A binary-mode record of the common shape, read in one pass; None to read it fully.

        Every record of the pipeline passes here. Anything unusual (an extension, a header that is
        not UTF-8 bytes, a missing or empty required attribute, a time without its zone, data that
        is not JSON) returns None, and the full reading produces the event or its precise error.
        """
        found = _quick_attributes(headers)
        if found is None:
            return None
        values, given = found
        content_type = values["datacontenttype"]
        if content_type is not None and content_type.startswith("application/cloudevents"):
            return None
        given_time = values["time"]
        stamped = (received or utcnow()) if given_time is None else _aware_time(given_time)
        if stamped is None:
            return None
        values["time"] = stamped
        if key is not None and "partitionkey" not in given:
            values["partitionkey"] = _text(key)
            given.add("partitionkey")
        values["data"] = value
        if value is not None and _is_json(content_type):
            try:
                values["data"] = orjson.loads(value) if value else None
            except orjson.JSONDecodeError:
                return None
        elif value is not None and _is_text(content_type):
            return None
        values["extensions"] = {}
        return cls._trusted(values, given)

    @classmethod
    def _from_binary(
        cls,
        value: bytes | None,
        headers: Mapping[str, str],
        key: bytes | None,
        received: datetime | None,
    ) -> CloudEvent:
        attributes: dict[str, Any] = {
            name[3:]: text for name, text in headers.items() if name.startswith("ce_")
        }
        _default_time(attributes, received)
        attributes["datacontenttype"] = headers.get("content-type")
        if key is not None and "partitionkey" not in attributes:
            attributes["partitionkey"] = _text(key)
        return cls._build(attributes, _binary_data(value, attributes["datacontenttype"]))

    @classmethod
    def _trusted(cls, values: dict[str, Any], given: Iterable[str]) -> CloudEvent:
        """An instance from values already checked against every field's rule.

        What `model_construct` does, without its per-field default resolution, which cost more
        than the rest of reading a record. `values` holds every field.
        """
        event = cls.__new__(cls)
        object.__setattr__(event, "__dict__", values)
        object.__setattr__(event, "__pydantic_fields_set__", {*given, "extensions", "data"})
        object.__setattr__(event, "__pydantic_extra__", None)
        object.__setattr__(event, "__pydantic_private__", None)
        return event

    @classmethod
    def _from_structured(
        cls,
        value: bytes | None,
        key: bytes | None,
        received: datetime | None,
        *,
        data_type: str | None = None,
    ) -> CloudEvent:
        try:
            envelope = json.loads(value or b"")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidEventError(
                "envelope-not-json", f"The structured-mode record is not JSON ({exc})."
            ) from None
        if not isinstance(envelope, dict):
            raise InvalidEventError(
                "envelope-not-object", "The structured-mode record is JSON but not an object."
            )
        data = envelope.pop("data", None)
        if "data_base64" in envelope:
            data = base64.b64decode(envelope.pop("data_base64"))
            envelope.setdefault("datacontenttype", None)  # opaque bytes: no implied JSON
        if key is not None and "partitionkey" not in envelope:
            envelope["partitionkey"] = _text(key)
        _default_time(envelope, received)
        if data_type is not None and envelope.get("datacontenttype") is None:
            envelope["datacontenttype"] = data_type  # where that writer put it
        return cls._build(envelope, data)

    @classmethod
    def _build(cls, attributes: dict[str, Any], data: Any) -> CloudEvent:
        specversion = attributes.get("specversion")
        if specversion != SPEC_VERSION:
            raise InvalidEventError(
                "unsupported-specversion",
                f"specversion {specversion!r} is not supported; only {SPEC_VERSION!r} is.",
            )
        known = {
            name: attributes.pop(name)
            for name in (*CONTEXT_ATTRIBUTES, *KNOWN_EXTENSIONS)
            if name in attributes
        }
        extensions = {name: str(text) for name, text in attributes.items()}
        fast = _checked_attributes(known, extensions)
        if fast is not None:
            values = {**_OPTIONAL_DEFAULTS, **fast, "extensions": extensions, "data": data}
            return cls._trusted({name: values[name] for name in _FIELD_ORDER}, fast)
        try:
            return cls(**known, extensions=extensions, data=data)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise InvalidEventError(
                "invalid-attribute",
                f"CloudEvent attribute {where!r} is invalid: {problem['msg']} "
                f"(value {problem.get('input')!r}).",
            ) from None


_REQUIRED_TEXT = ("id", "source", "type")
_OPTIONAL_TEXT = (
    "subject",
    "datacontenttype",
    "dataschema",
    "correlationid",
    "causationid",
    "traceparent",
    "partitionkey",
)


_OPTIONAL_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(_OPTIONAL_TEXT),
    "datacontenttype": JSON,
}


_FIELD_ORDER = tuple(CloudEvent.model_fields)
_UNSET_FIELDS: dict[str, Any] = {**dict.fromkeys(_FIELD_ORDER), "specversion": SPEC_VERSION}
_QUICK_TEXT = frozenset((*_REQUIRED_TEXT, *_OPTIONAL_TEXT, "time")) - {"datacontenttype"}


def _quick_attributes(
    headers: Iterable[tuple[str, bytes | str | None]],
) -> tuple[dict[str, Any], set[str]] | None:
    """Every field from binary-mode headers and the names given; None for anything unusual."""
    values = dict(_UNSET_FIELDS)
    given = {"datacontenttype", "time", "specversion"}
    has_specversion = False
    try:
        for raw_name, raw in headers:
            if type(raw) is not bytes:
                return None
            name = raw_name.lower()
            if name.startswith("ce_") and name[3:] in _QUICK_TEXT:
                values[name[3:]] = raw.decode()
                given.add(name[3:])
            elif name == "ce_specversion" and raw == b"1.0":
                has_specversion = True
            elif name == "content-type":
                values["datacontenttype"] = raw.decode()
            elif name.startswith("ce_"):  # an extension, or specversion other than 1.0
                return None
    except UnicodeDecodeError:
        return None
    if not (has_specversion and values["id"] and values["source"] and values["type"]):
        return None
    return values, given


def _checked_attributes(known: dict[str, Any], extensions: dict[str, str]) -> dict[str, Any] | None:
    """The attributes of a well-formed record, checked without the model; None to validate fully.

    Every record read from Kafka passes here, so the common case skips pydantic's machinery. Any
    doubt (a missing or empty required attribute, an unusual type, a time without a zone, an
    extension name) returns None and the model validates, producing its precise error.
    """
    for name in _REQUIRED_TEXT:
        value = known.get(name)
        if type(value) is not str or not value:
            return None
    for name in _OPTIONAL_TEXT:
        value = known.get(name)
        if value is not None and type(value) is not str:
            return None
    time = _aware_time(known["time"]) if "time" in known else utcnow()
    if time is None or any(
        not _EXTENSION_NAME.match(name) or name in CONTEXT_ATTRIBUTES + KNOWN_EXTENSIONS
        for name in extensions
    ):
        return None
    return {**known, "time": time, "specversion": SPEC_VERSION}


def _default_time(attributes: dict[str, Any], received: datetime | None) -> None:
    """An event without `time` takes the record's timestamp, else the time of reading."""
    if attributes.get("time") is None:
        attributes["time"] = (received or utcnow()).isoformat()


def _aware_time(raw: Any) -> datetime | None:
    """An RFC 3339 time with its zone, in UTC; None for anything else."""
    if type(raw) is not str:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


@dataclass(frozen=True)
class KafkaRecord:
    """What goes on the wire: key, value and headers."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]] = field(default_factory=list)


def _looks_structured(value: bytes | None) -> bool:
    if not value or not value.lstrip().startswith(b"{"):
        return False
    try:
        document = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(document, dict) and "specversion" in document


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return True  # the binding's default for data without a content type
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON or media.endswith("+json") or media == "text/json"


def _is_text(content_type: str | None) -> bool:
    return content_type is not None and content_type.lstrip().lower().startswith("text/")


def _binary_data(value: bytes | None, content_type: str | None) -> Any:
    """A binary-mode record's data by its content type: JSON parsed, text decoded, else bytes.

    Without a content type the data is JSON when it parses and opaque bytes otherwise, so an
    event written with bytes and no content type reads back as it was written.
    """
    if value is None:
        return None
    if _is_json(content_type):
        try:
            return orjson.loads(value) if value else None
        except orjson.JSONDecodeError as exc:
            if content_type is None:
                return value
            raise InvalidEventError(
                "data-not-json",
                f"The record says content-type {content_type!r} but its value is not JSON ({exc}).",
            ) from None
    if _is_text(content_type):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value
    return value


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return raw
