"""The CloudEvents envelope and its Kafka binding, without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
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
