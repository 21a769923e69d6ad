"""Env steps per second of DT rollouts on CPU: each policy through the eviction cache vs the
uncached DT recomputing its window every step (full episode = the paper's setting; and the
original DT evaluation's 20-step window, for reference).

    python -m harness.d4rl_bench --task halfcheetah-expert --steps 1000 --out results/d4rl/bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings


def main(argv=None) -> int:
    import torch

    from harness.cache_factory import CacheFactory
    from policies import make_policy
    from tasks.d4rl.envs import make_env, normalized_score, split_task
    from tasks.d4rl.model import DTModels
    from tasks.d4rl.rollout import cached_rollout, uncached_rollout

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="halfcheetah-expert")
    parser.add_argument("--model", default=None)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--budget", type=int, default=2048, help="tokens per head for the budget policies (paper: 2048)"
    )
    parser.add_argument("--n-up", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--policies", default="full,h2o,l2,streaming,namm_bam,namm_mlp")
    parser.add_argument("--uncached-windows", default="full,20", help="'full' = whole episode; N = last N steps")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    env_name, _ = split_task(args.task)
    loaded = DTModels(args.model).get(args.task)
    env = make_env(env_name)
    rows = []

    def record(name, r, extra=None):
        row = {
            "policy": name,
            "env_steps": r.steps,
            "seconds": r.timing["rollout_s"],
            "steps_per_s": round(r.steps / r.timing["rollout_s"], 1),
            "policy_s": r.timing["policy_s"],
            "return": round(r.episode_return, 1),
            "normalized": round(normalized_score(env_name, r.episode_return), 1),
            "physical_max": r.physical_max or None,
            **(extra or {}),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    for name in args.policies.split(","):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            policy = make_policy(name, budget=args.budget, n_up=args.n_up)
        r = cached_rollout(loaded.model, loaded.spec, env, args.seed, CacheFactory(policy, args.n_up), max_steps=args.steps)
        record(f"cached/{name}", r, {"budget": getattr(policy, "budget", None), "n_up": args.n_up})
    for w in args.uncached_windows.split(","):
        window = None if w == "full" else int(w)
        r = uncached_rollout(loaded.model, loaded.spec, env, args.seed, window=window, max_steps=args.steps)
        record(f"uncached/window={w}", r)
    result = {
        "task": args.task,
        "model": loaded.location,
        "n_params": sum(p.numel() for p in loaded.model.parameters()),
        "threads": args.threads,
        "steps": args.steps,
        "seed": args.seed,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
