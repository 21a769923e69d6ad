"""`python -m harness fit` stops at generation boundaries (--stop-after, SIGTERM/SIGINT) and resumes exactly:
in place, from a copy of the fit folder's committable files at another path, and from fits made before
--cma/--dtype/--fitness-rule/--memory-weight existed."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import harness.fit.loop as loop
from harness.cli import main
from harness.devices import resolve_dtype
from harness.errors import UsageError
from harness.fit import stopping
from harness.fit.stopping import Stopper, parse_duration
from policies.namm.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ("config.json", "fit.jsonl", "references.jsonl", "state.pkl")  # + stage*/ (what a commit holds)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread in these in-process fits (restored afterwards): fast also on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_args(model_dir, out, *extra):
    """The tiny real fit of tests/test_fit.py: two stages, 5 generations."""
    return ["fit", "--model", str(model_dir), "--stages", "passkey:3", "--stages", "needle:2", "--popsize", "4",
            "--prompts-per-task", "2", "--val-fraction", "0.4", "--eval-every", "2", "--n-up", "64",
            "--stats-prompts", "2", "--member-batch", "1", "--out", str(out), "--quiet", *extra]


def synthetic_args(model_dir, out, *extra, stages="passkey:6", eval_every="100"):
    return ["fit", "--model", str(model_dir), "--stages", stages, "--popsize", "4", "--sigma0", "0.05",
            "--prompts-per-task", "1", "--val-fraction", "0.4", "--eval-every", eval_every, "--n-up", "64",
            "--stats-prompts", "1", "--out", str(out), "--quiet", *extra]


def log(out):
    lines = [json.loads(x) for x in (Path(out) / "fit.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in lines]


def state(out):
    return pickle.loads((Path(out) / "state.pkl").read_bytes())


def use_synthetic(monkeypatch, clock=None, on_call=None):
    """Replace the model evaluation with a cheap objective; each evaluation call advances ``clock`` (the
    stop rule's clock) by 10 s and runs ``on_call(call number)``."""
    calls = [0]

    def evaluate(evaluator, config, params, norm_mean, norm_var, prompts, targets=None):
        calls[0] += 1
        if clock is not None:
            clock[0] += 10.0
        if on_call is not None:
            on_call(calls[0])
        direction = torch.randn(params.shape[1], generator=torch.Generator().manual_seed(0)).sign()
        score = torch.sigmoid(100 * (params * direction).mean(-1))
        kept = torch.sigmoid(10 * params.mean(-1))
        return [{"scores": {s.task: [float(c)] for s, _ in prompts}, "cache": 10.0, "kept": float(k)}
                for c, k in zip(score, kept)]

    monkeypatch.setattr(loop, "evaluate_members", evaluate)
    monkeypatch.setattr(loop.Fit, "_references", lambda self, prompts: {s.task: [1.0] for s, _ in prompts})
    if clock is not None:
        monkeypatch.setattr(stopping, "now", lambda: clock[0])


def stop_lines(err):
    return [line for line in err.splitlines() if line.startswith("stopped (")]


# ---- durations and the stop rule -------------------------------------------------------------------------


@pytest.mark.parametrize("text,seconds", [("2h", 7200), ("90m", 5400), ("3600s", 3600), ("3600", 3600),
                                          ("1.5d", 129600), (" 45M ", 2700), ("0.5", 0.5), ("1h30m", 5400),
                                          ("2h15m", 8100), ("1d2h", 93600), ("1m30s", 90)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "2 hours", "1h30", "2h 15m", "h30m", "-1h", "1h-30m", "0", "0m", "0h0m",
                                  "inf", "nan", "1e999s"])
def test_bad_duration_is_a_one_line_usage_error(text):
    with pytest.raises(UsageError) as info:
        parse_duration(text)
    assert str(info.value) == f"--stop-after {text!r} is not a duration; use e.g. 2h, 90m, 2h15m, 3600s or 3600 (seconds)"


def test_stop_rule_uses_the_previous_generation_time(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(stopping, "now", lambda: clock[0])
    stopper = Stopper(60.0, "1m")
    assert stopper.reason(None) is None  # nothing to estimate from: start the first generation
    clock[0] = 130.0
    assert stopper.reason(30.0) is None  # 30 s used + 30 s fits in 60 s
    assert stopper.reason(31.0) == "--stop-after 1m: 30 s used, and the next generation would take ~31 s more"
    clock[0] = 160.0
    assert stopper.reason(None) == "--stop-after 1m reached after 60 s"
    assert Stopper().reason(1e9) is None  # no limit


def test_first_signal_sets_a_flag_second_interrupts():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stopper = Stopper()
    with stopper.handling_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the Python-level handler runs at the next bytecode boundary
        assert stopper.signal == "SIGTERM" and stopper.reason(None) == "SIGTERM received"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored


# ---- stopping and resuming a fit -------------------------------------------------------------------------


def test_stop_after_stops_before_a_generation_that_would_overrun(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Every generation takes 10 s on the fake clock: with --stop-after 35s generations 1-3 run (30 s), and the
    4th is not started because 30 + 10 > 35 (a limit checked only against elapsed time would have started it).
    Re-running (with another --stop-after and --threads: not part of the fit's identity) finishes the fit on
    the same trajectory as an uninterrupted one."""
    clock = [0.0]
    use_synthetic(monkeypatch, clock)
    whole, out = tmp_path / "whole", tmp_path / "stopped"
    assert main(synthetic_args(tiny_model_dir, whole)) == 0
    capsys.readouterr()
    assert main(synthetic_args(tiny_model_dir, out, "--stop-after", "35s")) == 0
    captured = capsys.readouterr()
    assert stop_lines(captured.err) == [
        f"stopped (--stop-after 35s: 30 s used, and the next generation would take ~10 s more) after stage 1/1 "
        f"generation 3/6, 3 generations in all; {out} holds the fit so far: re-run the same command to resume"]
    assert captured.out.strip() == str(out)
    assert len(log(out)) == 3 and state(out)["generation"] == 3 and not (out / "namm_bam.safetensors").exists()
    assert [r["wall_s"] for r in map(json.loads, (out / "fit.jsonl").read_text().splitlines())] == [10.0] * 3
    assert torch.get_num_threads() == 1  # the one_thread fixture
    assert main(synthetic_args(tiny_model_dir, out, "--stop-after", "2h", "--threads", "2")) == 0
    assert torch.get_num_threads() == 2
    assert stop_lines(capsys.readouterr().err) == []
    assert log(out) == log(whole)
    got, want = (load_checkpoint(d / "namm_bam.safetensors") for d in (out, whole))
    assert torch.equal(got.params, want.params) and got.fitness == want.fitness


def test_stop_at_a_stage_boundary(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Stage 1's last generation also validates (20 s): with --stop-after 35s stage 2 is not started."""
    clock = [0.0]
    use_synthetic(monkeypatch, clock)
    out = tmp_path / "two"
    assert main(synthetic_args(tiny_model_dir, out, "--stages", "needle:2", "--stop-after", "35s",
                               stages="passkey:2")) == 0
    assert stop_lines(capsys.readouterr().err) == [
        f"stopped (--stop-after 35s: 30 s used, and the next generation would take ~20 s more) after stage 1/2 "
        f"(complete), 2 generations in all; {out} holds the fit so far: re-run the same command to resume"]
    assert (state(out)["stage"], state(out)["generation"], state(out)["es"]) == (1, 0, None)
    assert (out / "stage1" / "best.safetensors").exists() and (out / "training_curves.png").exists()


@pytest.mark.parametrize("signals", [1, 2])
def test_sigint_during_a_generation(signals, tiny_model_dir, tmp_path, monkeypatch, capsys):
    """One SIGINT in generation 2: it finishes, is saved, the fit stops with exit 0. Two: stop at once (exit 130)
    with the state of generation 1. Either way re-running completes the uninterrupted trajectory."""
    use_synthetic(monkeypatch)
    whole, out = tmp_path / "whole", tmp_path / "interrupted"
    assert main(synthetic_args(tiny_model_dir, whole, stages="passkey:4", eval_every="2")) == 0
    capsys.readouterr()

    def interrupt(call):
        if call == 2:  # the 2nd evaluation call is generation 2's population
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)

    use_synthetic(monkeypatch, on_call=interrupt)
    code = main(synthetic_args(tiny_model_dir, out, stages="passkey:4", eval_every="2"))
    err = capsys.readouterr().err
    if signals == 1:
        assert code == 0 and len(log(out)) == 2 and state(out)["generation"] == 2
        assert stop_lines(err) == [f"stopped (SIGINT received) after stage 1/1 generation 2/4, 2 generations in all; "
                                   f"{out} holds the fit so far: re-run the same command to resume"]
    else:
        assert code == 130 and "interrupted; re-run the same command to resume" in err
        assert state(out)["generation"] == 1 and len(state(out)["log"]) == 1
    use_synthetic(monkeypatch)
    assert main(synthetic_args(tiny_model_dir, out, stages="passkey:4", eval_every="2")) == 0
    assert log(out) == log(whole)


def test_sigterm_stops_at_a_generation_and_a_copied_folder_resumes(tiny_model_dir, tmp_path):
    """A: the tiny real fit uninterrupted. B: the same command in a subprocess, SIGTERM after 2 generations:
    exit 0, one line, no traceback. C: only B's committable files, copied to another path (B deleted), resumed:
    the same log and checkpoints as A."""
    a, b, c = tmp_path / "A", tmp_path / "B", tmp_path / "clone" / "fits" / "C"
    assert main(tiny_args(tiny_model_dir, a)) == 0
    proc = subprocess.Popen([sys.executable, "-m", "harness", *tiny_args(tiny_model_dir, b)], cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path, deadline = b / "fit.jsonl", time.time() + 300
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < 2):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and out.strip() == str(b)
    (line,) = stop_lines(err)
    assert line.startswith("stopped (SIGTERM received) after stage ") and line.endswith(
        f"{b} holds the fit so far: re-run the same command to resume")
    k = len(log(b))
    assert 2 <= k < 5, "the fit must be stopped part-way"
    saved = (b / "state.pkl").read_bytes()
    assert len(pickle.loads(saved)["log"]) == k
    assert str(tmp_path).encode() not in saved  # no absolute path of the folder (or its parent) in the state
    c.mkdir(parents=True)
    for name in COMMITTED:
        shutil.copy2(b / name, c / name)
    for stage_dir in b.glob("stage*"):
        shutil.copytree(stage_dir, c / stage_dir.name)
    shutil.rmtree(b)
    assert main(tiny_args(tiny_model_dir, c)) == 0
    assert log(c) == log(a)
    assert [r["fitness"] for r in log(c)] == [r["fitness"] for r in log(a)]
    for name in ("namm_bam.safetensors", "stage1/best.safetensors", "stage2/best.safetensors"):
        got, want = load_checkpoint(c / name), load_checkpoint(a / name)
        assert torch.equal(got.params, want.params) and torch.equal(got.norm_var, want.norm_var)
        assert (got.fitted_on, got.fitness) == (want.fitted_on, want.fitness)


def test_fit_from_before_the_new_options_resumes_as_full_covariance(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """A fit folder written before --cma/--dtype/--fitness-rule/--memory-weight (config.json without those keys,
    a CMA-ES state without `covariance`, a best without `fitness`) means full covariance, float32, offset, 0:
    it resumes with --cma full --dtype float32 on the uninterrupted trajectory, and is refused, naming the difference,
    without it or with another --dtype. (namm_mlp: 1,326 parameters keep the full state small.)"""
    clock = [0.0]
    use_synthetic(monkeypatch, clock)
    args = dict(stages="passkey:3", eval_every="1")
    common = ("--policy", "namm_mlp")
    whole, old = tmp_path / "whole", tmp_path / "old"
    assert main(synthetic_args(tiny_model_dir, whole, *common, "--cma", "full", "--dtype", "float32", **args)) == 0
    assert main(synthetic_args(tiny_model_dir, old, *common, "--cma", "full", "--dtype", "float32", "--stop-after", "45s", **args)) == 0
    assert state(old)["generation"] == 2  # 2 generations of 20 s (evaluation + validation)
    config = json.loads((old / "config.json").read_text())
    for key in ("cma", "dtype", "fitness_rule", "memory_weight", "memory_target", "init"):
        del config["fit"][key]
    (old / "config.json").write_text(json.dumps(config))
    saved = state(old)
    es = pickle.loads(saved["es"])
    assert es["settings"].pop("covariance") == "full"
    saved["es"] = pickle.dumps(es)
    del saved["best"]["fitness"]
    (old / "state.pkl").write_bytes(pickle.dumps(saved))
    capsys.readouterr()
    for extra, difference in ((("--dtype", "bfloat16"), 'cma: "full" there, "diagonal" now; dtype: "float32" there, "bfloat16" now'),
                              (("--cma", "full", "--dtype", "bfloat16"), 'dtype: "float32" there, "bfloat16" now')):
        assert main(synthetic_args(tiny_model_dir, old, *common, *extra, **args)) == 2
        err = [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith("Loading weights")]
        assert err == [f"error: {old} holds a fit with a different configuration ({difference}); "
                       f"re-run with its options to resume, or pass a new --out"]
    assert main(synthetic_args(tiny_model_dir, old, *common, "--cma", "full", "--dtype", "float32", **args)) == 0
    assert log(old) == log(whole)
    got, want = (load_checkpoint(d / "namm_mlp.safetensors") for d in (old, whole))
    assert torch.equal(got.params, want.params) and got.fitness["cma"] == "full"


def test_identity_leaves_out_run_only_settings():
    identity = loop.FitConfig().identity()
    assert {"cma", "dtype", "fitness_rule", "memory_weight", "memory_target", "init"} <= set(identity)
    assert not {"device", "threads", "stop_after", "quiet", "out"} & set(identity)
    assert identity["dtype"] == loop.DEFAULT_FIT_DTYPE and identity["cma"] == "diagonal"


# ---- --dtype and --memory-weight in a fit ----------------------------------------------------------------


def test_dtype_reaches_the_model(tiny_model_dir, tmp_path, monkeypatch):
    import harness.models

    loaded, real = [], harness.models.load_model

    def recording(spec=None, device="cpu", dtype="float32", **options):  # options: device_map, seed
        model, tokenizer, source = real(spec, device=device, dtype=dtype, **options)
        loaded.append((dtype, next(model.parameters()).dtype))
        return model, tokenizer, source

    monkeypatch.setattr(harness.models, "load_model", recording)
    use_synthetic(monkeypatch)
    assert main(synthetic_args(tiny_model_dir, tmp_path / "bf16", "--dtype", "bfloat16", stages="passkey:1")) == 0
    assert main(synthetic_args(tiny_model_dir, tmp_path / "default", stages="passkey:1")) == 0
    default = resolve_dtype("auto", "cpu", loop.DEFAULT_FIT_DTYPE)  # bf16 only where this CPU computes it
    assert loaded == [("bfloat16", torch.bfloat16), (default, getattr(torch, default))]
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["fit"]["dtype"] == "bfloat16"


def test_memory_weight_in_the_fit_log(tiny_model_dir, tmp_path, monkeypatch):
    """fitness = normalised score - W * kept fraction; fit.jsonl records the population's mean kept fraction and
    the validation's, and the checkpoint the weight."""
    use_synthetic(monkeypatch)
    out = tmp_path / "mem"
    assert main(synthetic_args(tiny_model_dir, out, "--memory-weight", "0.4", stages="passkey:3", eval_every="1")) == 0
    for r in log(out):
        # every member's score is its only task's normalised score; the synthetic kept fraction is sigmoid(10 mean)
        assert r["fitness"]["mean"] == pytest.approx(r["task_fitness"]["passkey"] - 0.4 * r["cache"]["kept_fraction"],
                                                     abs=1e-12)
        assert 0 < r["cache"]["kept_fraction"] < 1
        v = r["validation"]
        assert v["fitness"] == pytest.approx(v["mean"] - 0.4 * v["kept_fraction"], abs=1e-12)
    assert load_checkpoint(out / "namm_bam.safetensors").fitness["memory_weight"] == 0.4
