"""Provenance (harness/provenance.py): what a run's config.json records about the code, libraries,
device and dtype that made it; resuming under other code; the report's runs table."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import shutil
import subprocess

import pytest

from harness import provenance
from harness.cli import main
from harness.report import command as report_command


def installed(distribution: str) -> str:
    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return "not installed"


def git_head() -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(provenance.ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prov") / "run"
    assert main(["run", "--model", str(tiny_model_dir), "--suite", "niah", "--tasks", "passkey", "--limit", "1",
                 "--policy", "h2o", "--cache-size", "64", "--n-up", "32", "--out", str(out), "--quiet"]) == 0
    return out


def test_config_records_provenance(run_dir):
    import datasets
    import torch
    import transformers

    prov = json.loads((run_dir / "config.json").read_text())["provenance"]
    assert prov["versions"]["torch"] == torch.__version__
    assert prov["versions"]["transformers"] == transformers.__version__
    assert prov["versions"]["datasets"] == datasets.__version__
    assert prov["versions"]["lm-eval"] == installed("lm-eval")
    assert prov["versions"]["kvpress"] == installed("kvpress")
    assert prov["dtype"] == "float32"
    assert prov["device"]["name"] == "cpu" and prov["device"]["model"] == provenance.device_name("cpu") != ""
    code = prov["code"]
    assert code["version"] == installed("namm-harness")
    head = git_head()
    if head is not None and (provenance.ROOT / ".git").exists():
        assert code["commit"] == head and isinstance(code["dirty"], bool)
    else:
        assert code["commit"] is None


def _under_other_code(run_dir, path):
    """A copy of ``run_dir`` at ``path`` whose config says it was made by other code and torch."""
    shutil.copytree(run_dir, path)
    config = json.loads((path / "config.json").read_text())
    config["provenance"]["code"] = {"commit": "0" * 40, "dirty": False, "version": "0.0.1"}
    config["provenance"]["versions"]["torch"] = "1.0"
    (path / "config.json").write_text(json.dumps(config))
    return config


def test_resume_under_other_code_runs_and_is_noted(run_dir, tiny_model_dir, tmp_path):
    other = tmp_path / "run"
    config = _under_other_code(run_dir, other)
    (other / "records.jsonl").write_text("")  # its sample still to do
    args = ["run", "--model", str(tiny_model_dir), "--suite", "niah", "--tasks", "passkey", "--limit", "2",
            "--policy", "h2o", "--cache-size", "64", "--n-up", "32", "--out", str(other), "--quiet"]
    assert main(args) == 2  # --limit is part of the run's identity: still refused
    args[args.index("--limit") + 1] = "1"
    assert main(args) == 0
    assert len((other / "records.jsonl").read_text().splitlines()) == 1
    again = json.loads((other / "config.json").read_text())
    assert again["run"] == config["run"] and again["provenance"] == config["provenance"]  # the original stays
    current = json.loads((run_dir / "config.json").read_text())["provenance"]
    assert again["provenance_resumed"] == [current]
    (other / "records.jsonl").write_text("")
    assert main(args) == 0
    assert json.loads((other / "config.json").read_text())["provenance_resumed"] == [current]  # noted once


def test_resume_of_a_complete_run_is_not_noted(run_dir, tiny_model_dir, tmp_path):
    other = tmp_path / "run"
    config = _under_other_code(run_dir, other)
    records_before = (other / "records.jsonl").read_text()
    args = ["run", "--model", str(tiny_model_dir), "--suite", "niah", "--tasks", "passkey", "--limit", "1",
            "--policy", "h2o", "--cache-size", "64", "--n-up", "32", "--out", str(other), "--quiet"]
    assert main(args) == 0
    assert (other / "records.jsonl").read_text() == records_before
    assert json.loads((other / "config.json").read_text()) == config  # no resume noted: no record was written


def report(out, *runs):
    parser = argparse.ArgumentParser()
    report_command.add_arguments(parser)
    assert report_command.main(parser.parse_args([*map(str, runs), "--out", str(out), "--no-figures"])) == 0
    return (out / "report.md").read_text()


def test_report_shows_commit_dtype_device_and_versions(run_dir, tmp_path):
    prov = json.loads((run_dir / "config.json").read_text())["provenance"]
    text = report(tmp_path / "rep", run_dir)
    (row,) = [ln for ln in text.splitlines() if ln.startswith("| ") and str(run_dir) in ln]
    assert f"| {provenance.commit_text(prov)} · float32 · {prov['device']['model']} |" in row
    if prov["code"]["commit"]:
        assert prov["code"]["commit"][:7] in row
    assert f"Versions: torch {prov['versions']['torch']}, transformers {prov['versions']['transformers']}" in text


def test_short_texts():
    prov = {"code": {"commit": "abcdef0123456789", "dirty": True, "version": "0.1.0"}, "dtype": "bfloat16",
            "device": {"name": "cuda:0", "model": "NVIDIA H200"},
            "versions": {"torch": "2.13.0", "kvpress": "not installed"}}
    assert provenance.short_text(prov) == "abcdef0+dirty · bfloat16 · NVIDIA H200"
    assert provenance.commit_text({"code": {"commit": None, "version": "0.1.0"}}) == "v0.1.0"
    assert provenance.short_text(None) == "not recorded"  # a run made before provenance was recorded
    assert provenance.versions_text(prov) == "torch 2.13.0, kvpress not installed"
    assert provenance.library_version("no_such_module_here", "no-such-distribution") == "not installed"
