"""RULER's needle-in-a-haystack tasks (``niah_*``), after RULER ``scripts/data/synthetic/niah.py``.

A needle is "One of the special magic {type_needle_v} for {key} is: {value}." with keys and values
drawn as ``words`` (``adjective-noun`` from wonderwords), ``numbers`` (7 digits) or ``uuids``
(version-4 UUIDs). ``num_needle_k`` keys (at least ``num_needle_q``) each get ``num_needle_v``
values; ``num_needle_q`` of the keys are asked for and the answers are all their values.

Haystacks (``type_haystack``):

* ``noise``: :data:`~tasks.ruler.haystack.NOISE` repeated ``n`` times, one per line; the needles
  are inserted as lines at random positions;
* ``needle``: ``n`` distractor needles (random keys and values), one per line;
* ``essay``: the first ``n`` words of the essay text (repeated when shorter), split into
  sentences; each needle goes at a sentence boundary at a depth drawn without replacement from
  RULER's 40 depths (0..100 %), sentences joined by spaces.

When a single value is asked for, the template is reworded as RULER does ("A special magic number
is hidden ..."). Deviation: RULER shuffles the needles with a fixed-seed generator (the same
permutation in every sample); here the sample's own stream shuffles them.
"""

from __future__ import annotations

import uuid

from tasks.ruler import haystack as hs
from tasks.ruler import templates
from tasks.ruler.generator import Draft, Generator, rng_for

NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."


def random_value(kind: str, rng) -> str:
    """A key or value of type ``kind`` (RULER ``generate_random``): ``numbers`` (7 digits), ``words``
    (``adjective-noun``) or ``uuids``."""
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":
        return hs.random_key_word(rng)
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"RULER niah needle type {kind!r} is not one of numbers, words, uuids")


def join_keys(queries: list[str]) -> str:
    """``"a"``, ``"a, and b"``, ``"a, b, and c"``: RULER's query list."""
    return queries[0] if len(queries) == 1 else ", ".join(queries[:-1]) + ", and " + queries[-1]


class NiahGenerator(Generator):
    """One ``niah_*`` task at one target length; ``essay`` is the essay word list (essay haystacks)."""

    def __init__(self, config: dict, length: int, essay: tuple[str, ...] = (), labels: dict | None = None):
        self.config = config
        self.type_haystack = config["type_haystack"]
        self.num_k = max(config["num_needle_k"], config["num_needle_q"])  # RULER: max(k, q)
        self.num_v, self.num_q = config["num_needle_v"], config["num_needle_q"]
        self.n_needles = self.num_k * self.num_v
        template = templates.full_template("niah")
        self.type_v_plural = self.type_v = config["type_needle_v"]  # needles keep the plural
        if self.num_q * self.num_v == 1:
            template, self.type_v = templates.singular_niah_template(template), self.type_v[:-1]
        self.template = template
        self.essay = essay
        if self.type_haystack == "essay":
            self.unit, self.incremental, self.n_min = "words", 500, 1
            self.labels = dict(labels or {})
        else:
            self.unit, self.n_min = "sentences", self.n_needles
            self.incremental = 5 if length < 4096 else 25
            self.labels = {"haystack": self.type_haystack}

    def _needles(self, rng) -> tuple[list[str], list[str], list[list[str]]]:
        keys, values, needles = [], [], []
        for _ in range(self.num_k):
            keys.append(random_value(self.config["type_needle_k"], rng))
            vals = [random_value(self.type_v_plural, rng) for _ in range(self.num_v)]
            values.append(vals)
            needles += [NEEDLE.format(type_needle_v=self.type_v_plural, key=keys[-1], value=v) for v in vals]
        return needles, keys, values

    def _essay_context(self, n: int, needles: list[str], rng) -> tuple[str, list[int]]:
        sents = hs.split_sentences(" ".join(hs.repeated(self.essay, n)))
        depths = sorted(rng.sample(hs.DEPTHS, len(needles)))
        cuts = [0] + [int(len(sents) * d / 100) for d in depths] + [len(sents)]
        parts = []
        for i in range(1, len(cuts)):
            parts.append(" ".join(sents[cuts[i - 1]:cuts[i]]))
            if i - 1 < len(needles):
                parts.append(needles[i - 1])
        return " ".join(parts), depths

    def _line_context(self, n: int, needles: list[str], rng) -> tuple[str, list[int]]:
        if self.type_haystack == "noise":
            lines = [hs.NOISE] * n
        else:  # "needle": distractor needles with their own random keys and values
            kind_k, kind_v = self.config["type_needle_k"], self.type_v_plural
            lines = [NEEDLE.format(type_needle_v=kind_v, key=random_value(kind_k, rng), value=random_value(kind_v, rng))
                     for _ in range(n)]
        at = sorted(rng.sample(range(n), len(needles)), reverse=True)
        for index, needle in zip(at, needles):
            lines.insert(index, needle)
        return "\n".join(lines), [round(100 * i / n) for i in sorted(at)]

    def draft(self, n: int, key: str, index: int) -> Draft:
        rng = rng_for(key)
        needles, keys, values = self._needles(rng)
        rng.shuffle(needles)
        picked = rng.sample(range(self.num_k), self.num_q)
        queries = [keys[i] for i in picked]
        answers = [a for i in picked for a in values[i]]
        place = rng_for(key, "haystack")  # positions (and distractors) may depend on n; the needles do not
        if self.type_haystack == "essay":
            context, depths = self._essay_context(n, needles, place)
        else:
            context, depths = self._line_context(n, needles, place)
        text = self.template.format(type_needle_v=self.type_v, context=context, query=join_keys(queries))
        return Draft(text, answers, {"needle_depths": depths, "keys": queries})
