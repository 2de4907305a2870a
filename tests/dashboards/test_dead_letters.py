"""Dead letters are listed in a stable order under stable ids, and replayed by id exactly.

Each test writes real dead letters to dead-letter topics of its own on the session's broker, so
what they hold (and what their original topics receive) is only the test's.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.dashboards.support import ends, replayed, unique, write_dead_letters
from tests.helpers import free_port
from workbench.errors import TerminalError
from workbench.events.deadletters import (
    dead_letter_frame,
    letter_id,
    read_dead_letters,
    replay_letters,
)
from workbench.events.topics import TopicSpec, dead_letter_topic, ensure_topics

pytestmark = pytest.mark.stack


@pytest.fixture
def own_topics(workbench: Any) -> tuple[str, str]:
    """Two new topics, ".created" and ".updated", with two-partition dead-letter topics."""
    base = f"tests.dashboards.{unique()}"
    created, updated = f"{base}.created", f"{base}.updated"
    ensure_topics(
        workbench.endpoints.kafka_bootstrap,
        [
            TopicSpec(created, 1),
            TopicSpec(updated, 1),
            TopicSpec(dead_letter_topic(created), 2),
            TopicSpec(dead_letter_topic(updated), 2),
        ],
    )
    return created, updated


def test_the_frame_is_in_place_order_whatever_order_the_letters_were_read_in(
    workbench: Any, own_topics: tuple[str, str]
) -> None:
    bootstrap = workbench.endpoints.kafka_bootstrap
    created, updated = own_topics
    dlq_c, dlq_u = dead_letter_topic(created), dead_letter_topic(updated)
    # Written out of place order: the later topic first, partition 1 before partition 0.
    written = write_dead_letters(
        bootstrap, [(updated, 0)] * 3 + [(created, 1)] + [(created, 0)] * 11
    )
    expected = [
        *(f"{dlq_c}/0@{offset}" for offset in range(11)),  # 0@9 before 0@10: by number
        f"{dlq_c}/1@0",
        *(f"{dlq_u}/0@{offset}" for offset in range(3)),
    ]
    assert sorted(letter.letter_id for letter in written) == sorted(expected)

    read = read_dead_letters(bootstrap, [created, updated])
    assert sorted(d.letter_id for d in read) == sorted(expected), "every letter, once"
    for order in (read, read[::-1], read[1::2] + read[::2]):
        frame = dead_letter_frame(order)
        assert frame["letter_id"].to_list() == expected
        assert frame["partition"].to_list() == [0] * 11 + [1] + [0] * 3
    row = frame.row(expected.index(f"{dlq_c}/1@0"), named=True)
    (marker,) = [w.marker for w in written if w.letter_id == f"{dlq_c}/1@0"]
    assert row["original_topic"] == created
    assert row["reason"] == "sink-rejected"
    assert marker in row["exception"]
    assert letter_id(dlq_c, 1, 0) == f"{dlq_c}/1@0"


def test_replay_sends_exactly_the_named_letters(
    workbench: Any, own_topics: tuple[str, str]
) -> None:
    bootstrap = workbench.endpoints.kafka_bootstrap
    created, updated = own_topics
    since = ends(bootstrap, own_topics)
    # The same offset in two partitions of one topic, and in another topic.
    letters = write_dead_letters(bootstrap, [(created, 0), (created, 1), (updated, 0)])
    named = sorted([f"{dead_letter_topic(created)}/1@0", f"{dead_letter_topic(updated)}/0@0"])
    assert named == sorted(letter.letter_id for letter in letters[1:])
    assert replay_letters(bootstrap, named) == 2
    assert replayed(bootstrap, since, letters) == named


def test_replay_sends_nothing_when_a_named_letter_is_gone(
    workbench: Any, own_topics: tuple[str, str]
) -> None:
    bootstrap = workbench.endpoints.kafka_bootstrap
    created, _ = own_topics
    since = ends(bootstrap, own_topics)
    (letter,) = write_dead_letters(bootstrap, [(created, 0)])
    gone = f"{dead_letter_topic(created)}/0@5"
    with pytest.raises(TerminalError, match=re.escape(gone)):
        replay_letters(bootstrap, [letter.letter_id, gone])
    assert replayed(bootstrap, since, [letter]) == [], "not even the letter that was there"


def test_replaying_no_letters_reads_nothing(workbench: Any, own_topics: tuple[str, str]) -> None:
    bootstrap = workbench.endpoints.kafka_bootstrap
    created, _ = own_topics
    since = ends(bootstrap, own_topics)
    (letter,) = write_dead_letters(bootstrap, [(created, 0)])
    # Nothing listens there: any read or send would fail rather than return.
    assert replay_letters(f"127.0.0.1:{free_port()}", []) == 0
    assert replay_letters(bootstrap, []) == 0
    assert replayed(bootstrap, since, [letter]) == []
