"""`python -m harness bench`: one process per configuration, rows with dtype and policy time, the
table's ratios against the full cache of the same dtype and length, bad input as one line."""

import json

import pytest

from harness.bench import markdown_table
from harness.cli import main


def test_bench_rows_and_table(tiny_model_dir, tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "--model", str(tiny_model_dir), "--policies", "full,h2o,namm_bam", "--lengths", "192",
            "--cache-size", "0.25", "--n-up", "32", "--decode-tokens", "4", "--threads", "1",
            "--dtype", "bfloat16", "--repeats", "2", "--out", str(out)]
    assert main(args) == 0
    (jsonl,) = out.glob("*.jsonl")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(r["policy"], r["length"], r["dtype"]) for r in rows] == [
        ("full", 192, "bfloat16"), ("h2o", 192, "bfloat16"), ("namm_bam", 192, "bfloat16")]
    full, h2o, namm = rows
    assert full["budget"] is None and full["policy_s"] == 0.0
    assert all(r["repeats"] == 2 and r["warmup"] == 0 and r["peak_memory_kind"] == "cpu_peak_rss" for r in rows)
    # KV bytes: the tiny model's 2 layers x 2 KV heads x 16 dims x K and V x 2 bytes (bf16)
    assert full["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 2
    assert full["kv_cache_mb"] == round(196 * 256 / 2**20, 2) and h2o["kv_cache_mb"] < full["kv_cache_mb"]
    assert full["final_cache_physical"] == 192 + 4  # the prompt and the fed-back tokens
    assert h2o["budget"] == 48 and h2o["final_cache_physical"] < 192  # 25% of the prompt (+ < n_up)
    assert h2o["policy_s"] > 0 and 0 < h2o["policy_fraction"] < 1
    assert namm["policy_s"] > 0 and namm["features_s"] > 0 and namm["scorer_s"] > 0
    table = jsonl.with_suffix(".md").read_text()
    assert "| h2o | bfloat16 | 192 | 48 |" in table
    assert f"| {1 - h2o['final_cache_physical'] / 196:.0%} |" in table  # KV saved against the full cache
    ratio = h2o["prefill_tok_s"] / full["prefill_tok_s"]
    assert f"| {ratio:.2f}x |" in table


def test_table_ratios_compare_the_same_dtype_only():
    rows = [{"policy": "full", "dtype": "float32", "length": 8, "budget": None, "final_cache_physical": 8,
             "prefill_tok_s": 100.0, "decode_tok_s": 10.0, "peak_rss_mb": 1, "policy_s": 0, "policy_fraction": 0},
            {"policy": "h2o", "dtype": "float32", "length": 8, "budget": 2, "final_cache_physical": 2,
             "prefill_tok_s": 150.0, "decode_tok_s": 20.0, "peak_rss_mb": 1, "policy_s": 1, "policy_fraction": 0.1},
            {"policy": "h2o", "dtype": "bfloat16", "length": 8, "budget": 2, "final_cache_physical": 2, "kv_cache_mb": 0.1,
             "prefill_tok_s": 300.0, "decode_tok_s": 40.0, "peak_rss_mb": 1, "policy_s": 1, "policy_fraction": 0.1}]
    lines = markdown_table(rows).splitlines()
    assert "| 1.50x | 20.0 | 2.00x |" in lines[3] and "| 75% |" in lines[3]  # 2 of 8 tokens kept
    assert lines[4].count("n/a") == 3  # no bf16 full-cache row to compare with: KV saved, prefill, decode


@pytest.mark.parametrize("extra, message", [
    (["--dtype", "float8"], "unknown --dtype 'float8'"),
    (["--lengths", "2k"], "--lengths must be comma-separated integers"),
    (["--policies", "nope"], "unknown policy 'nope'"),
    (["--policy-checkpoint", "/nonexistent/namm.safetensors"], "--policy-checkpoint /nonexistent/namm.safetensors: no such file"),
])
def test_bench_bad_input_is_one_line(extra, message, tmp_path, capsys):
    assert main(["bench", "--out", str(tmp_path / "b"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_namm_parts_script_prints_one_timed_row_per_size():
    """scripts/namm_parts.py (the bench README's scorer/stream timings) runs and reports positive times."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "namm_parts.py"
    done = subprocess.run([sys.executable, str(script), "--tokens", "544,600"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 5") or line.startswith("| 6")]
    assert [r.split("|")[1].strip() for r in rows] == ["544", "600"]
    for row in rows:
        values = [float(v) for v in row.strip("|").split("|")[1:]]
        assert len(values) == 4 and all(v > 0 for v in values)


def test_bench_keeps_the_rows_measured_before_a_failure(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Rows are written as each configuration finishes: the second configuration failing leaves the
    first one's row (and its table) on disk."""
    import subprocess

    import harness.bench as bench

    real_run, calls = subprocess.run, []

    def run(cmd, **kw):
        calls.append(cmd)
        if len(calls) == 2:
            return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="simulated crash")
        return real_run(cmd, **kw)

    monkeypatch.setattr(bench.subprocess, "run", run)
    out = tmp_path / "bench"
    args = ["bench", "--model", str(tiny_model_dir), "--policies", "full,h2o", "--lengths", "96", "--n-up", "32",
            "--decode-tokens", "2", "--threads", "1", "--out", str(out)]
    with pytest.raises(SystemExit, match="bench of h2o at 96 tokens failed"):
        main(args)
    (jsonl,) = out.glob("*.jsonl")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(r["policy"], r["length"]) for r in rows] == [("full", 96)]
    assert "| full |" in jsonl.with_suffix(".md").read_text()
    assert "simulated crash" in capsys.readouterr().err
