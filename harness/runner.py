"""The runner: suite samples → model + eviction cache → ``records.jsonl`` → ``metrics.json``.

It knows neither a policy's internals nor a metric's; it moves samples and records, resumes, and
shards samples across ``torchrun`` ranks.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness import distributed, provenance, records
from harness.devices import check_device, check_device_map, resolve_dtype
from harness.errors import UsageError, choose
from harness.metrics import summarise
from harness.run_dir import note_resume, prepare_run_dir

TRUNCATIONS = ("paper", "longbench")
MIN_PROMPT_TOKENS = 64  # a prompt cropped below this keeps no task (refused, see check_room)
_RESULT_KEYS = ("prediction", "score", "new_tokens", "cache", "timing", "input_tokens", "prompt_tokens")


@dataclass
class RunConfig:
    """Everything that defines a run; saved as ``config.json`` and compared on resume (the
    provenance saved next to it, :mod:`harness.provenance`, is not compared)."""

    policy: str = "full"
    suite: str = "niah"
    suite_args: dict = field(default_factory=dict)
    data_dir: str | None = None  # local copies of the suite's official data files
    tasks: list[str] | None = None
    limit: int | None = None
    model: str | None = None
    cache_size: float | None = None  # tokens (>= 1) or a fraction of the prompt (< 1)
    recent_window: int | None = None
    n_sink: int | None = None
    cache_mode: str = "original"
    policy_checkpoint: str | None = None
    namm_threshold: float | None = None
    namm_gamma: float | None = None
    max_length: int | None = None
    n_up: int = 512
    prefill_chunk: int | None = None  # default: n_up
    chat_template: str = "auto"
    truncation: str = "paper"  # paper (crop the templated prompt by tokens) or longbench (official pred.py rule)
    seed: int = 0
    device: str = "cpu"  # where the model goes (with device_map: where the inputs go, the first layer's device)
    dtype: str = "float32"  # a concrete name: run() resolves "auto" (harness.devices.resolve_dtype)
    device_map: str | None = None  # accelerate's placement over the GPUs (harness.devices.DEVICE_MAPS)
    policy_options: dict = field(default_factory=dict)
    protocol: str = "paper"  # paper (the policy every n_up tokens) or kvpress (the context compressed once)
    compression_ratio: float | None = None  # kvpress protocol: fraction of the context evicted
    query_aware: bool = False  # kvpress protocol: the question is compressed with the context

    def identity(self) -> dict:
        """The fields that must match for a run directory to be resumed (not where the model runs; the
        kvpress protocol's fields only under it, so run directories made before it existed still resume)."""
        skip = {"device", "device_map"} | ({"protocol", "compression_ratio", "query_aware"} if self.protocol == "paper" else set())
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def validate(config: RunConfig):
    """Check names and numbers before anything is loaded or written; return (suite, tasks)."""
    import policies
    from harness.cache import MODES
    from harness.suite_args import load_suite

    choose("policy", policies.base_name(config.policy), policies.POLICIES)  # kvpress:<Press>[:ratio]
    choose("cache mode", config.cache_mode, MODES)
    choose("chat-template setting", config.chat_template, ("auto", "on", "off"))
    choose("truncation rule", config.truncation, TRUNCATIONS)
    suite = load_suite(config.suite, suite_options(config))
    selected = config.tasks or list(suite.tasks)
    for task in selected:
        choose(f"task of suite {config.suite}", task, suite.tasks)
    if config.cache_size is not None and config.cache_size <= 0:
        raise UsageError(f"--cache-size must be a positive token count or a fraction in (0, 1), got {config.cache_size:g}")
    for name in ("limit", "n_up", "prefill_chunk", "max_length"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if config.recent_window is not None and config.recent_window < 0:
        raise UsageError(f"--recent-window must be >= 0, got {config.recent_window}")
    from harness.kvpress_protocol import validate_protocol

    validate_protocol(config, suite)
    check_device(config.device)
    choose("--dtype", config.dtype, ("float32", "bfloat16", "float16"))
    check_device_map(config.device_map, config.device)
    if config.device_map and hasattr(suite, "evaluate_sample"):
        raise UsageError(f"--device-map: suite {config.suite} loads its own model, on --device")
    return suite, selected


def suite_options(config: RunConfig) -> dict:
    """The suite's constructor options: ``--suite-arg`` values plus ``data_dir`` from ``--data-dir``."""
    options = dict(config.suite_args)
    if config.data_dir is not None:
        import tasks as suites

        cls = suites.SUITES.get(config.suite)
        if cls is not None and "data_dir" not in inspect.signature(cls.__init__).parameters:
            if "data" in inspect.signature(cls.__init__).parameters:
                raise UsageError(f"--data-dir: suite {config.suite} reads --data PATH (a file or folder of records)")
            raise UsageError(f"--data-dir: suite {config.suite} reads no data files (its samples are generated here)")
        if not Path(config.data_dir).is_dir():
            raise UsageError(f"--data-dir {config.data_dir}: no such directory")
        options["data_dir"] = config.data_dir
    return options


def collect_work(suite, selected: list[str], tokenizer, max_length: int, seed: int, limit: int | None,
                 warn=None) -> tuple[list, dict]:
    """``([(index, sample)] in canonical order, {skipped task: reason})``.

    A task the suite cannot run here (:class:`tasks.base.TaskUnavailable`) is skipped with a one-line
    warning; malformed data and a hub failure other than "offline / not cached"
    (:class:`tasks.base.DataError`) are a :class:`UsageError`, as is nothing runnable at all (naming
    ``max_length`` when a task was skipped for it, :class:`tasks.base.ContextTooSmall`).
    """
    from tasks.base import ContextTooSmall, DataError, TaskUnavailable

    warn = warn or (lambda line: print(line, file=sys.stderr))
    work, skipped, too_small = [], {}, []
    for task in selected:
        try:
            for i, sample in enumerate(suite.samples(task, tokenizer, max_length=max_length, seed=seed)):
                if limit is not None and i >= limit:
                    break
                work.append((len(work), sample))
        except TaskUnavailable as err:
            if isinstance(err, ContextTooSmall):
                too_small.append(str(err))
            skipped[task] = str(err)
            warn(f"warning: skipped {err}")
        except DataError as err:
            raise UsageError(str(err).splitlines()[0]) from err
    if not work and too_small:
        raise UsageError(f"nothing to run: {too_small[0]}; use a larger --max-length (or leave it out for the model's "
                         "context), or pass --data-dir DIR with the official files")
    if not work:
        raise UsageError(f"nothing to run: no task of suite {suite.name} has data here "
                         f"({', '.join(selected)}); pass --data-dir DIR with the official files or run with hub access")
    return work, skipped


def check_room(work: list, tokenizer, max_length: int, config: RunConfig, context: int | None = None) -> None:
    """:class:`UsageError` when ``max_length`` would crop a prompt below :data:`MIN_PROMPT_TOKENS`
    (``paper`` truncation: ``max_length - max_new_tokens`` tokens are left for it; ``longbench``:
    ``max_length``). Prompts already shorter than what is left are fine; nothing is tokenized
    unless ``max_length`` is that small. ``context``: the model's, for the message."""
    from harness.evaluate import format_prompt

    for _, sample in work:
        room = max_length if config.truncation == "longbench" else max_length - sample.max_new_tokens
        if room >= MIN_PROMPT_TOKENS:
            continue
        n_tokens = len(format_prompt(tokenizer, sample, config.chat_template))
        if n_tokens <= room:
            continue
        where = f"--max-length {max_length}" if config.max_length else f"the model's context of {max_length} tokens"
        ctx = f" ({context} tokens)" if context else ""
        fix = (f"use a larger --max-length, or leave it out for the model's context{ctx}" if config.max_length
               else "use a model with a longer context")
        raise UsageError(f"{where} leaves {max(room, 0)} tokens for the prompts of {config.suite}/{sample.task} "
                         f"({sample.max_new_tokens} go to new tokens; prompt {sample.id} has {n_tokens}), fewer than "
                         f"the {MIN_PROMPT_TOKENS} a prompt needs; {fix}")


def budget_for(config: RunConfig, prompt_tokens: int) -> int | None:
    """Tokens per head the policy may keep for this prompt (``None``: the policy's default)."""
    if config.cache_size is None:
        return None
    if config.cache_size < 1:
        return max(1, math.ceil(config.cache_size * prompt_tokens))
    return int(config.cache_size)


def make_run_policy(config: RunConfig):
    """The run's policy, built once (checkpoints load once). Bad settings → :class:`UsageError`."""
    import tasks as suites
    from policies import make_policy
    from policies.namm.checkpoint import CheckpointError

    options = dict(config.policy_options)
    threshold = config.namm_threshold
    suite_cls = suites.SUITES.get(config.suite)
    if hasattr(suite_cls, "namm_threshold"):  # video suites: the paper's shifted NAMM threshold
        threshold = suite_cls.namm_threshold(config.policy, threshold)
    fixed_budget = config.cache_size if config.cache_size is not None and config.cache_size >= 1 else None
    options.update(
        budget=int(fixed_budget) if fixed_budget else None,
        recent_window=config.recent_window,
        n_sink=config.n_sink,
        checkpoint=config.policy_checkpoint,
        threshold=threshold,
        gamma=config.namm_gamma,
        n_up=config.n_up,
    )
    try:
        return make_policy(config.policy, **options)
    except (ValueError, CheckpointError) as err:
        raise UsageError(str(err).splitlines()[0]) from err


def policy_for_sample(policy, config: RunConfig, prompt_tokens: int):
    """``policy`` with its budget set for this prompt when ``--cache-size`` is a fraction."""
    budget = budget_for(config, prompt_tokens)
    if budget is None or not hasattr(policy, "budget") or budget == policy.budget:
        return policy
    try:
        return dataclasses.replace(policy, budget=budget)
    except ValueError as err:
        raise UsageError(str(err)) from err


def default_out(config: RunConfig, model_name: str) -> Path:
    size = "" if config.cache_size is None or config.policy == "full" else f"-cs{config.cache_size:g}"
    # ':' (kvpress:<Press>, lm-eval:<task>) is not allowed in Windows paths
    return Path("runs") / config.suite.replace(":", "_") / f"{config.policy.replace(':', '_')}{size}-{model_name}"


def run(config: RunConfig, out: str | Path | None = None, progress: bool = True) -> Path:
    """Run (or resume) ``config``; return the run directory. ``config.dtype`` may be ``auto``: it is
    resolved (bfloat16 on CUDA, float32 elsewhere) before anything is compared or written."""
    import torch

    from harness.attention import attach
    from harness.evaluate import Evaluator
    from harness.models import load_model

    config = dataclasses.replace(config, dtype=resolve_dtype(config.dtype, config.device))
    suite, selected = validate(config)
    run_policy = make_run_policy(config)
    torch.manual_seed(config.seed)
    world = distributed.World.from_env(config.device)
    device = world.device_for(config.device)
    custom = hasattr(suite, "evaluate_sample")  # suites with their own model and loop (RL, video)
    if custom:
        from tasks.base import TaskUnavailable

        try:
            model, model_name = suite.load_model(config.model, device, config.dtype)
        except (TaskUnavailable, ValueError, ImportError, OSError) as err:
            raise UsageError(str(err).splitlines()[0] if str(err) else type(err).__name__) from err
        tokenizer, source, context = None, {"name": model_name}, None
        max_length = config.max_length or getattr(suite, "max_length", 0)
    else:
        model, tokenizer, model_source = load_model(config.model, device=device, dtype=config.dtype,
                                                    device_map=config.device_map, seed=config.seed)
        attach(model)
        context = getattr(model.config.get_text_config(), "max_position_embeddings", 8192)
        max_length = config.max_length or context
        source = dataclasses.asdict(model_source)
    run_dir = Path(out) if out else default_out(config, source["name"])
    meta = {
        "model": source,
        "max_length_used": max_length,
        "suite_generated": suite.generated,
        "policy": run_policy.describe(),
        "provenance": provenance.gather(device, config.dtype),
    }
    work, skipped = collect_work(suite, selected, tokenizer, max_length, config.seed, config.limit,
                                 warn=None if world.rank == 0 else (lambda line: None))
    if not custom:
        check_room(work, tokenizer, max_length, config, context)
    if config.protocol == "kvpress":
        from harness.kvpress_protocol import check_splittable

        for _, sample in work:
            check_splittable(sample, config.suite, config.query_aware)
    identity = config.identity()
    world.on_rank0(lambda: prepare_run_dir(run_dir, identity, meta))  # creates it, or checks the existing one
    if world.rank != 0:
        prepare_run_dir(run_dir, identity, meta)  # the other ranks check what rank 0 wrote

    done = records.finished_keys(run_dir)
    world.barrier()
    if world.rank == 0 and any((s.task, s.id) not in done for _, s in work):
        note_resume(run_dir, meta)  # samples left: records will come from this provenance
    mine = [(i, s) for i, s in work if i % world.size == world.rank and (s.task, s.id) not in done]
    target = run_dir / records.RECORDS if world.size == 1 else records.rank_file(run_dir, world.rank)
    evaluator = None if custom else Evaluator(model, tokenizer, suite, max_length, config.n_up, config.cache_mode,
                                              config.prefill_chunk, config.chat_template, device, config.truncation,
                                              config.protocol, config.compression_ratio or 0.0, config.query_aware)

    bar = _progress(len(mine), world.rank == 0 and progress, f"{config.suite}/{config.policy}")
    for index, sample in mine:
        if custom:
            result, n_tokens, policy = _evaluate_custom(suite, sample, model, run_policy, config, device)
            cropped = range(int(result.get("input_tokens", n_tokens or 0)))
            ids = range(int(result.get("prompt_tokens", len(cropped))))
        else:
            ids, cropped = evaluator.inputs(sample)
            policy = policy_for_sample(run_policy, config, len(cropped))
            result = evaluator.evaluate(sample, policy, cropped=cropped)[0]
        extra = {k: v for k, v in result.items() if k not in _RESULT_KEYS}
        kvpress = result.get("kvpress")  # the kvpress protocol feeds its own split of the prompt
        fed = kvpress["context_tokens"] + kvpress["question_tokens"] if kvpress else len(cropped)
        records.append_record(
            target,
            {
                "index": index,
                "task": sample.task,
                "task_id": suite.task_ids.get(sample.task, sample.task),
                "id": sample.id,
                "prediction": result["prediction"],
                "answers": sample.answers,
                "score": result["score"],
                "prompt_tokens": len(ids),
                "input_tokens": fed,
                "new_tokens": result["new_tokens"],
                "generated_data": suite.generated or sample.generated,
                "source": sample.metadata.get("source", "generated" if suite.generated else None),
                "budget": kvpress["kept_tokens"] if kvpress else getattr(policy, "budget", None),
                "cache": result["cache"],
                "metadata": sample.metadata,
                "timing": result["timing"],
                **extra,
            },
        )
        bar.update(1)
    bar.close()
    world.barrier()
    if world.rank == 0:
        all_records = records.merge_rank_files(run_dir)
        metrics = summarise(all_records, expected=len(work), skipped=skipped)
        if hasattr(suite, "aggregate") and all_records:  # a benchmark's own headline number (e.g. MLVU)
            metrics["official_score"] = suite.aggregate(all_records)
        records.write_json_atomic(run_dir / "metrics.json", metrics)
    world.barrier()
    world.close()
    return run_dir


def _evaluate_custom(suite, sample, model, run_policy, config: RunConfig, device):
    """One sample of a suite with its own model loop (``suite.evaluate_sample``: RL rollouts, video),
    handed a :class:`harness.cache_factory.CacheFactory` for the sample's policy; returns ``(result,
    prompt tokens or None, the sample's policy)``."""
    from harness.cache_factory import CacheFactory
    from tasks.base import DataError

    if hasattr(suite, "input_tokens"):
        n_tokens = suite.input_tokens(sample, model)
    else:
        n_tokens = sample.metadata.get("prompt_tokens")
    if n_tokens is None and config.cache_size is not None and config.cache_size < 1:
        raise UsageError(f"suite {config.suite} has no prompt length to take a fraction of; give --cache-size in tokens")
    policy = policy_for_sample(run_policy, config, n_tokens or 0)
    try:
        caches = CacheFactory(policy, config.n_up, config.cache_mode)
        return suite.evaluate_sample(sample, model, caches, device), n_tokens, policy
    except DataError as err:
        raise UsageError(str(err).splitlines()[0]) from err


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="sample", file=sys.stderr, dynamic_ncols=True)
