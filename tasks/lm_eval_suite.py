"""``--suite lm-eval:<task>``: an lm-evaluation-harness generation task (or group) as a harness suite.

The task definition comes from lm-eval's ``TaskManager`` (its built-in YAML tasks, plus ``--suite-arg
include_path=DIR`` for local ones); the prompts are lm-eval's own requests (``build_all_requests``:
description, ``doc_to_text``, ``num_fewshot`` examples — default 0 — and ``generation_kwargs``), so
they are exactly the contexts lm-eval would send a model. Our runner then generates greedily with the
eviction cache (``max_new_tokens`` = the task's ``max_gen_toks``, default 256; the prompt is the plain
context, no chat template unless ``--chat-template on``; too-long prompts are cropped by ``--truncation``).

Scoring is lm-eval's: the prediction is cut at the task's ``until`` strings (as lm-eval's ``hf``
model does), passed through the task's filter pipelines and its ``process_results``. A record's
``score`` is the task's first metric under its first filter (e.g. ``exact_match`` under ``strict-match``
for gsm8k); ``metrics.json`` ``official_score`` holds every ``metric,filter`` aggregated by the task's
own aggregation functions (``{task: {"exact_match,strict-match": 0.25, ...}}``, lm-eval's scale).
Corpus-level metrics (bleu, chrf, ter) have no per-sample value: their records score 0 and only
``official_score`` is meaningful. Only ``output_type: generate_until`` tasks can run here; use the
``evicting-hf`` model (:mod:`harness.lm_eval_model`) with lm-eval itself for loglikelihood tasks.
"""

from __future__ import annotations

import difflib
import numbers
from pathlib import Path

from tasks.base import Sample, Suite

PREFIX = "lm-eval:"
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default when a task sets no max_gen_toks
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed
LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas"}


def is_lm_eval_suite(name: str) -> bool:
    return name.startswith(PREFIX)


def _lm_eval():
    try:
        import lm_eval.tasks
        from lm_eval.models import utils as model_utils
    except ImportError as err:
        hint = "pip install -e '.[lm-eval]'"
        raise ValueError(f"the lm-eval suites need lm-evaluation-harness: {hint} ({err})") from None
    return lm_eval.tasks, model_utils


class LMEvalSuite(Suite):
    """One lm-eval task or group (its leaf tasks are this suite's tasks). See the module docstring."""

    generated = False

    def __init__(self, task: str, include_path=None, num_fewshot: int = 0, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS):
        """``task``: an lm-eval task or group name; ``include_path``: folder(s) with more task YAMLs;
        ``num_fewshot``: few-shot examples in each prompt (default 0); ``max_gen_toks``: new tokens when
        the task sets none. Unknown names, non-generation tasks and unloadable data → ``ValueError``."""
        lm_tasks, self._utils = _lm_eval()
        self.name = PREFIX + task
        self.num_fewshot, self.max_gen_toks = int(num_fewshot), int(max_gen_toks)
        paths = [include_path] if isinstance(include_path, str) else list(include_path or [])
        for p in paths:
            if not Path(p).is_dir():
                raise ValueError(f"{self.name}: include_path {p} is not a directory")
        manager = lm_tasks.TaskManager(include_path=paths, include_defaults=False) if paths else None
        if manager is None or task not in manager.all_tasks:
            manager = lm_tasks.TaskManager(include_path=paths or None)  # lm-eval's built-in tasks too
        if task not in manager.all_tasks:
            close = difflib.get_close_matches(task, manager.all_tasks, n=3, cutoff=0.8)
            hint = f"; did you mean {', '.join(close)}?" if close else "; list them with: lm-eval ls tasks"
            raise ValueError(f"unknown lm-eval task {task!r}{hint}")
        try:
            loaded = manager.load([task])["tasks"]
        except Exception as err:  # noqa: BLE001  (datasets raises many kinds; the first line says which)
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{self.name}: lm-eval could not load the task or its data: {first}") from None
        for name, t in loaded.items():
            if t.OUTPUT_TYPE != "generate_until":
                raise ValueError(f"{self.name}: task {name} is {t.OUTPUT_TYPE}; lm-eval:<task> runs generate_until "
                                 f"tasks only (evaluate it with lm-eval's --model evicting-hf)")
        self._tasks = loaded
        self.tasks = tuple(loaded)
        self.task_ids = {}
        self._docs: dict[str, dict[str, dict]] = {}  # task -> sample id -> doc

    def samples(self, task: str, tokenizer, max_length: int, seed: int = 0):
        t = self._tasks[task]
        t.set_config(key="num_fewshot", value=self.num_fewshot)
        t.set_fewshot_seed(seed=FEWSHOT_SEED)
        t.build_all_requests(limit=None, rank=0, world_size=1)
        dataset = t.config.dataset_path or ""
        source = "data-dir" if dataset in LOCAL_BUILDERS or Path(dataset).exists() else "hub"
        docs = self._docs.setdefault(task, {})
        out = []
        for inst in t.instances:
            context, gen_kwargs = inst.args[0], inst.args[1]
            kwargs = self._utils.normalize_gen_kwargs(gen_kwargs or {}, self.max_gen_toks)
            target = t.doc_to_target(inst.doc)
            docs[str(inst.doc_id)] = inst.doc
            out.append(Sample(
                id=str(inst.doc_id), task=task, prompt=context,
                answers=[str(a) for a in target] if isinstance(target, list) else [str(target)],
                max_new_tokens=int(kwargs["max_gen_toks"]), chat=False,
                metadata={"source": source, "lm_eval_task": task, "doc_id": inst.doc_id,
                          "until": list(kwargs["until"]), "num_fewshot": self.num_fewshot},
            ))
        return iter(out)

    # ---- scoring through lm-eval --------------------------------------------------------------------
    def lm_eval_metrics(self, task: str, doc_id, prediction: str, until) -> dict[str, object]:
        """``{"metric,filter": per-sample value}``: lm-eval's filters and ``process_results`` on the
        prediction cut at ``until`` (the stop strings of the request)."""
        t = self._tasks[task]
        doc = self._docs[task][str(doc_id)]
        text = self._utils.postprocess_generated_text(prediction, list(until or []), None)
        out = {}
        for ensemble in t._filters:
            resps = [[text]]
            for make_filter in ensemble.filters:
                resps = list(make_filter().apply(resps, [doc]))
            for metric, value in t.process_results(doc, [resps[0]]).items():
                out[f"{metric},{ensemble.name}"] = value
        return out

    def score(self, sample: Sample, prediction: str) -> float:
        metrics = self.lm_eval_metrics(sample.task, sample.id, prediction, sample.metadata.get("until"))
        value = next(iter(metrics.values()), 0.0)
        return float(value) if isinstance(value, numbers.Real) else 0.0

    def aggregate(self, records: list[dict]) -> dict:
        """lm-eval's aggregate of every ``metric,filter`` per task over ``records`` (``official_score``)."""
        out = {}
        for task, t in self._tasks.items():
            rows = [r for r in records if r["task"] == task]
            if not rows:
                continue
            values: dict[str, list] = {}
            for r in rows:
                until = r["metadata"].get("until")
                for key, value in self.lm_eval_metrics(task, r["id"], r["prediction"], until).items():
                    values.setdefault(key, []).append(value)
            aggregation = t.aggregation()  # lm-eval falls back to the mean for a metric without one
            out[task] = {key: _plain(aggregation.get(key.split(",")[0], _mean)(items)) for key, items in values.items()}
        return out


def _mean(items):
    return sum(items) / len(items)


def _plain(value):
    return float(value) if isinstance(value, numbers.Real) else value


def load_lm_eval_suite(name: str, options: dict) -> LMEvalSuite:
    """``lm-eval:<task>`` with ``--suite-arg`` options (``TypeError`` / ``ValueError`` on bad ones)."""
    from tasks import check_options

    check_options(name, LMEvalSuite, options, positional=("task",))
    task = name[len(PREFIX):]
    if not task:
        raise ValueError("give an lm-eval task after the prefix, e.g. --suite lm-eval:gsm8k")
    return LMEvalSuite(task, **options)
