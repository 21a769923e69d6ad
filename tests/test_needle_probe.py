"""scripts/needle_probe.py (results/fits/needle-probe/): its AUC, where it finds the needle, and its
recording NAMM, which must evict exactly as the policy does (or keep everything when observing)."""

import importlib.util
from pathlib import Path

import torch

from conftest import tiny_llama
from harness.attention import attach
from harness.cache import EvictionCache
from harness.evaluate import format_prompt
from policies import make_policy
from policies.namm.scorers import SCORERS
from tasks.niah import NEEDLE, NIAH

_spec = importlib.util.spec_from_file_location("needle_probe", Path(__file__).resolve().parents[1] / "scripts" / "needle_probe.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def test_auc_counts_pairs_and_half_ties():
    assert probe.auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert probe.auc(torch.tensor([0.0]), torch.tensor([1.0, 2.0])) == 0.0
    assert probe.auc(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 2.0])) == 0.625  # (0.5 + 0 + 1 + 1) / 4


def test_needle_positions_are_exactly_the_needle_tokens(smollm2):
    _, tokenizer = smollm2
    sample = NIAH().make_sample("needle", tokenizer, 1024, 0.4)
    ids = format_prompt(tokenizer, sample, "auto")
    pos = probe.needle_positions(tokenizer, sample, ids)
    first, last = int(pos.min()), int(pos.max())
    assert pos.tolist() == list(range(first, last + 1))
    assert NEEDLE in tokenizer.decode(ids[first:last + 1])
    assert NEEDLE not in tokenizer.decode(ids[first + 1:last + 1])
    assert NEEDLE not in tokenizer.decode(ids[first:last])


def _run(policy, ids, n_up=32):
    model = tiny_llama()
    attach(model)
    cache = EvictionCache(model.config, policy, n_up=n_up)
    with torch.no_grad():
        for s in range(0, ids.shape[1], n_up):
            model(input_ids=ids[:, s:s + n_up], past_key_values=cache)
    return [st["logical"] for st in cache.stats()]


def test_recorder_evicts_as_the_policy_and_observes_without_evicting():
    ids = torch.randint(0, 128, (1, 96), generator=torch.Generator().manual_seed(1))
    params = torch.randn(SCORERS["bam"]().n_params, generator=torch.Generator().manual_seed(3)) * 0.5
    reference = _run(make_policy("namm_bam", n_up=32, params=params), ids)
    assert max(reference) < 96  # these parameters evict
    recorder = probe.recording_policy("namm_bam", n_up=32, params=params)
    recorder.evict = True
    assert _run(recorder, ids) == reference
    layers = len(reference)
    assert len(recorder.log) == 3 * layers  # updates at 32, 64 and 96 tokens, every layer
    seen, layer, positions, x, scores, l2, keep = recorder.log[-1]
    assert x.shape == (*positions.shape, 25) and scores.shape == keep.shape == l2.shape == positions.shape
    recorder.log, recorder.evict = [], False
    assert _run(recorder, ids) == [96] * layers
