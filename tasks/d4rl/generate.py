"""Offline stand-ins for the D4RL datasets, made here (GENERATED: these are NOT D4RL data).

D4RL's data come from SAC agents trained for hours; nothing of the kind is trainable in minutes on
a CPU, and nothing can be downloaded offline. Instead, per env, we train a linear policy with
Augmented Random Search (ARS V2-t, Mania et al. 2018, arXiv 1803.07055) for a fixed wall-clock
budget, then write three minari datasets ``generated/<env>/<quality>-v0`` by analogy with D4RL:

* ``expert``: episodes of the best ARS snapshot (best noise-free evaluation return) — "expert" is
  only a name for the best policy we trained here; its actual return is in the metadata;
* ``medium``: episodes of the earliest snapshot whose normalised evaluation score reached a third
  of the best one (D4RL's medium policies score about a third of its experts);
* ``medium-replay``: episodes seen during ARS training up to the medium snapshot (two perturbed
  rollouts per iteration), as D4RL's medium-replay is the replay buffer up to the medium policy.

Episodes of ``medium``/``expert`` add Gaussian action noise (``action_noise``, default 0.1) for
diversity, as D4RL samples from stochastic SAC policies. Every dataset records its generator
(algorithm, seeds, budget, snapshot returns) in its minari description and ``provenance.json``.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.d4rl.envs import ENVS, QUALITIES, make_env, normalized_score

NAMESPACE = "generated"

# ARS V2-t hyperparameters (step size, directions, top directions, noise); Mania et al. Table 9
# with fewer directions for Walker2d (40 → 16) to fit a CPU budget.
ARS_PARAMS = {
    "hopper": {"step": 0.02, "n_dirs": 8, "top": 4, "noise": 0.03, "shift": 1.0},
    "walker2d": {"step": 0.03, "n_dirs": 16, "top": 8, "noise": 0.025, "shift": 1.0},
    "halfcheetah": {"step": 0.02, "n_dirs": 16, "top": 4, "noise": 0.03, "shift": 0.0},
}


def dataset_id(env: str, quality: str, namespace: str = NAMESPACE) -> str:
    return f"{namespace}/{env}/{quality}-v0"


@dataclass
class RunningStat:
    """Welford mean/variance of observations (ARS's state normalisation)."""

    n: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def push_many(self, xs: np.ndarray) -> None:
        for x in xs:
            self.n += 1
            if self.mean is None:
                self.mean, self.m2 = x.astype(np.float64).copy(), np.zeros_like(x, dtype=np.float64)
            else:
                d = x - self.mean
                self.mean += d / self.n
                self.m2 += d * (x - self.mean)

    @property
    def std(self) -> np.ndarray:
        if self.n < 2:
            return np.ones_like(self.mean)
        return np.sqrt(np.maximum(self.m2 / (self.n - 1), 1e-8))


@dataclass
class Episode:
    observations: list = field(default_factory=list)  # T + 1
    actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    terminations: list = field(default_factory=list)
    truncations: list = field(default_factory=list)
    seed: int | None = None

    @property
    def ret(self) -> float:
        return float(sum(self.rewards))


def run_episode(env, weights, mean, std, seed, rng=None, action_noise=0.0, shift=0.0):
    """One episode of ``a = clip(W (s - mean) / std [+ noise])``; returns (Episode, shifted return)."""
    obs, _ = env.reset(seed=int(seed))
    ep = Episode(observations=[obs], seed=int(seed))
    shifted = 0.0
    while True:
        a = weights @ ((obs - mean) / std)
        if action_noise:
            a = a + rng.normal(0.0, action_noise, a.shape)
        a = np.clip(a, -1.0, 1.0).astype(np.float32)
        obs, r, term, trunc, _ = env.step(a)
        ep.observations.append(obs)
        ep.actions.append(a)
        ep.rewards.append(float(r))
        ep.terminations.append(bool(term))
        ep.truncations.append(bool(trunc))
        shifted += float(r) - shift
        if term or trunc:
            return ep, shifted


def ars(
    env_name: str, version: str = "v5", seconds: float = 240.0, seed: int = 0, log=print, iterations: int | None = None
) -> dict:
    """Train a linear ARS policy for ``seconds`` (or exactly ``iterations``: reproducible); return
    snapshots and the replay episodes."""
    p = ARS_PARAMS[env_name]
    env = make_env(env_name, version)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    rng = np.random.default_rng(seed)
    weights = np.zeros((act_dim, obs_dim))
    stat = RunningStat()
    stat.push_many(np.zeros((1, obs_dim)))
    snapshots, replay = [], []  # replay: (iteration, Episode)
    start, it, steps, ep_seed = time.perf_counter(), 0, 0, seed * 1_000_000
    while (time.perf_counter() - start < seconds) if iterations is None else it < iterations:
        mean, std = stat.mean.copy(), stat.std.copy()
        deltas = rng.standard_normal((p["n_dirs"], act_dim, obs_dim))
        rewards = np.zeros((p["n_dirs"], 2))
        for k, delta in enumerate(deltas):
            for j, sign in enumerate((1.0, -1.0)):
                ep_seed += 1
                ep, shifted = run_episode(
                    env, weights + sign * p["noise"] * delta, mean, std, ep_seed, shift=p["shift"]
                )
                rewards[k, j] = shifted
                steps += len(ep.actions)
                stat.push_many(np.asarray(ep.observations[:-1]))
                if k == 0:
                    replay.append((it, ep))
        best = np.argsort(-rewards.max(1))[: p["top"]]
        sigma = rewards[best].std() + 1e-8
        step = (rewards[best, 0] - rewards[best, 1])[:, None, None] * deltas[best]
        weights = weights + p["step"] / (p["top"] * sigma) * step.sum(0)
        it += 1
        ep_seed += 1
        ev, _ = run_episode(env, weights, stat.mean, stat.std, ep_seed)
        snapshots.append(
            {
                "iteration": it,
                "steps": steps,
                "eval_return": ev.ret,
                "eval_length": len(ev.actions),
                "weights": weights.copy(),
                "mean": stat.mean.copy(),
                "std": stat.std.copy(),
            }
        )
        if it % 10 == 0:
            log(f"{env_name} ARS it {it} steps {steps} eval return {ev.ret:.1f} ({time.perf_counter() - start:.0f}s)")
    env.close()
    return {"snapshots": snapshots, "replay": replay, "params": p, "seconds": seconds, "seed": seed, "version": version}


def pick_snapshots(env_name: str, snapshots: list[dict]) -> tuple[dict, dict]:
    """(medium, expert) snapshots — see the module docstring."""
    expert = max(snapshots, key=lambda s: s["eval_return"])
    target = normalized_score(env_name, expert["eval_return"]) / 3
    medium = next(s for s in snapshots if normalized_score(env_name, s["eval_return"]) >= target)
    return medium, expert


def collect(env_name, version, snap, episodes, seed, action_noise):
    env = make_env(env_name, version)
    rng = np.random.default_rng(seed)
    out = [
        run_episode(env, snap["weights"], snap["mean"], snap["std"], seed + i, rng, action_noise)[0]
        for i in range(episodes)
    ]
    env.close()
    return out


def write_dataset(dataset: str, env_name: str, version: str, episodes: list[Episode], description: str):
    """Write a minari dataset (arrow format: no h5py/jax needed) from ``episodes``."""
    import minari
    from minari.data_collector import EpisodeBuffer

    if dataset in minari.list_local_datasets():
        minari.delete_dataset(dataset)
    buffers = [
        EpisodeBuffer(
            id=i,
            seed=ep.seed,
            observations=[np.asarray(o, dtype=np.float64) for o in ep.observations],
            actions=[np.asarray(a, dtype=np.float32) for a in ep.actions],
            rewards=list(ep.rewards),
            terminations=list(ep.terminations),
            truncations=list(ep.truncations),
            infos={},
        )
        for i, ep in enumerate(episodes)
    ]
    env = make_env(env_name, version)
    with warnings.catch_warnings():  # minari's advice to set an e-mail / code permalink / eval env
        warnings.simplefilter("ignore", UserWarning)
        ds = minari.create_dataset_from_buffers(
            dataset_id=dataset,
            buffer=buffers,
            env=env.spec,
            algorithm_name="ARS-V2t-linear (generated, not D4RL)",
            author="kv-eviction harness (generated locally)",
            description=description,
            data_format="arrow",
            requirements=None,
        )
    env.close()
    return ds


def generate(
    env_name: str,
    version: str = "v5",
    seconds: float = 240.0,
    episodes: int = 30,
    seed: int = 0,
    action_noise: float = 0.1,
    replay_cap: int = 200,
    log=print,
    iterations: int | None = None,
) -> dict:
    """Train ARS and write the three ``generated/<env>/<quality>-v0`` datasets; return provenance."""
    if env_name not in ENVS:
        raise ValueError(f"unknown D4RL env {env_name!r}; choose one of {', '.join(ENVS)}")
    run = ars(env_name, version, seconds, seed, log, iterations)
    medium, expert = pick_snapshots(env_name, run["snapshots"])
    replay = [ep for it, ep in run["replay"] if it < medium["iteration"]][-replay_cap:]
    data = {
        "medium": collect(env_name, version, medium, episodes, 10_000_000 + seed * 1000, action_noise),
        "medium-replay": replay,
        "expert": collect(env_name, version, expert, episodes, 20_000_000 + seed * 1000, action_noise),
    }
    provenance = {
        "generated": True,
        "not_d4rl": "generated locally by tasks/d4rl/generate.py; NOT the D4RL datasets",
        "env": env_name,
        "env_id": f"{ENVS[env_name]}-{version}",
        "algorithm": "ARS V2-t, linear policy (Mania et al. 2018)",
        "ars_params": run["params"],
        "ars_seconds": seconds,
        "ars_iterations": len(run["snapshots"]),
        "ars_env_steps": run["snapshots"][-1]["steps"],
        "seed": seed,
        "action_noise": action_noise,
        "medium_snapshot": {k: medium[k] for k in ("iteration", "steps", "eval_return")},
        "expert_snapshot": {k: expert[k] for k in ("iteration", "steps", "eval_return")},
        "eval_curve": [[s["iteration"], round(s["eval_return"], 1)] for s in run["snapshots"]],
        "datasets": {},
    }
    for quality in QUALITIES:
        eps = data[quality]
        returns = [ep.ret for ep in eps]
        info = {
            "dataset_id": dataset_id(env_name, quality),
            "episodes": len(eps),
            "steps": int(sum(len(e.actions) for e in eps)),
            "return_mean": float(np.mean(returns)),
            "return_max": float(np.max(returns)),
            "normalized_mean": normalized_score(env_name, float(np.mean(returns))),
        }
        desc = f"GENERATED (not D4RL): {quality} stand-in for {env_name}; {json.dumps({**info, 'medium': provenance['medium_snapshot'], 'expert': provenance['expert_snapshot'], 'algorithm': provenance['algorithm'], 'seed': seed})}"
        write_dataset(info["dataset_id"], env_name, version, eps, desc)
        provenance["datasets"][quality] = info
        log(
            f"wrote {info['dataset_id']}: {info['episodes']} episodes, {info['steps']} steps, mean return {info['return_mean']:.1f}"
        )
    return provenance


def main(argv=None) -> int:
    import argparse
    import os

    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default=",".join(ENVS))
    parser.add_argument("--env-version", default="v5")
    parser.add_argument("--seconds", type=float, default=240.0, help="ARS wall-clock budget per env")
    parser.add_argument(
        "--iterations", type=int, default=None, help="exact ARS iterations (reproducible; overrides --seconds)"
    )
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--provenance", default=None, help="JSON file to write (default: <minari root>/generated/provenance.json)"
    )
    args = parser.parse_args(argv)
    from minari.storage.datasets_root_dir import get_dataset_path

    out = args.provenance or os.path.join(get_dataset_path(NAMESPACE), "provenance.json")
    all_prov = json.loads(Path(out).read_text()) if os.path.exists(out) else {}
    for env_name in args.envs.split(","):
        all_prov[env_name] = generate(
            env_name, args.env_version, args.seconds, args.episodes, args.seed, iterations=args.iterations
        )
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(all_prov, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
