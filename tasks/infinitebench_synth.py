"""Local, deterministic generation of InfiniteBench's synthetic tasks by the official recipe.

GENERATED data: made here, offline; NOT the official InfiniteBench data (which is 100K-200K
tokens long and fixed). Every record made here is labelled ``source="generated"`` by the suite.

The recipe is OpenBMB/InfiniteBench ``data/construct_synthetic_dataset.py``:

* ``passkey``: the noise line :data:`NOISE` repeated, with the needle line
  ``"The pass key is {key}. Remember it. {key} is the pass key.\\n"`` after ``j`` of the ``N`` noise
  lines (depth ``j / N``); the key is 5 random digits (``random.randint(0, 9)`` each, so a leading 0
  is possible); input ``"What is the pass key?"``.
* ``number_string``: the same with ``"The sequence of digits is {key}. ..."``; the key is 5 random
  digits, then 5 times a digit at a random position ``p = randint(0, 5 + k - 1)`` is duplicated in
  place (10 digits with repeats); input ``"What is the sequence of digits?"``.
* ``kv_retrieval``: ``'JSON data:\\n{"<uuid>": "<uuid>", ...}'`` (random UUID4 keys and values, as
  lost-in-the-middle's ``make_kv_retrieval_data.py`` makes them), the asked key at record index
  ``depth * (n - 1)``; input ``'\\nKey: "<key>"\\nThe value associated with the specified key is: '``.
* ``math_find``: a Python-printed list of random integers in 0..99 and one of 7 questions (largest,
  second/third largest, smallest, second/third smallest, median) with the recipe's bias of the
  range: for "largest" kinds the upper bound is first drawn in ``[int(0.8 * 99), 99]``, for
  "smallest" kinds the lower bound in ``[0, int(0.2 * 99)]``, for the median either at random. The
  median of an even-length list is the float mean of the middle two (as in the recipe).

What differs from the recipe, and why: the official files fix the size (e.g. 5,220 noise lines or
60,000 numbers, ~128K tokens); here the number of noise lines / records / list items is chosen so
that the whole prompt (the suite's official template filled with the record) has at most
``length`` tokens of the model's tokenizer and at least ``length - tolerance(length)``; and all
randomness comes from ``random.Random(f"{seed}:{task}:{length}:{index}")`` so the same seed gives
identical samples (the official script uses the unseeded global ``random``).
"""

from __future__ import annotations

import random
import uuid
from typing import Callable

RECIPE = "OpenBMB/InfiniteBench data/construct_synthetic_dataset.py"

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
PASSKEY_NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key.\n"
PASSKEY_QUESTION = "What is the pass key?"
NUMBER_NEEDLE = "The sequence of digits is {key}. Remember it. {key} is the sequence of digits.\n"
NUMBER_QUESTION = "What is the sequence of digits?"
KV_HEADER = "JSON data:\n{"
KV_QUESTION = '\nKey: "{key}"\nThe value associated with the specified key is: '

MATH_MIN, MATH_MAX = 0, 99
#: kind -> (the recipe's "prompt" field, the "input" field)
MATH_FIND_KINDS = {
    "largest number": ("Find the largest number from the list below:",
                       "You should answer with only one number, no other words. The largest number of the list is: "),
    "second largest number": ("Find the second largest number from the list below:",
                              "You should answer with only one number, no other words. "
                              "The second largest number of the list is: "),
    "third largest number": ("Find the third largest number from the list below:",
                             "You should answer with only one number, no other words. "
                             "The third largest number of the list is: "),
    "smallest number": ("Find the smallest number from the list below:",
                        "You should answer with only one number, no other words. The smallest number of the list is: "),
    "second smallest number": ("Find the second smallest number from the list below:",
                               "You should answer with only one number, no other words. "
                               "The second smallest number of the list is: "),
    "third smallest number": ("Find the third smallest number from the list below:",
                              "You should answer with only one number, no other words. "
                              "The third smallest number of the list is: "),
    "median": ("Calculate the median number from the list below:",
               "You should answer with only one number, no other words. The median number of the list is: "),
}
MATH_FIND_ORDER = tuple(MATH_FIND_KINDS)
MIN_LIST = 16  # smallest math_find list (the nth-largest answers need a few distinct values)

GENERABLE = ("passkey", "number_string", "kv_retrieval", "math_find")


def tolerance(length: int) -> int:
    """How far below ``length`` a generated prompt may fall (tokens).

    Filler comes in whole units of the recipe: a noise line (~25 tokens), a kv record of two UUIDs
    (~75 tokens with SmolLM2's tokenizer) or a list number (2-4 tokens).
    """
    return max(128, length // 50)


def rng_for(seed: int, task: str, length: int, index: int) -> random.Random:
    return random.Random(f"{seed}:{task}:{length}:{index}")


# --------------------------------------------------------------------------------------------
# sizing: the largest filler count whose prompt fits
# --------------------------------------------------------------------------------------------


def fit_largest(count: Callable[[int], int], target: int, n_min: int, probe: int = 8) -> tuple[int, int] | None:
    """Largest ``n >= n_min`` with ``count(n) <= target`` for a (nearly) increasing ``count``.

    Returns ``(n, count(n))`` (always a measured point, so never above ``target``) or ``None`` when
    even ``n_min`` does not fit. Interpolation search with a bisection step whenever an
    interpolation step fails to halve the bracket; ``count`` is roughly linear, so a handful of
    evaluations suffice.
    """
    lo, clo = n_min, count(n_min)
    if clo > target:
        return None
    hi, chi = n_min + probe, count(n_min + probe)
    while chi <= target:  # grow the bracket by linear extrapolation (at least doubling the step)
        step = hi - lo
        slope = max((chi - clo) / step, 1e-9)
        nxt = hi + max(step, int((target - chi) / slope * 1.05) + 1)
        lo, clo = hi, chi
        hi, chi = nxt, count(nxt)
    bisect = False
    while hi - lo > 1:
        width = hi - lo
        if bisect or chi <= clo:
            mid = (lo + hi) // 2
        else:
            mid = lo + int((target - clo) * (hi - lo) / (chi - clo))
            mid = min(max(mid, lo + 1), hi - 1)
        c = count(mid)
        if c <= target:
            lo, clo = mid, c
        else:
            hi, chi = mid, c
        bisect = not bisect and (hi - lo) > width // 2
    return lo, clo


# --------------------------------------------------------------------------------------------
# records (official schema: id, context, input, answer, options) for a filler size
# --------------------------------------------------------------------------------------------


def passkey_key(rng: random.Random) -> str:
    return "".join(str(rng.randint(0, 9)) for _ in range(5))


def number_string_key(rng: random.Random) -> str:
    keys = [str(rng.randint(0, 9)) for _ in range(5)]
    for k in range(5):
        pos = rng.randint(0, 5 + k - 1)
        keys.insert(pos, keys[pos])
    return "".join(keys)


def needle_record(task: str, key: str, n_noise: int, depth: float, index: int) -> dict:
    """passkey / number_string: ``j = round(depth * n_noise)`` noise lines, the needle, the rest."""
    needle, question = (PASSKEY_NEEDLE, PASSKEY_QUESTION) if task == "passkey" else (NUMBER_NEEDLE, NUMBER_QUESTION)
    j = round(depth * n_noise)
    context = NOISE * j + needle.replace("{key}", key) + NOISE * (n_noise - j)
    return {"id": index, "context": context, "input": question, "answer": [key], "options": [],
            "_gen": {"n_noise": n_noise, "needle_line": j, "needle_position": (j / n_noise) if n_noise else 0.0}}


class _Stream:
    """A prefix-stable stream of random items: item ``i`` does not depend on how many are drawn."""

    def __init__(self, draw: Callable[[], object]):
        self.draw = draw
        self.items: list = []

    def take(self, n: int) -> list:
        while len(self.items) < n:
            self.items.append(self.draw())
        return self.items[:n]


def kv_stream(rng: random.Random) -> _Stream:
    seen: set[str] = set()

    def draw():
        while True:
            key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            if key not in seen:
                seen.add(key)
                return key, value

    return _Stream(draw)


def kv_record(pairs: list[tuple[str, str]], depth: float, index: int) -> dict:
    n = len(pairs)
    ans_id = min(max(0, round(depth * (n - 1))), n - 1)
    text = KV_HEADER + ", ".join(f'"{k}": "{v}"' for k, v in pairs) + "}"
    key, value = pairs[ans_id]
    return {"id": index, "context": text, "input": KV_QUESTION.format(key=key), "answer": [value], "options": [],
            "_gen": {"n_records": n, "needle_record": ans_id, "needle_position": ans_id / (n - 1) if n > 1 else 0.0}}


def math_find_stream(rng: random.Random, kind: str) -> _Stream:
    """The recipe's biased range for ``kind``, then a stream of integers in it."""
    lo, hi = MATH_MIN, MATH_MAX
    if "largest" in kind:
        hi = rng.randint(int(MATH_MAX * 0.8), MATH_MAX)
    elif "smallest" in kind:
        lo = rng.randint(MATH_MIN, int(MATH_MAX * 0.2))
    elif kind == "median":
        if rng.random() > 0.5:
            lo = rng.randint(MATH_MIN, int(MATH_MAX * 0.2))
        else:
            hi = rng.randint(int(MATH_MAX * 0.8), MATH_MAX)
    else:
        raise KeyError(f"unknown math_find kind {kind!r}")
    return _Stream(lambda: rng.randint(lo, hi))


def math_find_answer(values: list[int], kind: str):
    """The recipe's answer: nth largest/smallest distinct value, or the median (float mean of the middle
    two for an even length)."""
    if kind == "median":
        s = sorted(values)
        m = len(s) // 2
        return s[m] if len(s) % 2 == 1 else (s[m] + s[m - 1]) / 2
    distinct = sorted(set(values), reverse="largest" in kind)
    nth = 1 if kind.startswith("second") else 2 if kind.startswith("third") else 0
    if len(distinct) <= nth:
        raise ValueError(f"math_find: a list of {len(values)} numbers has no {kind}")
    return distinct[nth]


def math_find_record(values: list[int], kind: str, index: int) -> dict:
    prompt, question = MATH_FIND_KINDS[kind]
    return {"id": index, "prompt": prompt, "context": str(values), "input": question,
            "answer": [math_find_answer(values, kind)], "options": [],
            "_gen": {"kind": kind, "list_length": len(values)}}


# --------------------------------------------------------------------------------------------
# one generated record sized to ``length`` tokens
# --------------------------------------------------------------------------------------------


def generate(task: str, index: int, length: int, seed: int, depth: float | None,
             prompt_tokens: Callable[[dict], int]) -> dict:
    """The ``index``-th generated record of ``task`` at ``length`` tokens (official schema plus ``_gen``).

    ``prompt_tokens(record)`` is the token count of the suite's prompt for the record. ``depth`` is
    the needle depth in [0, 1] for passkey / number_string / kv_retrieval (ignored for math_find,
    whose question kind cycles with ``index``). Raises ``ValueError`` if even the smallest record
    does not fit ``length``.
    """
    rng = rng_for(seed, task, length, index)
    if task in ("passkey", "number_string"):
        key = passkey_key(rng) if task == "passkey" else number_string_key(rng)

        def build(n):
            return needle_record(task, key, n, depth, index)
        n_min = 0
    elif task == "kv_retrieval":
        stream = kv_stream(rng)

        def build(n):
            return kv_record(stream.take(n), depth, index)
        n_min = 2
    elif task == "math_find":
        kind = MATH_FIND_ORDER[index % len(MATH_FIND_ORDER)]
        stream = math_find_stream(rng, kind)

        def build(n):
            return math_find_record(stream.take(n), kind, index)
        n_min = MIN_LIST
    else:
        raise KeyError(f"infinitebench/{task} has no generation recipe here; generable: {', '.join(GENERABLE)}")

    found = fit_largest(lambda n: prompt_tokens(build(n)), length, n_min)
    if found is None:
        raise ValueError(f"infinitebench/{task}: a generated prompt needs more than {length} tokens "
                         f"(at least {prompt_tokens(build(n_min))}); use a larger length or max_length")
    n, n_tok = found
    rec = build(n)
    rec["_gen"]["prompt_tokens"] = n_tok
    return rec
