"""Search quality on the shipped evaluation set: hybrid beats both single modes on nDCG@10."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from tests.helpers import REPO, SHARED_DATA
from workbench.search.evaluation import (
    evaluate,
    load_corpus,
    load_queries,
    ndcg_at,
    recall_at,
    reciprocal_rank,
    summary,
)

DATA = REPO / "benchmarks" / "data"
# The corpus is Chatwoot's official spec, read where it sits beside the project (never copied in).
SPEC = SHARED_DATA / "chatwoot" / "swagger.json"
needs_spec = pytest.mark.skipif(not SPEC.exists(), reason=f"{SPEC} is absent")


def test_metrics_by_hand() -> None:
    relevant = {"a": 2, "b": 1}
    assert recall_at(["x", "a", "b"], relevant, 2) == 0.5
    assert reciprocal_rank(["x", "y", "b"], relevant, 10) == pytest.approx(1 / 3)
    assert ndcg_at(["a", "b"], relevant, 10) == pytest.approx(1.0)
    assert ndcg_at(["b", "a"], relevant, 10) < 1.0
    assert ndcg_at([], relevant, 10) == 0.0


@needs_spec
def test_the_evaluation_set_is_labelled() -> None:
    queries = load_queries(DATA / "chatwoot_queries.jsonl")
    corpus = {d.source_id for d in load_corpus(SPEC, domain="x")}
    assert len(queries) >= 50 and len(corpus) == 147
    assert all(set(q.relevant) <= corpus for q in queries)
    assert {q.split for q in queries} == {"dev", "test"}


@needs_spec
@pytest.mark.stack
def test_hybrid_beats_vector_and_keyword_on_the_test_split(workbench: Any) -> None:
    domain = "eval-chatwoot"
    workbench.search.index_documents(load_corpus(SPEC, domain=domain), progress=False)
    queries = [q for q in load_queries(DATA / "chatwoot_queries.jsonl") if q.split == "test"]
    table = summary(evaluate(workbench.search, queries, k=10, filters={"domain": domain}))
    ndcg = dict(zip(table["mode"], table["nDCG@10"], strict=True))
    recall = dict(zip(table["mode"], table["recall@10"], strict=True))
    print(table.with_columns(pl.col(pl.Float64).round(3)))
    assert ndcg["hybrid"] > ndcg["vector"] and ndcg["hybrid"] > ndcg["keyword"]
    assert recall["hybrid"] >= 0.8


@needs_spec
@pytest.mark.stack
def test_search_quality_report_runs(workbench: Any, settings: Any) -> None:
    from workbench.reports import run_report

    result = run_report(settings, "search_quality", {"split": "test"})
    html = result.html.read_text()
    assert "nDCG@10" in html and "hybrid" in html
