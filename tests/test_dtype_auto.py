"""``--dtype auto``, every command's default: bfloat16 on CUDA, the command's CPU default elsewhere
(float32 for run, bench, namm-init and lm-eval; bfloat16 for fit where the CPU has bf16 arithmetic,
else float32), resolved before it is recorded."""

import json
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.devices import resolve_dtype
from harness.errors import UsageError


@pytest.mark.parametrize("dtype,device,cpu_default,expect", [
    ("auto", "cpu", "float32", "float32"),
    (None, "cpu", "float32", "float32"),
    ("auto", "cuda", "float32", "bfloat16"),
    ("auto", "cuda:1", "float32", "bfloat16"),
    ("auto", "mps", "float32", "float32"),
    ("float16", "cuda", "float32", "float16"),
    ("float32", "cuda", "bfloat16", "float32"),
])
def test_the_rule(dtype, device, cpu_default, expect):
    assert resolve_dtype(dtype, device, cpu_default) == expect


@pytest.mark.parametrize("native,expect", [(True, "bfloat16"), (False, "float32")])
def test_a_bf16_cpu_default_needs_bf16_arithmetic(monkeypatch, native, expect):
    """fit's CPU default is bf16 only where the CPU computes it (AVX512-BF16 or AMX); elsewhere torch
    emulates bf16 and a forward is slower than in fp32, so ``auto`` is float32 there."""
    import harness.devices as devices

    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False)
    if native:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert devices.cpu_computes_bf16() is native
    assert resolve_dtype("auto", "cpu", "bfloat16") == expect
    assert resolve_dtype("auto", "cuda", "bfloat16") == "bfloat16"  # CUDA never falls back
    assert resolve_dtype("bfloat16", "cpu", "float32") == "bfloat16"  # an explicit dtype is kept


def test_unknown_dtype_is_one_line():
    with pytest.raises(UsageError, match=r"^unknown --dtype 'float8'; choose one of: auto, bfloat16, float16, float32$"):
        resolve_dtype("float8", "cpu")


def _run_args(model_dir, out, *extra):
    return ["run", "--model", str(model_dir), "--suite", "niah", "--tasks", "passkey", "--suite-arg", "lengths=100",
            "--suite-arg", "depths=0", "--max-length", "300", "--out", str(out), "--quiet", *extra]


def test_run_records_the_concrete_dtype_and_resumes_across_auto(tiny_model_dir, tmp_path):
    """A run directory made with --dtype float32 resumes without --dtype on CPU (and one made with the
    default resumes with --dtype float32); one made in bfloat16 is another run."""
    explicit, default = tmp_path / "explicit", tmp_path / "default"
    assert main(_run_args(tiny_model_dir, explicit, "--dtype", "float32")) == 0
    assert main(_run_args(tiny_model_dir, default)) == 0
    for out in (explicit, default):
        saved = json.loads((out / "config.json").read_text())
        assert saved["run"]["dtype"] == "float32" and saved["provenance"]["dtype"] == "float32"
    before = (explicit / "records.jsonl").read_text()
    assert main(_run_args(tiny_model_dir, explicit)) == 0
    assert main(_run_args(tiny_model_dir, default, "--dtype", "float32")) == 0
    assert (explicit / "records.jsonl").read_text() == before
    assert main(_run_args(tiny_model_dir, explicit, "--dtype", "bfloat16")) == 2


@pytest.mark.parametrize("native,expect", [(True, "bfloat16"), (False, "float32")])
def test_fit_resolves_auto_to_its_cpu_default(monkeypatch, tmp_path, native, expect):
    import harness.devices as devices
    import harness.fit.loop as loop

    monkeypatch.setattr(devices, "cpu_computes_bf16", lambda: native)

    seen = []

    class Stop(Exception):
        pass

    def capture(config, out, **kwargs):
        seen.append(config.dtype)
        raise Stop

    monkeypatch.setattr(loop, "Fit", capture)
    with pytest.raises(Stop):
        main(["fit", "--stages", "passkey:1", "--out", str(tmp_path / "fit")])
    assert loop.DEFAULT_FIT_DTYPE == "bfloat16" and seen == [expect]


def test_namm_init_resolves_auto_before_loading(monkeypatch, tmp_path):
    import harness.models

    seen = []

    class Stop(Exception):
        pass

    def capture(spec=None, device="cpu", dtype="float32", **options):
        seen.append(dtype)
        raise Stop

    monkeypatch.setattr(harness.models, "load_model", capture)
    with pytest.raises(Stop):
        main(["namm-init", "--out", str(tmp_path / "ckpt.safetensors")])
    assert seen == ["float32"]


def test_lm_eval_model_args_take_auto(monkeypatch):
    pytest.importorskip("lm_eval")
    from harness.lm_eval_model import model_settings

    assert model_settings(dtype="auto").config.dtype == "float32"  # this CPU machine
    assert model_settings().config.dtype == "float32"  # the default
    assert model_settings(dtype="bfloat16").config.dtype == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert model_settings(device="cuda:0").config.dtype == "bfloat16"
    with pytest.raises(UsageError, match="unknown dtype 'half'"):
        model_settings(dtype="half")


def test_readme_states_the_rule():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`--dtype auto`" in readme and "bfloat16 on CUDA" in readme
