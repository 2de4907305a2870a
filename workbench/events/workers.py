"""Background workers: every registered sink's consumer group and the outbox relay, in threads.

Sinks are found through the `dictamesh.sinks` entry-point group (the catalog projector is
registered there like any third-party sink). Run more processes with the same groups to scale out:
partitions are spread over them; outbox relays share the pending rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any, Protocol

from workbench.events.consumer import ConsumerRunner, RunnerConfig
from workbench.observability import get_logger
from workbench.stack import Endpoints

log = get_logger(__name__)
ENTRY_POINT_GROUP = "dictamesh.sinks"
RELAY = "outbox"


class Worker(Protocol):
    """Something that runs until told to stop."""

    @property
    def name(self) -> str: ...

    def run(self) -> None: ...

    def stop(self) -> None: ...


def discover_sinks() -> dict[str, metadata.EntryPoint]:
    """Sink entry points by name; `.load()` imports a sink's module and gives its factory.

    Only the sinks a process runs are loaded: their modules bring their own dependencies
    (numpy for search, DuckDB for analytics) that a catalog-only consumer does not need.
    """
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


@dataclass
class Workers:
    """Workers running in daemon threads; `stop()` shuts them down cleanly.

    A worker that dies is logged with its exception, named in `crashed`, and `on_crash` is
    called, so a process running only workers can stop and exit with an error.
    """

    runners: list[Worker]
    on_crash: Callable[[], None] | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)

    def start(self) -> Workers:
        for runner in self.runners:
            thread = threading.Thread(
                target=self._run, args=(runner,), daemon=True, name=f"worker:{runner.name}"
            )
            thread.start()
            self.threads.append(thread)
        return self

    def _run(self, runner: Worker) -> None:
        try:
            runner.run()
        except Exception:  # a dying worker must say why in the log
            log.exception("worker crashed", worker=runner.name)
            self.crashed.append(runner.name)
            if self.on_crash is not None:
                self.on_crash()

    def stop(self, timeout: float = 30.0) -> None:
        for runner in self.runners:
            runner.stop()
        for thread in self.threads:
            thread.join(timeout)


def build_runners(
    endpoints: Endpoints, names: list[str] | None = None, *, threads: int = 1, **config: Any
) -> list[Worker]:
    """The named workers (default: every sink and the outbox relay).

    `threads` consumers of each sink's group share its partitions, each with a Postgres
    connection of its own: a batch commits on one connection, so one consumer keeps Postgres
    on one core while another can use the next.
    """
    sinks = discover_sinks()
    chosen = names or [*sorted(sinks), RELAY]
    unknown = [name for name in chosen if name not in sinks and name != RELAY]
    if unknown:
        from workbench.errors import UnknownNameError

        raise UnknownNameError("sink", unknown[0], [*sinks, RELAY])
    config.setdefault("session_timeout_ms", endpoints.group_session_timeout_ms)
    runner_config = RunnerConfig(
        bootstrap=endpoints.kafka_bootstrap, postgres_url=endpoints.postgres_url, **config
    )
    workers: list[Worker] = []
    for name in chosen:
        if name == RELAY:
            from workbench.events.outbox import OutboxRelay  # SQLAlchemy: only where it runs

            workers.append(OutboxRelay(endpoints.kafka_bootstrap, endpoints.postgres_url))
        else:
            factory = sinks[name].load()
            # The first consumer resets an empty group before it joins; the others must not
            # delete the group their sibling is joining.
            siblings = replace(runner_config, reset_empty_group=False)
            workers.extend(
                ConsumerRunner(factory(), runner_config if copy == 0 else siblings)
                for copy in range(threads)
            )
    return workers
