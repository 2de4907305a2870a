"""The chunker: structure, token bounds, exact positions, full coverage; any input."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.search.chunker import (
    Chunker,
    ChunkingError,
    approximate_tokens,
    decode_document,
    extract_html,
)
from workbench.search.embedder import get_embedder

EMBEDDER = get_embedder()  # tokenizer only: the network is not loaded by these tests
MODEL_CHUNKER = Chunker(
    EMBEDDER.count_tokens, split_tokens=EMBEDDER.split_tokens, max_tokens=40, overlap_tokens=8
)

markdown_line = st.one_of(
    st.text(min_size=0, max_size=120),
    st.builds(lambda n, t: "#" * n + " " + t, st.integers(1, 6), st.text(max_size=30)),
    st.builds(lambda t: "- " + t, st.text(max_size=60)),
    st.just("```"),
    st.just(""),
    st.just("====="),
    st.builds(
        " ".join,
        st.lists(
            st.sampled_from(
                ["alpha", "beta.", "gamma!", "unbelievably", "x" * 50, "naïve", "数据", "🙂", "a;"]
            ),
            max_size=80,
        ),
    ),
)
documents = st.lists(markdown_line, max_size=40).map("\n".join)


def _check(text: str, chunker: Chunker, fmt: str = "markdown") -> None:
    chunks = chunker.chunk(text, fmt)  # type: ignore[arg-type]
    if not text.strip():
        assert chunks == []
        return
    assert chunks, "non-blank text yields chunks"
    covered = [False] * len(text)
    previous_start = -1
    for index, chunk in enumerate(chunks):
        assert chunk.ordinal == index
        assert 0 <= chunk.start < chunk.end <= len(text)
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.start > previous_start, "chunks advance"
        previous_start = chunk.start
        assert chunker.count_tokens(chunk.text) <= chunker.max_tokens
        for i in range(chunk.start, chunk.end):
            covered[i] = True
    assert all(covered), "every character lies in some chunk"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_markdown_chunks_cover_and_are_bounded_approximate(text: str) -> None:
    _check(text, Chunker(max_tokens=24, overlap_tokens=4))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_markdown_chunks_cover_and_are_bounded_model_tokens(text: str) -> None:
    _check(text, MODEL_CHUNKER)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000))
def test_plain_text_any_characters(text: str) -> None:
    _check(text, MODEL_CHUNKER, "plain")
    _check(text, Chunker(max_tokens=16, overlap_tokens=0), "plain")


def test_headings_open_sections_and_carry_their_path() -> None:
    text = (
        "# Guide\n\nIntro paragraph.\n\n## Install\n\nRun pip install.\n\n"
        "### From source\n\nClone it.\n\n## Use\n\n- one item\n- two items\n"
    )
    chunks = Chunker(max_tokens=200).chunk(text)
    headings = [c.heading for c in chunks]
    assert headings == ["Guide", "Guide > Install", "Guide > Install > From source", "Guide > Use"]
    assert "Clone it." in chunks[2].text
    assert chunks[0].start == 0 and chunks[-1].end == len(text)


def test_long_section_splits_with_overlap() -> None:
    sentences = [f"Sentence number {i} talks about topic {i}." for i in range(60)]
    text = "# Long\n\n" + " ".join(sentences)
    chunker = Chunker(
        EMBEDDER.count_tokens, split_tokens=EMBEDDER.split_tokens, max_tokens=50, overlap_tokens=12
    )
    chunks = chunker.chunk(text)
    assert len(chunks) > 3
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end, "consecutive chunks of a section overlap"
    assert all(EMBEDDER.count_tokens(c.text) <= 50 for c in chunks)


def test_a_single_huge_word_is_cut_at_token_boundaries() -> None:
    text = "x" * 5000
    chunks = MODEL_CHUNKER.chunk(text, "plain")
    assert "".join(c.text for c in chunks).startswith("x")
    assert all(EMBEDDER.count_tokens(c.text) <= 40 for c in chunks)
    assert chunks[-1].end == len(text)


def test_fenced_code_is_one_block() -> None:
    text = "Intro.\n\n```python\n# not a heading\nprint(1)\n```\n\nAfter."
    chunks = Chunker(max_tokens=200).chunk(text)
    assert [c.heading for c in chunks] == [""]


def test_html_headings_and_scripts() -> None:
    markup = (
        "<html><head><title>Doc</title><style>p{}</style></head><body><h1>Title</h1>"
        "<p>First &amp; second.</p><script>alert(1)</script><ul><li>one</li><li>two</li></ul>"
        "<h2>Sub</h2><p>More</p></body></html>"
    )
    text, title = extract_html(markup)
    assert title == "Doc"
    assert "alert" not in text and "p{}" not in text
    assert "# Title" in text and "## Sub" in text and "First & second." in text
    chunks = Chunker(max_tokens=200).chunk(text)
    assert [c.heading for c in chunks] == ["Title", "Title > Sub"]


def test_decoding_never_fails() -> None:
    assert decode_document(b"ok\x00") == "ok"
    assert decode_document("café".encode("cp1252")) == "café"
    assert decode_document("hé".encode("utf-16")) == "hé"
    assert decode_document(bytes(range(256)))  # arbitrary bytes still decode
    assert decode_document(b"\xef\xbb\xbfbom") == "bom"


def test_bad_parameters() -> None:
    with pytest.raises(ChunkingError, match="max_tokens"):
        Chunker(max_tokens=2)
    with pytest.raises(ChunkingError, match="overlap"):
        Chunker(max_tokens=20, overlap_tokens=15)
    with pytest.raises(ChunkingError, match="format"):
        Chunker().chunk("x", "pdf")  # type: ignore[arg-type]
    assert approximate_tokens("a, b") == 3
