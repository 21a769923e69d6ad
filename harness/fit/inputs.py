"""Checking a fit's input before the model loads: stages, settings, ``--out``, ``--init``, data split."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

from harness.errors import UsageError, choose
from harness.fit.cmaes import COVARIANCES, CMAESSettings
from harness.fit.fitness import FITNESS_RULES

DTYPES = ("float32", "bfloat16", "float16")


def parse_stage(text: str, default_generations: int = 10) -> tuple[list[str], int]:
    """``"a,b:250"`` → ``(["a", "b"], 250)``."""
    tasks, _, gens = text.partition(":")
    try:
        generations = int(gens) if gens else default_generations
    except ValueError:
        raise UsageError(f"--stages {text!r}: generations must be an integer, as in passkey:300")
    names = [t for t in tasks.split(",") if t]
    if not names:
        raise UsageError(f"--stages {text!r} names no task; use TASK[,TASK...][:GENERATIONS]")
    return names, generations


def validate(config, out: Path):
    """Check a :class:`harness.fit.loop.FitConfig` and ``--out``; returns the loaded suite."""
    import policies

    choose("policy", config.policy, [p for p in policies.POLICIES if p.startswith("namm")])
    choose("--cma", config.cma, COVARIANCES)
    choose("--fitness-rule", config.fitness_rule, FITNESS_RULES)
    choose("--dtype", config.dtype, DTYPES)
    weight = config.memory_weight
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise UsageError(f"--memory-weight must be a finite number >= 0 (0 = the paper's fitness), got {weight}")
    target = config.memory_target
    if target is not None and not (0 < target <= 1 and weight > 0):
        raise UsageError(f"--memory-target must be a kept fraction in (0, 1] and needs --memory-weight > 0, got {target}")
    progress = config.progress_weight
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not math.isfinite(progress) or progress < 0:
        raise UsageError(f"--progress-weight must be a finite number >= 0 (0 = the paper's fitness), got {progress}")
    from harness.runner import RunConfig, suite_options
    from harness.suite_args import load_suite

    suite = load_suite(config.suite, suite_options(RunConfig(suite=config.suite, suite_args=config.suite_args,
                                                             data_dir=config.data_dir)))
    for names, generations in config.stages:
        for task in names:
            choose(f"task of suite {config.suite}", task, suite.tasks)
        if generations < 1:
            raise UsageError(f"every stage needs at least 1 generation, got {generations}")
    CMAESSettings(config.popsize, config.elite_ratio, config.sigma0, config.mean0, config.seed)  # validates
    for name in ("prompts_per_task", "eval_every", "stats_prompts", "n_up"):
        if getattr(config, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(config, name)}")
    if not 0 < config.val_fraction < 1:
        raise UsageError(f"--val-fraction must be in (0, 1), got {config.val_fraction}")
    existing = next(p for p in [out, *out.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to --out {out} ({existing} is not a writable folder); choose another")
    return suite


def init_checkpoint(config):
    """The ``--init`` checkpoint (a :class:`UsageError` when it is missing, unreadable or of another
    architecture)."""
    from policies.namm.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(config.init, expect_architecture=config.policy.removeprefix("namm_"))
    except CheckpointError as err:
        raise UsageError(f"--init: {str(err).splitlines()[0]}") from err


def split(samples: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic (train, validation) split of a task's samples."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(fraction * len(samples)))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    if not train:
        raise UsageError(f"task {samples[0].task} has {len(samples)} samples: too few to hold some out")
    return [samples[i] for i in train], [samples[i] for i in val]
