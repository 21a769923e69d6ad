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
from harness.devices import resolve_dtype
from harness.fit import loop
from policies.namm.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for these in-process fits (restored afterwards): fast also on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    fitness = final.fitness
    assert (fitness["cma"], fitness["fitness_rule"], fitness["memory_weight"]) == ("diagonal", "offset", 0)
    for r in records:  # kept fraction: cache logical size / (prompt + generated tokens), a share of what it saw
        assert 0 < r["cache"]["kept_fraction"] <= 1
        if r["validation"]:
            assert 0 < r["validation"]["kept_fraction"] <= 1
            assert r["validation"]["fitness"] == r["validation"]["mean"]  # no memory term by default
    # every validated mean is kept as checkpoints/gen<global generation>, with its own validation scores
    validated = {r["global_generation"]: r for r in records if r["validation"]}
    assert sorted(p.name for p in (reference_fit / "checkpoints").glob("*.safetensors")) == [
        f"gen{g}.safetensors" for g in sorted(validated)]
    for g, r in validated.items():
        ckpt = load_checkpoint(reference_fit / "checkpoints" / f"gen{g}.safetensors", expect_architecture="bam")
        assert ckpt.fitness["validation_mean"] == r["validation"]["mean"]
        assert ckpt.fitness["generation"] == r["generation"] and ckpt.fitted_on["stage"] == r["stage"]
    best2 = load_checkpoint(reference_fit / "stage2" / "best.safetensors")
    stage2_best = max((r for r in validated.values() if r["stage"] == 2 and r["validation"]["best"]),
                      key=lambda r: r["global_generation"])
    assert torch.equal(best2.params, load_checkpoint(
        reference_fit / "checkpoints" / f"gen{stage2_best['global_generation']}.safetensors").params)
    config = json.loads((reference_fit / "config.json").read_text())["fit"]
    assert (config["cma"], config["dtype"], config["fitness_rule"], config["memory_weight"]) == (
        "diagonal", resolve_dtype("auto", "cpu", loop.DEFAULT_FIT_DTYPE), "offset", 0.0)
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

    def synthetic(evaluator, config, params, norm_mean, norm_var, prompts, targets=None):
        score = torch.sigmoid(100 * (params * direction).mean(-1))
        return [{"scores": {s.task: [float(c)] for s, _ in prompts}, "cache": 0.0, "kept": 0.0} for c in score]

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
        (["--stages", "passkey:3", "--cma", "sep"], "unknown --cma 'sep'; choose one of: diagonal, full"),
        (["--stages", "passkey:3", "--fitness-rule", "ratio"],
         "unknown --fitness-rule 'ratio'; choose one of: offset, paper"),
        (["--stages", "passkey:3", "--dtype", "float8"],
         "unknown --dtype 'float8'; choose one of: auto, bfloat16, float16, float32"),
        (["--stages", "passkey:3", "--memory-weight", "-0.5"], "--memory-weight must be a finite number >= 0"),
        (["--stages", "passkey:3", "--memory-weight", "nan"], "--memory-weight must be a finite number >= 0"),
        (["--stages", "passkey:3", "--memory-target", "0.5"], "--memory-target must be a kept fraction in (0, 1] and "
                                                              "needs --memory-weight > 0"),
        (["--stages", "passkey:3", "--memory-weight", "1", "--memory-target", "1.5"], "--memory-target must be"),
        (["--stages", "passkey:3", "--progress-weight", "-1"], "--progress-weight must be a finite number >= 0"),
        (["--stages", "passkey:3", "--threads", "0"], "--threads must be a positive integer, got 0"),
        (["--stages", "passkey:3", "--stop-after", "2 hours"],
         "--stop-after '2 hours' is not a duration; use e.g. 2h, 90m, 2h15m, 3600s or 3600 (seconds)"),
        (["--stages", "passkey:3", "--stop-after", "0"], "--stop-after '0' is not a duration"),
    ],
)
def test_bad_fit_input_is_one_line_exit_2(extra, expect, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["fit", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0], err
    assert not out.exists()


def test_progress_weight_adds_the_answer_progress_to_the_fitness(tiny_model_dir, tmp_path):
    """With --progress-weight 0.5 the logged population mean fitness is the mean normalised score plus
    0.5 x the mean answer progress (one task, no memory term); the weight is part of the fit's identity."""
    out = tmp_path / "progress"
    args = ["fit", "--model", str(tiny_model_dir), "--stages", "passkey:2", "--popsize", "4", "--prompts-per-task", "2",
            "--val-fraction", "0.4", "--eval-every", "2", "--n-up", "64", "--stats-prompts", "2", "--sigma0", "0.5",
            "--progress-weight", "0.5", "--out", str(out), "--quiet"]
    assert main(args) == 0
    for r in log(out):
        assert 0.0 < r["progress"]["passkey"] <= 1.0
        assert r["fitness"]["mean"] == pytest.approx(r["task_fitness"]["passkey"] + 0.5 * r["progress"]["passkey"],
                                                     abs=1e-12)
    assert json.loads((out / "config.json").read_text())["fit"]["progress_weight"] == 0.5
    assert main(args[:-5] + ["--progress-weight", "0.25", "--out", str(out), "--quiet"]) == 2  # not this fit


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


# ---- fitness rules and the memory term (harness.fit.fitness) ---------------------------------------------


def test_normalised_offset_and_paper_rules_by_hand():
    from harness.fit.fitness import normalised

    member, full = [1.0, 0.0, 1.0], [1.0, 1.0, 0.5]  # means 2/3 and 5/6
    assert normalised(member, full) == pytest.approx(0.8, abs=1e-15)
    assert normalised(member, full, "offset") == normalised(member, full)  # the default
    assert normalised(member, full, "paper") == pytest.approx(0.799999904, abs=1e-9)  # (2/3) / (5/6 + 1e-7)
    # the full cache scores 0 on every prompt
    assert normalised([1.0, 0.0], [0.0, 0.0], "offset") == 1.5  # 1 + mean
    assert normalised([0.0, 0.0], [0.0, 0.0], "offset") == 1.0  # as good as the full cache
    assert normalised([1.0, 0.0], [0.0, 0.0], "paper") == pytest.approx(5e6, rel=1e-12)  # 0.5 / 1e-7
    assert normalised([0.0, 0.0], [0.0, 0.0], "paper") == 0.0
    with pytest.raises(ValueError, match="unknown fitness rule 'ratio'; choose one of: offset, paper"):
        normalised(member, full, "ratio")


def _ranking(members, refs, rule):
    from harness.fit.fitness import fitness_of

    fitness = [fitness_of({"scores": m, "kept": 0.0}, refs, rule)[0] for m in members]
    return sorted(range(len(members)), key=lambda i: -fitness[i]), fitness


def test_rules_rank_two_tasks_differently():
    """Task a: the full cache solves both prompts; task b: it solves neither. Under the paper's rule the member
    that gives up task a for half a success on b ranks first (1.25e6); under offset it ranks last."""
    refs = {"a": [1.0, 1.0], "b": [0.0, 0.0]}
    members = [{"a": [1.0, 1.0], "b": [0.0, 0.0]},   # offset (1 + 1) / 2 = 1.0;    paper ~(1 + 0) / 2 = 0.5
               {"a": [0.0, 0.0], "b": [0.5, 0.0]},   # offset (0 + 1.25) / 2 = 0.625; paper (0 + 2.5e6) / 2
               {"a": [1.0, 0.0], "b": [0.0, 0.0]}]   # offset (0.5 + 1) / 2 = 0.75;  paper ~0.25
    order, fitness = _ranking(members, refs, "offset")
    assert order == [0, 2, 1] and fitness == [1.0, 0.625, 0.75]
    order, fitness = _ranking(members, refs, "paper")
    assert order == [1, 0, 2]
    assert fitness == [pytest.approx(0.5, abs=1e-7), pytest.approx(1.25e6), pytest.approx(0.25, abs=1e-7)]


@pytest.mark.parametrize("reference", [[0.0, 0.0], [1.0, 0.5]])
def test_rules_rank_one_task_alike_so_cma_es_moves_alike(reference):
    """With one task both rules are increasing functions of the member's mean score, and CMA-ES only uses
    ranks: the same population gets the same order and the same CMA-ES update."""
    import numpy as np

    from harness.fit.cmaes import CMAES, CMAESSettings

    members = [{"t": s} for s in ([1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.5, 0.0])]
    refs = {"t": reference}
    (order_offset, f_offset), (order_paper, f_paper) = (_ranking(members, refs, r) for r in ("offset", "paper"))
    assert order_offset == order_paper == [2, 0, 3, 1]
    assert f_offset != f_paper  # different numbers, same order
    means = []
    for fitness in (f_offset, f_paper):
        es = CMAES(6, CMAESSettings(popsize=4, seed=1))
        es.tell(es.ask(), fitness)
        means.append(es.mean)
    assert np.array_equal(means[0], means[1])


def test_two_task_rules_move_cma_es_differently():
    import numpy as np

    from harness.fit.cmaes import CMAES, CMAESSettings

    refs = {"a": [1.0, 1.0], "b": [0.0, 0.0]}
    members = [{"a": [1.0, 1.0], "b": [0.0, 0.0]}, {"a": [0.0, 0.0], "b": [0.5, 0.0]},
               {"a": [1.0, 0.0], "b": [0.0, 0.0]}, {"a": [0.0, 0.0], "b": [0.0, 0.0]}]
    means = []
    for rule in ("offset", "paper"):
        es = CMAES(6, CMAESSettings(popsize=4, seed=1))
        es.tell(es.ask(), _ranking(members, refs, rule)[1])
        means.append(es.mean)
    assert not np.array_equal(means[0], means[1])


def test_memory_term_by_hand():
    from harness.fit.fitness import fitness_of, kept_fraction

    member = {"scores": {"a": [1.0, 0.0], "b": [0.5]}, "kept": 0.25}
    refs = {"a": [1.0, 1.0], "b": [0.5]}  # normalised: a 0.5, b 1.0, mean 0.75
    assert fitness_of(member, refs) == (0.75, {"a": 0.5, "b": 1.0})
    assert fitness_of(member, refs, memory_weight=0.4)[0] == pytest.approx(0.75 - 0.4 * 0.25, abs=1e-15)  # 0.65
    assert fitness_of(member, {"a": [0.0, 0.0], "b": [0.5]}, "offset", 1.0)[0] == pytest.approx(
        (1.5 + 1.0) / 2 - 0.25, abs=1e-15)
    # a target: the hinge costs only the excess over it (kept 0.25 is within 0.3; 0.8 exceeds 0.5 by 0.3)
    assert fitness_of(member, refs, memory_weight=2.0, memory_target=0.3)[0] == 0.75
    assert fitness_of({**member, "kept": 0.8}, refs, memory_weight=2.0, memory_target=0.5)[0] == pytest.approx(
        0.75 - 2.0 * 0.3, abs=1e-15)
    # 30 tokens kept of 90 prompt + 10 generated
    assert kept_fraction({"cache": {"logical_mean": 30.0}, "new_tokens": 10}, 90) == pytest.approx(0.3, abs=1e-15)


def test_evaluate_members_averages_the_kept_fraction_over_prompts(monkeypatch):
    """3 members in chunks of 2 on 2 prompts (90 and 40 tokens): member k keeps 10(k+1) of 90 + 10 tokens on
    the first and 5(k+1) of 40 + 0 on the second: kept fraction (0.1 + 0.125) / 2 * (k + 1)."""
    from types import SimpleNamespace

    import harness.fit.fitness as fitness

    monkeypatch.setattr(fitness, "make_member_policy", lambda config, chunk, mean, var: chunk)

    class FakeEvaluator:
        def evaluate(self, sample, policy, batch, cropped, target=None):
            assert policy.shape[0] == batch
            out = []
            for k in policy[:, 0].long().tolist():
                first = sample.task == "a"
                out.append({"score": float(k) if first else 1.0, "new_tokens": 10 if first else 0,
                            "cache": {"logical_mean": 10.0 * (k + 1) if first else 5.0 * (k + 1)}})
            return out

    params = torch.zeros(3, 5)
    params[:, 0] = torch.arange(3)
    prompts = [(SimpleNamespace(task="a"), list(range(90))), (SimpleNamespace(task="b"), list(range(40)))]
    config = SimpleNamespace(member_batch=2)
    members = fitness.evaluate_members(FakeEvaluator(), config, params, None, None, prompts)
    for k, m in enumerate(members):
        assert m["scores"] == {"a": [float(k)], "b": [1.0]}
        assert m["kept"] == pytest.approx(0.1125 * (k + 1), abs=1e-15)
        assert m["cache"] == pytest.approx(7.5 * (k + 1), abs=1e-12)
