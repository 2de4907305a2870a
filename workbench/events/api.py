"""`wb.events`: publish, tail a topic, inspect and replay dead letters."""

from __future__ import annotations

import polars as pl

from workbench.events.deadletters import dead_letter_frame, read_dead_letters, replay_letters
from workbench.events.envelope import CloudEvent
from workbench.events.producer import EventProducer, PublishHandle
from workbench.events.tail import LiveTail, read_last, tail_frame


class Events:
    """The event backbone as a notebook sees it."""

    def __init__(self, bootstrap: str, producer: EventProducer) -> None:
        self.bootstrap = bootstrap
        self.producer = producer

    def __repr__(self) -> str:
        return f"Events(bootstrap={self.bootstrap!r})"

    def publish(self, topic: str, event: CloudEvent) -> PublishHandle:
        return self.producer.publish(topic, event)

    def tail(
        self, topic: str, n: int = 20, *, follow: bool | float | None = None
    ) -> pl.DataFrame | LiveTail:
        """The last `n` events of `topic`, newest last.

        In Jupyter (``follow=None``) and with ``follow=True`` or ``follow=SECONDS``, a
        `LiveTail`: the table refreshes in place as events arrive while the notebook goes on,
        until ``.stop()`` (or that many seconds; ten minutes by default). Elsewhere, or with
        ``follow=False``, a Polars DataFrame of the events now.
        """
        if follow is None:
            follow = _in_jupyter()
        if follow is False or (not isinstance(follow, bool) and follow <= 0):
            rows, _ = read_last(self.bootstrap, topic, n)
            return tail_frame(rows)
        timeout = 600.0 if follow is True else float(follow)
        return LiveTail(self.bootstrap, topic, n, timeout=timeout)

    def dead_letters(self, topics: list[str] | None = None) -> pl.DataFrame:
        """What the dead-letter topics hold, with reason and original position."""
        return dead_letter_frame(read_dead_letters(self.bootstrap, topics))

    def replay(self, letter_ids: list[str]) -> int:
        """Send exactly these dead letters (their `letter_id`s) back to their original topics.

        Sends none when one of them is no longer in its dead-letter topic.
        """
        return replay_letters(self.bootstrap, letter_ids)


def _in_jupyter() -> bool:
    """Whether this runs in a Jupyter kernel (where a live table can update in place)."""
    import sys

    shell = sys.modules.get("IPython")
    ipython = shell.get_ipython() if shell is not None else None
    return ipython is not None and hasattr(ipython, "kernel")
