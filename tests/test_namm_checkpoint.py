"""NAMM checkpoint format: bit-exact round trip, and one clear CheckpointError per kind of damage."""

import json
import os
import pickle

import pytest
import torch

from policies.namm.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint

torch.set_num_threads(1)

N_BAM = 4172
N_MLP = 1326
HYPER = {"sigma0": 0.065, "population": 32, "elite_ratio": 0.5, "gamma": 0.99, "n_up": 512,
         "stages": ["passage_retrieval_en"], "nested": {"a": [1, 2.5, None, True]}}
FITTED = {"model": "SmolLM2-135M", "tasks": ["passage_retrieval_en"], "generations": 300, "seed": 0}
FITNESS = {"mean_normalised": 1.0125, "per_task": {"passage_retrieval_en": 1.0125}}


def _tensors(n=N_BAM, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(n, generator=g) * 0.065
    params[0] = float.fromhex("0x1.fffffep-1")  # odd bit patterns survive
    params[1] = -0.0
    params[2] = 1e-40  # subnormal
    return params, torch.randn(17, generator=g), torch.rand(17, generator=g) + 0.1


def _save(path, arch="bam", n=N_BAM, **over):
    params, mean, var = _tensors(n)
    kw = dict(architecture=arch, params=params, norm_mean=mean, norm_var=var,
              hyperparameters=HYPER, fitted_on=FITTED, fitness=FITNESS)
    kw.update(over)
    return save_checkpoint(path, **kw)


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "namm_bam.safetensors"
    _save(path)
    return path


def _expect_error(path, *fragments, **kw):
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path, **kw)
    msg = str(ei.value)
    assert "\n" not in msg, msg
    assert str(path.name) in msg or str(path.with_suffix(".safetensors").name) in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


def _rewrite_sidecar(path, **changes):
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta.update(changes)
    side.write_text(json.dumps(meta))


def _write_safetensors(path, tensors, fix_sidecar=True):
    from safetensors.torch import save_file
    save_file(tensors, str(path))
    if fix_sidecar:
        import hashlib
        _rewrite_sidecar(path, tensors_sha256=hashlib.sha256(path.read_bytes()).hexdigest())


# --- round trip ------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch,n", [("bam", N_BAM), ("mlp", N_MLP)])
def test_round_trip_bit_exact(tmp_path, arch, n):
    path = tmp_path / "sub" / f"namm_{arch}.safetensors"
    params, mean, var = _tensors(n)
    ret = save_checkpoint(path, architecture=arch, params=params, norm_mean=mean, norm_var=var,
                          hyperparameters=HYPER, fitted_on=FITTED, fitness=FITNESS)
    assert ret == path and path.is_file() and path.with_suffix(".json").is_file()
    ck = load_checkpoint(path, expect_architecture=arch)
    assert isinstance(ck, Checkpoint)
    assert ck.architecture == arch and ck.n_params == n
    for got, want in ((ck.params, params), (ck.norm_mean, mean), (ck.norm_var, var)):
        assert got.dtype == torch.float32
        assert torch.equal(got, want)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))  # bit-exact, -0.0 included
    assert ck.hyperparameters == HYPER and ck.fitted_on == FITTED and ck.fitness == FITNESS
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["format"] == "namm-checkpoint" and meta["version"] == 1
    assert meta["architecture"] == arch and meta["n_params"] == n
    assert meta["hyperparameters"] == HYPER and meta["fitted_on"] == FITTED and meta["fitness"] == FITNESS
    # the sidecar path is accepted too; no temporary files are left behind
    assert torch.equal(load_checkpoint(path.with_suffix(".json")).params, params)
    assert sorted(p.name for p in path.parent.iterdir()) == [f"namm_{arch}.json", f"namm_{arch}.safetensors"]


def test_overwrite_is_atomic_replace(ckpt):
    params2 = torch.zeros(N_BAM)
    _save(ckpt, params=params2)
    assert torch.equal(load_checkpoint(ckpt).params, params2)
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["namm_bam.json", "namm_bam.safetensors"]


# --- save-time validation ----------------------------------------------------------------------------

def test_save_rejects_bad_inputs(tmp_path):
    p = tmp_path / "x.safetensors"
    with pytest.raises(CheckpointError, match="4172"):
        _save(p, params=torch.zeros(N_BAM - 1))
    with pytest.raises(CheckpointError, match="unknown architecture"):
        _save(p, arch="transformer")
    with pytest.raises(CheckpointError, match="non-finite"):
        _save(p, norm_mean=torch.full((17,), float("nan")))
    with pytest.raises(CheckpointError, match="JSON"):
        _save(p, fitness={"x": float("nan")})
    with pytest.raises(CheckpointError, match=".safetensors"):
        _save(tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


# --- load-time damage ------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.safetensors", "not found")


def test_missing_sidecar(ckpt):
    ckpt.with_suffix(".json").unlink()
    _expect_error(ckpt, "sidecar", "not found")


def test_invalid_json_sidecar(ckpt):
    ckpt.with_suffix(".json").write_text('{"format": "namm-checkpoint", "version": 1,')
    _expect_error(ckpt, "not valid JSON")


def test_wrong_format_and_version(ckpt):
    _rewrite_sidecar(ckpt, format="something-else")
    _expect_error(ckpt, "format", "not a NAMM checkpoint")
    _rewrite_sidecar(ckpt, format="namm-checkpoint", version=2)
    _expect_error(ckpt, "version 2")


def test_missing_sidecar_field(ckpt):
    side = ckpt.with_suffix(".json")
    meta = json.loads(side.read_text())
    del meta["fitness"]
    side.write_text(json.dumps(meta))
    _expect_error(ckpt, "'fitness'")


def test_truncated_tensor_file(ckpt):
    data = ckpt.read_bytes()
    for cut in (len(data) - 10, len(data) // 2, 100, 5, 0):
        ckpt.write_bytes(data[:cut])
        _expect_error(ckpt, "truncated")


def test_garbage_tensor_file(ckpt):
    size = ckpt.stat().st_size
    ckpt.write_bytes(os.urandom(size))
    _expect_error(ckpt, "safetensors")
    ckpt.write_bytes(b"\xff" * size)
    _expect_error(ckpt, "safetensors")


def test_flipped_bytes_in_data_detected(ckpt):
    data = bytearray(ckpt.read_bytes())
    data[-7] ^= 0xFF  # inside the tensor data: still parses, but no longer the saved tensors
    ckpt.write_bytes(bytes(data))
    _expect_error(ckpt, "does not match its sidecar")


class _Boom:
    """Unpickling this creates a marker file: proves whether a loader ever unpickles."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_file_is_never_unpickled(ckpt, tmp_path, monkeypatch):
    marker = tmp_path / "UNPICKLED"
    payload = {"params": _Boom(marker), "norm_mean": torch.zeros(17), "norm_var": torch.ones(17)}
    ckpt.write_bytes(pickle.dumps(payload))

    def forbidden(*a, **k):
        raise AssertionError("pickle used while loading a checkpoint")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    _expect_error(ckpt, "safetensors")
    # torch.save's zip format with a .safetensors name is rejected the same way
    monkeypatch.undo()
    torch.save({"params": torch.zeros(N_BAM)}, ckpt)
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    _expect_error(ckpt, "safetensors")
    assert not marker.exists()


def test_missing_tensor(ckpt):
    _, mean, var = _tensors()
    _write_safetensors(ckpt, {"norm_mean": mean, "norm_var": var})
    _expect_error(ckpt, "'params' missing")


def test_wrong_shapes(ckpt):
    params, mean, var = _tensors()
    _write_safetensors(ckpt, {"params": params[:-1].clone(), "norm_mean": mean, "norm_var": var})
    _expect_error(ckpt, "'params'", "4172")
    _write_safetensors(ckpt, {"params": params, "norm_mean": mean[:16].clone(), "norm_var": var})
    _expect_error(ckpt, "'norm_mean'", "[17]")
    _write_safetensors(ckpt, {"params": params.reshape(4, 1043).clone(), "norm_mean": mean, "norm_var": var})
    _expect_error(ckpt, "'params'", "shape")


def test_wrong_dtype(ckpt):
    params, mean, var = _tensors()
    _write_safetensors(ckpt, {"params": params.double(), "norm_mean": mean, "norm_var": var})
    _expect_error(ckpt, "float32")


def test_n_params_mismatch(ckpt):
    _rewrite_sidecar(ckpt, n_params=4000)
    _expect_error(ckpt, "n_params=4000", "4172")
    # sidecar claims mlp, tensors are bam-sized
    _rewrite_sidecar(ckpt, architecture="mlp", n_params=N_MLP)
    _expect_error(ckpt, "'params'", str(N_MLP))


def test_unknown_architecture(ckpt):
    _rewrite_sidecar(ckpt, architecture="lstm")
    _expect_error(ckpt, "unknown architecture 'lstm'")


def test_architecture_mismatch(ckpt):
    msg = _expect_error(ckpt, "'bam'", "'mlp'", expect_architecture="mlp")
    assert "expected" in msg
    assert load_checkpoint(ckpt, expect_architecture="bam").architecture == "bam"


def test_non_finite_values(ckpt):
    params, mean, var = _tensors()
    params[17] = float("nan")
    _write_safetensors(ckpt, {"params": params, "norm_mean": mean, "norm_var": var})
    _expect_error(ckpt, "non-finite", "'params'")
    params[17] = 0.0
    var[3] = float("inf")
    _write_safetensors(ckpt, {"params": params, "norm_mean": mean, "norm_var": var})
    _expect_error(ckpt, "non-finite", "'norm_var'")


def test_error_is_value_error():
    assert issubclass(CheckpointError, ValueError)
