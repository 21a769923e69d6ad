"""``fit-dt``: train a small Decision Transformer on a minari dataset, on CPU.

Writes a transformers ``DecisionTransformerModel`` folder (``config.json`` + ``model.safetensors``)
and ``dt_info.json``: state normalisation, return scale, target return, training settings and
losses, and the dataset's provenance (id, minari or generated, its description, and the
generator's ``provenance.json`` entry for generated data). Training follows the DT paper's
recipe (Chen et al. 2021, gym experiments): random length-``context`` segments of episodes
(sampled in proportion to episode length), returns-to-go scaled by ``return_scale``, MSE on the
predicted actions, AdamW with linear warm-up. One CPU thread is fastest for these sizes here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from tasks.d4rl.envs import MAX_EPISODE_STEPS, TASKS, split_task


def add_arguments(parser) -> None:
    parser.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)}")
    parser.add_argument("--out", default=None, help="output folder (default: runs/dt/<task>)")
    parser.add_argument(
        "--dataset-source",
        default="auto",
        choices=("auto", "minari", "generated"),
        help="mujoco/<env>/<quality>-v0 first (auto), only it, or only generated/<env>/<quality>-v0",
    )
    parser.add_argument("--download", action="store_true", help="let minari download the dataset")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--context", type=int, default=20, help="training segment length K in env steps")
    parser.add_argument("--steps", type=int, default=3000, help="optimiser steps")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--return-scale", type=float, default=1000.0)
    parser.add_argument("--target-return", type=float, default=None, help="default: the dataset's best episode return")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)


def segments(trajs, starts_rng, batch, K, scale, state_mean, state_std, act_dim, state_dim):
    """A batch of left-padded length-K segments (DT paper's ``get_batch``)."""
    lengths = np.array([len(t["actions"]) for t in trajs])
    idx = starts_rng.choice(len(trajs), size=batch, p=lengths / lengths.sum())
    s = np.zeros((batch, K, state_dim), np.float32)
    a = np.zeros((batch, K, act_dim), np.float32)
    r = np.zeros((batch, K, 1), np.float32)
    ts = np.zeros((batch, K), np.int64)
    mask = np.zeros((batch, K), np.int64)
    for b, i in enumerate(idx):
        t = trajs[i]
        start = starts_rng.integers(0, len(t["actions"]))
        seg = slice(start, min(start + K, len(t["actions"])))
        n = seg.stop - seg.start
        s[b, K - n :] = (t["observations"][seg] - state_mean) / state_std
        a[b, K - n :] = t["actions"][seg]
        r[b, K - n :, 0] = t["rtg"][seg] / scale
        ts[b, K - n :] = np.arange(seg.start, seg.stop)
        mask[b, K - n :] = 1
    return s, a, r, ts, mask


def train(args, log=print) -> dict:
    import torch
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    from tasks.d4rl.data import find_dataset, state_stats, trajectories

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    env, quality = split_task(args.task)
    dataset, dataset_id, source = find_dataset(env, quality, args.download, args.dataset_source)
    trajs = trajectories(dataset)
    for t in trajs:
        t["rtg"] = np.cumsum(t["rewards"][::-1])[::-1].astype(np.float32)
    state_mean, state_std = state_stats(trajs)
    state_dim, act_dim = trajs[0]["observations"].shape[1], trajs[0]["actions"].shape[1]
    returns = [float(t["rewards"].sum()) for t in trajs]
    target = args.target_return if args.target_return is not None else max(returns)
    config = DecisionTransformerConfig(
        state_dim=state_dim,
        act_dim=act_dim,
        hidden_size=args.hidden,
        n_layer=args.layers,
        n_head=args.heads,
        n_inner=4 * args.hidden,
        max_ep_len=MAX_EPISODE_STEPS,
        n_positions=max(16, 3 * args.context),
        action_tanh=True,
        bos_token_id=None,
        eos_token_id=None,
        resid_pdrop=0.1,
        attn_pdrop=0.1,
        embd_pdrop=0.1,
    )
    model = DecisionTransformerModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / max(1, args.warmup)))
    rng = np.random.default_rng(args.seed)
    model.train()
    start, losses = time.perf_counter(), []
    for step in range(args.steps):
        s, a, r, ts, mask = (
            torch.from_numpy(x)
            for x in segments(
                trajs, rng, args.batch, args.context, args.return_scale, state_mean, state_std, act_dim, state_dim
            )
        )
        out = model(
            states=s,
            actions=a,
            rewards=torch.zeros_like(r),
            returns_to_go=r,
            timesteps=ts,
            attention_mask=mask,
            return_dict=True,
        )
        m = mask.bool()
        loss = ((out.action_preds[m] - a[m]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 500 == 0 or step + 1 == args.steps:
            log(
                f"{args.task} step {step + 1}/{args.steps} loss {np.mean(losses[-100:]):.4f} ({time.perf_counter() - start:.0f}s)"
            )
    model.eval()
    out_dir = Path(args.out or Path("runs") / "dt" / args.task)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    info = {
        "task": args.task,
        "env": env,
        "quality": quality,
        "dataset_id": dataset_id,
        "dataset_source": source,
        "generated": source == "generated",
        "dataset_description": dataset.storage.metadata.get("description"),
        "dataset_author": _plain(dataset.storage.metadata.get("author")),
        "dataset_algorithm": dataset.storage.metadata.get("algorithm_name"),
        "dataset_provenance": _generator_provenance(env) if source == "generated" else None,
        "dataset_episodes": len(trajs),
        "dataset_steps": int(sum(len(t["actions"]) for t in trajs)),
        "dataset_return_mean": float(np.mean(returns)),
        "dataset_return_max": float(max(returns)),
        "state_mean": state_mean.tolist(),
        "state_std": state_std.tolist(),
        "return_scale": args.return_scale,
        "target_return": float(target),
        "training": {k: v for k, v in vars(args).items() if k not in ("func",)},
        "train_seconds": round(time.perf_counter() - start, 1),
        "loss_first100": float(np.mean(losses[:100])),
        "loss_last100": float(np.mean(losses[-100:])),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "versions": _versions(),
    }
    (out_dir / "dt_info.json").write_text(json.dumps(info, indent=1))
    log(f"wrote {out_dir} ({info['n_params']} parameters, trained on {dataset_id} [{source}])")
    return info


def _generator_provenance(env: str) -> dict | None:
    from minari.storage.datasets_root_dir import get_dataset_path

    path = Path(get_dataset_path("generated")) / "provenance.json"
    if not path.exists():
        return None
    entry = json.loads(path.read_text()).get(env)
    if entry:
        entry = {k: v for k, v in entry.items() if k != "eval_curve"}
    return entry


def _plain(value):
    return sorted(value) if isinstance(value, set) else value


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "gymnasium", "mujoco", "minari"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def main(args) -> int:
    from tasks.base import TaskUnavailable

    try:
        split_task(args.task)
        train(args)
    except (ValueError, TaskUnavailable) as err:
        print(f"error: {str(err).splitlines()[0]}")
        return 2
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
