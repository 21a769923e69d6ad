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
from policies.namm.checkpoint import load_checkpoint
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


def test_linear_mlp_params_score_the_linear_function():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 40, 25)
    weight, bias = torch.randn(17), 0.3
    scores = SCORERS["mlp"]().score(x, None, probe.linear_mlp_params(weight, bias))  # [1, 3, 40]
    torch.testing.assert_close(scores, x[..., :17] @ weight + bias, rtol=1e-5, atol=1e-5)


def test_save_linear_mlp_keeps_the_target_fraction_and_loads_as_namm_mlp(tmp_path):
    torch.manual_seed(0)
    source = make_policy("namm_bam")  # the shipped checkpoint: its statistics travel to the new one
    rows = []
    for _ in range(6):  # needle tokens are shifted along feature 3 only: the probe must find it
        needle, hay = torch.randn(20, 25), torch.randn(64, 25)
        needle[:, 3] += 2.0
        rows.append({"needle_x": needle, "hay_x": hay})
    info = probe.save_linear_mlp(rows, 0.4, load_checkpoint(source.checkpoint or source._shipped()),
                                 str(tmp_path / "lin.safetensors"))
    assert info["needle_tokens_kept_on_records"] > 0.8  # well separated: most needle tokens kept
    policy = make_policy("namm_mlp", checkpoint=str(tmp_path / "lin.safetensors"))
    torch.testing.assert_close(policy.norm_mean, source.norm_mean)
    hay = torch.cat([r["hay_x"] for r in rows])[None, None]  # [1, 1, 384, 25]
    kept = (policy.scorer.score(hay, None, policy.params) >= 0).double().mean()
    assert abs(float(kept) - 0.4) < 0.01
    w = policy.scorer.unflatten(policy.params)["out_weight"][0]
    assert int(w.abs().argmax()) == 3 and float(w[17:].abs().max()) == 0.0
