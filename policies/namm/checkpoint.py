"""The NAMM checkpoint format: a ``.safetensors`` file plus a JSON sidecar. Never pickle.

``<name>.safetensors`` holds three float32 tensors:

- ``params``: ``[n_params]``, the flat scorer parameter vector (layout: ``SCORERS[arch]().layout()``)
- ``norm_mean``, ``norm_var``: ``[17]``, the frozen per-frequency z-score statistics of the
  spectrogram features

``<name>.json`` (``path.with_suffix(".json")``)::

    {"format": "namm-checkpoint", "version": 1, "architecture": "bam", "n_params": 4172,
     "hyperparameters": {...}, "fitted_on": {...}, "fitness": {...},
     "tensors_sha256": "<sha256 of the .safetensors bytes>"}

``tensors_sha256`` ties the pair together: a sidecar next to a different/stale tensor file is
rejected. Both files are written atomically (temporary file in the same folder + ``os.replace``),
tensors first. Every problem found by :func:`load_checkpoint` raises :class:`CheckpointError` with
one line saying what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from policies.namm.scorers import SCORERS

FORMAT = "namm-checkpoint"
VERSION = 1
N_FREQS = 17
TENSOR_NAMES = ("params", "norm_mean", "norm_var")


class CheckpointError(ValueError):
    """A NAMM checkpoint that cannot be written or loaded; the message says what to do."""


@dataclass
class Checkpoint:
    architecture: str
    n_params: int
    params: torch.Tensor  # [n_params] float32
    norm_mean: torch.Tensor  # [17] float32
    norm_var: torch.Tensor  # [17] float32
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    fitted_on: dict[str, Any] = field(default_factory=dict)
    fitness: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None  # of the .safetensors bytes (set by load_checkpoint)


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a checkpoint: same name, ``.json`` suffix."""
    return Path(path).with_suffix(".json")


def _n_params_for(architecture: str, where: str) -> int:
    if architecture not in SCORERS:
        raise CheckpointError(
            f"{where}: unknown architecture {architecture!r}; known architectures: {sorted(SCORERS)}")
    return SCORERS[architecture]().n_params


def _check_tensors(params: torch.Tensor, norm_mean: torch.Tensor, norm_var: torch.Tensor,
                   n_params: int, architecture: str, where: str, fix: str) -> None:
    expected = {"params": (n_params,), "norm_mean": (N_FREQS,), "norm_var": (N_FREQS,)}
    for name, t in (("params", params), ("norm_mean", norm_mean), ("norm_var", norm_var)):
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}; {fix}")
        if tuple(t.shape) != expected[name]:
            extra = f" (architecture {architecture!r} has {n_params} parameters)" if name == "params" else ""
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {list(t.shape)}, expected {list(expected[name])}{extra}; {fix}")
        if not t.is_floating_point():
            raise CheckpointError(f"{where}: tensor {name!r} has dtype {t.dtype}, expected float32; {fix}")
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{where}: tensor {name!r} has {bad} non-finite value(s) (NaN/inf); {fix}")
    if bool((norm_var < 0).any()):
        raise CheckpointError(f"{where}: tensor 'norm_var' has negative variances; {fix}")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_checkpoint(path: str | os.PathLike, *, architecture: str, params: torch.Tensor,
                    norm_mean: torch.Tensor, norm_var: torch.Tensor, hyperparameters: dict,
                    fitted_on: dict, fitness: dict) -> Path:
    """Write ``path`` (``.safetensors``) and its JSON sidecar atomically; returns ``path``.

    Tensors are stored as float32 (a float64 input is rounded). The dicts must be JSON-serialisable
    (strict JSON: no NaN/inf).
    """
    from safetensors.torch import save

    path = Path(path)
    where = f"save_checkpoint({str(path)!r})"
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{where}: the checkpoint path must end in .safetensors")
    n_params = _n_params_for(architecture, where)
    fix = "pass the tensors produced for this architecture"
    _check_tensors(params, norm_mean, norm_var, n_params, architecture, where, fix)
    tensors = {name: t.detach().to(device="cpu", dtype=torch.float32).contiguous()
               for name, t in (("params", params), ("norm_mean", norm_mean), ("norm_var", norm_var))}
    for name, d in (("hyperparameters", hyperparameters), ("fitted_on", fitted_on), ("fitness", fitness)):
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: {name} must be a dict, got {type(d).__name__}")
    data = save(tensors, metadata={"format": FORMAT, "version": str(VERSION), "architecture": architecture})
    meta = {
        "format": FORMAT, "version": VERSION, "architecture": architecture, "n_params": n_params,
        "hyperparameters": hyperparameters, "fitted_on": fitted_on, "fitness": fitness,
        "tensors_sha256": hashlib.sha256(data).hexdigest(),
    }
    try:
        text = json.dumps(meta, indent=2, sort_keys=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{where}: hyperparameters/fitted_on/fitness are not strict JSON ({e}); "
            "use plain str/int/float/bool/list/dict values without NaN/inf") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, data)
    _atomic_write_bytes(sidecar_path(path), text.encode("utf-8"))
    return path


def load_checkpoint(path: str | os.PathLike, expect_architecture: str | None = None) -> Checkpoint:
    """Load and validate a checkpoint written by :func:`save_checkpoint` (safetensors + JSON only).

    ``path`` may name the ``.safetensors`` file or its ``.json`` sidecar. Raises
    :class:`CheckpointError` for anything missing, corrupt, inconsistent or unexpected.
    """
    from safetensors.torch import load

    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    side = sidecar_path(path)
    where = f"NAMM checkpoint {str(path)!r}"
    resave = "re-save it with policies.namm.checkpoint.save_checkpoint"

    # --- sidecar ---
    if not path.is_file():
        raise CheckpointError(f"{where}: file not found; check the path (expected a .safetensors file "
                              "written by save_checkpoint)")
    if not side.is_file():
        raise CheckpointError(f"{where}: JSON sidecar {str(side)!r} not found; copy it next to the "
                              f"tensor file (both are needed) or {resave}")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{where}: sidecar {str(side)!r} is not valid JSON ({e}); "
                              f"restore it from a good copy or {resave}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: sidecar {str(side)!r} must hold a JSON object; {resave}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: sidecar format is {meta.get('format')!r}, expected {FORMAT!r}; "
                              "this is not a NAMM checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{where}: format version {meta.get('version')!r} is not supported (this code "
                              f"reads version {VERSION}); use a matching version of the harness or {resave}")
    for key in ("architecture", "n_params", "hyperparameters", "fitted_on", "fitness"):
        if key not in meta:
            raise CheckpointError(f"{where}: sidecar lacks the {key!r} field; {resave}")
    arch = meta["architecture"]
    if not isinstance(arch, str):
        raise CheckpointError(f"{where}: sidecar 'architecture' must be a string, got {arch!r}; {resave}")
    for key in ("hyperparameters", "fitted_on", "fitness"):
        if not isinstance(meta[key], dict):
            raise CheckpointError(f"{where}: sidecar {key!r} must be a JSON object; {resave}")
    n_expected = _n_params_for(arch, where)
    n_params = meta["n_params"]
    if not isinstance(n_params, int) or isinstance(n_params, bool) or n_params != n_expected:
        raise CheckpointError(
            f"{where}: sidecar says n_params={n_params!r} but architecture {arch!r} has {n_expected} "
            f"parameters; the checkpoint was made for a different network, {resave}")
    if expect_architecture is not None and arch != expect_architecture:
        raise CheckpointError(
            f"{where}: architecture is {arch!r} but {expect_architecture!r} was expected; load a "
            f"{expect_architecture!r} checkpoint or select the {arch!r} scorer")

    # --- tensors ---
    data = path.read_bytes()
    try:
        tensors = load(data)
    except Exception as e:  # safetensors raises its own error type (and others) for bad headers
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{where}: not a readable safetensors file ({msg}); the file is truncated or "
                              f"corrupt, restore it or {resave}") from None
    sha256 = hashlib.sha256(data).hexdigest()
    digest = meta.get("tensors_sha256")
    if digest is not None and sha256 != digest:
        raise CheckpointError(
            f"{where}: tensor file does not match its sidecar (sha256 differs: truncated, corrupted or "
            f"replaced); restore both files from the same save or {resave}")
    for name in TENSOR_NAMES:
        if name not in tensors:
            raise CheckpointError(f"{where}: tensor {name!r} missing (found {sorted(tensors)}); {resave}")
    for name in TENSOR_NAMES:
        if tensors[name].dtype != torch.float32:
            raise CheckpointError(
                f"{where}: tensor {name!r} has dtype {tensors[name].dtype}, expected float32; {resave}")
    _check_tensors(tensors["params"], tensors["norm_mean"], tensors["norm_var"], n_expected, arch, where, resave)
    return Checkpoint(
        architecture=arch, n_params=n_expected, params=tensors["params"], norm_mean=tensors["norm_mean"],
        norm_var=tensors["norm_var"], hyperparameters=meta["hyperparameters"], fitted_on=meta["fitted_on"],
        fitness=meta["fitness"], path=path, sha256=sha256)
