"""What produced a run: code revision, library versions, device and dtype (``config.json``'s
``provenance``; shown by ``report``). Recorded, never compared: a run resumes under other code.

- ``code``: ``commit`` (``git rev-parse HEAD`` of the repository holding this package, when it is a
  git checkout; else ``None``), ``dirty`` (``git status --porcelain`` lists changes or untracked
  files; ``None`` without git) and ``version`` (the installed ``namm-harness`` distribution's).
- ``versions``: torch, transformers, datasets, lm-eval, kvpress (``"not installed"`` when absent).
- ``device``: the device string and its name (CUDA: ``torch.cuda.get_device_name``; CPU: the
  ``model name`` of ``/proc/cpuinfo``, else ``platform.processor()``); ``dtype``: the weights'.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the folder holding harness/ (a checkout, or site-packages)
DISTRIBUTION = "namm-harness"
NOT_INSTALLED = "not installed"
#: recorded libraries: name shown → (import name, distribution name)
LIBRARIES = {"torch": ("torch", "torch"), "transformers": ("transformers", "transformers"),
             "datasets": ("datasets", "datasets"), "lm-eval": ("lm_eval", "lm-eval"),
             "kvpress": ("kvpress", "kvpress")}
GIT_TIMEOUT_S = 5


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout if done.returncode == 0 else None


def code_revision() -> dict:
    """``{"commit", "dirty", "version"}`` of the code running now (see the module docstring)."""
    try:
        version = md.version(DISTRIBUTION)
    except md.PackageNotFoundError:
        version = None
    commit = dirty = None
    top = _git("rev-parse", "--show-toplevel")
    # only this package's own checkout: an installed copy inside some other repository is not one
    if top is not None and Path(top.strip()).resolve() == ROOT:
        head = _git("rev-parse", "HEAD")
        commit = head.strip() if head else None
        status = _git("status", "--porcelain") if commit else None
        dirty = None if status is None else bool(status.strip())
    return {"commit": commit, "dirty": dirty, "version": version}


def library_version(import_name: str, distribution: str) -> str:
    """The version of a library: the imported module's ``__version__`` when it is loaded already (what
    this process runs), else the installed distribution's; ``"not installed"`` when there is none.
    Nothing is imported here."""
    module = sys.modules.get(import_name)
    if module is not None and getattr(module, "__version__", None):
        return str(module.__version__)
    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        pass
    try:
        found = importlib.util.find_spec(import_name) is not None
    except (ImportError, ValueError):
        found = False
    return "unknown version" if found else NOT_INSTALLED


def library_versions() -> dict[str, str]:
    return {name: library_version(*names) for name, names in LIBRARIES.items()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str) -> str:
    """A human name of ``device`` (``cpu``, ``cuda``, ``cuda:1``, ``mps`` ...)."""
    kind = str(device).split(":", 1)[0]
    if kind == "cuda":
        import torch

        try:
            return torch.cuda.get_device_name(device)
        except (RuntimeError, AssertionError, ValueError):
            return "unknown CUDA device"
    if kind == "cpu":
        return _cpu_name()
    return kind


def gather(device: str, dtype: str) -> dict:
    """The provenance block of a run's ``config.json``."""
    return {"code": code_revision(), "versions": library_versions(),
            "device": {"name": str(device), "model": device_name(device)}, "dtype": str(dtype)}


# ---- short texts for the report -----------------------------------------------------------------

def commit_text(prov: dict | None) -> str:
    """``abc1234`` (``abc1234+dirty`` for uncommitted changes), ``v0.1.0`` without git, ``?`` unknown."""
    code = (prov or {}).get("code") or {}
    if code.get("commit"):
        return str(code["commit"])[:7] + ("+dirty" if code.get("dirty") else "")
    return f"v{code['version']}" if code.get("version") else "?"


def short_text(prov: dict | None) -> str:
    """``commit · dtype · device`` for a runs-table cell."""
    if not prov:
        return "not recorded"
    device = prov.get("device") or {}
    return " · ".join([commit_text(prov), str(prov.get("dtype") or "?"), str(device.get("model") or device.get("name")
                                                                          or "?")])


def versions_text(prov: dict | None) -> str:
    """``torch 2.13.0, transformers 5.2.0, ...`` (a footnote)."""
    versions = (prov or {}).get("versions") or {}
    names = [n for n in LIBRARIES if n in versions] + sorted(set(versions) - set(LIBRARIES))
    return ", ".join(f"{n} {versions[n]}" for n in names) or "not recorded"
