"""NAMM policies through the cache: zero parameters = full cache, batched parameter vectors,
statistics collection, checkpoints on the command line (tiny model and the embedded SmolLM2)."""

import json
import warnings

import pytest
import torch

from conftest import tiny_llama
from harness.attention import attach
from harness.cache import EvictionCache
from harness.cli import main
from harness.generation import greedy_generate
from policies import make_policy
from policies.namm.scorers import SCORERS
from tasks.niah import haystack_text

N_UP = 32


def random_params(arch, seed, sigma=0.5):
    return torch.randn(SCORERS[arch]().n_params, generator=torch.Generator().manual_seed(seed)) * sigma


def run_tiny(policy, ids, mode="original"):
    model = tiny_llama()
    attach(model)
    cache = EvictionCache(model.config, policy, n_up=N_UP, mode=mode)
    with torch.no_grad():
        logits = [model(input_ids=ids[:, s : s + N_UP], past_key_values=cache).logits for s in range(0, ids.shape[1], N_UP)]
    return torch.cat(logits, 1), cache


@pytest.mark.parametrize("arch", ["bam", "mlp"])
def test_zero_parameters_warn_and_keep_everything(arch, tmp_path, monkeypatch):
    """Without a checkpoint and with none shipped, the policy says so and keeps every token."""
    import policies.namm.policy as namm_policy

    monkeypatch.setattr(namm_policy, "SHIPPED", tmp_path)  # an empty checkpoint folder
    ids = torch.randint(0, 128, (1, 100), generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="zero parameters"):
        policy = make_policy(f"namm_{arch}", n_up=N_UP)
    logits, cache = run_tiny(policy, ids)
    full, _ = run_tiny(make_policy("full"), ids)
    assert all(s["physical"] == 100 and s["updates"] == 3 for s in cache.stats())
    torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["original", "exact"])
def test_random_parameters_evict_by_threshold_and_keep_newest(mode):
    ids = torch.randint(0, 128, (1, 96), generator=torch.Generator().manual_seed(1))
    policy = make_policy("namm_bam", n_up=N_UP, params=random_params("bam", 3))
    _, cache = run_tiny(policy, ids, mode)
    layer = cache.eviction_layers[0]
    assert layer.n_updates == 3 and layer.keys.shape[-2] < 96
    valid = layer.valid if layer.valid is not None else torch.ones_like(layer.positions, dtype=torch.bool)
    assert bool((layer.positions[valid.bool()].reshape(-1) == 95).any())  # newest token kept
    # a higher threshold evicts more
    stricter = make_policy("namm_bam", n_up=N_UP, params=random_params("bam", 3), threshold=0.5)
    _, cache2 = run_tiny(stricter, ids, mode)
    assert cache2.stats()[0]["logical"] < cache.stats()[0]["logical"]


def _evict_all_mlp_params():
    """namm_mlp parameters that score every token -1 (below the threshold 0): all are evicted."""
    scorer = SCORERS["mlp"]()
    tensors = {name: torch.zeros(shape) for name, shape in scorer.layout()}
    tensors["out_bias"][0] = -1.0
    return scorer.flatten(tensors)


@pytest.mark.parametrize("mode", ["original", "exact"])
def test_n_sink_keeps_the_first_positions(mode):
    """n_sink (beyond the paper) keeps the first positions through every update; 0 (the default)
    keeps only the newest token when every score is below the threshold."""
    ids = torch.randint(0, 128, (1, 96), generator=torch.Generator().manual_seed(2))
    for n_sink, expected in ((0, {95}), (3, {0, 1, 2, 95})):
        policy = make_policy("namm_mlp", n_up=N_UP, params=_evict_all_mlp_params(), n_sink=n_sink)
        assert policy.describe()["n_sink"] == n_sink
        _, cache = run_tiny(policy, ids, mode)
        for layer in cache.eviction_layers:
            valid = layer.valid if layer.valid is not None else torch.ones_like(layer.positions, dtype=torch.bool)
            for h in range(layer.positions.shape[1]):
                assert set(layer.positions[0, h][valid[0, h].bool()].tolist()) == expected
    with pytest.raises(ValueError, match="n_sink must be >= 0"):
        make_policy("namm_mlp", params=_evict_all_mlp_params(), n_sink=-1)


def test_batched_parameter_vectors_equal_separate_runs():
    """Batch element i of one prompt copied b times is scored with parameter vector i."""
    ids = torch.randint(0, 128, (1, 96), generator=torch.Generator().manual_seed(2))
    vectors = torch.stack([random_params("bam", s) for s in (4, 5)])
    batched = make_policy("namm_bam", n_up=N_UP, params=vectors)
    got, _ = run_tiny(batched, ids.expand(2, -1))
    for i in range(2):
        alone, _ = run_tiny(make_policy("namm_bam", n_up=N_UP, params=vectors[i]), ids)
        torch.testing.assert_close(got[i : i + 1], alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got[0], got[1])  # the two members really differ


@pytest.mark.parametrize("arch", sorted(SCORERS))
def test_default_is_the_shipped_checkpoint(arch):
    """`--policy namm_<arch>` with no checkpoint loads policies/namm/checkpoints/namm_<arch>.safetensors."""
    import policies.namm.policy as namm_policy
    from policies.namm.checkpoint import load_checkpoint

    path = namm_policy.SHIPPED / f"namm_{arch}.safetensors"
    if not path.exists():
        pytest.fail(f"no shipped default checkpoint {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zero-parameter warning
        policy = make_policy(f"namm_{arch}", n_up=N_UP)
    ckpt = load_checkpoint(path, expect_architecture=arch)
    assert torch.equal(policy.params, ckpt.params) and torch.equal(policy.norm_var, ckpt.norm_var)
    assert float(policy.params.abs().max()) > 0  # fitted, not the zero start
    assert policy.describe()["checkpoint"] == str(path)
    assert policy.fitted_on["model"] == "smollm2" and policy.fitted_on["tasks"]


def test_set_params_checks_size():
    policy = make_policy("namm_mlp", n_up=N_UP, params=random_params("mlp", 0))
    with pytest.raises(ValueError, match="1326 parameters"):
        policy.set_params(torch.zeros(5))


def test_zero_parameters_match_full_on_smollm2(smollm2):
    model, tokenizer = smollm2
    ids = tokenizer(haystack_text()[:8000], return_tensors="pt").input_ids[:, :1100]
    attach(model)
    full = greedy_generate(model, ids, EvictionCache(model.config, make_policy("full"), n_up=256), 40, 256).tokens
    namm = make_policy("namm_bam", n_up=256, params=torch.zeros(SCORERS["bam"]().n_params))
    cache = EvictionCache(model.config, namm, n_up=256)
    assert greedy_generate(model, ids, cache, 40, 256).tokens == full
    assert all(s["physical"] == 1139 and s["updates"] == 4 for s in cache.stats())


def test_namm_init_then_run_end_to_end_on_the_embedded_model(tmp_path, capsys):
    ckpt = tmp_path / "namm.safetensors"
    assert main(["namm-init", "--suite", "niah", "--tasks", "passkey", "--limit", "1", "--max-length", "1100",
                 "--n-up", "256", "--init-sigma", "0.5", "--out", str(ckpt)]) == 0
    sidecar = json.loads(ckpt.with_suffix(".json").read_text())
    assert sidecar["architecture"] == "bam" and sidecar["fitted_on"]["statistics_from"] == ["niah/passkey"]
    out = tmp_path / "run"
    assert main(["run", "--policy", "namm_bam", "--policy-checkpoint", str(ckpt), "--suite", "niah", "--tasks",
                 "passkey", "--limit", "1", "--max-length", "1100", "--n-up", "256", "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "records.jsonl").read_text())
    assert record["cache"]["physical_mean"] < record["input_tokens"]  # the random NAMM evicted
    config = json.loads((out / "config.json").read_text())
    assert config["policy"]["checkpoint"] == str(ckpt) and config["policy"]["n_params"] == 4172
    capsys.readouterr()
    assert main(["run", "--policy", "namm_bam", "--policy-checkpoint", str(tmp_path / "missing.safetensors"),
                 "--out", str(tmp_path / "never")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("policy_name", ["namm_bam", "h2o"])
def test_shared_first_chunk_equals_running_every_copy(policy_name):
    """greedy_generate(shared_prefix=True) computes the first chunk once and repeats the cache: the
    members' tokens and kept positions equal those of the plain batched run."""
    ids = torch.randint(0, 128, (1, 100), generator=torch.Generator().manual_seed(6))
    if policy_name == "namm_bam":
        policy = make_policy("namm_bam", n_up=N_UP, params=torch.stack([random_params("bam", s) for s in (7, 8, 9)]))
    else:
        policy = make_policy("h2o", budget=40, recent_window=8)
    model = tiny_llama()
    attach(model)
    results = []
    for shared in (False, True):
        cache = EvictionCache(model.config, policy, n_up=N_UP)
        gen = greedy_generate(model, ids.expand(3, -1), cache, 12, N_UP, shared_prefix=shared)
        results.append((gen.batch_tokens, [(lay.positions.clone(), lay.valid) for lay in cache.eviction_layers],
                        cache.eviction_layers[0].n_updates))
    (tok_a, pos_a, up_a), (tok_b, pos_b, up_b) = results
    assert tok_a == tok_b and up_a == up_b == 3
    for (pa, va), (pb, vb) in zip(pos_a, pos_b):
        assert torch.equal(pa, pb) and ((va is None and vb is None) or torch.equal(va, vb))
    assert any(va is not None or pa.shape[-1] < 100 + 11 for pa, va in pos_a)  # something was evicted
