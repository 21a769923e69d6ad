"""Offline English text, cut into distinct paragraphs, for GENERATED long-context tasks.

LongBench builds ``passage_retrieval_en`` and ``passage_count`` from English Wikipedia paragraphs.
Nothing is downloaded here, so the paragraphs come from English prose that ships with Python:

* ``python-language-reference``: the text of the Python documentation topics that CPython ships
  for ``help()`` (``pydoc_data.topics``: the language reference chapters, one document per topic,
  in sorted topic order). Only prose is kept: indented blocks (grammar, code, tables), headings,
  doctests and sentences with code-like characters are dropped; list markers and reST emphasis
  markers (``*word*``) are removed.
* ``python-stdlib-docstrings``: the NIAH haystack (:func:`tasks.niah.haystack_sentences`: natural
  sentences from the docstrings of a fixed list of standard-library modules), as one document.

Every sentence occurs once in the whole text (later duplicates are dropped), so paragraphs cut
as disjoint runs of sentences (:func:`draw_paragraphs`) are distinct, and a sentence found in the
context identifies its paragraph. The text depends on the Python version; callers record
:func:`text_info` in each sample's metadata.
"""

from __future__ import annotations

import bisect
import functools
import platform
import re
from dataclasses import dataclass

TEXT_SOURCE = "python-language-reference+python-stdlib-docstrings"

_UNDERLINE = re.compile(r"^\s*([*=\-~^#+])\1{2,}\s*$")
_LIST_MARKER = re.compile(r"^(\*|-|\d+\.|\(\d+\)|[a-z]\.)\s+")
_EMPHASIS = re.compile(r"\*{1,2}([^*\s][^*]*?)\*{1,2}")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_BAD = set("{}[]<>=_`\\|#@$%^~/")


@dataclass(frozen=True)
class Document:
    """A named run of sentences in reading order (a reference topic, or the docstring haystack)."""

    name: str
    sentences: tuple[str, ...]


def _good_sentence(s: str) -> bool:
    if not (30 <= len(s) <= 400) or not s[0].isupper() or s[-1] not in ".!?":
        return False
    if len(s.split()) < 5 or any(c in _BAD for c in s) or "http" in s or ">>>" in s:
        return False
    letters = sum(c.isalpha() or c == " " for c in s)
    return letters >= 0.85 * len(s) and not re.search(r"\w\(|\(\)|\w\.\w", s)


def _topic_sentences(text: str) -> list[str]:
    """Prose sentences of one ``pydoc_data.topics`` entry, in order."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if not block.strip() or any(_UNDERLINE.match(line) for line in lines):
            continue  # empty, or a heading
        if "::=" in block or ">>>" in block:
            continue  # grammar or doctest
        indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
        lines = [line[indent:] for line in lines]  # an indented prose block (e.g. under a signature)
        first = lines[0]
        if first[:1].isspace():
            continue  # nested deeper: code, table
        m = _LIST_MARKER.match(first)
        if m:  # a list item: its continuation lines are indented
            lines = [first[m.end():]] + [line.strip() for line in lines[1:]]
        elif any(line[:1].isspace() for line in lines[1:]):
            continue
        text_ = " ".join(" ".join(line.strip() for line in lines).split())
        text_ = _EMPHASIS.sub(r"\1", text_)
        out.extend(s for s in _SENTENCE_SPLIT.split(text_) if _good_sentence(s))
    return out


@functools.lru_cache(maxsize=1)
def documents() -> tuple[Document, ...]:
    """The offline documents, built once per process (see the module docstring)."""
    from tasks import niah

    raw: list[tuple[str, list[str]]] = []
    try:
        from pydoc_data.topics import topics
    except Exception:  # pragma: no cover - a Python build without pydoc_data
        topics = {}
    for key in sorted(topics):
        raw.append((f"reference:{key}", _topic_sentences(topics[key])))
    raw.append(("stdlib-docstrings", list(niah.haystack_sentences())))
    seen: set[str] = set()
    docs = []
    for name, sents in raw:
        kept = []
        for s in sents:
            if s not in seen:
                seen.add(s)
                kept.append(s)
        if kept:
            docs.append(Document(name, tuple(kept)))
    return tuple(docs)


@functools.lru_cache(maxsize=1)
def sentences() -> tuple[str, ...]:
    """All sentences of :func:`documents`, concatenated (the global sentence index)."""
    return tuple(s for d in documents() for s in d.sentences)


@functools.lru_cache(maxsize=1)
def document_spans() -> tuple[tuple[int, int], ...]:
    """``(start, end)`` of each document in :func:`sentences`."""
    spans, start = [], 0
    for d in documents():
        spans.append((start, start + len(d.sentences)))
        start += len(d.sentences)
    return tuple(spans)


def text_info() -> dict:
    """What a generated sample's paragraphs were made from (for its metadata)."""
    return {"text": TEXT_SOURCE, "python": platform.python_version()}


class TokenCounts:
    """Token count of every sentence (with its leading space) under one tokenizer, plus prefix sums."""

    def __init__(self, tokenizer):
        sents = sentences()
        enc = tokenizer([" " + s for s in sents], add_special_tokens=False)["input_ids"]
        self.counts = [max(1, len(ids)) for ids in enc]
        self.cum = [0]
        for c in self.counts:
            self.cum.append(self.cum[-1] + c)

    @property
    def total(self) -> int:
        return self.cum[-1]

    def span(self, start: int, end: int) -> int:
        return self.cum[end] - self.cum[start]


class ParagraphDraw:
    """Draws disjoint paragraphs (``(start, end)`` sentence ranges of :func:`sentences`) one by one.

    A paragraph is a run of consecutive sentences inside one document, ending at the sentence
    boundary nearest to a token target (at least one sentence). Randomness (``rng``): each
    document is first cut in two at a random sentence; :meth:`take` then starts a paragraph at the
    beginning of a free stretch drawn with probability proportional to its length among the
    stretches long enough for the target (the longest stretch, whole, when none is). Taking
    paragraphs from the front of a stretch keeps the free text in few long stretches, so a large
    share of the text can be used. :meth:`take_best` takes the front run of whichever stretch fits
    the target best (to land a total on a budget). Paragraphs never share a sentence and every
    sentence occurs once in the text, so the paragraphs are distinct.
    """

    def __init__(self, rng, counts: TokenCounts):
        self.rng = rng
        self.counts = counts
        self.free: list[tuple[int, int]] = []
        for s, e in document_spans():
            cut = rng.randint(s, e - 1) if e - s > 1 else s
            self.free.extend(x for x in ((s, cut), (cut, e)) if x[1] > x[0])

    def _cut(self, i: int, q: int) -> tuple[int, int]:
        s, e = self.free[i]
        if q < e:
            self.free[i] = (q, e)
        else:
            del self.free[i]
        return s, q

    def take(self, target: float) -> tuple[int, int]:
        """A paragraph of about ``target`` tokens from a random free stretch."""
        if not self.free:
            raise ValueError("the offline text has too few sentences for this many paragraphs")
        counts = self.counts
        sizes = [counts.span(s, e) for s, e in self.free]
        eligible = [i for i, n in enumerate(sizes) if n >= target]
        if not eligible:
            i = max(range(len(self.free)), key=lambda j: (sizes[j], -j))
            return self._cut(i, self.free[i][1])
        i = self.rng.choices(eligible, weights=[sizes[i] for i in eligible])[0]
        return self._cut(i, _nearest_end(counts, *self.free[i], target))

    def take_best(self, target: float) -> tuple[int, int]:
        """The front run, nearest to ``target`` tokens, of the free stretch where it fits best."""
        if not self.free:
            raise ValueError("the offline text has too few sentences for this many paragraphs")
        fits = []
        for j, (s, e) in enumerate(self.free):
            q = _nearest_end(self.counts, s, e, target)
            fits.append((abs(self.counts.span(s, q) - target), j, q))
        _, i, q = min(fits)
        return self._cut(i, q)


def draw_paragraphs(rng, counts: TokenCounts, budget: float, weights: list[int]) -> list[tuple[int, int]]:
    """``len(weights)`` distinct paragraphs (see :class:`ParagraphDraw`), paragraph k to be shown
    ``weights[k]`` times, sized so that ``sum(weights[k] * tokens(k)) ≈ budget``.

    Each paragraph in turn aims at the budget left divided by the occurrences left, so the later
    ones make up the earlier ones' rounding; the last one is the best fit for the remainder.
    """
    draw = ParagraphDraw(rng, counts)
    out: list[tuple[int, int]] = []
    used = 0.0
    left = sum(weights)
    for w in weights:
        target = max(1.0, (budget - used) / max(1, left))
        run = draw.take_best(target) if left == w else draw.take(target)
        out.append(run)
        used += w * counts.span(*run)
        left -= w
    return out


def _nearest_end(counts: TokenCounts, s: int, e: int, target: float) -> int:
    """End (exclusive) of the run starting at ``s`` (at least one sentence, at most up to ``e``) whose
    token count is nearest to ``target``."""
    q = bisect.bisect_left(counts.cum, counts.cum[s] + target, s + 1, e + 1)
    best = min(max(q, s + 1), e)
    if best - 1 > s and abs(counts.span(s, best - 1) - target) <= abs(counts.span(s, best) - target):
        best -= 1
    return best


def paragraph_text(run: tuple[int, int]) -> str:
    """The text of a paragraph drawn by :func:`draw_paragraphs` (its sentences joined by spaces)."""
    sents = sentences()
    return " ".join(sents[run[0]:run[1]])
