"""D4RL suite (``d4rl``): Decision Transformer rollouts in MuJoCo under a KV-eviction policy.

Paper §4.2, Table 7: Hopper, Walker2d, HalfCheetah × medium, medium-replay, expert; each
return-to-go, state and action is its own token, a 1,000-step episode is a 3,000-token context;
the policy evicts every ``n_up`` tokens as in every other suite; one sample per env seed
(``seeds`` samples, default 20); the score is the D4RL normalised score / 100.

Unlike the language suites this one brings its own model and evaluation loop: the runner calls
:meth:`D4RL.load_model` and :meth:`D4RL.evaluate_sample` instead of the tokenizer/generation path.

Suite options (``--suite-arg``): ``seeds`` (samples per task), ``env_version`` (``v5`` | ``v4``),
``max_steps`` (episode cap, default 1000), ``feed`` (``step``: ``[a, R, s]`` per forward call,
``token``: one token per call), ``target_return`` (override the checkpoint's), ``dataset_source``
(``auto`` | ``minari`` | ``generated``: where state statistics come from for a DT without
``dt_info.json``), ``download`` (1: let minari download datasets).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import ClassVar

from tasks import register_suite
from tasks.base import CacheFactory, Sample, Suite, TaskUnavailable
from tasks.d4rl.envs import (
    ENVS,
    MAX_EPISODE_STEPS,
    TASKS,
    VERSIONS,
    env_id,
    make_env,
    normalized_score,
    split_task,
)


@register_suite("d4rl")
class D4RL(Suite):
    """D4RL with a Decision Transformer (Hopper/Walker2d/HalfCheetah × medium/medium-replay/expert)."""

    tasks = TASKS
    task_ids: ClassVar[dict[str, str]] = {t: f"{ENVS[t.split('-')[0]]}-{t.split('-', 1)[1]}" for t in TASKS}
    generated = False  # set by load_model: True when the DTs were trained on generated data

    def __init__(
        self,
        seeds: int = 20,
        env_version: str = "v5",
        max_steps: int = MAX_EPISODE_STEPS,
        feed: str = "step",
        target_return: float | None = None,
        dataset_source: str = "auto",
        download: int = 0,
    ):
        from tasks.d4rl.rollout import FEEDS

        if int(seeds) < 1:
            raise ValueError(f"seeds must be a positive integer, got {seeds}")
        if env_version not in VERSIONS:
            raise ValueError(
                f"unknown env_version {env_version!r}; choose one of {', '.join(VERSIONS)} (v3 needs mujoco-py)"
            )
        if not 1 <= int(max_steps) <= MAX_EPISODE_STEPS:
            raise ValueError(f"max_steps must be in 1..{MAX_EPISODE_STEPS}, got {max_steps}")
        if feed not in FEEDS:
            raise ValueError(f"unknown feed {feed!r}; choose one of {', '.join(FEEDS)}")
        if dataset_source not in ("auto", "minari", "generated"):
            raise ValueError(f"unknown dataset_source {dataset_source!r}; choose one of auto, minari, generated")
        self.seeds, self.env_version, self.max_steps, self.feed = int(seeds), env_version, int(max_steps), feed
        self.target_return = None if target_return in (None, "") else float(target_return)
        self.dataset_source, self.download = dataset_source, bool(int(download))
        self.models = None
        self._envs: dict[str, object] = {}

    # ---- model -------------------------------------------------------------------------------
    def load_model(self, model: str | None, device="cpu", dtype="float32"):
        """``(DTModels, source name)``: DTs load per task on first use (see :mod:`tasks.d4rl.model`)."""
        from tasks.d4rl.model import DTModels

        self.models = DTModels(model, device, dtype, self.dataset_source, self.download)
        self.generated = model is None  # the shipped DTs are trained on generated datasets
        return self.models, self.models.name

    def _loaded(self, task: str, models=None):
        models = models or self.models
        if models is None:
            models, _ = self.load_model(None)
        return models.get(task)

    def _env(self, env: str):
        if env not in self._envs:
            self._envs[env] = make_env(env, self.env_version)
        return self._envs[env]

    # ---- samples -----------------------------------------------------------------------------
    def samples(self, task: str, tokenizer=None, max_length: int | None = None, seed: int = 0) -> Iterator[Sample]:
        """One sample per env seed ``seed * 1000 + i`` (i < ``seeds``); raises :class:`TaskUnavailable`
        now when mujoco, the model or its dataset statistics are missing."""
        try:
            env, quality = split_task(task)
        except ValueError as err:
            raise TaskUnavailable(str(err)) from err
        self._env(env)  # MujocoMissing (a TaskUnavailable) if gymnasium/mujoco are missing
        loaded = self._loaded(task)
        source = "generated" if loaded.info.get("generated") else loaded.info.get("dataset_source", "unknown")
        meta = {
            "env": env,
            "quality": quality,
            "env_id": env_id(env, self.env_version),
            "env_version": self.env_version,
            "source": source,
            "generated": source == "generated",
            "dataset_id": loaded.info.get("dataset_id"),
            "model": loaded.location,
            "max_steps": self.max_steps,
            "prompt_tokens": 3 * self.max_steps,  # the longest context (a --cache-size fraction is of this)
            "feed": self.feed,
            "target_return": self.target_return or loaded.spec.target_return,
        }
        return iter(
            [
                Sample(
                    id=f"seed{seed * 1000 + i}",
                    task=task,
                    prompt="",
                    answers=[],
                    max_new_tokens=self.max_steps,
                    metadata={**meta, "seed": seed * 1000 + i},
                    chat=False,
                )
                for i in range(self.seeds)
            ]
        )

    def score(self, sample: Sample, prediction: str) -> float:
        match = re.search(r"return=(-?[\d.]+)", prediction)
        return normalized_score(sample.metadata["env"], float(match.group(1))) / 100 if match else 0.0

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate_sample(self, sample: Sample, model, caches: CacheFactory, device="cpu") -> dict:
        """Roll one episode (env seed ``sample.metadata["seed"]``) with the DT through an eviction
        cache made by ``caches`` (the runner's :class:`tasks.base.CacheFactory`)."""
        from tasks.d4rl.rollout import cached_rollout

        loaded = self._loaded(sample.task, model if hasattr(model, "get") else None)
        spec = (
            loaded.spec
            if self.target_return is None
            else dataclasses.replace(loaded.spec, target_return=self.target_return)
        )
        env = sample.metadata["env"]
        r = cached_rollout(
            loaded.model,
            spec,
            self._env(env),
            sample.metadata["seed"],
            caches,
            self.max_steps,
            self.feed,
        )
        norm = normalized_score(env, r.episode_return)
        return {
            "prediction": f"return={r.episode_return:.1f}",
            "score": norm / 100,
            "new_tokens": r.steps,
            "cache": {
                **caches.summarise(r.cache_stats),
                "physical_max": r.physical_max,
                "physical_max_after_update": r.physical_max_after_update,
                "updates": r.n_updates,
            },
            "timing": {
                "prefill_s": 0.0,
                "decode_s": r.timing["rollout_s"],
                "policy_s": r.timing["policy_s"],
                "steps_per_s": r.timing["steps_per_s"],
            },
            "episode_return": r.episode_return,
            "normalized_score": norm,
            "env_steps": r.steps,
            "context_tokens": 3 * r.steps - 1,
            "input_tokens": 3 * r.steps - 1,
            "terminated": r.terminated,
        }
