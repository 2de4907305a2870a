"""The Event Monitor on the real stack: replay by letter across refreshes, and refresh failures.

Dead letters go to the dead-letter topics of `dictamesh.adapter.event` and
`dictamesh.schema.changed`, which no sink consumes, so a replay changes nothing else. Pages that
need a broken or hostile catalog read a catalog database of the test's own (`catalog_db`).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs
from workbench.dashboards import events as monitor

from tests.dashboards.support import (
    PAYLOAD,
    ends,
    find,
    log_event,
    replayed,
    tables_missing,
    write_dead_letters,
)
from tests.helpers import free_port
from workbench.events.topics import ADAPTER_EVENT, ENTITY_CREATED, SCHEMA_CHANGED

pytestmark = pytest.mark.stack

ORIGINALS = (ADAPTER_EVENT, SCHEMA_CHANGED)


@pytest.fixture
def periodic(monkeypatch: pytest.MonkeyPatch) -> list[Callable[[], None]]:
    """The callbacks the page asks to run periodically (a browser session would run them)."""
    registered: list[Callable[[], None]] = []
    monkeypatch.setattr(monitor, "refresh_every", lambda callback, _ms: registered.append(callback))
    return registered


def click(button: Any) -> None:
    button.clicks += 1


def rows(page: list[Any]) -> list[str]:
    """The letter ids of the dead-letter table, top to bottom."""
    frame = find(page, "dm-dead-letters").value
    ids = frame["letter_id"] if "letter_id" in frame.columns else frame.index
    return [str(i) for i in ids]


def test_replay_sends_the_ticked_letter_after_a_refresh_puts_another_before_it(
    workbench: Any, periodic: list[Callable[[], None]]
) -> None:
    bootstrap = workbench.endpoints.kafka_bootstrap
    since = ends(bootstrap, ORIGINALS)
    (ticked,) = write_dead_letters(bootstrap, [(SCHEMA_CHANGED, 0)])
    page = monitor.build(workbench)
    table = find(page, "dm-dead-letters")
    row = rows(page).index(ticked.letter_id)
    table.selection = [row]  # the user ticks it

    # A letter in adapter.event.dlq, which sorts before schema.changed.dlq, arrives.
    (newcomer,) = write_dead_letters(bootstrap, [(ADAPTER_EVENT, 0)])
    (refresh,) = periodic
    refresh()
    after = rows(page)
    assert after.index(newcomer.letter_id) < after.index(ticked.letter_id)
    assert after[row] != ticked.letter_id, "the ticked letter moved down a row"
    assert table.selection == [after.index(ticked.letter_id)], "the tick moved with it"

    click(find(page, "dm-replay"))
    assert replayed(bootstrap, since, [ticked, newcomer]) == [ticked.letter_id]
    assert "Replayed 1 record" in find(page, "dm-replay-status").object


def test_replay_sends_only_the_ticked_letter_and_is_logged(workbench: Any) -> None:
    bootstrap = workbench.endpoints.kafka_bootstrap
    since = ends(bootstrap, ORIGINALS)
    first, second = write_dead_letters(bootstrap, [(SCHEMA_CHANGED, 0)] * 2)
    page = monitor.build(workbench)
    table = find(page, "dm-dead-letters")
    listed = rows(page)
    assert listed.index(first.letter_id) < listed.index(second.letter_id), "in place order"
    table.selection = [listed.index(second.letter_id)]
    with capture_logs() as logs:
        click(find(page, "dm-replay"))
    assert replayed(bootstrap, since, [first, second]) == [second.letter_id]
    (entry,) = [e for e in logs if e["event"] == "dead letters replayed"]
    assert entry["letters"] == [second.letter_id]
    assert entry["user"] == "anonymous"  # no logged-in user outside a browser session
    assert entry["sent"] == 1
    assert "Replayed 1 record" in find(page, "dm-replay-status").object
    assert table.selection == [], "a replayed letter is not left ticked to be sent twice"


def test_replay_with_nothing_ticked_sends_nothing(workbench: Any) -> None:
    bootstrap = workbench.endpoints.kafka_bootstrap
    since = ends(bootstrap, ORIGINALS)
    letters = write_dead_letters(bootstrap, [(SCHEMA_CHANGED, 0)])
    page = monitor.build(workbench)
    assert letters[0].letter_id in rows(page)
    click(find(page, "dm-replay"))
    assert "Select dead letters" in find(page, "dm-replay-status").object
    assert replayed(bootstrap, since, letters) == []


def test_the_page_builds_and_says_so_when_the_lag_read_fails_then_recovers(
    catalog_db: str, workbench_with: Callable[..., Any], periodic: list[Callable[[], None]]
) -> None:
    log_event(catalog_db, ENTITY_CREATED, "crm/account/m-1")
    wb = workbench_with(postgres_url=catalog_db)
    with tables_missing(catalog_db, "dictamesh_consumer_offsets"):
        page = monitor.build(wb)
        problems = find(page, "dm-events-problems")
        assert "Consumer lag unavailable" in problems.object
        assert "dictamesh_consumer_offsets" in problems.object, "the server's reason is shown"
        assert "Latest changes" not in problems.object
        recent = find(page, "dm-recent-events").value
        assert recent["subject"].tolist() == ["crm/account/m-1"], "the other sections still show"
        assert ENTITY_CREATED in find(page, "dm-event-rates").value.columns
    (refresh,) = periodic
    refresh()
    assert problems.object == "", "the next refresh after the table is back shows no problem"


def test_a_failing_periodic_refresh_keeps_the_last_rows_says_why_and_recovers(
    catalog_db: str, workbench_with: Callable[..., Any], periodic: list[Callable[[], None]]
) -> None:
    log_event(catalog_db, ENTITY_CREATED, "crm/account/m-2")
    page = monitor.build(workbench_with(postgres_url=catalog_db))
    problems = find(page, "dm-events-problems")
    assert problems.object == ""
    (refresh,) = periodic
    with tables_missing(catalog_db, "dictamesh_event_log", "dictamesh_consumer_offsets"):
        refresh()
        for section in ("Latest changes", "Event rates", "Consumer lag"):
            assert f"{section} unavailable" in problems.object
        assert "dictamesh_event_log" in problems.object
        assert "Dead letters unavailable" not in problems.object
        recent = find(page, "dm-recent-events").value
        assert recent["subject"].tolist() == ["crm/account/m-2"], "the last rows stay on screen"
        assert ENTITY_CREATED in find(page, "dm-event-rates").value.columns
    refresh()
    assert problems.object == ""


def test_the_page_builds_and_says_so_when_the_broker_is_unreachable(
    catalog_db: str, workbench_with: Callable[..., Any]
) -> None:
    log_event(catalog_db, ENTITY_CREATED, "crm/account/m-3")
    # A group that has applied something, so the lag read asks the broker for its topics' ends.
    with psycopg.connect(catalog_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO dictamesh_consumer_offsets (group_id, topic, kafka_partition, "
            "next_offset) VALUES ('dictamesh.tests-dashboards', %s, 0, 0)",
            (ADAPTER_EVENT,),
        )
    wb = workbench_with(postgres_url=catalog_db, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    page = monitor.build(wb)
    problems = find(page, "dm-events-problems").object
    assert "Dead letters unavailable: KafkaException" in problems
    assert "Consumer lag unavailable: KafkaException" in problems
    assert find(page, "dm-recent-events").value["subject"].tolist() == ["crm/account/m-3"]


def test_failure_messages_are_escaped(workbench: Any, workbench_with: Callable[..., Any]) -> None:
    from urllib.parse import quote

    # The server names the database it does not have: the page must show that as text.
    server = workbench.endpoints.postgres_url.rsplit("/", 1)[0]
    wb = workbench_with(postgres_url=f"{server}/{quote(PAYLOAD, safe='')}")
    page = monitor.build(wb)
    problems = find(page, "dm-events-problems").object
    assert "Consumer lag unavailable" in problems
    assert "<img" not in problems
    assert html.escape(PAYLOAD) in problems


def test_event_types_shown_as_rate_columns_are_escaped(
    catalog_db: str, workbench_with: Callable[..., Any]
) -> None:
    # The projector logs only entity event types; the log's column holds any text, so a row
    # with markup is written to this test's own catalog database directly.
    log_event(catalog_db, ENTITY_CREATED, "crm/account/r-1")
    log_event(catalog_db, PAYLOAD, "crm/account/r-2")
    page = monitor.build(workbench_with(postgres_url=catalog_db))
    model = find(page, "dm-event-rates").get_root()
    titles = [column.title for column in model.columns]  # Tabulator sets these as innerHTML
    assert not any("<img" in title for title in titles)
    assert html.escape(PAYLOAD) in titles
    assert ENTITY_CREATED in titles
