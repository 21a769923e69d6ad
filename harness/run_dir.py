"""A run's directory: ``config.json`` written once, and checked on every resume.

A run directory belongs to one command: its identity (``RunConfig.identity()``) and, for policies
with weights, what those weights are. Resuming with either changed is refused, so one
``records.jsonl`` never mixes two configurations.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness import records
from harness.errors import UsageError


def prepare_run_dir(run_dir: Path, identity: dict, meta: dict) -> None:
    """Create the run dir with config.json, or check an existing one was made by the same command.

    Only the run's identity is compared; ``meta["provenance"]`` (code, versions, device) is not."""
    config_path = run_dir / "config.json"
    if config_path.exists():
        saved = json.loads(config_path.read_text())
        if saved.get("run") != identity:
            raise UsageError(f"{run_dir} holds a run with a different configuration; pass a new --out to start another")
        changed = weights_changed(saved.get("policy") or {}, meta.get("policy") or {})
        if changed:
            raise UsageError(f"{run_dir} was made with other policy weights ({changed}); the checkpoint file "
                             "changed since, so pass a new --out to run this one")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    records.write_json_atomic(config_path, {"run": identity, **meta})


WEIGHT_KEYS = ("checkpoint_sha256", "fitted_on", "gamma")  # what a policy's weights are, in describe()


def weights_changed(saved: dict, current: dict) -> str:
    """Which of a policy's weight descriptions differ between a run's config and now ("" if none).

    The run's identity names a checkpoint by path (or not at all: the shipped default), and a path
    can hold other weights later (a new default, a fit's moving ``best.safetensors``): resuming
    would then mix two policies in one run. Keys missing on either side (runs made before they were
    recorded) are not compared."""
    diffs = []
    for key in WEIGHT_KEYS:
        if key in saved and key in current and saved[key] != current[key]:
            if key == "fitted_on":
                diffs.append("fitted_on differs")
                continue
            a, b = (str(v)[:12] if key == "checkpoint_sha256" and v else v for v in (saved[key], current[key]))
            diffs.append(f"{key} {a} then, {b} now")
    return "; ".join(diffs)


def note_resume(run_dir: Path, meta: dict) -> None:
    """Append ``meta["provenance"]`` to config.json's ``provenance_resumed`` when it differs from the
    run's own and is not listed yet. Called only when a resume has samples left to evaluate, so the
    list names exactly the code that wrote records after the first."""
    config_path = run_dir / "config.json"
    saved = json.loads(config_path.read_text())
    current = meta.get("provenance")
    resumed = saved.get("provenance_resumed", [])
    if current and current != saved.get("provenance") and current not in resumed:
        records.write_json_atomic(config_path, {**saved, "provenance_resumed": [*resumed, current]})
