"""`python -m harness fit`: the loop improves a synthetic objective, resumes exactly, shards across
ranks identically, rejects bad input; a short real fit on the embedded model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.cli import main
from policies.namm.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def fit_args(model_dir, out, *extra):
    return ["fit", "--model", str(model_dir), "--stages", "passkey:3", "--stages", "needle:2", "--popsize", "4",
            "--prompts-per-task", "2", "--val-fraction", "0.4", "--eval-every", "2", "--n-up", "64",
            "--stats-prompts", "2", "--member-batch", "1", "--out", str(out), "--quiet", *extra]


def log(out):
    lines = [json.loads(x) for x in (Path(out) / "fit.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in lines]


@pytest.fixture(scope="module")
def reference_fit(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "ref"
    assert main(fit_args(tiny_model_dir, out)) == 0
    return out


def test_fit_writes_log_checkpoints_and_figures(reference_fit):
    records = log(reference_fit)
    assert [(r["stage"], r["generation"]) for r in records] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
    assert records[3]["tasks"] == ["passkey", "needle"]  # stage 2 adds its task
    # every 2nd generation of a stage, and at its end
    assert [r["validation"] is not None for r in records] == [False, True, True, False, True]
    for r in records:
        assert r["fitness"]["min"] <= r["fitness"]["mean"] <= r["fitness"]["max"]
        assert all(len(ids) == 2 for ids in r["prompts"].values())
    final = load_checkpoint(reference_fit / "namm_bam.safetensors", expect_architecture="bam")
    assert final.fitted_on["tasks"] == ["passkey", "needle"] and final.params.shape == (4172,)
    assert torch.equal(final.params, load_checkpoint(reference_fit / "stage2" / "best.safetensors").params)
    assert (final.norm_var > 0).all()
    for name in ("training_curves.png", "memory_size.png"):
        assert (reference_fit / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_killed_fit_resumes_generation_by_generation(tiny_model_dir, reference_fit, tmp_path):
    out = tmp_path / "fit"
    proc = subprocess.Popen([sys.executable, "-m", "harness", *fit_args(tiny_model_dir, out)], cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = out / "fit.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < 2):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= len(path.read_text().splitlines()) < 5, "the fit must be killed part-way"
    assert main(fit_args(tiny_model_dir, out)) == 0
    assert log(out) == log(reference_fit)
    got, want = (load_checkpoint(d / "namm_bam.safetensors") for d in (out, reference_fit))
    assert torch.equal(got.params, want.params) and torch.equal(got.norm_var, want.norm_var)
    assert (got.fitted_on, got.fitness) == (want.fitted_on, want.fitness)


@pytest.mark.distributed
def test_two_ranks_fit_like_one(tiny_model_dir, reference_fit, tmp_path):
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "harness",
           *fit_args(tiny_model_dir, out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert log(out) == log(reference_fit)


def test_loop_improves_a_synthetic_objective(tiny_model_dir, tmp_path, monkeypatch):
    """The loop (stages, CMA-ES, validation, best checkpoint) on a cheap objective instead of the model:
    score = sigmoid(100 * mean(params * direction)), 0.5 at the zero start."""
    import harness.fit.loop as loop

    direction = torch.randn(4172, generator=torch.Generator().manual_seed(0)).sign()

    def synthetic(evaluator, config, params, norm_mean, norm_var, prompts):
        score = torch.sigmoid(100 * (params * direction).mean(-1))
        return [{"scores": {s.task: [float(c)] for s, _ in prompts}, "cache": 0.0} for c in score]

    monkeypatch.setattr(loop, "evaluate_members", synthetic)
    monkeypatch.setattr(loop.Fit, "_references", lambda self, prompts: {s.task: [1.0] for s, _ in prompts})
    out = tmp_path / "synthetic"
    assert main(["fit", "--model", str(tiny_model_dir), "--stages", "passkey:12", "--stages", "needle:6",
                 "--popsize", "8", "--sigma0", "0.05", "--prompts-per-task", "1", "--val-fraction", "0.4",
                 "--eval-every", "3", "--n-up", "64", "--stats-prompts", "1", "--out", str(out), "--quiet"]) == 0
    records = log(out)
    fitness = [r["fitness"]["mean"] for r in records]
    assert abs(fitness[0] - 0.5) < 0.1 and fitness[11] > fitness[0] + 0.2  # stage 1 climbs
    assert fitness[12] > fitness[0] + 0.2  # stage 2 starts from stage 1's best mean, not from zero
    val = [r["validation"]["mean"] for r in records if r["validation"]]
    assert val[-1] > val[0] > 0.5
    best = load_checkpoint(out / "namm_bam.safetensors").params
    assert float(torch.sigmoid(100 * (best * direction).mean())) == pytest.approx(val[-1], abs=1e-4)


@pytest.mark.parametrize(
    "extra,expect",
    [
        (["--stages", "nope:3"], "unknown task of suite niah 'nope'"),
        (["--stages", "passkey:0"], "at least 1 generation"),
        (["--stages", "passkey:3", "--popsize", "1"], "popsize"),
        (["--stages", "passkey:x"], "generations must be an integer"),
        (["--policy", "h2o", "--stages", "passkey"], "unknown policy 'h2o'"),
    ],
)
def test_bad_fit_input_is_one_line_exit_2(extra, expect, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["fit", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0], err
    assert not out.exists()


def test_unwritable_out_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["fit", "--stages", "passkey:1", "--out", str(blocker / "sub")]) == 2
    assert "cannot write to --out" in capsys.readouterr().err


def test_short_fit_on_the_embedded_model(tmp_path):
    """3 generations, population 4, 2 short passkey prompts per generation (SmolLM2, real weights)."""
    out = tmp_path / "smol"
    assert main(["fit", "--stages", "passkey:3", "--popsize", "4", "--prompts-per-task", "2", "--max-length", "1100",
                 "--val-fraction", "0.4", "--eval-every", "3", "--n-up", "256", "--stats-prompts", "1",
                 "--sigma0", "0.5", "--out", str(out), "--quiet"]) == 0
    records = log(out)
    assert len(records) == 3 and records[-1]["validation"] is not None
    refs = [json.loads(x) for x in (out / "references.jsonl").read_text().splitlines()]
    assert {r["score"] for r in refs} == {1.0}  # SmolLM2 finds 1K passkeys with the full cache
    assert all(r["cache"]["logical_mean"] > 0 for r in records)


def test_fit_on_generated_infinitebench_tasks(tiny_model_dir, tmp_path):
    """Offline fitting tasks: InfiniteBench-recipe passkey and kv_retrieval, generated here."""
    out = tmp_path / "ib"
    assert main(["fit", "--model", str(tiny_model_dir), "--suite", "infinitebench", "--stages", "passkey,kv_retrieval:1",
                 "--suite-arg", "lengths=400", "--suite-arg", "n_samples=3", "--max-length", "640", "--popsize", "4",
                 "--prompts-per-task", "1", "--val-fraction", "0.34", "--n-up", "64", "--stats-prompts", "1",
                 "--out", str(out), "--quiet"]) == 0
    (line,) = log(out)
    ckpt = load_checkpoint(out / "namm_bam.safetensors")
    assert ckpt.fitted_on["suite"] == "infinitebench" and ckpt.fitted_on["tasks"] == ["passkey", "kv_retrieval"]
    assert ckpt.fitted_on["generated_data"] is True and line["generation"] == 1


def test_fit_on_a_task_without_data_is_refused(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["fit", "--model", str(tiny_model_dir), "--suite", "longbench", "--stages", "qasper:1",
                 "--out", str(out), "--quiet"]) == 2
    err = [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith("Loading weights")]
    assert err == ["error: cannot fit on longbench/qasper: no data here; pass --data-dir DIR with qasper.jsonl "
                   "(official LongBench format) or run with hub access"]
    assert not out.exists()


def test_init_continues_an_earlier_fit(tiny_model_dir, reference_fit, tmp_path, capsys):
    """--init: stage 1 starts at the checkpoint's parameters (a tiny sigma0 keeps the mean there), with its
    frozen normalisation statistics, and the new checkpoint records the earlier fit's tasks first."""
    init = reference_fit / "namm_bam.safetensors"
    out = tmp_path / "cont"
    assert main(["fit", "--model", str(tiny_model_dir), "--init", str(init), "--stages", "needle:1", "--popsize", "4",
                 "--sigma0", "1e-9", "--prompts-per-task", "1", "--val-fraction", "0.4", "--n-up", "64",
                 "--member-batch", "1", "--out", str(out), "--quiet"]) == 0
    before, after = load_checkpoint(init), load_checkpoint(out / "namm_bam.safetensors")
    assert float(before.params.abs().max()) > 0.01  # a real starting point, far from the zero default
    torch.testing.assert_close(after.params, before.params, atol=1e-6, rtol=0)
    assert torch.equal(after.norm_mean, before.norm_mean) and torch.equal(after.norm_var, before.norm_var)
    assert after.fitted_on["tasks"] == ["passkey", "needle"] and after.fitted_on["stage"] == 3
    assert after.fitted_on["init"] == str(init) and after.fitted_on["statistics_from"] == "niah/passkey"
    # a checkpoint of the other architecture, or no file, is a one-line error
    capsys.readouterr()
    for policy, path, expect in (("namm_mlp", init, "--init: "), ("namm_bam", tmp_path / "none.safetensors", "--init: ")):
        assert main(["fit", "--policy", policy, "--init", str(path), "--stages", "passkey:1",
                     "--out", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: " + expect), err
    assert not (tmp_path / "never").exists()
