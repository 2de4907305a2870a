"""Semantic, keyword and hybrid search over catalog entities and free documents.

`wb.search` (a `Search`) is the entry point; see docs/search.md. The index module (and numpy
with it) is imported on first use, so commands that never search start faster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.search.index import Document, Filters, SearchError, SearchTuning

__all__ = ["Document", "Filters", "SearchError", "SearchTuning"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from workbench.search import index

        return getattr(index, name)
    raise AttributeError(f"module 'workbench.search' has no attribute {name!r}")
