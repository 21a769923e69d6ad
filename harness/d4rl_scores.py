"""Score grid without the runner: every task × seed through ``D4RL.evaluate_sample`` (what the
runner does for this suite), for a few policies; writes one JSON with per-task means.

    python -m harness.d4rl_scores --policies full,h2o:2048,h2o:512 --seeds 20 --out results/d4rl/scores.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings


def main(argv=None) -> int:
    import numpy as np
    import torch

    from harness.cache_factory import CacheFactory
    from policies import make_policy
    from tasks.d4rl.suite import D4RL

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default="full,h2o:2048")
    parser.add_argument("--tasks", default=None)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--n-up", type=int, default=512)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    suite = D4RL(seeds=args.seeds)
    models, name = suite.load_model(args.model)
    tasks = args.tasks.split(",") if args.tasks else list(suite.tasks)
    out = {"model": name, "seeds": args.seeds, "n_up": args.n_up, "generated": suite.generated, "results": {}}
    for spec in args.policies.split(","):
        pname, _, budget = spec.partition(":")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            policy = make_policy(pname, budget=int(budget) if budget else None, n_up=args.n_up)
        for task in tasks:
            start = time.perf_counter()
            caches = CacheFactory(policy, args.n_up)
            res = [suite.evaluate_sample(s, models, caches) for s in suite.samples(task, None, None)]
            row = {
                "normalized_mean": round(float(np.mean([r["normalized_score"] for r in res])), 2),
                "normalized_std": round(float(np.std([r["normalized_score"] for r in res])), 2),
                "return_mean": round(float(np.mean([r["episode_return"] for r in res])), 1),
                "env_steps_mean": round(float(np.mean([r["env_steps"] for r in res])), 1),
                "physical_mean": round(float(np.mean([r["cache"]["physical_mean"] for r in res])), 1),
                "physical_max": max(r["cache"]["physical_max"] for r in res),
                "seconds": round(time.perf_counter() - start, 1),
            }
            out["results"].setdefault(spec, {})[task] = row
            print(spec, task, json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
