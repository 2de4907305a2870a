"""Semantic, keyword and hybrid search over catalog entities and free documents.

`wb.search` (a `Search`) is the entry point; see docs/search.md.
"""

from __future__ import annotations

from workbench.search.index import Document, Filters, SearchError, SearchTuning

__all__ = ["Document", "Filters", "SearchError", "SearchTuning"]
