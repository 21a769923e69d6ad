"""Fitting NAMMs with CMA-ES in incremental stages (paper §3.3, App. A/C), resumable.

Per generation: sample ``prompts_per_task`` training prompts per active task (seeded by
generation), evaluate every population member on them (members batched as copies of a prompt,
sharded across ``torchrun`` ranks), fitness = mean over tasks of score / full-cache score on the same
prompts (``fitness_rule`` for tasks where the full cache scores 0; minus ``memory_weight`` times the
kept fraction of the cache, see :mod:`harness.fit.fitness`), ``tell`` CMA-ES (``cma``: diagonal or
full covariance, see :mod:`harness.fit.cmaes`). Every ``eval_every`` generations (and at the end of
a stage) the CMA-ES mean is scored on the held-out validation prompts; the mean with the best
validation fitness is the stage's checkpoint, and the next stage (which adds its tasks) starts from it.

Files in ``--out``: ``config.json``, ``fit.jsonl`` (one line per generation), ``references.jsonl``
(full-cache scores), ``state.pkl`` (everything needed to continue, written atomically after every
generation; no absolute paths, so the folder can be moved or committed and resumed elsewhere;
loaded only from this folder), ``stage<k>/best.safetensors`` (+ ``.json``), every validated mean as
``checkpoints/gen<N>.safetensors`` (N = ``global_generation``), the final ``<policy>.safetensors``, and
figures ``training_curves.png`` / ``memory_size.png``. A
:class:`~harness.fit.stopping.Stopper` (``--stop-after``, SIGTERM/SIGINT) can end :meth:`Fit.run`
at a generation boundary; re-running the same command continues from there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness import distributed
from harness.errors import UsageError
from harness.fit import stopping
from harness.fit.cmaes import CMAES, CMAESSettings
from harness.fit.fitness import References, evaluate_members, fitness_of, write_log
from harness.fit.inputs import init_checkpoint, parse_stage, split, validate  # noqa: F401  (parse_stage: API)
from harness.fit.stopping import Stopper


DEFAULT_FIT_DTYPE = "bfloat16"  # model weights' dtype during a fit (--dtype): measured in results/fit-bench

# Settings added after fits were first made, with what a saved config.json without them means (the
# behaviour before the option existed), so that those fits resume unchanged.
LEGACY_IDENTITY = {"init": None, "cma": "full", "dtype": "float32", "fitness_rule": "offset", "memory_weight": 0.0,
                   "memory_target": None, "progress_weight": 0.0}


@dataclass
class FitConfig:
    policy: str = "namm_bam"
    suite: str = "niah"
    suite_args: dict = field(default_factory=dict)
    data_dir: str | None = None
    stages: list = field(default_factory=lambda: [(["passkey"], 10)])  # [(tasks added, generations)]
    popsize: int = 32
    elite_ratio: float = 0.5
    sigma0: float = 0.065
    mean0: float = 0.0
    cma: str = "diagonal"  # covariance: "diagonal" (separable CMA-ES) or "full" (the paper); see cmaes.py
    fitness_rule: str = "offset"  # when the full cache scores 0: "offset" (1 + mean) or "paper" (/ (0 + 1e-7))
    memory_weight: float = 0.0  # fitness -= memory_weight * kept fraction (beyond the paper; 0 = off)
    memory_target: float | None = None  # with it, the memory term is memory_weight * max(0, kept - target)
    progress_weight: float = 0.0  # fitness += weight * answer progress per task (beyond the paper; 0 = off)
    prompts_per_task: int = 64
    val_fraction: float = 0.2
    eval_every: int = 10
    member_batch: int | None = None
    stats_prompts: int = 8
    model: str | None = None
    dtype: str = DEFAULT_FIT_DTYPE
    max_length: int | None = None
    n_up: int = 512
    cache_mode: str = "original"
    gamma: float = 0.99
    threshold: float = 0.0
    chat_template: str = "auto"
    seed: int = 0
    device: str = "cpu"
    device_map: str | None = None  # accelerate's placement over the GPUs (harness.devices.DEVICE_MAPS)
    init: str | None = None  # a NAMM checkpoint: stage 1 starts from its parameters and frozen statistics

    def identity(self) -> dict:
        """What a fit folder's ``config.json`` records (``"fit"``) and a resume must match: every field
        but ``device`` and ``device_map`` (``--stop-after``, ``--threads`` and ``--quiet`` are not fields either)."""
        data = dataclasses.asdict(self)
        data.pop("device")
        data.pop("device_map")
        data["stages"] = [[list(t), g] for t, g in self.stages]
        return data

    def check_resumes(self, saved: dict, out: Path) -> None:
        """A :class:`UsageError` naming the differences unless ``saved`` (a ``config.json``'s ``"fit"``)
        is this configuration; keys missing from ``saved`` mean their :data:`LEGACY_IDENTITY` value."""
        saved, current = {**LEGACY_IDENTITY, **saved}, self.identity()
        differ = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
        if differ:
            def short(value):
                text = json.dumps(value)
                return text if len(text) <= 40 else text[:37] + "..."

            details = "; ".join(f"{k}: {short(saved.get(k))} there, {short(current.get(k))} now" for k in differ)
            raise UsageError(f"{out} holds a fit with a different configuration ({details}); "
                             f"re-run with its options to resume, or pass a new --out")


class Fit:
    """One fit: model, data splits, references and state; :meth:`run` does the generations."""

    def __init__(self, config: FitConfig, out: Path, progress: bool = True, stopper: Stopper | None = None):
        from harness.attention import attach
        from harness.evaluate import Evaluator
        from harness.models import load_model

        self.config, self.out, self.progress = config, out, progress
        self.stopper = stopper if stopper is not None else Stopper()
        self.stopped: str | None = None  # set by run() when it stopped early: why
        self.suite = validate(config, out)
        self.init = init_checkpoint(config) if config.init is not None else None  # checked before the model loads
        self.world = distributed.World.from_env(config.device)
        device = self.world.device_for(config.device)
        self.model, self.tokenizer, self.source = load_model(config.model, device=device, dtype=config.dtype,
                                                             device_map=config.device_map, seed=config.seed)
        attach(self.model)
        text_config = self.model.config.get_text_config()
        self.max_length = config.max_length or text_config.max_position_embeddings
        self.evaluator = Evaluator(self.model, self.tokenizer, self.suite, self.max_length, config.n_up,
                                   config.cache_mode, None, config.chat_template, device)
        self.splits = {}
        for names, _ in config.stages:
            for task in names:
                self.splits[task] = split(self._samples(task), config.val_fraction, config.seed)
        self.generated_data = any(s.generated for train, val in self.splits.values() for s in train + val)
        self._ids: dict[tuple[str, str], list[int]] = {}
        self._target_ids: dict[tuple[str, str], list[int]] = {}
        self.references = References(out / "references.jsonl", write=self.world.rank == 0)
        from policies.namm.scorers import SCORERS

        self.n_params = SCORERS[config.policy.removeprefix("namm_")]().n_params

    def _samples(self, task: str) -> list:
        """All samples of a fitting task; a task without data here cannot be fitted (UsageError)."""
        from tasks.base import DataError, TaskUnavailable

        try:
            samples = list(self.suite.samples(task, self.tokenizer, max_length=self.max_length, seed=self.config.seed))
        except TaskUnavailable as err:
            raise UsageError(f"cannot fit on {err}") from err
        except DataError as err:
            raise UsageError(str(err).splitlines()[0]) from err
        if not samples:
            raise UsageError(f"task {self.config.suite}/{task} has no samples at --max-length {self.max_length}")
        return samples

    # ---- state ----------------------------------------------------------------------------------
    def _state_path(self) -> Path:
        return self.out / "state.pkl"

    def _load_or_start(self) -> dict:
        config_path = self.out / "config.json"
        if config_path.exists():
            self.config.check_resumes(json.loads(config_path.read_text()).get("fit") or {}, self.out)
        if self._state_path().exists():
            return pickle.loads(self._state_path().read_bytes())  # our own file, written by _save
        x0 = None
        if self.config.init is not None:  # continue an earlier fit: its parameters and frozen statistics
            mean, var, x0 = self.init.norm_mean.float(), self.init.norm_var.float(), self.init.params.double().numpy()
        else:
            mean, var = self._statistics()
        state = {"stage": 0, "generation": 0, "es": None, "x0": x0, "best": None, "log": [],
                 "norm_mean": mean, "norm_var": var}
        if self.world.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            from harness.records import write_json_atomic

            write_json_atomic(config_path, {"fit": self.config.identity(), "model": dataclasses.asdict(self.source),
                                            "max_length_used": self.max_length, "suite_generated": self.suite.generated})
        return state

    def _save(self, state: dict) -> None:
        if self.world.rank == 0:
            tmp = self._state_path().with_suffix(".tmp")
            with open(tmp, "wb") as f:  # complete on disk before it replaces the old state
                f.write(pickle.dumps(state))
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self._state_path())

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalisation statistics from full-cache prefills of the first stage's first task."""
        from harness.namm_init import collect_statistics

        first = self.config.stages[0][0][0]
        samples = self.splits[first][0][: self.config.stats_prompts]
        stats = collect_statistics(self.model, self.tokenizer, samples, self.config.policy.removeprefix("namm_"),
                                   self.config.n_up, self.config.gamma, self.max_length,
                                   progress=self.progress and self.world.rank == 0)
        return stats.mean.float(), stats.var.float()

    # ---- evaluation -----------------------------------------------------------------------------
    def _prompts(self, samples) -> list[tuple]:
        """``(sample, token ids fed to the model)``; each prompt is tokenised once per fit."""
        for s in samples:
            if (s.task, s.id) not in self._ids:
                self._ids[(s.task, s.id)] = self.evaluator.inputs(s)[1]
        return [(s, self._ids[(s.task, s.id)]) for s in samples]

    def _references(self, prompts) -> dict[str, list[float]]:
        refs: dict[str, list[float]] = {}
        for sample, cropped in prompts:
            refs.setdefault(sample.task, []).append(self.references.get(self.evaluator, sample, cropped))
        return refs

    def _targets(self, prompts) -> list[list[int]] | None:
        """Token ids of each prompt's reference continuation (answer progress), or None when unused."""
        if not self.config.progress_weight:
            return None
        for s, c in prompts:  # tokenised once per fit, like the prompts
            if (s.task, s.id) not in self._target_ids:
                text = self.references.target(self.evaluator, s, c)
                self._target_ids[(s.task, s.id)] = self.tokenizer.encode(text, add_special_tokens=False)
        return [self._target_ids[(s.task, s.id)] for s, _ in prompts]

    def _population(self, params: np.ndarray, prompts, state) -> list[dict]:
        """Evaluate all members; rank r takes members r, r+K, ... and results are gathered."""
        mine = list(range(self.world.rank, params.shape[0], self.world.size))
        tensor = torch.as_tensor(params[mine], dtype=torch.float32)
        results = evaluate_members(self.evaluator, self.config, tensor, state["norm_mean"], state["norm_var"], prompts,
                                   self._targets(prompts))
        indexed = list(zip(mine, results))
        if self.world.size > 1:
            import torch.distributed as dist

            gathered = [None] * self.world.size
            dist.all_gather_object(gathered, indexed)
            indexed = [item for part in gathered for item in part]
        return [r for _, r in sorted(indexed, key=lambda x: x[0])]

    def _sample_prompts(self, tasks, stage: int, generation: int) -> list[tuple]:
        rng = random.Random(f"{self.config.seed}:{stage}:{generation}")
        chosen = []
        for task in tasks:
            train = self.splits[task][0]
            chosen += rng.sample(train, min(self.config.prompts_per_task, len(train)))
        return self._prompts(chosen)

    def _validate(self, mean: np.ndarray, tasks, state) -> dict:
        prompts = self._prompts([s for t in tasks for s in self.splits[t][1]])
        refs = self._references(prompts)
        member = self._population(mean[None], prompts, state)[0]
        fitness, per_task = fitness_of(member, refs, self.config.fitness_rule, self.config.memory_weight,
                                       self.config.memory_target)
        return {"tasks": per_task, "mean": sum(per_task.values()) / len(per_task), "fitness": fitness,
                "cache_logical_mean": member["cache"], "kept_fraction": member["kept"]}

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> Path:
        """All remaining generations (or up to a stop: then :attr:`stopped` says why); returns ``out``."""
        with self.stopper.handling_signals():
            state = self._load_or_start()
            if self.world.rank == 0:
                write_log(self.out / "fit.jsonl", state["log"])
            config = self.config
            for stage in range(state["stage"], len(config.stages)):
                tasks = [t for names, _ in config.stages[: stage + 1] for t in names]
                generations = config.stages[stage][1]
                if state["es"] is None:
                    settings = CMAESSettings(config.popsize, config.elite_ratio, config.sigma0, config.mean0,
                                             config.seed + stage, covariance=config.cma)
                    es = CMAES(self.n_params, settings, x0=state["x0"])
                else:
                    es = CMAES.from_state(state["es"])
                for generation in range(state["generation"] + 1, generations + 1):
                    if self._stop(state, stage):
                        return self.out
                    self._generation(es, state, stage, tasks, generation, generations)
                # next stage: a fresh CMA-ES around this stage's best-validation mean (paper §3.3)
                state.update(stage=stage + 1, generation=0, es=None, x0=state["best"]["params"], best=None)
                self._save(state)
                self._figures()
        if self.world.rank == 0:
            final = self.out / f"{config.policy}.safetensors"
            last = self.out / f"stage{len(config.stages)}" / "best.safetensors"
            final.write_bytes(last.read_bytes())
            final.with_suffix(".json").write_bytes(last.with_suffix(".json").read_bytes())
        self.world.barrier()
        self.world.close()
        return self.out

    def _stop(self, state: dict, stage: int) -> bool:
        """Whether to stop before the next generation (all ranks agree); if so, say where, on one line."""
        estimate = state["log"][-1]["wall_s"] if state["log"] else None
        reason = self.stopper.reason(estimate)
        if self.world.size > 1:
            import torch.distributed as dist

            gathered = [None] * self.world.size
            dist.all_gather_object(gathered, reason)
            reason = next((r for r in gathered if r is not None), None)
        if reason is None:
            return False
        self.stopped = reason
        if state["log"]:
            self._figures()  # the curves so far
        if self.world.rank == 0:
            stages, generation = self.config.stages, state["generation"]
            if generation:
                where = f"after stage {stage + 1}/{len(stages)} generation {generation}/{stages[stage][1]}"
            else:
                where = f"after stage {stage}/{len(stages)} (complete)" if stage else "before the first generation"
            print(f"stopped ({reason}) {where}, {len(state['log'])} generations in all; "
                  f"{self.out} holds the fit so far: re-run the same command to resume", file=sys.stderr, flush=True)
        self.world.barrier()
        self.world.close()
        return True

    def _generation(self, es: CMAES, state: dict, stage: int, tasks: list, generation: int, generations: int):
        """One generation: sample prompts, evaluate and tell the population, validate, log, save."""
        from harness.fit.checkpointing import write_best, write_validated

        config = self.config
        start = stopping.now()  # the clock stop decisions use
        prompts = self._sample_prompts(tasks, stage, generation)
        refs = self._references(prompts)
        population = es.ask()
        members = self._population(population, prompts, state)
        scored = [fitness_of(m, refs, config.fitness_rule, config.memory_weight, config.memory_target,
                             config.progress_weight) for m in members]
        fitness = np.array([f for f, _ in scored])
        es.tell(population, fitness)
        validation = None
        if generation % config.eval_every == 0 or generation == generations:
            validation = self._validate(es.mean, tasks, state)
            # selected by validation fitness (= the mean score without --memory-weight; states saved before
            # --memory-weight existed hold only that mean)
            best = state["best"]
            validation["best"] = best is None or validation["fitness"] > best.get("fitness", best["mean"])
            if self.world.rank == 0:
                write_validated(self, state, es.mean, generation, stage, tasks, validation)
            if validation["best"]:
                state["best"] = {"mean": validation["mean"], "fitness": validation["fitness"],
                                 "params": es.mean.copy(), "generation": generation}
                if self.world.rank == 0:
                    write_best(self, state, stage, tasks, validation)
        record = {
            "stage": stage + 1,
            "generation": generation,
            "global_generation": len(state["log"]) + 1,
            "tasks": tasks,
            "fitness": {"mean": float(fitness.mean()), "std": float(fitness.std()),
                        "min": float(fitness.min()), "max": float(fitness.max())},
            "task_fitness": {t: float(np.mean([p[t] for _, p in scored])) for t in tasks},
            **({"progress": {t: float(np.mean([np.mean(m["progress"][t]) for m in members])) for t in tasks}}
               if config.progress_weight else {}),
            "cache": {"logical_mean": float(np.mean([m["cache"] for m in members])),
                      "kept_fraction": float(np.mean([m["kept"] for m in members]))},
            "validation": validation,
            "prompts": {t: [s.id for s, _ in prompts if s.task == t] for t in tasks},
            "wall_s": round(stopping.now() - start, 3),
        }
        state["log"].append(record)
        state.update(generation=generation, es=es.state_dict())
        self._save(state)
        if self.world.rank == 0:
            with open(self.out / "fit.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.progress:
                print(f"stage {stage + 1} gen {generation}/{generations}: fitness {fitness.mean():.3f} "
                      f"± {fitness.std():.3f} ({record['wall_s']:.1f} s)", file=sys.stderr, flush=True)

    def _figures(self) -> None:
        if self.world.rank != 0:
            return
        from harness.fit.plots import write_figures

        write_figures(self.out / "fit.jsonl", self.out)
