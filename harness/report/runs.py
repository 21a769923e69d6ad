"""Read run directories (``config.json`` + ``records.jsonl``) and fit folders (``fit.jsonl``) for the
report, check them, and give every run a row label. Bad input → :class:`UsageError` naming the path.

A run's fitted tasks (for the "Test tasks" aggregate) come from ``config.json``'s
``policy.fitted_on`` when the runner records it there, else from the JSON sidecar of the policy's
checkpoint (``policy.checkpoint`` with a ``.json`` suffix: its ``fitted_on`` holds ``suite``,
``tasks``, ``stage``), looked up as given, relative to the run directory and to the current folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UsageError
from harness.report import paper

REQUIRED_FIELDS = ("task", "id", "score")


@dataclass
class Run:
    path: Path
    config: dict
    records: list[dict]
    fit: dict | None = None  # the checkpoint's ``fitted_on`` (suite, tasks, stage, ...)
    fit_problem: str | None = None  # why the fitted tasks are unknown (NAMM runs only)
    label: str = ""
    extra_files: list[str] = field(default_factory=list)  # rank files read alongside records.jsonl
    complete: bool | None = None  # metrics.json's "complete" (None: no metrics.json yet)

    @property
    def run(self) -> dict:
        return self.config.get("run", {})

    @property
    def policy_info(self) -> dict:
        return self.config.get("policy") or {}

    @property
    def suite(self) -> str:
        return str(self.run.get("suite", "?"))

    @property
    def policy(self) -> str:
        return str(self.run.get("policy") or self.policy_info.get("name", "?"))

    @property
    def is_full(self) -> bool:
        return self.policy == "full"

    @property
    def is_namm(self) -> bool:
        return self.policy.startswith("namm")

    @property
    def model(self) -> str:
        """Model identity: its short name, plus the GGUF file when there is one (never the folder,
        which differs between machines)."""
        model = self.config.get("model") or {}
        name = model.get("name") or self.run.get("model") or "?"
        return f"{name} ({model['gguf_file']})" if model.get("gguf_file") else str(name)

    @property
    def model_name(self) -> str:
        return str((self.config.get("model") or {}).get("name") or self.run.get("model") or "?")

    @property
    def budget(self):
        """Tokens per head (int), a fraction of the prompt (float < 1), or None (no limit / unknown)."""
        size = self.run.get("cache_size")
        if size is not None:
            return int(size) if size >= 1 else float(size)
        return self.policy_info.get("budget")

    def budget_text(self) -> str | None:
        """``25%`` / ``1024 tok`` (the budget), ``R = 0.5`` under ``--protocol kvpress`` (whose
        compression ratio sets the count, not the policy's budget), None for the full cache."""
        if self.is_full:
            return None
        if self.run.get("protocol") == "kvpress" and self.run.get("compression_ratio") is not None:
            aware = ", query-aware" if self.run.get("query_aware") else ""
            return f"R = {float(self.run['compression_ratio']):g}{aware}"
        b = self.budget
        if b is None:
            return None
        return f"{b * 100:g}%" if isinstance(b, float) and b < 1 else f"{int(b)} tok"


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """``(line number, record)`` of a JSON-lines file; a torn LAST line (a run still writing) is
    skipped, a malformed line anywhere else is an error naming ``file:line``."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    out = []
    for k, (lineno, line) in enumerate(numbered):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if k == len(numbered) - 1:
                break
            raise UsageError(f"{path}:{lineno}: malformed JSON line ({err.msg}); the run directory is corrupt")
        if not isinstance(obj, dict):
            raise UsageError(f"{path}:{lineno}: expected one JSON object per line")
        out.append((lineno, obj))
    return out


def load_run(path: str | Path) -> Run:
    """Read one run directory; :class:`UsageError` when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory; pass run directories written by `python -m harness run`")
    config_path, records_path = path / "config.json", path / "records.jsonl"
    if (path / "fit.jsonl").exists() and not records_path.exists():
        raise UsageError(f"{path} is a fit folder, not a run directory; pass it with --fit")
    rank_files = sorted(path.glob("records.rank*.jsonl"))
    if not config_path.is_file() or not (records_path.is_file() or rank_files):
        missing = " and ".join(p.name for p in (config_path, records_path) if not p.is_file())
        raise UsageError(f"{path} is not a run directory (no {missing}); pass directories written by "
                         "`python -m harness run`")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{config_path} is not valid JSON ({err}); the run directory is corrupt")
    if not isinstance(config, dict) or not isinstance(config.get("run"), dict):
        fit_like = isinstance(config, dict) and "fit" in config
        hint = " (it looks like a fit folder; pass it with --fit)" if fit_like else ""
        raise UsageError(f"{config_path} is not a run configuration (no \"run\" object){hint}")
    if not config["run"].get("suite"):
        raise UsageError(f"{config_path}: the run configuration names no suite")

    records: dict[tuple[str, str], dict] = {}
    for file in ([records_path] if records_path.is_file() else []) + rank_files:
        for lineno, rec in _read_jsonl(file):
            missing = [k for k in REQUIRED_FIELDS if k not in rec]
            if missing:
                raise UsageError(f"{file}:{lineno}: record lacks {', '.join(missing)}; not a run's records.jsonl")
            try:
                rec["score"] = float(rec["score"])
            except (TypeError, ValueError):
                raise UsageError(f"{file}:{lineno}: score {rec['score']!r} is not a number")
            key = (str(rec["task"]), str(rec["id"]))
            if key in records:
                if file == records_path:
                    raise UsageError(f"{file}:{lineno}: sample {key[0]}/{key[1]} recorded twice; the run is corrupt")
                continue  # a rank file of an interrupted merge: records.jsonl already holds it
            records[key] = rec
    if not records:
        raise UsageError(f"{path} holds no finished samples yet (empty records.jsonl)")
    run = Run(path=path, config=config, records=list(records.values()),
              extra_files=[p.name for p in rank_files])
    metrics = path / "metrics.json"
    if metrics.is_file():
        try:
            run.complete = bool(json.loads(metrics.read_text(encoding="utf-8")).get("complete"))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            run.complete = None
    _attach_fit(run)
    return run


def _attach_fit(run: Run) -> None:
    """Set ``run.fit`` (the fitting tasks) for NAMM runs, or ``run.fit_problem`` saying why not."""
    info = run.policy_info
    fitted = info.get("fitted_on")
    if isinstance(fitted, dict) and fitted.get("tasks"):
        run.fit = fitted
        return
    if not run.is_namm:
        return
    ckpt = info.get("checkpoint") or run.run.get("policy_checkpoint")
    if not ckpt:
        run.fit_problem = "no checkpoint recorded (zero parameters)"
        return
    candidates = [Path(ckpt)] if Path(ckpt).is_absolute() else [run.path / ckpt, Path.cwd() / ckpt, Path(ckpt)]
    for c in candidates:
        side = c.with_suffix(".json")
        if side.is_file():
            try:
                meta = json.loads(side.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                run.fit_problem = f"checkpoint sidecar {side} is not valid JSON"
                return
            fitted = meta.get("fitted_on") if isinstance(meta, dict) else None
            if isinstance(fitted, dict) and isinstance(fitted.get("tasks"), list) and fitted["tasks"]:
                run.fit = fitted
            else:
                run.fit_problem = f"checkpoint sidecar {side} records no fitted_on.tasks"
            return
    run.fit_problem = f"checkpoint sidecar of {ckpt} not found"


def load_runs(paths) -> list[Run]:
    runs, seen = [], {}
    for p in paths:
        run = load_run(p)
        key = run.path.resolve()
        if key in seen:
            raise UsageError(f"run directory {p} given twice")
        seen[key] = p
        runs.append(run)
    if not runs:
        raise UsageError("give at least one run directory")
    return runs


# ---- row labels -------------------------------------------------------------------------------

def base_label(run: Run, paper_names: bool = False) -> str:
    if run.is_full:
        return paper.PAPER_FULL_NAME if paper_names else paper.POLICY_NAMES["full"]
    if run.is_namm:
        arch = str(run.policy_info.get("architecture") or run.policy.removeprefix("namm_")).upper()
        stage = (run.fit or {}).get("stage")
        return f"NAMM ({arch}, s{stage})" if stage is not None else f"NAMM ({arch})"
    return paper.POLICY_NAMES.get(run.policy, run.policy)


def _distinguishing(run: Run) -> dict[str, str]:
    """Settings that may tell two runs with the same base label apart, in order of preference."""
    r, p = run.run, run.policy_info
    out = {"budget": run.budget_text() or ""}
    for key, value in (("threshold", p.get("threshold")), ("γ", p.get("gamma")),
                       ("window", p.get("recent_window")), ("sink", p.get("n_sink")),
                       ("ckpt", Path(str(p["checkpoint"])).stem if p.get("checkpoint") else None),
                       ("mode", r.get("cache_mode")), ("n_up", r.get("n_up")),
                       ("max_len", run.config.get("max_length_used")), ("chat", r.get("chat_template")),
                       ("dtype", r.get("dtype")), ("seed", r.get("seed"))):
        out[key] = "" if value is None else f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
    return out


def assign_labels(runs: list[Run], paper_names: bool = False, overrides: dict[str, str] | None = None) -> None:
    """Give every run a label: the policy's name (NAMM: architecture and stage); runs of one suite
    sharing a name get the settings that differ between them (budget first), else their folder."""
    overrides = overrides or {}
    for run in runs:
        run.label = base_label(run, paper_names)
    by_suite: dict[str, list[Run]] = {}
    for run in runs:
        by_suite.setdefault(run.suite, []).append(run)
    for group in by_suite.values():
        names: dict[str, list[Run]] = {}
        for run in group:
            names.setdefault(run.label, []).append(run)
        for label, same in names.items():
            if len(same) < 2:
                continue
            settings = [_distinguishing(r) for r in same]
            keys = [k for k in settings[0] if len({s[k] for s in settings}) > 1]
            for run, s in zip(same, settings):
                parts = [s[k] for k in keys if s[k]]
                run.label = f"{label} ({', '.join(parts)})" if parts else label
            labels = [r.label for r in same]
            if len(set(labels)) < len(labels):
                for run in same:
                    run.label = f"{run.label} [{run.path.name}]"
    for run in runs:
        for key, text in overrides.items():
            if Path(key).resolve() == run.path.resolve():
                run.label = text
    for group in by_suite.values():
        labels = [r.label for r in group]
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise UsageError(f"two runs of suite {group[0].suite} share the label {sorted(dup)[0]!r}; "
                             "give them distinct --label RUN_DIR=TEXT")


def check_models(runs: list[Run], what: str) -> None:
    """One model per table: :class:`UsageError` listing the models and their runs otherwise."""
    models: dict[str, list[str]] = {}
    for run in runs:
        models.setdefault(run.model, []).append(str(run.path))
    if len(models) > 1:
        listing = "; ".join(f"{m}: {', '.join(ps)}" for m, ps in models.items())
        raise UsageError(f"runs of different models in one table ({what}) — {listing}; "
                         "report each model separately")


# ---- fit folders ------------------------------------------------------------------------------

@dataclass
class FitDir:
    path: Path
    log: list[dict]
    config: dict

    @property
    def label(self) -> str:
        fit = self.config.get("fit") or {}
        policy = str(fit.get("policy", "namm")).removeprefix("namm_").upper()
        return f"{policy} ({self.path.name})"


def load_fit(path: str | Path) -> FitDir:
    from harness.fit.plots import read_log

    path = Path(path)
    log_path = path / "fit.jsonl"
    if not path.is_dir() or not log_path.is_file():
        raise UsageError(f"{path} is not a fit folder (no fit.jsonl); pass folders written by `python -m harness fit`")
    try:
        log = read_log(log_path)
    except ValueError as err:
        raise UsageError(str(err).splitlines()[0])
    config = {}
    if (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            config = {}
    return FitDir(path=path, log=log, config=config if isinstance(config, dict) else {})
