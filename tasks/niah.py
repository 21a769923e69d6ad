"""Needle-in-a-Haystack suite (``niah``): passkey retrieval and the classic San Francisco needle.

This is GENERATED data, made locally and offline; it is not the official benchmark data of any
paper. It follows two well-known recipes:

* ``passkey`` (InfiniteBench ``passkey`` / Landmark-attention recipe): a 5-digit pass key is
  hidden in filler text and the model is asked to repeat it; scored as in InfiniteBench's
  ``get_score_one_passkey`` (the first integer in the prediction must equal the key).
* ``needle`` (classic NIAH by G. Kamradt): the sentence "The best thing to do in San Francisco is
  eat a sandwich and sit in Dolores Park on a sunny day." is hidden in filler text and the model is
  asked what the best thing to do in San Francisco is; scored by normalised substring match.

Samples form a grid of context lengths (in tokens of the model's tokenizer) times needle depths.
The filler ("haystack") is varied natural English taken from the docstrings of a fixed, sorted
list of Python standard-library modules (and their public classes, functions and methods), so
nothing is downloaded and no third-party text is committed. The text depends on the Python
version, which every sample records in its metadata (``python``) next to
``haystack: "python-stdlib-docstrings"`` and ``generated: True``.

Sizing: the whole prompt (plain text, ``tokenizer(text, add_special_tokens=False)``) has between
``length - tol`` and ``length`` tokens, ``tol = max(16, 2% of length)``, aiming a little below
``length`` so that a chat template's few tokens still fit in the 16-token margin the grid leaves
(a sample is only made when ``length + max_new_tokens + 16 <= max_length``; the runner then never
crops a NIAH prompt). The haystack is made of whole sentences; the needle sits at the sentence
boundary nearest to ``depth`` (fraction of haystack tokens before it; 0.0 = start, 1.0 = end).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import platform
import random
import re
import string
import warnings
from typing import Iterator

from tasks import register_suite
from tasks.base import Sample, Suite

LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)

HAYSTACK_SOURCE = "python-stdlib-docstrings"

#: Standard-library modules whose docstrings make the haystack (fixed and sorted: the order of
#: the text). Modules missing from a Python build are skipped.
HAYSTACK_MODULES = (
    "abc", "argparse", "base64", "bisect", "calendar", "cmd", "codecs", "collections", "colorsys",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "email.message", "email.utils", "enum", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib",
    "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html.parser",
    "http.client", "http.cookiejar", "http.server", "imaplib", "inspect", "ipaddress", "itertools",
    "json", "logging", "logging.handlers", "mailbox", "mimetypes", "netrc", "numbers", "operator",
    "optparse", "os", "pathlib", "pickle", "pkgutil", "platform", "plistlib", "poplib", "pprint",
    "queue", "quopri", "random", "re", "reprlib", "sched", "secrets", "selectors", "shelve", "shlex",
    "shutil", "smtplib", "socket", "socketserver", "statistics", "string", "struct", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace", "traceback",
    "types", "typing", "unittest.case", "unittest.mock", "urllib.parse", "urllib.request", "uuid",
    "warnings", "wave", "weakref", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zoneinfo",
)

PASSKEY_HEADER = (
    "There is an important info hidden inside a lot of irrelevant text. "
    "Find it and memorize it. I will quiz you about the important information there.\n\n"
)
PASSKEY_NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key. "
PASSKEY_QUESTION = "\n\nWhat is the pass key? The pass key is"

NEEDLE = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
NEEDLE_ANSWER = "eat a sandwich and sit in Dolores Park on a sunny day"
NEEDLE_QUESTION = "\n\nWhat is the best thing to do in San Francisco? Answer in one sentence."

MAX_NEW_TOKENS = {"passkey": 6, "needle": 32}
MIN_LENGTH = 64  # smallest context length of the fallback sample
MARGIN = 16  # tokens kept free next to length + max_new_tokens (chat template)


# --------------------------------------------------------------------------------------------
# Haystack: sentences from standard-library docstrings
# --------------------------------------------------------------------------------------------

_SIGNATURE = re.compile(r"^[\w.]+\(.*\)(\s*->.*)?$")
_CODE_LINE = re.compile(r"^(>>>|\.\.\.|[-*+|=:#~^@$%]|\d+[.)]\s)|->|::$")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_BAD_CHARS = set("{}[]<>=_*`\\|#@$%^~/")


def _public_docs(module) -> list[str]:
    """Docstrings of ``module``, its public classes/functions and their public methods, sorted by name."""
    docs = [inspect.getdoc(module)]
    name = module.__name__
    for attr in sorted(vars(module)):
        if attr.startswith("_"):
            continue
        obj = vars(module)[attr]
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        if getattr(obj, "__module__", None) != name:
            continue
        docs.append(inspect.getdoc(obj))
        if inspect.isclass(obj):
            for meth in sorted(vars(obj)):
                if meth.startswith("_"):
                    continue
                member = vars(obj)[meth]
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if inspect.isfunction(member) or isinstance(member, property):
                    docs.append(member.__doc__ and inspect.cleandoc(member.__doc__))
    return [d for d in docs if d]


def _clean_sentences(doc: str) -> Iterator[str]:
    """Natural-language sentences of one docstring (code, doctests, signatures and lists dropped)."""
    for paragraph in re.split(r"\n\s*\n", doc):
        lines = []
        for line in paragraph.split("\n"):
            if line[:1].isspace():  # indented: code block, list continuation, table
                break
            s = line.strip()
            if not s or _SIGNATURE.match(s) or _CODE_LINE.search(s):
                break
            lines.append(s)
        if len(lines) != len(paragraph.split("\n")):
            continue  # a paragraph with any code-like line is dropped whole
        text = " ".join(" ".join(lines).split())
        for sent in _SENTENCE_SPLIT.split(text):
            if _good_sentence(sent):
                yield sent


def _good_sentence(s: str) -> bool:
    if not (30 <= len(s) <= 300) or not s[0].isupper() or s[-1] not in ".!?":
        return False
    if len(s.split()) < 5 or any(c in _BAD_CHARS for c in s) or "http" in s or "e.g" in s or "i.e" in s:
        return False
    letters = sum(c.isalpha() or c == " " for c in s)
    if letters < 0.9 * len(s):
        return False
    # words glued to brackets or dots inside a word (module.attr, f(x)) read as code
    return not re.search(r"\w\.\w|\w\(|\(\)", s)


@functools.lru_cache(maxsize=1)
def haystack_sentences() -> tuple[str, ...]:
    """The haystack, as sentences in a fixed order (built once per process).

    Sentences come from :data:`HAYSTACK_MODULES` in order; within a module from the module
    docstring, then public classes and functions by name (with their public methods). Duplicates
    keep their first occurrence.
    """
    seen: set[str] = set()
    out: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in HAYSTACK_MODULES:
            try:
                module = importlib.import_module(name)
            except Exception:  # pragma: no cover - a module missing from this Python build
                continue
            for doc in _public_docs(module):
                for sent in _clean_sentences(doc):
                    if sent not in seen:
                        seen.add(sent)
                        out.append(sent)
    if not out:  # pragma: no cover
        raise RuntimeError("no haystack text could be built from the standard library")
    return tuple(out)


def haystack_text() -> str:
    """The whole haystack (one cycle) as one string."""
    return " ".join(haystack_sentences())


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize(text: str) -> str:
    """Lower-case, strip punctuation, collapse whitespace."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def score_passkey(prediction: str, label: str) -> float:
    """InfiniteBench ``get_score_one_passkey``: the first integer in the prediction equals the label."""
    m = re.search(r"\d+", prediction)
    return 1.0 if m is not None and m.group(0) == str(label) else 0.0


def score_needle(prediction: str, answer: str) -> float:
    """1.0 when the normalised answer is a substring of the normalised prediction."""
    return 1.0 if normalize(answer) in normalize(prediction) else 0.0


# --------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------


def load_judge(spec: str):
    """The callable named ``"module:function"`` (``ValueError`` with a one-line reason otherwise)."""
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"niah judge {spec!r} must look like module:function")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"niah judge {spec!r} cannot be loaded: {err}") from None
    if not callable(fn):
        raise ValueError(f"niah judge {spec!r} is not callable")
    return fn


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@register_suite("niah")
class NIAH(Suite):
    """Needle-in-a-Haystack / passkey retrieval on locally GENERATED data (not official data).

    ``samples`` yields one sample per (length, depth) of the grid that fits ``max_length``; see
    the module docstring for the recipe, the haystack source and the sizing rule.
    ``lengths``/``depths`` override :data:`LENGTHS`/:data:`DEPTHS`.
    """

    tasks = ("passkey", "needle")
    task_ids = {"passkey": "NIAH.PassKey", "needle": "NIAH.Needle"}
    generated = True

    def __init__(self, lengths=None, depths=None, judge=None):
        """``lengths`` (tokens) and ``depths`` (0..1) override the grid; a single number is allowed.

        ``judge`` (default off): ``"module:function"``, a callable ``(prediction, answers, sample) ->
        float in [0, 1]`` that replaces the built-in scorers — e.g. an LLM judge like the paper's
        GPT-4 grading. The built-in scorers need no judge.
        """
        self.judge = load_judge(judge) if judge else None
        as_tuple = lambda v, default: default if v is None else tuple(v) if isinstance(v, (list, tuple)) else (v,)  # noqa: E731
        self.lengths = tuple(int(x) for x in as_tuple(lengths, LENGTHS))
        self.depths = tuple(float(x) for x in as_tuple(depths, DEPTHS))
        if not self.lengths or not self.depths or min(self.lengths) < 1 or not all(0 <= d <= 1 for d in self.depths):
            raise ValueError("niah lengths must be positive token counts and depths fractions in [0, 1]")
        self._counts: dict[int, tuple[object, list[int]]] = {}

    # -- grid ----------------------------------------------------------------------------------

    def grid_lengths(self, task: str, max_length: int) -> list[int]:
        """Context lengths made for ``task`` under ``max_length`` (the fallback when none fits)."""
        mnt = MAX_NEW_TOKENS[task]
        fits = [n for n in self.lengths if n + mnt + MARGIN <= max_length]
        return fits or [max(MIN_LENGTH, max_length - mnt - MARGIN)]

    def samples(self, task: str, tokenizer, max_length: int, seed: int = 0) -> Iterator[Sample]:
        if task not in MAX_NEW_TOKENS:  # raised at the call, not at the first next()
            raise KeyError(f"unknown niah task {task!r}; tasks: {', '.join(self.tasks)}")
        grid = [(n, d) for n in self.grid_lengths(task, max_length) for d in self.depths]
        return (self.make_sample(task, tokenizer, n, d, seed) for n, d in grid)

    # -- one sample ------------------------------------------------------------------------------

    def _sentence_counts(self, tokenizer) -> list[int]:
        """Token count of each haystack sentence (with its leading space), cached per tokenizer."""
        hit = self._counts.get(id(tokenizer))
        if hit is not None and hit[0] is tokenizer:
            return hit[1]
        sents = haystack_sentences()
        enc = tokenizer([" " + s for s in sents], add_special_tokens=False)
        counts = [max(1, len(ids)) for ids in enc["input_ids"]]
        self._counts[id(tokenizer)] = (tokenizer, counts)
        return counts

    @staticmethod
    def _fill(counts: list[int], budget: int) -> list[int]:
        """Indices (into the cyclic sentence stream) of whole sentences filling ~``budget`` tokens.

        Sentences are taken in order; near the end one that would overshoot is skipped for a later
        shorter one (a bounded look-ahead), so the fill lands within a few tokens of the budget.
        """
        n = len(counts)
        chosen: list[int] = []
        total = 0
        i = 0
        misses = 0
        smallest = min(counts)
        while budget - total >= smallest and misses < 2 * n:
            c = counts[i % n]
            if total + c <= budget:
                chosen.append(i)
                total += c
                misses = 0
            else:
                misses += 1
                if misses > 400:
                    break
            i += 1
        return chosen

    @staticmethod
    def _assemble(task: str, key: int, prefix: str, suffix: str) -> str:
        if task == "passkey":
            needle = PASSKEY_NEEDLE.format(key=key).strip()
            return PASSKEY_HEADER + " ".join(p for p in (prefix, needle, suffix) if p) + PASSKEY_QUESTION
        return " ".join(p for p in (prefix, NEEDLE, suffix) if p) + NEEDLE_QUESTION

    def make_sample(self, task: str, tokenizer, length: int, depth: float, seed: int = 0) -> Sample:
        """The sample of ``task`` at context ``length`` (tokens) with the needle at ``depth``."""
        if task not in MAX_NEW_TOKENS:
            raise KeyError(f"unknown niah task {task!r}; tasks: {', '.join(self.tasks)}")
        key = random.Random(f"{seed}:{task}:{length}:{depth}").randint(10000, 99999)
        sents = haystack_sentences()
        counts = self._sentence_counts(tokenizer)
        n = len(sents)
        tol = max(16.0, 0.02 * length)
        aim = length - min(32.0, tol - 2)  # leave room for a chat template's tokens

        def build(budget: int):
            chosen = self._fill(counts, max(0, budget))
            cum = [0]
            for i in chosen:
                cum.append(cum[-1] + counts[i % n])
            total = cum[-1]
            # sentence boundary nearest to the depth (ties -> earlier boundary)
            b = min(range(len(cum)), key=lambda j: abs((cum[j] / total if total else depth) - depth))
            prefix = " ".join(sents[i % n] for i in chosen[:b])
            suffix = " ".join(sents[i % n] for i in chosen[b:])
            text = self._assemble(task, key, prefix, suffix)
            position = cum[b] / total if total else 0.0
            return text, len(_ids(tokenizer, text)), position

        overhead = len(_ids(tokenizer, self._assemble(task, key, "", "")))
        budget = int(round(aim - overhead))
        best = None
        for _ in range(8):
            text, n_tok, position = build(budget)
            rank = (not length - tol <= n_tok <= length, not n_tok <= aim, abs(n_tok - aim))
            if best is None or rank < best[0]:
                best = (rank, text, n_tok, position)
            if aim - 4 <= n_tok <= aim or (budget <= 0 and n_tok >= aim):
                break
            budget = int(round(budget - (n_tok - aim) - (2 if n_tok > aim else 0)))
        _, prompt, n_tok, position = best

        if task == "passkey":
            answers = [str(key)]
        else:
            answers = [NEEDLE_ANSWER]
        return Sample(
            id=f"{task}-{length}-{depth}",
            task=task,
            prompt=prompt,
            answers=answers,
            max_new_tokens=MAX_NEW_TOKENS[task],
            metadata={
                "length": length,
                "depth": depth,
                "prompt_tokens": n_tok,
                "generated": True,
                "source": "generated",
                "haystack": HAYSTACK_SOURCE,
                "python": platform.python_version(),
                "needle_position": round(position, 4),
            },
            # the passkey prompt ends "The pass key is": a completion, so no chat template (with one,
            # SmolLM2 restarts the sentence and the 6-token answer budget runs out before the key)
            chat=task != "passkey",
            question=PASSKEY_QUESTION if task == "passkey" else NEEDLE_QUESTION,
        )

    def score(self, sample: Sample, prediction: str) -> float:
        if self.judge is not None:
            value = float(self.judge(prediction, list(sample.answers), sample))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"niah judge returned {value}, outside [0, 1]")
            return value
        if sample.task == "passkey":
            return score_passkey(prediction, sample.answers[0])
        if sample.task == "needle":
            return max(score_needle(prediction, a) for a in sample.answers)
        raise KeyError(f"unknown niah task {sample.task!r}")
