"""Fixtures of the search tests: the session's Workbench and its search index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from workbench.search.embedder import BATCH_SIZE, Vectors, get_embedder


class CountingEmbedder:
    """The real model, counting the texts it embeds (to observe the cache)."""

    def __init__(self) -> None:
        self.inner = get_embedder()
        self.embedded: list[str] = []

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    def embed(self, texts: Sequence[str], *, batch_size: int = BATCH_SIZE) -> Vectors:
        self.embedded.extend(texts)
        return self.inner.embed(texts, batch_size=batch_size)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def split_tokens(self, text: str, limit: int) -> list[int]:
        return self.inner.split_tokens(text, limit)


@pytest.fixture(scope="session")
def search(workbench: Any) -> Any:
    return workbench.search


@pytest.fixture
def counting() -> CountingEmbedder:
    return CountingEmbedder()


@pytest.fixture(scope="session")
def search_workers(workbench: Any) -> Any:
    """The two sinks these tests need (catalog projector, search indexer), in the background."""
    from workbench.events.workers import Workers, build_runners

    running = Workers(build_runners(workbench.endpoints, ["catalog", "search"])).start()
    yield running
    running.stop()
