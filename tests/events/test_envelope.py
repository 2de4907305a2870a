"""The CloudEvents envelope and its Kafka binding, without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from workbench.events.envelope import CloudEvent, InvalidEventError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
attribute_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=60,
)
events = st.builds(
    CloudEvent,
    id=attribute_text,
    source=attribute_text,
    type=attribute_text,
    time=st.datetimes(min_value=datetime(1970, 1, 2), timezones=st.just(UTC)),
    subject=st.none() | attribute_text,
    dataschema=st.none() | attribute_text,
    correlationid=st.none() | attribute_text,
    causationid=st.none() | attribute_text,
    partitionkey=st.none() | attribute_text,
    extensions=st.dictionaries(
        st.from_regex(r"^x[a-z0-9]{0,10}$", fullmatch=True), attribute_text, max_size=3
    ),
    data=json_values,
)


@given(event=events, mode=st.sampled_from(["binary", "structured"]))
def test_every_event_survives_the_kafka_binding(event: CloudEvent, mode: str) -> None:
    record = event.to_kafka(mode)  # type: ignore[arg-type]
    assert CloudEvent.from_kafka(record.value, record.headers, record.key) == event


def test_binary_mode_uses_ce_headers_and_the_key() -> None:
    event = CloudEvent(
        source="/s",
        type="dictamesh.entity.created",
        partitionkey="a/b/1",
        correlationid="c-1",
        data={"x": 1},
    )
    record = event.to_kafka()
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"dictamesh.entity.created"
    assert headers["ce_correlationid"] == b"c-1"
    assert headers["content-type"] == b"application/json"
    assert "ce_partitionkey" not in headers
    assert record.key == b"a/b/1"
    assert json.loads(record.value) == {"x": 1}


def test_structured_mode_is_one_json_document() -> None:
    event = CloudEvent(
        source="/s", type="t", data=b"\x00\xffbinary", datacontenttype="application/octet-stream"
    )
    record = event.to_kafka("structured")
    assert dict(record.headers) == {"content-type": b"application/cloudevents+json"}
    body = json.loads(record.value)
    assert body["specversion"] == "1.0"
    assert "data_base64" in body
    assert CloudEvent.from_kafka(record.value, record.headers).data == b"\x00\xffbinary"


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"{}", [], "not-a-cloudevent"),
        (
            b"{not json",
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", b"1"),
                ("ce_source", b"/s"),
                ("ce_type", b"t"),
                ("content-type", b"application/json"),
            ],
            "data-not-json",
        ),
        (
            b"{}",
            [("ce_specversion", b"0.3"), ("ce_id", b"1"), ("ce_source", b"/s"), ("ce_type", b"t")],
            "unsupported-specversion",
        ),
        (
            b"{}",
            [
                ("ce_specversion", b"1.0"),
                ("ce_source", b"/s"),
                ("ce_type", b"t"),
                ("ce_time", b"yesterday"),
            ],
            "invalid-attribute",
        ),
        (b"[1,2]", [("content-type", b"application/cloudevents+json")], "envelope-not-object"),
        (b"\xff\xfe", [("content-type", b"application/cloudevents+json")], "envelope-not-json"),
    ],
)
def test_malformed_records_are_refused_with_a_reason(
    value: bytes, headers: list[tuple[str, bytes]], reason: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        CloudEvent.from_kafka(value, headers)
    assert caught.value.reason == reason
    assert caught.value.remedy


def test_naive_times_and_bad_extension_names_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        CloudEvent(source="/s", type="t", time=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="extension name"):
        CloudEvent(source="/s", type="t", extensions={"Bad-Name": "x"})


maybe_text = st.none() | st.integers() | st.text(max_size=12)
attribute_maps = st.fixed_dictionaries(
    {
        "specversion": st.just("1.0"),
        # Mostly valid required attributes, so the other attributes' rules are reached.
        "id": st.text(min_size=1, max_size=8) | maybe_text,
        "source": st.text(min_size=1, max_size=8) | maybe_text,
        "type": st.text(min_size=1, max_size=8) | maybe_text,
    },
    optional={
        "subject": maybe_text,
        "datacontenttype": maybe_text,
        "traceparent": maybe_text,
        "time": st.none()
        | st.integers()
        | st.text(max_size=8)
        | st.datetimes(timezones=st.none() | st.just(UTC)).map(datetime.isoformat)
        | st.sampled_from(["2026-11-26T10:00:00Z", "2026-11-26T10:00:00.123456789+02:00"]),
        "xtra": st.text(max_size=5),
        "Bad-Name": st.text(max_size=5),
        "partitionkey": maybe_text,
    },
)


@settings(max_examples=300)
@given(attributes=attribute_maps)
@example({"specversion": "1.0", "id": "e", "source": "s", "type": "t", "time": None})
@example({"specversion": "1.0", "id": "e", "source": "s", "type": "t", "Bad-Name": "x"})
@example({"specversion": "1.0", "id": "", "source": "s", "type": "t"})
@example({"specversion": "1.0", "id": "e", "source": "s", "type": "t", "time": "2026-11-26T10:00"})
def test_reading_a_record_agrees_with_full_validation(attributes: dict[str, object]) -> None:
    """The quick path taken by well-formed records gives what the model would, or defers to it."""
    known = {k: v for k, v in attributes.items() if k not in {"xtra", "Bad-Name"}}
    extensions = {k: str(v) for k, v in attributes.items() if k in {"xtra", "Bad-Name"}}
    try:
        expected: CloudEvent | None = CloudEvent(**known, extensions=extensions, data=None)  # type: ignore[arg-type]
    except ValueError:
        expected = None
    try:
        read: CloudEvent | None = CloudEvent._build(dict(attributes), None)
    except InvalidEventError:
        read = None
    if expected is None or read is None:
        assert expected is None and read is None
    elif "time" in known:
        assert read == expected
        assert read.model_dump(exclude_unset=True) == expected.model_dump(exclude_unset=True)
        assert repr(read) == repr(expected)
    else:  # both stamp the reading time
        assert read.model_copy(update={"time": expected.time}) == expected


header_names = st.sampled_from(
    [
        *("ce_id", "CE_Source", "ce_type", "ce_specversion", "ce_time", "ce_subject"),
        *("content-type", "ce_traceparent", "ce_partitionkey", "ce_xtra", "ce_datacontenttype"),
        "other",
    ]
)
header_values = (
    st.sampled_from([b"1.0", b"2.0", b"", b"e-1", b"2026-11-26T10:00:00Z", b"2026-11-26T10:00"])
    | st.sampled_from([b"application/json", b"Text/Plain", b"application/cloudevents+json"])
    | st.binary(max_size=6)
    | st.none()
    | st.text(max_size=4)
)
required_headers = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"e-1"),
    ("ce_source", b"/s"),
    ("ce_type", b"t"),
    ("ce_time", b"2026-11-26T10:00:00+01:00"),
]


@settings(max_examples=400)
@given(
    headers=st.lists(st.tuples(header_names, header_values), max_size=8),
    keep_required=st.booleans(),  # without them, the quick reading is hardly ever taken
    value=st.sampled_from([None, b"", b'{"a": [1, 2]}', b"not json", b"\xff"]),
    key=st.none() | st.sampled_from([b"k", b"\xfe"]),
)
def test_the_quick_binary_reading_agrees_with_the_full_one(
    headers: list[tuple[str, bytes | str | None]],
    keep_required: bool,
    value: bytes | None,
    key: bytes | None,
) -> None:
    """Records of the common shape skip the full reading; whatever they are read as, it is it."""
    headers = (required_headers if keep_required else []) + headers
    received = datetime(2026, 11, 27, 12, tzinfo=UTC)  # the record's timestamp
    quick = CloudEvent._read_binary_quickly(value, headers, key, received)
    if quick is None:
        return
    full = CloudEvent._read_fully(value, headers, key, received)
    assert quick == full
    assert quick.model_dump(exclude_unset=True) == full.model_dump(exclude_unset=True)
    assert repr(quick) == repr(full)


def test_records_as_the_workbench_writes_them_take_the_quick_reading() -> None:
    event = CloudEvent(source="/s", type="t", partitionkey="k", traceparent="00-ab", data={"a": 1})
    record = event.to_kafka()
    quick = CloudEvent._read_binary_quickly(record.value, record.headers, record.key, None)
    assert quick == event


@given(
    received=st.datetimes(min_value=datetime(1970, 1, 2), timezones=st.just(UTC)),
    extension=st.booleans(),
)
def test_an_event_without_time_takes_its_records_timestamp_in_either_mode(
    received: datetime, extension: bool
) -> None:
    """Reading the same record twice (a replay) must give the same event, time included."""
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"e1"), ("ce_source", b"/s")]
    headers += [("ce_type", b"t"), ("content-type", b"application/json")]
    if extension:  # takes the full reading instead of the one-pass one
        headers.append(("ce_xorigin", b"lab"))
    structured = json.dumps({"specversion": "1.0", "id": "e1", "source": "/s", "type": "t"})
    for value, record_headers in (
        (b"{}", headers),
        (structured.encode(), [("content-type", b"application/cloudevents+json")]),
    ):
        read = CloudEvent.from_kafka(value, record_headers, None, received=received)
        again = CloudEvent.from_kafka(value, record_headers, None, received=received)
        assert read.time == again.time == received.astimezone(UTC)
    stamped = [*headers, ("ce_time", b"2026-01-02T03:04:05Z")]
    given_time = CloudEvent.from_kafka(b"{}", stamped, None, received=received).time
    assert given_time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        (None, b"\x00\x01 not json"),
        ("application/octet-stream", b"\xff\xfe"),
        ("text/plain", "h\u00e9llo, plain text"),
        ("application/vnd.acme+json", {"a": [1, 2]}),
    ],
    ids=["bytes-without-type", "octet-stream", "text", "vendor-json"],
)
def test_events_the_workbench_writes_read_back_as_they_were(
    mode: str, content_type: str | None, data: object
) -> None:
    event = CloudEvent(source="/s", type="t", datacontenttype=content_type, data=data)
    record = event.to_kafka(mode)  # type: ignore[arg-type]
    assert CloudEvent.from_kafka(record.value, record.headers, record.key) == event


def test_a_structured_event_labelled_with_its_datas_content_type_keeps_it() -> None:
    """The Python SDK puts `datacontenttype` in the record's content-type header."""
    body = json.dumps({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": {}})
    headers = [("content-type", b"application/vnd.acme+json")]
    read = CloudEvent.from_kafka(body.encode(), headers, None)
    assert read.datacontenttype == "application/vnd.acme+json"
