"""Resuming a run whose NAMM checkpoint file now holds other weights is refused (harness/runner.py
``weights_changed``): the run's identity names the checkpoint by path, the weights by sha256."""

from __future__ import annotations

import json

import torch

from harness.cli import main
from harness.run_dir import weights_changed
from policies.namm.checkpoint import save_checkpoint
from policies.namm.scorers import SCORERS


def write_bam(path, seed: int, gamma: float = 0.99):
    n = SCORERS["bam"]().n_params
    params = 0.01 * torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return save_checkpoint(path, architecture="bam", params=params, norm_mean=torch.zeros(17),
                           norm_var=torch.ones(17), hyperparameters={"gamma": gamma, "n_up": 32},
                           fitted_on={"model": "test", "seed": seed}, fitness={})


def test_resume_with_other_weights_at_the_same_path_is_refused(tiny_model_dir, tmp_path, capsys):
    ckpt = write_bam(tmp_path / "best.safetensors", seed=1)
    out = tmp_path / "run"
    args = ["run", "--model", str(tiny_model_dir), "--suite", "niah", "--tasks", "passkey", "--limit", "2",
            "--policy", "namm_bam", "--policy-checkpoint", str(ckpt), "--n-up", "32", "--out", str(out), "--quiet"]
    assert main(args) == 0
    saved = json.loads((out / "config.json").read_text())["policy"]
    assert saved["checkpoint_sha256"] and len(saved["checkpoint_sha256"]) == 64
    records = (out / "records.jsonl").read_text()
    (out / "records.jsonl").write_text(records.splitlines(keepends=True)[0])  # one sample left to do
    assert main(args) == 0  # same weights: resumes
    assert (out / "records.jsonl").read_text().count("\n") == 2
    write_bam(ckpt, seed=2)  # the file moves on (a fit's best.safetensors, a new shipped default)
    capsys.readouterr()
    assert main(args) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "was made with other policy weights (checkpoint_sha256" in errors[0]
    assert "pass a new --out" in errors[0]
    assert (out / "records.jsonl").read_text().count("\n") == 2  # nothing written


def test_weights_changed_compares_recorded_keys_only():
    a = {"checkpoint_sha256": "a" * 64, "fitted_on": {"x": 1}, "gamma": 0.99, "threshold": 0.0}
    assert weights_changed(a, dict(a)) == ""
    assert weights_changed(a, {**a, "threshold": 1.0}) == ""  # not a weight (and part of the run's identity)
    assert weights_changed(a, {**a, "checkpoint_sha256": "b" * 64}) == \
        f"checkpoint_sha256 {'a' * 12} then, {'b' * 12} now"
    old = {"fitted_on": {"x": 1}, "gamma": 0.99}  # a run made before the sha was recorded
    assert weights_changed(old, a) == ""
    assert weights_changed(old, {**a, "gamma": 0.9999, "fitted_on": {"x": 2}}) == \
        "fitted_on differs; gamma 0.99 then, 0.9999 now"
    assert weights_changed({"name": "h2o", "budget": 64}, {"name": "h2o", "budget": 64}) == ""
