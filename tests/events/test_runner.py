"""The consumer runner's contract: lag, clean shutdown, and surviving a Postgres restart."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import BIN
from workbench.catalog.model import EntityChange
from workbench.catalog.projector import GROUP, CatalogProjector
from workbench.events import topics
from workbench.events.consumer import ConsumerRunner, RunnerConfig
from workbench.events.lag import consumer_lag
from workbench.events.producer import wait_for_all
from workbench.observability import render_metrics
from workbench.settings import load_settings
from workbench.stack import Stack

pytestmark = pytest.mark.stack


def _lag_of(workbench: Any, group: str) -> int:
    lags = consumer_lag(workbench.endpoints.kafka_bootstrap, workbench.endpoints.postgres_url)
    return sum(lag.lag_messages for lag in lags if lag.group == group)


def test_lag_counts_records_a_group_has_not_applied(workbench: Any, workers: Any) -> None:
    group = f"lag-test-{uuid.uuid4().hex[:8]}"
    config = RunnerConfig(
        bootstrap=workbench.endpoints.kafka_bootstrap, postgres_url=workbench.endpoints.postgres_url
    )

    def run_until_caught_up() -> None:
        runner = ConsumerRunner(CatalogProjector(group=group), config)
        deadline = time.monotonic() + 60
        runner.run(
            until=lambda: (
                (runner.applied > 0 and _lag_of(workbench, group) == 0)
                or time.monotonic() > deadline
            )
        )

    wait_for_all([workbench.catalog.register("lag", "unit", "l", "seed")])
    run_until_caught_up()
    assert _lag_of(workbench, group) == 0

    handles = [workbench.catalog.register("lag", "unit", "l", f"n{i}") for i in range(5)]
    wait_for_all(handles)  # the session's projector applied them; `group` is stopped
    # The broker may expose a just-acknowledged batch to readers a moment later.
    deadline = time.monotonic() + 30
    while _lag_of(workbench, group) != 5:
        assert time.monotonic() < deadline, f"lag is {_lag_of(workbench, group)}, not 5"
        time.sleep(0.2)
    frame = workbench.lag()
    behind = frame.filter(frame["group"] == group)
    assert behind["lag_messages"].sum() == 5
    assert (behind.filter(behind["lag_messages"] > 0)["lag_seconds"] > 0).all()
    metrics = render_metrics().decode()
    assert f'dictamesh_consumer_lag_messages{{group="{group}"' in metrics
    assert _lag_of(workbench, GROUP) == 0

    run_until_caught_up()
    assert _lag_of(workbench, group) == 0


@pytest.mark.parametrize(("processes", "threads"), [(1, 1), (2, 1), (1, 2)])
def test_consume_stops_cleanly_on_sigterm(
    stack: Any, workbench: Any, processes: int, threads: int
) -> None:
    import psutil

    command = [str(BIN / "dictamesh"), "consume", "--sink", "catalog"]
    process = subprocess.Popen(
        [*command, "--processes", str(processes), "--threads", str(threads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )
    assert process.stdout is not None
    started = 0
    for line in process.stdout:
        started += "consumer started" in line
        if started == processes * threads:
            break
    children = psutil.Process(process.pid).children(recursive=True)
    assert len(children) == (processes if processes > 1 else 0)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert output.count("consumer stopped") == processes * threads
    assert not [child for child in children if child.is_running()]


def test_serve_stops_its_background_consumers_cleanly_on_sigterm(
    stack: Any, workbench: Any
) -> None:
    from tests.helpers import free_port, wait_for_port

    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "dictamesh"), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "DICTAMESH_DASHBOARD_USERS": "ops:sigterm-test-password"},
    )
    assert process.stdout is not None
    wait_for_port(port, process=process)
    seen = []
    for line in process.stdout:  # the workers are up once the catalog projector has joined
        seen.append(line)
        if "consumer started" in line and "catalog-projector" in line:
            break
    process.send_signal(signal.SIGTERM)
    output = "".join(seen) + process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert "dashboards stopped" in output
    from workbench.events.workers import discover_sinks

    assert output.count("consumer stopped") == len(discover_sinks()), output


def test_a_supervised_consumer_without_its_supervisor_exits_without_joining(
    stack: Any, workbench: Any
) -> None:
    """A process of `consume --processes N` whose supervisor went away never joins its group."""
    finished = subprocess.run(
        [str(BIN / "dictamesh"), "consume", "--sink", "catalog", "--supervised"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "consumer started" not in finished.stdout + finished.stderr


@pytest.fixture
def own_stack(tmp_path: Path) -> Any:
    """A stack of its own: this test stops its Postgres."""
    settings = load_settings(home=tmp_path / "home")
    stack = Stack(settings)
    endpoints = stack.up()
    yield stack, endpoints
    stack.down()


def test_postgres_restart_mid_run_loses_nothing(own_stack: Any) -> None:
    from workbench import db
    from workbench.events.producer import EventProducer
    from workbench.events.topics import ensure_topics

    stack, endpoints = own_stack
    db.migrate_up(db.make_engine(endpoints.postgres_url))
    ensure_topics(endpoints.kafka_bootstrap)
    runner = ConsumerRunner(
        CatalogProjector(),
        RunnerConfig(
            bootstrap=endpoints.kafka_bootstrap,
            postgres_url=endpoints.postgres_url,
            batch_size=50,
            max_backoff=0.5,
        ),
    )
    producer = EventProducer(endpoints.kafka_bootstrap, postgres_url=endpoints.postgres_url)
    total = 2_000

    def publish(start: int, stop: int) -> None:
        from workbench.events.envelope import CloudEvent

        for i in range(start, stop):
            change = EntityChange(
                domain="d",
                source_system="s",
                entity_type="e",
                source_id=str(i),
                version=1,
                attributes={"i": i},
            )
            producer.publish(
                topics.ENTITY_CREATED,
                CloudEvent(
                    source="/restart-test",
                    type=topics.ENTITY_CREATED,
                    partitionkey=change.ref.key,
                    data=change.model_dump(mode="json", exclude_none=True),
                ),
            )
        producer.flush()

    def applied() -> int:
        try:
            with psycopg.connect(endpoints.postgres_url, connect_timeout=2) as conn:
                row = conn.execute("SELECT count(*) FROM dictamesh_event_log").fetchone()
                return int(row[0]) if row else 0
        except psycopg.OperationalError:
            return -1

    import threading

    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    publish(0, total // 2)
    deadline = time.monotonic() + 60
    while applied() < 1:  # the runner is mid-run
        assert time.monotonic() < deadline
        time.sleep(0.05)
    postgres = stack.component("postgres")
    postgres.stop()
    publish(total // 2, total)  # events keep arriving while the database is down
    postgres.start()
    postgres.wait_started(time.monotonic() + 60)
    deadline = time.monotonic() + 120
    while applied() < total:
        assert time.monotonic() < deadline, f"only {applied()} of {total} applied"
        time.sleep(0.1)
    runner.stop()
    thread.join(30)
    with psycopg.connect(endpoints.postgres_url) as conn:
        entities, events, distinct = conn.execute(
            "SELECT (SELECT count(*) FROM dictamesh_entity_catalog), count(*), "
            "count(DISTINCT event_id) FROM dictamesh_event_log"
        ).fetchone()
    assert (entities, events, distinct) == (total, total, total)


def test_dead_letters_are_listed_and_replayed_to_their_topic(workbench: Any, workers: Any) -> None:
    """A record the sink once refused is replayed after the cause is gone, and applied."""
    from tests.helpers import raw_producer
    from workbench.events.envelope import CloudEvent

    source_id = f"replayed-{uuid.uuid4().hex[:8]}"
    change = EntityChange(
        domain="d", source_system="replay", entity_type="e", source_id=source_id, version=1
    )
    record = CloudEvent(
        source="/replay",
        type=topics.ENTITY_CREATED,
        partitionkey=change.ref.key,
        data=change.model_dump(mode="json", exclude_none=True),
    ).to_kafka()
    # As the runner writes it when the database refused the record.
    dlq = topics.dead_letter_topic(topics.ENTITY_CREATED)
    producer = raw_producer(workbench.endpoints.kafka_bootstrap)
    producer.produce(
        dlq,
        value=record.value,
        key=record.key,
        headers=[
            *record.headers,
            ("dlq_reason", b"sink-rejected"),
            ("dlq_original_topic", topics.ENTITY_CREATED.encode()),
            ("dlq_original_partition", b"0"),
            ("dlq_original_offset", b"0"),
            ("dlq_exception", b"OperationalError: the database was read-only"),
            ("dlq_consumer_group", GROUP.encode()),
        ],
    )
    producer.flush(10)

    letters = workbench.events.dead_letters([topics.ENTITY_CREATED])
    ours = letters.filter(letters["exception"].str.contains("read-only"))
    assert ours["reason"].to_list()[-1] == "sink-rejected"
    assert ours["original_topic"].to_list()[-1] == topics.ENTITY_CREATED
    assert workbench.catalog.get("replay", "e", source_id) is None

    assert workbench.events.replay([ours["letter_id"].to_list()[-1]]) == 1
    deadline = time.monotonic() + 60
    while workbench.catalog.get("replay", "e", source_id) is None:
        assert time.monotonic() < deadline, "the replayed record was never applied"
        time.sleep(0.1)


def test_tail_shows_the_newest_events_of_a_topic(workbench: Any) -> None:
    from workbench.events.envelope import CloudEvent

    marker = uuid.uuid4().hex[:8]
    for i in range(3):
        workbench.events.publish(
            topics.ADAPTER_EVENT,
            CloudEvent(
                source="/tail", type=topics.ADAPTER_EVENT, subject=f"{marker}-{i}", data={"i": i}
            ),
        ).delivered()
    tail = workbench.events.tail(topics.ADAPTER_EVENT, 3)
    assert tail["subject"].to_list() == [f"{marker}-0", f"{marker}-1", f"{marker}-2"]
    assert tail["type"].to_list() == [topics.ADAPTER_EVENT] * 3

    from workbench.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match=r"Did you mean 'dictamesh\.adapter\.event'"):
        workbench.events.tail("dictamesh.adaptor.event")


def test_a_live_tail_shows_events_as_they_arrive_without_blocking(workbench: Any) -> None:
    import queue

    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from workbench.events.envelope import CloudEvent
    from workbench.events.tail import LiveTail

    marker = uuid.uuid4().hex[:8]

    def publish(i: int) -> None:
        workbench.events.publish(
            topics.ADAPTER_EVENT,
            CloudEvent(source="/tail", type=topics.ADAPTER_EVENT, subject=f"{marker}-{i}"),
        ).delivered()

    publish(0)
    live = workbench.events.tail(topics.ADAPTER_EVENT, 2, follow=True)
    assert isinstance(live, LiveTail) and live.running  # returned while it keeps reading
    assert live.frame["subject"].to_list()[-1] == f"{marker}-0"
    updates: queue.Queue[list[str]] = queue.Queue()
    InteractiveShell.instance()  # display() publishes as in a notebook
    with capture_output() as shown:
        live._ipython_display_()  # as Jupyter shows it: one table, then updated in place
        # Listeners run in order: this one learns of an update after the display has it.
        live.on_update(lambda frame: updates.put(frame["subject"].to_list()))
        publish(1)
        publish(2)
        seen: list[str] = []
        while seen[-1:] != [f"{marker}-2"]:
            seen = updates.get(timeout=30)
    assert seen == [f"{marker}-1", f"{marker}-2"]  # the newest two, oldest first
    assert live.frame["subject"].to_list() == seen
    first, *updated = shown.outputs
    assert not first.update and updated and all(output.update for output in updated)
    assert {output.transient["display_id"] for output in shown.outputs} == {
        first.transient["display_id"]
    }
    assert f"{marker}-2" in updated[-1].data["text/plain"]
    assert "LiveTail" in repr(live) and "live" in repr(live)
    live.stop()
    assert not live.running
    assert "stopped" in repr(live)
    # Outside Jupyter the default is a snapshot.
    assert workbench.events.tail(topics.ADAPTER_EVENT, 1)["subject"].to_list() == [f"{marker}-2"]


class _FlakySink(CatalogProjector):
    """Fails its first batches as a sink whose dependency is still starting would."""

    def __init__(self, group: str, failures: int) -> None:
        super().__init__(group=group)
        self.failures = failures

    def apply(self, conn: Any, batch: Any) -> None:
        if self.failures:
            self.failures -= 1
            from workbench.errors import ComponentUnavailableError

            raise ComponentUnavailableError("the lake is starting", remedy="wait")
        super().apply(conn, batch)


def test_a_sink_reporting_a_transient_error_is_retried_not_dropped(workbench: Any) -> None:
    handle = workbench.catalog.register("retry", "unit", "r", f"r-{uuid.uuid4().hex[:6]}")
    handle.delivered(30)
    sink = _FlakySink(f"transient-{uuid.uuid4().hex[:8]}", failures=2)
    config = RunnerConfig(
        bootstrap=workbench.endpoints.kafka_bootstrap, postgres_url=workbench.endpoints.postgres_url
    )
    runner = ConsumerRunner(sink, config)
    deadline = time.monotonic() + 120
    runner.run(until=lambda: runner.applied > 0 or time.monotonic() > deadline)
    assert sink.failures == 0 and runner.applied > 0, "the runner gave up on a transient error"


class _Recorder:
    """A sink that only remembers which events it was given."""

    topics = (topics.ENTITY_CREATED,)

    def __init__(self, group: str) -> None:
        self.group = group
        self.seen: set[str] = set()

    def prepare(self, consumed: Any) -> str:
        return str(consumed.event.id)

    def apply(self, conn: Any, batch: Any) -> None:
        self.seen.update(event_id for _, event_id in batch)


class _Picky(_Recorder):
    """Cannot read one record and refuses another, with errors no runner foresaw."""

    def __init__(self, group: str, unreadable: str, refused: str) -> None:
        super().__init__(group)
        self.unreadable, self.refused = unreadable, refused
        self.failed: set[str] = set()

    def prepare(self, consumed: Any) -> str:
        if consumed.event.id == self.unreadable:
            self.failed.add(self.unreadable)
            raise RecursionError("maximum recursion depth exceeded while decoding")
        return str(consumed.event.id)

    def apply(self, conn: Any, batch: Any) -> None:
        if any(event_id == self.refused for _, event_id in batch):
            self.failed.add(self.refused)
            raise ValueError(f"cannot store {self.refused}")
        super().apply(conn, batch)


def test_records_failing_with_unforeseen_errors_are_dead_lettered_and_the_rest_applied(
    workbench: Any,
) -> None:
    """Any exception reading or storing one record sends that record, not the consumer, away."""
    group = f"picky-{uuid.uuid4().hex[:8]}"
    handles = [workbench.catalog.register("picky", "unit", "r", f"{group}-{i}") for i in range(3)]
    for handle in handles:
        handle.delivered(30)
    unreadable, refused, fine = (handle.event.id for handle in handles)
    sink = _Picky(group, unreadable, refused)
    config = RunnerConfig(
        bootstrap=workbench.endpoints.kafka_bootstrap, postgres_url=workbench.endpoints.postgres_url
    )
    runner = ConsumerRunner(sink, config)

    positions = {handle.position() for handle in handles}

    def ours() -> list[tuple[str, str]]:
        """This group's letters of these records (it also sends away other tests' poison)."""
        letters = workbench.events.dead_letters([topics.ENTITY_CREATED])
        mine = letters.filter(letters["consumer_group"] == group).iter_rows(named=True)
        return sorted(
            (row["reason"], row["exception"])
            for row in mine
            if (row["original_partition"], row["original_offset"]) in positions
        )

    deadline = time.monotonic() + 120
    # Checked after each batch has committed, its dead letters sent before.
    handled = lambda: fine in sink.seen and len(sink.failed) == 2  # noqa: E731
    runner.run(until=lambda: handled() or time.monotonic() > deadline)
    assert handled(), "the consumer stopped at a record it could not handle"
    assert not {unreadable, refused} & sink.seen
    assert ours() == [
        ("sink-rejected", f"ValueError: cannot store {refused}"),
        ("unreadable", "RecursionError: maximum recursion depth exceeded while decoding"),
    ]


def test_a_consumer_started_after_a_group_of_two_stopped_gets_its_partitions(
    workbench: Any,
) -> None:
    """The embedded broker once kept a departed member as the empty group's leader, so the
    next consumer never got partitions; an empty group is now started afresh."""
    group = f"regroup-{uuid.uuid4().hex[:8]}"
    config = RunnerConfig(
        bootstrap=workbench.endpoints.kafka_bootstrap, postgres_url=workbench.endpoints.postgres_url
    )
    pair = [ConsumerRunner(_Recorder(group), config) for _ in range(2)]
    threads = [threading.Thread(target=runner.run, daemon=True) for runner in pair]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    while not all(runner.sink.seen for runner in pair):  # both own partitions
        assert time.monotonic() < deadline, "the two consumers never shared the partitions"
        for i in range(12):
            workbench.catalog.register("regroup", "unit", "r", f"{group}-{i}-{time.monotonic()}")
        time.sleep(0.5)
    for runner in pair:
        runner.stop()
    for thread in threads:
        thread.join(60)

    handle = workbench.catalog.register("regroup", "unit", "r", f"{group}-after")
    handle.delivered(30)
    later = ConsumerRunner(_Recorder(group), config)
    deadline = time.monotonic() + 60
    later.run(until=lambda: handle.event.id in later.sink.seen or time.monotonic() > deadline)
    assert handle.event.id in later.sink.seen, "the consumer started later never got its partitions"


def test_a_consumer_process_frees_cyclic_garbage_between_batches(
    workbench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dictamesh consume` turns automatic collection off; its runners collect instead."""
    import gc
    import weakref

    from workbench.events import consumer

    class Node:
        partner: Any = None

    monkeypatch.setattr(consumer, "GARBAGE_INTERVAL", 0.0)
    consumer.collect_garbage_between_batches()
    try:
        assert not gc.isenabled()
        first, second = Node(), Node()
        first.partner, second.partner = second, first  # a cycle: reference counts never free it
        gone = weakref.ref(first)
        del first, second
        assert gone() is not None
        config = RunnerConfig(
            bootstrap=workbench.endpoints.kafka_bootstrap,
            postgres_url=workbench.endpoints.postgres_url,
        )
        runner = ConsumerRunner(_Recorder(f"garbage-{uuid.uuid4().hex[:8]}"), config)
        polls = iter(range(2))
        runner.run(until=lambda: next(polls, 1) == 1)  # one poll, then stop
        assert gone() is None, "the runner did not collect between batches"
    finally:
        gc.enable()
        gc.unfreeze()
