"""Tests for the generated Needle-in-a-Haystack suite (tasks/niah.py).

No model weights or network: a small byte-level BPE tokenizer is trained here on the haystack
text itself and wrapped in ``PreTrainedTokenizerFast``.
"""

from __future__ import annotations

import platform
import re

import pytest

from tasks import SUITES, get_suite
from tasks import niah
from tasks.base import Sample

LENGTHS = (256, 1024, 4096)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(niah.haystack_sentences(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.fixture(scope="module")
def suite():
    return niah.NIAH(lengths=LENGTHS, depths=(0.0, 0.5, 1.0))


def n_tokens(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def tol(length):
    return max(16, 0.02 * length)


def needle_text(sample):
    if sample.task == "passkey":
        return f"The pass key is {sample.answers[0]}. Remember it. {sample.answers[0]} is the pass key."
    return niah.NEEDLE


def haystack_span(sample):
    """(start, end) character span of the haystack (needle included) inside the prompt."""
    if sample.task == "passkey":
        assert sample.prompt.startswith(niah.PASSKEY_HEADER)
        assert sample.prompt.endswith(niah.PASSKEY_QUESTION)
        return len(niah.PASSKEY_HEADER), len(sample.prompt) - len(niah.PASSKEY_QUESTION)
    assert sample.prompt.endswith(niah.NEEDLE_QUESTION)
    return 0, len(sample.prompt) - len(niah.NEEDLE_QUESTION)


def test_registered():
    assert SUITES["niah"] is niah.NIAH
    s = get_suite("niah")
    assert s.tasks == ("passkey", "needle")
    assert s.generated is True
    assert s.task_ids == {"passkey": "NIAH.PassKey", "needle": "NIAH.Needle"}
    assert niah.LENGTHS == (1024, 2048, 4096, 8192, 16384, 32768)
    assert niah.DEPTHS == (0.0, 0.25, 0.5, 0.75, 1.0)


def test_haystack_is_natural_text():
    sents = niah.haystack_sentences()
    assert sents is niah.haystack_sentences()  # cached
    assert len(sents) > 500 and len(set(sents)) == len(sents)
    text = niah.haystack_text()
    assert len(text) > 50_000
    assert ">>>" not in text and "def " not in text and "{" not in text
    for s in sents:
        assert s[0].isupper() and s[-1] in ".!?"
    assert "San Francisco" not in text and "pass key" not in text


@pytest.mark.parametrize("task", ["passkey", "needle"])
def test_lengths_depths_and_metadata(suite, tokenizer, task):
    samples = list(suite.samples(task, tokenizer, max_length=100_000))
    assert [(s.metadata["length"], s.metadata["depth"]) for s in samples] == [
        (n, d) for n in LENGTHS for d in (0.0, 0.5, 1.0)
    ]
    for s in samples:
        length, depth = s.metadata["length"], s.metadata["depth"]
        assert isinstance(s, Sample) and s.task == task and s.chat is (task == "needle")
        assert s.id == f"{task}-{length}-{depth}"
        actual = n_tokens(tokenizer, s.prompt)
        assert s.metadata["prompt_tokens"] == actual
        assert abs(actual - length) <= tol(length), (length, actual)
        assert actual <= length  # never over the target (no crop when the grid fits)
        assert s.metadata["generated"] is True
        assert s.metadata["haystack"] == "python-stdlib-docstrings"
        assert s.metadata["python"] == platform.python_version()
        # whole sentences: at 256 tokens one sentence is ~10% of the haystack
        slack = 0.05 if length >= 1024 else 0.1
        assert abs(s.metadata["needle_position"] - depth) <= slack

        needle = needle_text(s)
        assert s.prompt.count(needle) == 1
        assert s.prompt.count("San Francisco" if task == "needle" else "pass key is") == 2  # needle + question
        start, end = haystack_span(s)
        pos = s.prompt.index(needle)
        frac = (pos - start) / (end - start - len(needle))
        assert abs(frac - depth) <= slack, (length, depth, frac)
        # the needle sits at a sentence boundary
        before, after = s.prompt[start:pos], s.prompt[pos + len(needle) : end]
        assert before == "" or before.endswith((". ", "! ", "? "))
        assert after == "" or (after[0] == " " and after[1].isupper())


def test_prompt_text(suite, tokenizer):
    s = suite.make_sample("passkey", tokenizer, 1024, 0.5)
    key = s.answers[0]
    assert re.fullmatch(r"\d{5}", key)
    assert s.max_new_tokens == 6
    assert s.prompt.startswith(
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
        "I will quiz you about the important information there.\n\n"
    )
    assert f" The pass key is {key}. Remember it. {key} is the pass key. " in s.prompt
    assert s.prompt.endswith("\n\nWhat is the pass key? The pass key is")

    n = suite.make_sample("needle", tokenizer, 1024, 0.5)
    assert n.answers == ["eat a sandwich and sit in Dolores Park on a sunny day"]
    assert n.max_new_tokens == 32
    assert f" {niah.NEEDLE} " in n.prompt
    assert niah.NEEDLE == "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
    assert n.prompt.endswith("\n\nWhat is the best thing to do in San Francisco? Answer in one sentence.")


def test_deterministic_and_keys_differ(tokenizer):
    a = list(niah.NIAH(lengths=(512, 1024), depths=niah.DEPTHS).samples("passkey", tokenizer, 10_000))
    b = list(niah.NIAH(lengths=(512, 1024), depths=niah.DEPTHS).samples("passkey", tokenizer, 10_000))
    assert [(s.id, s.prompt, s.answers) for s in a] == [(s.id, s.prompt, s.answers) for s in b]
    keys = [s.answers[0] for s in a]
    assert len(set(keys)) == len(keys) == 10
    # the key depends on the seed, and the seed only changes the key
    c = list(niah.NIAH(lengths=(512, 1024), depths=niah.DEPTHS).samples("passkey", tokenizer, 10_000, seed=1))
    assert [s.answers[0] for s in c] != keys
    # a known value pins the recipe random.Random(f"{seed}:{task}:{length}:{depth}")
    import random

    assert keys[0] == str(random.Random("0:passkey:512:0.0").randint(10000, 99999))


def test_grid_filtering(tokenizer):
    s = niah.NIAH()
    got = list(s.samples("passkey", tokenizer, max_length=3000))
    assert [x.metadata["length"] for x in got] == [1024] * 5 + [2048] * 5
    assert [x.metadata["depth"] for x in got] == list(niah.DEPTHS) * 2
    # boundary: length + max_new_tokens + 16 <= max_length
    assert [x.metadata["length"] for x in s.samples("needle", tokenizer, 2048 + 32 + 16)][-1] == 2048
    assert [x.metadata["length"] for x in s.samples("needle", tokenizer, 2048 + 32 + 15)][-1] == 1024
    # nothing fits: one sample per depth at the largest length that fits
    small = list(s.samples("passkey", tokenizer, max_length=500))
    assert [x.metadata["length"] for x in small] == [500 - 6 - 16] * 5
    assert [x.metadata["depth"] for x in small] == list(niah.DEPTHS)
    for x in small:
        assert abs(x.metadata["prompt_tokens"] - 478) <= 16
    # ... but never under 64 tokens
    tiny = list(s.samples("needle", tokenizer, max_length=50))
    assert [x.metadata["length"] for x in tiny] == [64] * 5
    assert all(x.metadata["generated"] is True for x in got + small + tiny)


def test_unknown_task(suite, tokenizer):
    with pytest.raises(KeyError):
        suite.samples("nope", tokenizer, 4096)
    with pytest.raises(KeyError):
        suite.make_sample("nope", tokenizer, 1024, 0.5)


def test_haystack_repeats_when_short(tokenizer, monkeypatch):
    short = niah.haystack_sentences()[:40]
    monkeypatch.setattr(niah, "haystack_sentences", lambda: short)
    s = niah.NIAH().make_sample("needle", tokenizer, 4096, 0.5)
    assert abs(s.metadata["prompt_tokens"] - 4096) <= tol(4096)
    assert s.prompt.count(short[0]) > 1
    assert s.prompt.count(niah.NEEDLE) == 1


def test_score_passkey(suite):
    s = Sample(id="x", task="passkey", prompt="", answers=["12345"], max_new_tokens=6)
    assert suite.score(s, "12345") == 1.0
    assert suite.score(s, "The pass key is 12345.") == 1.0
    assert suite.score(s, " 12345 54321") == 1.0
    assert suite.score(s, "54321 12345") == 0.0
    assert suite.score(s, "123456") == 0.0
    assert suite.score(s, "none") == 0.0
    assert suite.score(s, "") == 0.0


def test_score_needle(suite):
    s = Sample(id="x", task="needle", prompt="", answers=[niah.NEEDLE_ANSWER], max_new_tokens=32)
    assert suite.score(s, niah.NEEDLE) == 1.0
    assert suite.score(s, "Eat a sandwich, and sit in  Dolores Park on a SUNNY day!") == 1.0
    assert suite.score(s, "eat a sandwich\nand sit in Dolores-Park on a sunny day") == 1.0
    assert suite.score(s, "Eat a sandwich in Dolores Park.") == 0.0
    assert suite.score(s, "Visit the Golden Gate Bridge.") == 0.0
    bad = Sample(id="x", task="other", prompt="", answers=["a"], max_new_tokens=1)
    with pytest.raises(KeyError):
        suite.score(bad, "a")
