"""Answer progress (beyond the paper): how far greedy decoding follows a reference continuation, the
dense fitness term of `fit --progress-weight`, and the reference continuation a fit uses."""

import math
from types import SimpleNamespace

import pytest
import torch

from harness.cache import EvictionCache
from harness.attention import attach
from harness.fit.fitness import References, fitness_of
from harness.generation import _Progress, greedy_generate
from policies import make_policy
from tests.conftest import tiny_llama


def test_progress_by_hand():
    """Target [3, 1, 2] (T = 3). Row 0 follows it all; row 1 diverges at step 1 where the target token
    had probability p; row 2 diverges at step 0; row 3 stops early (decoding ends after 2 steps)."""
    vocab = 4
    progress = _Progress([3, 1, 2], batch=3, max_new_tokens=8)
    step0 = torch.zeros(3, vocab)
    progress.step(0, step0, [3, 3, 0])  # uniform logits: p(3) = 1/4 for row 2
    step1 = torch.tensor([[0.0, 2.0, 0.0, 0.0], [0.0, 1.0, 3.0, 0.0], [0.0] * vocab])
    progress.step(1, step1, [1, 2, 0])
    progress.step(2, torch.zeros(3, vocab), [2, 0, 0])
    p1 = math.exp(1.0) / (math.exp(1.0) + math.exp(3.0) + 2.0)
    assert progress.result() == pytest.approx([1.0, (1 + p1) / 3, 0.25 / 3], abs=1e-6)
    early = _Progress([3, 1, 2], batch=1, max_new_tokens=8)
    early.step(0, step0[:1], [3])
    early.step(1, step1[:1], [1])
    assert early.result() == [2 / 3]  # decoding ended on target after 2 of 3 tokens
    assert _Progress([3, 1, 2, 5], batch=1, max_new_tokens=2).target == [3, 1]  # T = min(len, max_new_tokens)


@pytest.fixture(scope="module")
def model():
    m = tiny_llama(seed=3)
    attach(m)
    return m


def _generate(model, ids, target, new=6):
    cache = EvictionCache(model.config, make_policy("full"), n_up=8)
    return greedy_generate(model, ids, cache, new, chunk_size=8, target=target)


def test_greedy_generate_reports_progress_against_its_own_logits(model):
    ids = torch.arange(5, 25)[None]
    own = _generate(model, ids, None).tokens
    assert _generate(model, ids, own).progress == [1.0]  # its own greedy output is followed all the way
    wrong = [own[0], own[1], (own[2] + 1) % 128, own[3], own[4], own[5]]
    with torch.inference_mode():  # the probability of wrong[2] after ids + own[:2]
        logits = model(torch.cat([ids, torch.tensor([own[:2]])], dim=1)).logits[0, -1].float()
    p = torch.softmax(logits, -1)[wrong[2]].item()
    assert _generate(model, ids, wrong).progress == pytest.approx([(2 + p) / 6], abs=1e-4)
    assert _generate(model, ids, None).progress is None
    batch = greedy_generate(model, ids.expand(2, -1), EvictionCache(model.config, make_policy("full"), n_up=8), 6,
                            chunk_size=8, shared_prefix=True, target=wrong)
    assert batch.progress == pytest.approx([(2 + p) / 6] * 2, abs=1e-4)


def test_fitness_adds_the_weighted_progress_per_task():
    member = {"scores": {"a": [1.0, 0.0], "b": [0.0]}, "kept": 0.2, "progress": {"a": [1.0, 0.4], "b": [0.1]}}
    refs = {"a": [1.0, 1.0], "b": [1.0]}  # normalised: a 0.5, b 0.0
    assert fitness_of(member, refs)[0] == 0.25  # weight 0: the paper's fitness
    assert fitness_of(member, refs, progress_weight=0.5)[0] == pytest.approx(
        ((0.5 + 0.5 * 0.7) + (0.0 + 0.5 * 0.1)) / 2, abs=1e-15)
    # the per-task scores it returns stay the normalised task scores
    assert fitness_of(member, refs, progress_weight=0.5)[1] == {"a": 0.5, "b": 0.0}
    # members tied on scores are ranked by progress
    other = {**member, "progress": {"a": [1.0, 0.9], "b": [0.1]}}
    assert fitness_of(other, refs, progress_weight=0.5)[0] > fitness_of(member, refs, progress_weight=0.5)[0]


def test_reference_continuation_is_the_full_prediction_or_the_answer(tmp_path):
    path = tmp_path / "references.jsonl"
    path.write_text('{"task": "passkey", "id": "a", "score": 1.0, "prediction": " 50008"}\n'
                    '{"task": "passkey", "id": "b", "score": 0.0, "prediction": " a flag that is passed"}\n'
                    '{"task": "needle", "id": "c", "score": 0.0, "prediction": "Paris"}\n')
    refs = References(path, write=False)
    sample = lambda task, id, answer: SimpleNamespace(task=task, id=id, answers=[answer])  # noqa: E731
    assert refs.target(None, sample("passkey", "a", "50008"), None) == " 50008"
    assert refs.target(None, sample("passkey", "b", "31573"), None) == " 31573"  # its leading space kept
    assert refs.target(None, sample("needle", "c", "eat a sandwich"), None) == "eat a sandwich"
