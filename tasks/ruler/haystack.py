"""Haystacks, word lists and sizing shared by the RULER generators.

* :data:`NOISE`: RULER's "noise" haystack sentence (repeated, one per line).
* :func:`essay_words`: the "essay" haystack (Paul Graham essays, as RULER's
  ``download_paulgraham_essay.py`` makes them) read from ``--data-dir``, or the offline substitute:
  the python-stdlib-docstrings text of :mod:`tasks.niah`, labelled :data:`SUBSTITUTE`.
* :func:`key_words` / :func:`vocabulary`: the ``wonderwords`` noun / adjective / verb lists RULER
  builds its needle keys and its common-words vocabulary from.
* :func:`prompt_tokens` and :func:`fit_size`: RULER's sizing rule — the largest haystack whose input
  (in the run's tokenizer) plus ``tokens_to_generate`` fits the target length — found by a
  secant-guided bisection instead of RULER's plain bisection (same answer, fewer tokenizations).
  RULER sizes once per task and length and shrinks a sample that does not fit by a fixed step
  (500 essay words, 25 noise lines...); here such a sample is re-fitted to the largest size that
  fits (a tighter fit, never over the length).
"""

from __future__ import annotations

import functools
import json
import platform
import re
from pathlib import Path

from tasks.base import DataError

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
#: RULER niah.py / variable_tracking.py: ``np.round(np.linspace(0, 100, num=40)).astype(int)``
DEPTHS = tuple(round(100 * i / 39) for i in range(40))

ESSAYS = "paul-graham-essays"
SUBSTITUTE = "substitute:python-stdlib-docstrings"
#: where the essays may be under ``--data-dir`` (RULER's file, or a folder of the essay .txt files)
ESSAY_FILES = ("PaulGrahamEssays.json", "json/PaulGrahamEssays.json")
ESSAY_FOLDERS = ("PaulGrahamEssays", "paul_graham_essays", "essays")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# --------------------------------------------------------------------------------------------
# Essay haystack
# --------------------------------------------------------------------------------------------


def find_essays(data_dir) -> Path | None:
    """The essay source under ``data_dir``: ``PaulGrahamEssays.json`` (``{"text": ...}``, RULER's file)
    or a folder of ``*.txt`` essays (:data:`ESSAY_FOLDERS`); ``None`` when there is none."""
    if not data_dir:
        return None
    for name in ESSAY_FILES:
        if (Path(data_dir) / name).is_file():
            return Path(data_dir) / name
    for name in ESSAY_FOLDERS:
        folder = Path(data_dir) / name
        if folder.is_dir() and any(folder.glob("*.txt")):
            return folder
    return None


@functools.lru_cache(maxsize=4)
def _read_essays(path: Path) -> tuple[str, ...]:
    if path.is_dir():  # RULER concatenates the downloaded .txt files in sorted order
        text = "".join(p.read_text(encoding="utf-8") for p in sorted(path.glob("*.txt")))
    else:
        try:
            text = json.loads(path.read_text(encoding="utf-8"))["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{path}: expected RULER's PaulGrahamEssays.json, a JSON object with a \"text\" "
                            f"string ({type(err).__name__}: {err})") from None
    words = tuple(re.sub(r"\s+", " ", text).split(" "))  # RULER: re.sub(r'\s+', " ", essay).split(" ")
    if len([w for w in words if w]) < 10:
        raise DataError(f"{path}: the essay text has fewer than 10 words")
    return words


def essay_words(data_dir, mode: str = "auto") -> tuple[tuple[str, ...], dict]:
    """``(words, labels)`` of the essay haystack: RULER's whitespace-split essay text and the metadata
    labels every sample of it carries (``haystack``, plus ``haystack_file`` or ``python``).

    ``mode``: ``auto`` (the essays in ``data_dir`` when there, else the substitute), ``essay`` (the
    essays, ``None`` words when missing), ``substitute`` (always the stdlib docstrings)."""
    path = None if mode == "substitute" else find_essays(data_dir)
    if path is not None:
        return _read_essays(path), {"haystack": ESSAYS, "haystack_file": str(path)}
    if mode == "essay":
        return (), {}
    from tasks.niah import haystack_text

    return tuple(haystack_text().split(" ")), {"haystack": SUBSTITUTE, "python": platform.python_version()}


def repeated(items, n: int) -> list:
    """The first ``n`` items of ``items`` repeated as often as needed (RULER's ``(haystack * repeats)[:n]``)."""
    items = list(items)
    reps = -(-n // len(items)) if items else 0
    return (items * reps)[:n]


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after ``.``/``!``/``?`` followed by whitespace. RULER uses nltk's
    punkt ``sent_tokenize`` (data that needs a download); this rule is its offline stand-in."""
    text = text.strip()
    return [s for s in _SENTENCE_END.split(text) if s] if text else []


# --------------------------------------------------------------------------------------------
# Words (wonderwords, as RULER)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _wonderwords() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``(nouns, adjectives, verbs)``: wonderwords' lists, read as RULER reads them (the package's
    ``assets/*.txt``, found without importing it: its import loads every list and warns)."""
    import importlib.util

    spec = importlib.util.find_spec("wonderwords")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("RULER's word lists need the wonderwords package; pip install 'wonderwords>=2.2,<3'")
    assets = Path(list(spec.submodule_search_locations)[0]) / "assets"

    def read(name: str) -> tuple[str, ...]:  # wonderwords' own reader: one word a line, right-stripped
        try:
            text = (assets / name).read_text(encoding="utf-8")
        except OSError as err:
            raise DataError(f"wonderwords has no {name} ({err}); reinstall 'wonderwords>=2.2,<3'") from None
        return tuple(line.rstrip() for line in text.splitlines(True))

    return read("nounlist.txt"), read("adjectivelist.txt"), read("verblist.txt")


@functools.lru_cache(maxsize=1)
def key_words() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(adjectives, nouns)``, each sorted and unique: RULER's needle keys are ``f"{adj}-{noun}"``
    drawn uniformly from all pairs (``random.choice(sorted(set(pairs)))``); drawing the adjective and
    the noun uniformly and independently is the same distribution without building the ~6M pairs."""
    nouns, adjs, _ = _wonderwords()
    return tuple(sorted(set(adjs))), tuple(sorted(set(nouns)))


def random_key_word(rng) -> str:
    """One ``adjective-noun`` word (RULER niah.py's ``generate_random_word``)."""
    adjs, nouns = key_words()
    return f"{rng.choice(adjs)}-{rng.choice(nouns)}"


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """RULER common_words_extraction.py's word list: ``sorted(set(nouns + adjs + verbs))``."""
    nouns, adjs, verbs = _wonderwords()
    return tuple(sorted(set(nouns + adjs + verbs)))


# --------------------------------------------------------------------------------------------
# Sizing
# --------------------------------------------------------------------------------------------


def prompt_tokens(tokenizer, prompt: str, answer_prefix: str) -> int:
    """Tokens the runner feeds for this prompt (``harness.evaluate.format_prompt`` with the default
    ``--chat-template auto`` on a chat sample): the chat template of one user turn plus the answer
    prefix when the tokenizer has a template, else ``tokenizer(prompt + answer_prefix)`` with its
    special tokens. RULER likewise counts its model template's tokens."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)
        extra = len(tokenizer(answer_prefix, add_special_tokens=False)["input_ids"]) if answer_prefix else 0
        return len(ids) + extra
    return len(tokenizer(prompt + answer_prefix)["input_ids"])


def fit_size(count, budget: int, n_min: int, step: int, above: tuple[int, int] | None = None) -> int | None:
    """The largest ``n >= n_min`` with ``count(n) <= budget`` (``count`` grows with ``n``), or ``None``
    when even ``count(n_min)`` exceeds the budget.

    Like RULER's search over the haystack size, but each guess comes from the line through the two
    nearest measured points (a bracket ``lo`` fits / ``hi`` does not), falling back to bisection when
    the bracket fails to halve; ``step`` (RULER's ``incremental``) is the first probe's distance;
    ``above``: an already measured ``(n, count)`` over the budget, which starts the bracket.
    """
    lo, c_lo = n_min, count(n_min)
    if c_lo > budget:
        return None
    prev, c_prev = None, None  # the fitting point before lo (for the slope while no hi is known)
    hi, c_hi = above if above is not None and above[0] > n_min else (None, None)
    if hi is not None and hi - lo <= 1:
        return lo
    guess = n_min + max(1, step) if hi is None else min(max(lo + int((budget - c_lo) * (hi - lo) / max(c_hi - c_lo, 1)),
                                                            lo + 1), hi - 1)
    width = None
    while True:
        c = count(guess)
        if c <= budget:
            prev, c_prev, lo, c_lo = lo, c_lo, guess, c
        else:
            hi, c_hi = guess, c
        if hi is not None and hi - lo <= 1:
            return lo
        if hi is None:  # extrapolate along the slope of the two largest fitting sizes
            slope = max((c_lo - c_prev) / (lo - prev), 1e-3)
            guess = lo + max(1, int((budget - c_lo) / slope) + 1)
            continue
        new_width = hi - lo
        if width is not None and new_width > width / 2:
            guess = (lo + hi) // 2  # the secant stalled: bisect
        else:
            guess = lo + int((budget - c_lo) * (hi - lo) / max(c_hi - c_lo, 1))
        guess = min(max(guess, lo + 1), hi - 1)
        width = new_width
