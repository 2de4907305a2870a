"""Structure-aware chunking of Markdown, plain text and HTML, sized in the model's tokens.

A document is first cut into blocks that follow its structure: headings, paragraphs, list items
and fenced code. Headings open sections; a chunk never spans two sections, and each chunk carries
its section path (``Install > From source``) so the heading's words help retrieval. Blocks are
packed into chunks of at most ``max_tokens`` tokens; a block that is too long alone is cut at
sentence ends, then at token boundaries. Consecutive chunks of one section overlap by about
``overlap_tokens`` tokens (whole units are repeated, never half a word).

Positions are character offsets into the text the chunker was given (for HTML, the text extracted
from it, which is what the index stores): ``text[chunk.start:chunk.end] == chunk.text``. Chunks
cover the text without gaps: every character of a document with any non-blank content lies in at
least one chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal

from workbench.errors import TerminalError

Format = Literal["markdown", "plain", "html"]
TokenCounter = Callable[[str], int]
TokenSplitter = Callable[[str, int], list[int]]

DEFAULT_MAX_TOKENS = 160
DEFAULT_OVERLAP_TOKENS = 24


class ChunkingError(TerminalError):
    """Chunking parameters the chunker cannot use."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a document: its text, where it lies, and the section it belongs to."""

    ordinal: int
    start: int
    end: int
    text: str
    heading: str
    tokens: int


@dataclass(frozen=True, slots=True)
class _Unit:
    start: int
    end: int
    tokens: int


@dataclass
class _Section:
    heading: str
    blocks: list[tuple[int, int]]


_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_LIST_ITEM = re.compile(r"^ {0,3}([-*+]|\d{1,9}[.)])[ \t]+")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+|\n+")


def approximate_tokens(text: str) -> int:
    """A tokenizer-free estimate (words and punctuation), for use without a model."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def _approximate_split(text: str, limit: int) -> list[int]:
    """Cut offsets such that each piece has at most `limit` approximate tokens."""
    cuts: list[int] = []
    count = 0
    for match in re.finditer(r"\w+|[^\w\s]", text):
        if count == limit:
            cuts.append(match.start())
            count = 0
        count += 1
    return cuts


class Chunker:
    """Cuts documents into token-bounded chunks; see the module docstring."""

    def __init__(
        self,
        count_tokens: TokenCounter | None = None,
        *,
        split_tokens: TokenSplitter | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
    ) -> None:
        if max_tokens < 8:
            raise ChunkingError(
                f"max_tokens must be at least 8, got {max_tokens}.",
                remedy="use a chunk size the embedding model can use (e.g. 128-256).",
            )
        if not 0 <= overlap_tokens < max_tokens // 2:
            raise ChunkingError(
                f"overlap_tokens must be between 0 and max_tokens/2 ({max_tokens // 2}), "
                f"got {overlap_tokens}.",
                remedy="use an overlap of about a tenth of max_tokens.",
            )
        self.count_tokens = count_tokens or approximate_tokens
        self.split_tokens = split_tokens or (None if count_tokens else _approximate_split)
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens

    # -- public -------------------------------------------------------------------------------
    def chunk(self, text: str, fmt: Format = "markdown") -> list[Chunk]:
        """The chunks of `text` (already extracted from HTML: see `extract_html`)."""
        if fmt not in ("markdown", "plain", "html"):
            raise ChunkingError(
                f"Unknown document format {fmt!r}.", remedy="use 'markdown', 'plain' or 'html'."
            )
        if not text.strip():
            return []
        sections = (
            _plain_sections(text) if fmt == "plain" else _markdown_sections(text)
        )  # html arrives as Markdown-like text
        chunks: list[Chunk] = []
        for section in sections:
            units = [u for block in section.blocks for u in self._units(text, *block)]
            for start, end, tokens in self._pack(units):
                chunks.append(Chunk(len(chunks), start, end, "", section.heading, tokens))
        return _close_gaps(text, chunks)

    # -- units: blocks, or sentences / token windows of a block too long alone -----------------
    def _units(self, text: str, start: int, end: int) -> Iterator[_Unit]:
        start, end = _strip(text, start, end)
        if start >= end:
            return
        tokens = self.count_tokens(text[start:end])
        if tokens <= self.max_tokens:
            yield _Unit(start, end, tokens)
            return
        pieces = list(_sentences(text, start, end))
        if len(pieces) > 1:
            for piece in pieces:
                yield from self._units(text, *piece)
            return
        yield from self._windows(text, start, end)

    def _windows(self, text: str, start: int, end: int) -> Iterator[_Unit]:
        """A sentence longer than a chunk: cut every `max_tokens` tokens (or characters)."""
        piece = text[start:end]
        limit = self.max_tokens
        while True:
            if self.split_tokens is not None:
                cuts = self.split_tokens(piece, limit)
            else:  # no splitter: cut by characters, shrinking until each piece fits
                step = max(1, len(piece) * limit // max(1, self.count_tokens(piece)))
                cuts = list(range(step, len(piece), step))
            bounds = [0, *cuts, len(piece)]
            spans = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
            counted = [(a, b, self.count_tokens(piece[a:b])) for a, b in spans if a < b]
            if all(t <= self.max_tokens for _, _, t in counted) or limit == 1:
                break
            limit = max(1, limit * 3 // 4)
        for a, b, tokens in counted:
            s, e = _strip(text, start + a, start + b)
            if s < e:
                yield _Unit(s, e, min(tokens, self.max_tokens) if tokens else 1)

    # -- packing with overlap ----------------------------------------------------------------
    def _pack(self, units: list[_Unit]) -> Iterator[tuple[int, int, int]]:
        i = 0
        while i < len(units):
            total = 0
            j = i
            while j < len(units) and total + units[j].tokens <= self.max_tokens:
                total += units[j].tokens
                j += 1
            if j == i:  # a unit always fits after _units; guard against a miscount
                j, total = i + 1, units[i].tokens
            yield units[i].start, units[j - 1].end, total
            if j >= len(units):
                return
            # next chunk starts with the trailing units of this one, up to the overlap
            back, carried = j, 0
            while back - 1 > i and carried + units[back - 1].tokens <= self.overlap_tokens:
                back -= 1
                carried += units[back].tokens
            if carried + units[j].tokens > self.max_tokens:
                back = j
            i = back


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _sentences(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    last = start
    for match in _SENTENCE_END.finditer(text, start, end):
        if match.end() > last:
            yield last, match.end()
            last = match.end()
    if last < end:
        yield last, end


def _close_gaps(text: str, chunks: list[Chunk]) -> list[Chunk]:
    """Stretch chunks over the blank text between them, so the spans cover the whole text."""
    closed: list[Chunk] = []
    for index, chunk in enumerate(chunks):
        start = 0 if index == 0 else chunk.start
        end = len(text) if index == len(chunks) - 1 else max(chunk.end, chunks[index + 1].start)
        closed.append(
            Chunk(chunk.ordinal, start, end, text[start:end], chunk.heading, chunk.tokens)
        )
    return closed


# -- structure -------------------------------------------------------------------------------


def _lines(text: str) -> Iterator[tuple[int, int, str]]:
    position = 0
    for line in text.splitlines(keepends=True):
        yield position, position + len(line), line.rstrip("\r\n")
        position += len(line)


def _markdown_sections(text: str) -> list[_Section]:
    """Sections (split at headings) of blocks: paragraphs, list items, fenced code, headings."""
    sections = [_Section("", [])]
    path: list[tuple[int, str]] = []
    block_start: int | None = None
    block_end = 0
    fence: str | None = None
    previous: tuple[int, int, str] | None = None

    def close() -> None:
        nonlocal block_start
        if block_start is not None:
            sections[-1].blocks.append((block_start, block_end))
            block_start = None

    def open_section(level: int, title: str, start: int, end: int) -> None:
        close()
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title.strip()))
        heading = " > ".join(t for _, t in path if t)
        sections.append(_Section(heading, [(start, end)]))

    for start, end, line in _lines(text):
        if fence is not None:
            block_end = end
            if line.lstrip().startswith(fence):
                fence = None
                close()
            previous = (start, end, line)
            continue
        fenced = _FENCE.match(line)
        heading = _HEADING.match(line)
        if fenced:
            close()
            fence = fenced.group(1)
            block_start, block_end = start, end
        elif heading:
            open_section(len(heading.group(1)), heading.group(2), start, end)
        elif (
            _SETEXT.match(line)
            and previous is not None
            and previous[2].strip()
            and block_start == previous[0]
        ):
            # the paragraph line above is a heading (=== level 1, --- level 2)
            block_start = None
            level = 1 if line.strip().startswith("=") else 2
            open_section(level, previous[2], previous[0], end)
        elif not line.strip():
            close()
        elif _LIST_ITEM.match(line):
            close()
            block_start, block_end = start, end
        else:
            if block_start is None:
                block_start = start
            block_end = end
        previous = (start, end, line)
    close()
    return [s for s in sections if s.blocks]


def _plain_sections(text: str) -> list[_Section]:
    """Plain text: one section of paragraphs separated by blank lines."""
    blocks = [(m.start(), m.end()) for m in re.finditer(r"\S(?:.*\S)?(?:\n[ \t]*\S.*)*", text)]
    return [_Section("", blocks)] if blocks else []


# -- HTML ------------------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "section",
        "article",
        "header",
        "footer",
        "main",
        "aside",
        "blockquote",
        "pre",
        "table",
        "tr",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "br",
        "hr",
        "figure",
        "figcaption",
        "nav",
    }
)
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg"})


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.title: str | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag == "title":
            self._in_title = True
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
        elif tag in {"td", "th"}:
            self.parts.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag == "title":
            self._in_title = False
        elif (len(tag) == 2 and tag[0] == "h" and tag[1] in "123456") or tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = (self.title or "") + data
        elif not self.skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def extract_html(markup: str) -> tuple[str, str | None]:
    """Visible text of an HTML document, headings as Markdown ``#`` lines; and its <title>."""
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    title = parser.title.strip() if parser.title else None
    if not title:  # no <title>: the first heading names the document
        first = re.search(r"^#{1,6} (.+)$", text, re.MULTILINE)
        title = first.group(1).strip() if first else None
    return text, title or None


def decode_document(data: bytes | str) -> str:
    """Text of a document in any common encoding; never fails.

    UTF-8 (with or without BOM) and UTF-16 with a BOM are read as such; anything else that is
    not valid UTF-8 is read as Windows-1252, and bytes that it leaves undefined as Latin-1.
    NUL characters, which PostgreSQL text cannot hold, are removed.
    """
    if isinstance(data, str):
        return data.replace("\x00", "")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
    return text.replace("\x00", "")
