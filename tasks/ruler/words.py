"""RULER's aggregation tasks: common words (``cwe``) and frequent words (``fwe``) extraction.

``cwe`` (RULER ``common_words_extraction.py``): ``n`` distinct words, the first ``num_cw`` repeated
``freq_cw`` times and the others ``freq_ucw`` times, shuffled and numbered ``1. w 2. w ...``; the
answers are the ``num_cw`` common words. One example task with its answer comes first (40 words
repeated 10 / 3 times; for target lengths under 4096: 20 words 3 / 1 times and the sample's own
words 6 / 1 times). Words are RULER's wonderwords list (nouns + adjectives + verbs, 8169 words,
shuffled with the seed); when ``n`` exceeds it RULER draws from its ``english_words.json``, read
here from ``--data-dir`` when present, else from distinct ``adjective-noun`` pairs (labelled
``words: "substitute:wonderwords-adjective-noun"`` in the sample's metadata).

``fwe`` (RULER ``freq_words_extraction.py``): a vocabulary of ``(length - 50) // 50`` random
6-letter words, the first replaced by ``...`` (noise); word of rank ``k`` appears
``int(n * k**-alpha / zeta(alpha))`` times, shuffled; the answers are the words of ranks 2 to 4.
Deviation: RULER grows ``n`` in steps of ``length / 32`` tokens; the size here is searched as for
the other tasks (a tighter fit), and shuffles use the sample's own stream instead of a fixed seed.
"""

from __future__ import annotations

import functools
import json
import math
import random
import string
from pathlib import Path

from tasks.base import DataError
from tasks.ruler import haystack as hs
from tasks.ruler import templates
from tasks.ruler.generator import Draft, Generator, rng_for

ENGLISH_WORDS = ("english_words.json", "json/english_words.json")
SUBSTITUTE_WORDS = "substitute:wonderwords-adjective-noun"


@functools.lru_cache(maxsize=2)
def _english_words(path: Path) -> tuple[str, ...]:
    try:
        return tuple(json.loads(path.read_text(encoding="utf-8")).values())
    except (json.JSONDecodeError, AttributeError) as err:
        raise DataError(f"{path}: expected RULER's english_words.json, a JSON object of words ({err})") from None


def numbered(words: list[str]) -> str:
    """``"1. a 2. b ..."`` (RULER's list format)."""
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


class CommonWordsGenerator(Generator):
    """``cwe`` at one target length (``seed`` shuffles the word list, as RULER's ``random_seed``)."""

    unit = "words"
    incremental = 10

    def __init__(self, config: dict, length: int, seed: int, data_dir=None):
        self.freq_cw, self.freq_ucw, self.num_cw = config["freq_cw"], config["freq_ucw"], config["num_cw"]
        self.num_fewshot = 1
        self.small = length < 4096
        self.template = templates.full_template("common_words_extraction")
        words = list(hs.vocabulary())
        random.Random(seed).shuffle(words)
        self.words = words
        found = next((Path(data_dir) / n for n in ENGLISH_WORDS if data_dir and (Path(data_dir) / n).is_file()), None)
        self.big = found
        self.n_min = self.num_cw
        self.labels = {"haystack": "words"}

    def _pick(self, rng, n: int) -> tuple[list[str], str]:
        """``n`` distinct words and their source label."""
        if n <= len(self.words):
            return rng.sample(self.words, n), "wonderwords"
        if self.big is not None:
            return rng.sample(_english_words(self.big), n), "english_words.json"
        picked: dict[str, None] = {}
        while len(picked) < n:
            picked[hs.random_key_word(rng)] = None
        return list(picked), SUBSTITUTE_WORDS

    def _example(self, rng, n: int, common: int, uncommon: int) -> tuple[str, list[str], str]:
        full, source = self._pick(rng, n)
        top, rest = full[:self.num_cw], full[self.num_cw:]
        shown = top * common + rest * uncommon
        rng.shuffle(shown)
        return numbered(shown), top, source

    def draft(self, n: int, key: str, index: int) -> Draft:
        shots_rng, rng = rng_for(key, "fewshot"), rng_for(key)
        shot_sizes, main = ((20, 3, 1), (6, 1)) if self.small else ((40, 10, 3), (self.freq_cw, self.freq_ucw))
        shots = []
        for _ in range(self.num_fewshot):
            context, top, _ = self._example(shots_rng, *shot_sizes)
            shots.append(self.template.format(num_cw=self.num_cw, context=context, query="") + " " + numbered(top))
        context, answers, source = self._example(rng, n, *main)
        text = "\n".join(shots) + "\n" + self.template.format(num_cw=self.num_cw, context=context, query="")
        return Draft(text, answers, {"words": source})


def zeta(alpha: float) -> float:
    """Riemann zeta (``scipy.special.zeta(alpha)``, alpha > 1): ``pi**2 / 6`` for 2, else a partial sum
    with an Euler-Maclaurin tail."""
    if alpha == 2.0:
        return math.pi ** 2 / 6
    if alpha <= 1:
        raise ValueError(f"RULER fwe alpha must be > 1, got {alpha}")
    n = 1000
    return (sum(k ** -alpha for k in range(1, n)) + n ** (1 - alpha) / (alpha - 1) + n ** -alpha / 2
            + alpha * n ** (-alpha - 1) / 12)


class FrequentWordsGenerator(Generator):
    """``fwe`` at one target length: ``n`` is the nominal word count of RULER's zeta draw."""

    unit = "words"
    n_min = 100  # ranks 2..5 then get distinct, non-zero counts
    coded_wordlen = 6

    def __init__(self, config: dict, length: int):
        self.alpha = float(config["alpha"])
        self.vocab_size = max(5, (length - templates.KINDS["freq_words_extraction"]["tokens_to_generate"]) // 50)
        self.incremental = max(1, length // 32)
        self.template = templates.full_template("freq_words_extraction")
        self.labels = {"haystack": "coded-words"}
        self._zeta = zeta(self.alpha)

    def draft(self, n: int, key: str, index: int) -> Draft:
        vocab_rng, rng = rng_for(key, "vocab"), rng_for(key)
        vocab: set[str] = set()
        while len(vocab) < self.vocab_size:
            vocab.add("".join(vocab_rng.choices(string.ascii_lowercase, k=self.coded_wordlen)))
        vocab = sorted(vocab)
        vocab_rng.shuffle(vocab)
        vocab[0] = "..."  # the top rank is noise
        counts = [int(n * (k ** -self.alpha) / self._zeta) for k in range(1, len(vocab) + 1)]
        shown = [w for w, c in zip(vocab, counts) for _ in range(c)]
        rng.shuffle(shown)
        return Draft(self.template.format(context=" ".join(shown), query=""), vocab[1:4])
