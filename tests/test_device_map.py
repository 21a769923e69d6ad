"""``--device-map`` (accelerate) on ``run``, ``fit`` and ``bench``, on a CPU machine: accelerate places
every layer on the CPU, so a run with it must give the same records as one without; bad values are
one line. (Which device each layer's tensors stay on: tests/test_device_placement.py.)"""

import json
from pathlib import Path

import pytest

from harness.cli import main

VOLATILE = ("timing",)


def records(run_dir):
    rows = [json.loads(line) for line in (Path(run_dir) / "records.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def run_args(model, out, *extra):
    return ["run", "--model", str(model), "--suite", "niah", "--tasks", "passkey", "--suite-arg", "lengths=200",
            "--suite-arg", "depths=0.5", "--policy", "h2o", "--cache-size", "64", "--n-up", "32", "--max-length", "400",
            "--out", str(out), "--quiet", *extra]


@pytest.mark.parametrize("model", ["dir", "random:tiny-llama"])
def test_run_with_device_map_auto_equals_a_plain_run(model, tiny_model_dir, tmp_path):
    model = tiny_model_dir if model == "dir" else model
    plain, mapped = tmp_path / "plain", tmp_path / "mapped"
    assert main(run_args(model, plain)) == 0
    assert main(run_args(model, mapped, "--device-map", "auto")) == 0
    assert records(mapped) == records(plain) and len(records(plain)) == 1
    saved = json.loads((mapped / "config.json").read_text())
    assert "device_map" not in saved["run"] and saved["run"]["dtype"] == "float32"  # auto on CPU
    # where the model runs is not part of the run's identity: each directory resumes under the other
    assert main(run_args(model, plain, "--device-map", "auto")) == 0
    assert main(run_args(model, mapped)) == 0
    assert records(mapped) == records(plain)


@pytest.mark.parametrize("extra,expect", [
    (["--device-map", "everywhere"],
     "unknown --device-map 'everywhere'; choose one of: auto, balanced, balanced_low_0, sequential"),
    (["--device-map", "auto", "--suite", "mlvu"], "--device-map: suite mlvu loads its own model, on --device"),
])
def test_bad_device_map_is_one_line(extra, expect, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["run", "--out", str(out), *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {expect}"], lines
    assert not out.exists()


@pytest.mark.parametrize("command", [["run"], ["fit", "--stages", "passkey:1"], ["bench"], ["namm-init"]])
def test_device_map_is_refused_under_torchrun(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "never"
    assert main([*command, "--out", str(out), "--device-map", "auto"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: --device-map auto spreads one model over this machine's devices: run it in one "
                     "process, not under torchrun"], lines
    assert not out.exists()


def test_fit_identity_leaves_out_where_the_model_runs():
    from harness.fit.loop import FitConfig

    assert "device_map" not in FitConfig(device_map="auto").identity()
    assert FitConfig(device_map="auto").identity() == FitConfig().identity()


def test_bench_with_device_map_and_random_weights(tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--model", "random:tiny-llama", "--policies", "h2o", "--lengths", "64", "--cache-size", "16",
                 "--n-up", "32", "--decode-tokens", "2", "--device-map", "auto", "--out", str(out)]) == 0
    [row] = [json.loads(line) for line in (out / "random-tiny-llama.jsonl").read_text().splitlines()]
    assert (row["model"], row["random_weights"], row["device_map"], row["dtype"]) == (
        "random-tiny-llama", True, "auto", "float32")


def test_random_weights_placed_part_by_part_equal_the_whole(monkeypatch):
    """A device map puts each part of a random model on its own device: allocated and initialised part by
    part (here all on the CPU, one entry per layer) it has the same weights and RoPE buffers as the whole."""
    import torch

    from harness import random_models

    tok = random_models.tokenizer()
    whole = random_models.build("tiny-llama", torch.float32, "cpu", seed=3, tok=tok)
    parts = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu",
             **{f"model.layers.{i}": "cpu" for i in range(whole.config.num_hidden_layers)}}
    monkeypatch.setattr(random_models, "_placement", lambda model, dtype, strategy: parts)
    placed = random_models.build("tiny-llama", torch.float32, "cpu", seed=3, device_map="auto", tok=tok)
    assert placed.lm_head.weight is placed.model.embed_tokens.weight  # tied again after allocation
    for (name, a), (_, b) in zip(whole.state_dict().items(), placed.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(whole.model.rotary_emb.inv_freq, placed.model.rotary_emb.inv_freq)
