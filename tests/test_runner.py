"""The runner and CLI: records, metrics, resume, bad input, distributed sharding (tiny model)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = ("timing",)  # wall-clock fields differ between runs


def harness_cmd(*args):
    return [sys.executable, "-m", "harness", *args]


def stable(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def run_args(model_dir, out, *extra):
    return ["run", "--model", str(model_dir), "--suite", "niah", "--policy", "h2o", "--cache-size", "64",
            "--n-up", "32", "--out", str(out), "--quiet", *extra]


@pytest.fixture(scope="module")
def reference_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(run_args(tiny_model_dir, out)) == 0
    return out


def test_run_writes_records_and_metrics(reference_run):
    records = read(reference_run / "records.jsonl")
    # niah: 2 tasks x 5 depths at the largest length that fits the tiny model's 640 positions
    assert [(r["task"], r["index"]) for r in records] == [(t, i) for i, t in enumerate(["passkey"] * 5 + ["needle"] * 5)]
    for r in records:
        assert r["generated_data"] is True and r["metadata"]["generated"] is True
        assert 0.0 <= r["score"] <= 1.0
        assert r["input_tokens"] <= 640 - 6
        layers = r["cache"]["layers"]
        assert len(layers) == 2 and all(layer["physical"] < r["input_tokens"] for layer in layers)
        # budget 64 + at most one n_up chunk of newer tokens since the last update
        assert all(64 <= layer["logical"] <= 64 + 32 for layer in layers)
    metrics = json.loads((reference_run / "metrics.json").read_text())
    passkey = [r for r in records if r["task"] == "passkey"]
    assert metrics["tasks"]["passkey"]["n"] == 5
    assert metrics["tasks"]["passkey"]["score"] == pytest.approx(100 * sum(r["score"] for r in passkey) / 5)
    assert metrics["complete"] is True
    config = json.loads((reference_run / "config.json").read_text())
    assert config["run"]["policy"] == "h2o" and config["run"]["cache_size"] == 64


def test_rerun_of_finished_run_changes_nothing(tiny_model_dir, reference_run):
    before = (reference_run / "records.jsonl").read_bytes()
    assert main(run_args(tiny_model_dir, reference_run)) == 0
    assert (reference_run / "records.jsonl").read_bytes() == before


def test_killed_run_resumes_to_the_same_records(tiny_model_dir, reference_run, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(harness_cmd(*run_args(tiny_model_dir, out)), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / "records.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not records.exists() or len(records.read_text().splitlines()) < 2):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read(records))
    assert 2 <= done < 10, "the run must be killed part-way"
    with open(records, "a") as f:  # a crash in the middle of writing a line
        f.write('{"index": 99, "task": "pass')
    assert main(run_args(tiny_model_dir, out)) == 0
    assert stable(read(records)) == stable(read(reference_run / "records.jsonl"))


def test_different_config_in_existing_dir_is_refused(tiny_model_dir, reference_run, capsys):
    assert main(run_args(tiny_model_dir, reference_run, "--seed", "3")) == 2
    assert "different configuration" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,expect",
    [
        (["--policy", "nope"], "unknown policy 'nope'; choose one of: full, h2o, kvpress, l2, namm_bam, namm_mlp, streaming"),
        (["--suite", "nope"], "unknown suite 'nope'; choose one of: choubun, d4rl, infinitebench, jsonl, lm-eval:<task>, longbench, longvideobench, mlvu, niah"),
        (["--tasks", "passkey,nope"], "unknown task of suite niah 'nope'; choose one of: needle, passkey"),
        (["--cache-size", "-5"], "--cache-size must be a positive token count"),
        (["--model", "./no/such/model"], "model './no/such/model' not found"),
        (["--cache-mode", "weird"], "unknown cache mode 'weird'; choose one of: exact, original"),
        (["--limit", "0"], "--limit must be a positive integer"),
        (["--cache-size", "lots"], "--cache-size must be a number"),
        (["--device", "tpu"], "--device 'tpu' is not a device; use cpu, cuda, cuda:N or mps"),
        (["--device", "meta"], "--device 'meta': not a device the harness runs on; use cpu, cuda, cuda:N or mps"),
        (["--device", "cuda:99"], "--device cuda:99: "),  # no CUDA here, or not 100 GPUs
        (["--suite-arg", "lengths=abc"], "--suite-arg lengths=abc: suite niah option lengths takes integers, not "
                                         "'abc'; e.g. --suite-arg lengths=2048,4096"),
        (["--suite", "infinitebench", "--suite-arg", "n_samples=x"], "--suite-arg n_samples=x: suite "
         "infinitebench option n_samples takes integers, not 'x'; e.g. --suite-arg n_samples=20"),
        (["--suite", "infinitebench", "--suite-arg", "n_samples=2,3"], "--suite-arg n_samples=2,3: suite "
         "infinitebench option n_samples takes one number, not a list; e.g. --suite-arg n_samples=20"),
        (["--suite-arg", "depths=0.5,half"], "--suite-arg depths=0.5,half: suite niah option depths takes numbers, "
                                            "not 'half'; e.g. --suite-arg depths=0,0.5,1"),
        (["--suite", "infinitebench", "--suite-arg", "chat_template=maybe"],
         "infinitebench chat_template must be off (official: no chat template) or on"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_no_run_dir(args, expect, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["run", "--out", str(out), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("max_length,room", [("10", 4), ("40", 34)])
def test_max_length_too_small_for_the_prompts_is_refused(tiny_model_dir, tmp_path, capsys, max_length, room):
    out = tmp_path / "never"
    assert main(run_args(tiny_model_dir, out, "--max-length", max_length)) == 2
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("error")]
    assert len(lines) == 1, lines
    assert re.fullmatch(rf"error: --max-length {max_length} leaves {room} tokens for the prompts of niah/passkey "
                        r"\(6 go to new tokens; prompt passkey-\d+-0\.0 has \d+\), fewer than the 64 a prompt needs; "
                        r"use a larger --max-length, or leave it out for the model's context \(640 tokens\)", lines[0])
    assert not out.exists()


def test_small_max_length_is_fine_when_the_prompts_fit():
    from harness.runner import RunConfig, check_room
    from tasks.base import Sample

    class Tok:  # one token per character, no chat template
        chat_template = None

        def __call__(self, text, add_special_tokens=True):
            return type("Out", (), {"input_ids": [ord(c) for c in text]})()

    short = [(0, Sample(id="a", task="t", prompt="x" * 20, answers=["y"], max_new_tokens=8))]
    check_room(short, Tok(), 40, RunConfig(suite="jsonl", max_length=40))  # 32 tokens left, 20 needed
    with pytest.raises(UsageError, match=r"^--max-length 20 leaves 12 tokens for the prompts of jsonl/t"):
        check_room(short, Tok(), 20, RunConfig(suite="jsonl", max_length=20))
    with pytest.raises(UsageError, match=r"^the model's context of 20 tokens leaves 12 .* use a model with a longer"):
        check_room(short, Tok(), 20, RunConfig(suite="jsonl"))


def test_bad_input_exit_code_through_python_dash_m(tmp_path):
    done = subprocess.run(harness_cmd("run", "--policy", "nope", "--out", str(tmp_path / "x")), cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: unknown policy 'nope'; choose one of: full, h2o, kvpress, l2, namm_bam, namm_mlp, streaming"
    ]


@pytest.mark.distributed
def test_two_cpu_ranks_shard_and_merge_into_one_run(tiny_model_dir, reference_run, tmp_path):
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "harness", *run_args(tiny_model_dir, out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(out.glob("records.rank*.jsonl"))
    assert stable(read(out / "records.jsonl")) == stable(read(reference_run / "records.jsonl"))
    assert json.loads((out / "metrics.json").read_text()) == json.loads((reference_run / "metrics.json").read_text())


@pytest.mark.distributed
def test_two_ranks_both_refuse_a_run_folder_of_another_command(tiny_model_dir, reference_run, tmp_path):
    """Rank 0 checks the folder; its refusal reaches rank 1 too, so both print it and torchrun fails instead of hanging."""
    out = tmp_path / "other"
    out.mkdir()
    (out / "config.json").write_text((reference_run / "config.json").read_text())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "harness", *run_args(tiny_model_dir, out, "--seed", "3")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode != 0
    refusals = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert refusals == [f"error: {out} holds a run with a different configuration; "
                        "pass a new --out to start another"] * 2, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_default_run_dir_has_no_colons():
    from harness.runner import RunConfig, default_out

    config = RunConfig(policy="kvpress:KnormPress:0.5", suite="lm-eval:toy_passkey", cache_size=0.5)
    assert default_out(config, "smollm2") == Path("runs") / "lm-eval_toy_passkey" / "kvpress_KnormPress_0.5-cs0.5-smollm2"


@pytest.mark.parametrize("command", [
    ["fit", "--stages", "passkey:1", "--out"],
    ["namm-init", "--out"],
    ["bench", "--out"],
])
def test_every_command_refuses_a_bad_device_in_one_line(command, tmp_path, capsys):
    """``fit``, ``namm-init`` and ``bench`` check ``--device`` like ``run``: one line, exit 2, nothing written."""
    out = tmp_path / "never"
    assert main([*command, str(out), "--device", "tpu"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: --device 'tpu' is not a device; use cpu, cuda, cuda:N or mps"], lines
    assert not out.exists()
