"""Background workers: every registered sink's consumer group, in threads of one process.

Sinks are found through the `dictamesh.sinks` entry-point group (the catalog projector is
registered there like any third-party sink). Run more processes with the same groups to scale out:
partitions are spread over them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from workbench.events.consumer import ConsumerRunner, RunnerConfig
from workbench.observability import get_logger
from workbench.stack import Endpoints

log = get_logger(__name__)
ENTRY_POINT_GROUP = "dictamesh.sinks"


def discover_sinks() -> dict[str, Callable[[], Any]]:
    """Sink factories by entry-point name."""
    return {ep.name: ep.load() for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


@dataclass
class Workers:
    """Consumer runners running in daemon threads; `stop()` shuts them down cleanly."""

    runners: list[ConsumerRunner[Any]]
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Workers:
        for runner in self.runners:
            thread = threading.Thread(
                target=self._run, args=(runner,), daemon=True, name=f"consumer:{runner.sink.group}"
            )
            thread.start()
            self.threads.append(thread)
        return self

    @staticmethod
    def _run(runner: ConsumerRunner[Any]) -> None:
        try:
            runner.run()
        except Exception:  # a dying worker must say why in the log
            log.exception("consumer crashed", group=runner.sink.group)

    def stop(self, timeout: float = 30.0) -> None:
        for runner in self.runners:
            runner.stop()
        for thread in self.threads:
            thread.join(timeout)


def build_runners(
    endpoints: Endpoints, names: list[str] | None = None, **config: Any
) -> list[ConsumerRunner[Any]]:
    sinks = discover_sinks()
    chosen = names or sorted(sinks)
    unknown = [name for name in chosen if name not in sinks]
    if unknown:
        from workbench.errors import UnknownNameError

        raise UnknownNameError("sink", unknown[0], sinks)
    runner_config = RunnerConfig(
        bootstrap=endpoints.kafka_bootstrap, postgres_url=endpoints.postgres_url, **config
    )
    return [ConsumerRunner(sinks[name](), runner_config) for name in chosen]
