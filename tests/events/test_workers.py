"""Background workers: a worker that dies is named and reported, the others are stopped."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.helpers import live_producers
from workbench.events.workers import RELAY, Workers, build_runners


class _Steady:
    name = "steady"

    def __init__(self) -> None:
        self.stopped = threading.Event()

    def run(self) -> None:
        self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()


class _Doomed(_Steady):
    name = "doomed"

    def run(self) -> None:
        raise RuntimeError("the sink's store is gone")


def test_a_crashing_worker_is_named_and_reported_so_its_process_can_exit() -> None:
    crashed = threading.Event()
    steady = _Steady()
    workers = Workers([steady, _Doomed()], on_crash=crashed.set).start()
    assert crashed.wait(30), "nobody was told the worker died"
    workers.stop()
    assert workers.crashed == ["doomed"]
    assert steady.stopped.is_set()
    assert not any(thread.is_alive() for thread in workers.threads)


@pytest.mark.stack
def test_stopped_workers_keep_no_broker_client_though_still_held(workbench: Any) -> None:
    before = live_producers()
    workers = Workers(build_runners(workbench.endpoints, [RELAY])).start()
    opened = live_producers() - before
    assert opened
    workers.stop()
    assert not any(thread.is_alive() for thread in workers.threads)
    assert not opened & live_producers()  # `workers` still holds the relay
