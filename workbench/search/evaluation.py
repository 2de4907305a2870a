"""Search quality: recall@k, MRR and nDCG@k per mode from a labelled query file.

A labelled query file is JSON Lines, one query a line::

    {"id": "q01", "query": "...", "split": "test", "relevant": {"doc-key": 2, "other": 1}}

`relevant` maps document keys (the ``source_id`` of the hits, i.e. the key a free document was
indexed under) to a graded relevance (1 related, 2 answers the question). Hits are chunks; they
are reduced to distinct documents in rank order before scoring.

A corpus file is JSON Lines with ``id`` and either ``text`` (and optional ``title``) or the fields
of an API operation (``summary``, ``description``, ``method``, ``path``, ``tag``, ``parameters``),
or an OpenAPI/Swagger JSON document, read as one document per operation. The shipped query set
(`benchmarks/data/chatwoot_queries.jsonl`) is labelled against Chatwoot's official spec, which sits
beside the project in ``../shared/data/chatwoot/swagger.json`` and is read from there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from workbench.search.index import Document, Mode

if TYPE_CHECKING:
    from workbench.search.api import Search


@dataclass(frozen=True)
class LabelledQuery:
    id: str
    query: str
    relevant: Mapping[str, int]
    split: str = "test"


def load_queries(path: str | Path) -> list[LabelledQuery]:
    queries = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            queries.append(
                LabelledQuery(
                    row["id"],
                    row["query"],
                    {str(k): int(v) for k, v in row["relevant"].items()},
                    row.get("split", "test"),
                )
            )
    return queries


def operation_text(row: Mapping[str, Any]) -> str:
    """An API operation as a small Markdown document."""
    parts = [f"# {row.get('summary') or row['id']}"]
    if row.get("description") and row["description"] != row.get("summary"):
        parts.append(str(row["description"]))
    parts.append(f"Endpoint: {row.get('method', '')} {row.get('path', '')} ({row.get('tag', '')})")
    params = [
        f"- {p['name']}: {p['description']}" if p.get("description") else f"- {p['name']}"
        for p in row.get("parameters", [])
    ]
    if params:
        parts.append("Parameters:\n" + "\n".join(params))
    return "\n\n".join(parts)


_METHODS = ("get", "post", "put", "patch", "delete")


def _resolve(spec: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = spec
    for part in str(ref).lstrip("#/").split("/"):
        target = target[part]
    return dict(target)


def openapi_operations(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per operation of an OpenAPI/Swagger document: id, method, path, tag, summary,
    description and the names and descriptions of its path, query and body parameters."""
    rows = []
    for path, item in spec["paths"].items():
        shared = [_resolve(spec, p) for p in item.get("parameters", [])]
        for method in _METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            parameters = shared + [_resolve(spec, p) for p in operation.get("parameters", [])]
            rows.append(
                {
                    "id": operation["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "tag": (operation.get("tags") or [""])[0],
                    "summary": (operation.get("summary") or "").strip(),
                    "description": (operation.get("description") or "").strip(),
                    "parameters": [
                        {
                            "name": p.get("name", ""),
                            "description": (p.get("description") or "")[:300],
                        }
                        for p in parameters
                        if p.get("name") and p.get("in") != "header"
                    ],
                }
            )
    return rows


def _corpus_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".json":
        return openapi_operations(json.loads(path.read_text(encoding="utf-8")))
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def load_corpus(path: str | Path, *, domain: str) -> list[Document]:
    """Documents from a JSON Lines corpus or an OpenAPI document (see the module doc)."""
    documents = []
    for row in _corpus_rows(Path(path)):
        text = row["text"] if "text" in row else operation_text(row)
        title = row.get("title") or row.get("summary") or row["id"]
        documents.append(
            Document(
                text=text,
                key=f"{domain}/{row['id']}",
                title=title,
                domain=domain,
                source_system=domain,
                entity_type="document",
                source_id=str(row["id"]),
                tags=tuple(t for t in [row.get("tag")] if t),
            )
        )
    return documents


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {d for d, g in relevant.items() if g > 0}
    return len(wanted & set(ranked[:k])) / len(wanted) if wanted else 0.0


def reciprocal_rank(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for position, doc in enumerate(ranked[:k], 1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / position
    return 0.0


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    def dcg(grades: Iterable[int]) -> float:
        return float(sum((2**g - 1) / math.log2(i + 1) for i, g in enumerate(grades, 1)))

    ideal = dcg(sorted(relevant.values(), reverse=True)[:k])
    return float(dcg(relevant.get(d, 0) for d in ranked[:k]) / ideal) if ideal else 0.0


def ranked_documents(
    search: Search, query: str, *, k: int, mode: Mode, filters: Mapping[str, Any] | None
) -> list[str]:
    """Distinct document keys (source_id) of the hits, best first, at most `k`."""
    hits = search(query, k=min(1000, k * 3), filters=filters, mode=mode)
    seen: list[str] = []
    for key in hits["source_id"].to_list():
        if key not in seen:
            seen.append(key)
    return seen[:k]


def evaluate(
    search: Search,
    queries: Sequence[LabelledQuery],
    *,
    k: int = 10,
    modes: Sequence[Mode] = ("vector", "keyword", "hybrid"),
    filters: Mapping[str, Any] | None = None,
) -> pl.DataFrame:
    """One row per (mode, query): recall@k, reciprocal rank, nDCG@k."""
    rows = []
    for mode in modes:
        for q in queries:
            ranked = ranked_documents(search, q.query, k=k, mode=mode, filters=filters)
            rows.append(
                {
                    "mode": mode,
                    "query_id": q.id,
                    "split": q.split,
                    "recall": recall_at(ranked, q.relevant, k),
                    "rr": reciprocal_rank(ranked, q.relevant, k),
                    "ndcg": ndcg_at(ranked, q.relevant, k),
                }
            )
    return pl.DataFrame(
        rows,
        schema={
            "mode": pl.String,
            "query_id": pl.String,
            "split": pl.String,
            "recall": pl.Float64,
            "rr": pl.Float64,
            "ndcg": pl.Float64,
        },
    )


def summary(per_query: pl.DataFrame, k: int = 10) -> pl.DataFrame:
    """Mean recall@k, MRR and nDCG@k per mode (and split)."""
    return (
        per_query.group_by("mode", "split")
        .agg(
            pl.col("recall").mean().alias(f"recall@{k}"),
            pl.col("rr").mean().alias("MRR"),
            pl.col("ndcg").mean().alias(f"nDCG@{k}"),
            pl.len().alias("queries"),
        )
        .sort("split", "mode")
    )
