"""Can a NAMM tell the needle from the haystack? A probe of the scorer's inputs (issue 15).

The held-out NIAH table (results/fits/heldout-40/) shows every evicting policy losing the San Francisco
needle, NAMMs included. This script asks whether the information a NAMM scores tokens from (the
25 per-token inputs: the z-normalised spectrogram EMA of the attention each token received, plus the
oldness embedding) separates the needle sentence's tokens from the haystack's at all.

For each generated needle prompt (the ``niah`` suite, chat template as ``run`` feeds it) the model
prefills the prompt in ``n_up`` chunks through the eviction cache under a recording NAMM that keeps
every token (so the inputs are those of a full cache). At every update, in every layer and KV head,
it records the inputs and the checkpoint's scores of the needle's tokens and of a sample of the
haystack's. Then, per update after the needle arrived:

- ``auc_namm``: ROC AUC of the checkpoint's scores, needle tokens against haystack tokens (1 = every
  needle token outscores every haystack token; 0.5 = no better than chance);
- ``auc_l2``: the same for L2's score (minus the key norm), a key-only baseline;
- ``needle_survival`` / ``haystack_survival`` (a second pass, the checkpoint evicting as in ``run``):
  the fraction of the needle's / the rest's tokens still cached after the last update of the prompt,
  per layer and KV head, averaged; ``needle_whole``: the fraction of (layer, head) pairs that keep
  every needle token;
- ``auc_probe_linear`` / ``auc_probe_mlp``: the best a token-wise scorer could do on these inputs,
  estimated by a logistic regression and a 25-32-1 MLP fitted to separate needle from haystack on the
  prompts of half the depths and tested on the other half (a token-wise scorer is exactly what
  ``namm_mlp`` is; BAM also looks across tokens).

    python scripts/needle_probe.py --out results/fits/needle-probe            # shipped namm_bam
    python scripts/needle_probe.py --checkpoint PATH --architecture namm_mlp --out DIR

It writes ``DIR/probe.json`` (every number) and ``DIR/probe.md`` (the table). Generated data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.attention import attach  # noqa: E402
from harness.cache import EvictionCache  # noqa: E402
from harness.evaluate import format_prompt  # noqa: E402
from harness.generation import greedy_generate  # noqa: E402
from harness.models import load_model  # noqa: E402
from policies import POLICIES  # noqa: E402
from policies.base import Selection  # noqa: E402
from tasks.niah import NEEDLE, NIAH  # noqa: E402


def recording_policy(name: str, **options):
    """A NAMM of ``name`` (constructed with ``options``) that records every update's inputs, scores
    and decisions in ``policy.log``; it evicts as ``select`` does when ``policy.evict``, else it keeps
    every token."""
    base = POLICIES[name]

    class Recorder(base):
        def select(self, view):
            x = self.token_inputs(view)  # [1, h, n, 25]
            params = self._on(x)[0]
            scores = self.scorer.score(x, view.valid, params.to(x.dtype))  # [1, h, n]
            l2 = -view.keys.float().norm(dim=-1)  # [1, h, n]
            scores = scores.masked_fill(view.positions == view.seen - 1, float("inf"))  # as select()
            keep = (scores >= self.threshold) & view.valid
            self.log.append((view.seen, view.layer_idx, view.positions[0].clone(), x[0].clone(),
                             scores[0].clone(), l2[0].clone(), keep[0].clone()))
            if self.evict:
                return Selection(scores, keep)
            keep = view.valid.clone()
            return Selection(torch.zeros_like(keep, dtype=torch.float32), keep)

    policy = Recorder(**options)
    policy.log = []
    policy.evict = False
    return policy


def needle_positions(tokenizer, sample, ids: list[int]) -> torch.Tensor:
    """Token indices (into ``ids``) that overlap the needle sentence's characters."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": sample.prompt}],
                                         add_generation_prompt=True, tokenize=False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc.input_ids) != list(ids):
        raise SystemExit("needle_probe: re-tokenising the templated prompt gave other ids; cannot locate the needle")
    start = text.find(NEEDLE)
    end = start + len(NEEDLE)
    return torch.tensor([i for i, (a, b) in enumerate(enc.offset_mapping) if a < end and b > start])


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """ROC AUC: P(a positive outscores a negative), ties counted half."""
    pos, neg = pos.double().flatten(), neg.double().flatten()
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)


def collect(policy, model, tokenizer, sample, n_up: int, haystack_per_head: int, gen: torch.Generator):
    """Run one prompt; return per-update records of needle and sampled haystack tokens."""
    ids = format_prompt(tokenizer, sample, "auto")
    needle = needle_positions(tokenizer, sample, ids)
    survival = {}
    for evict in (True, False):  # the NAMM's own trajectory, then the full cache's (observe only)
        policy.log, policy.evict = [], evict
        cache = EvictionCache(model.config, policy, n_up=n_up)
        greedy_generate(model, torch.tensor([ids]), cache, max_new_tokens=1, chunk_size=n_up)
        if evict:
            last = {}
            for seen, layer, positions, *_, keep in policy.log:
                last[layer] = (positions, keep)  # the final update's decision per layer
            survivors = [pos[h][keep[h]] for pos, keep in last.values() for h in range(pos.shape[0])]
            kept = torch.stack([torch.isin(needle, s) for s in survivors]).double()  # [layers * heads, needle]
            hay_total = len(ids) - len(needle)
            hay_kept = [float((~torch.isin(s, needle)).sum()) / hay_total for s in survivors]
            survival = {"needle_survival": float(kept.mean()),
                        "needle_whole": float((kept.min(dim=-1).values).mean()),
                        "haystack_survival": sum(hay_kept) / len(hay_kept)}
    out = []
    for seen, layer, positions, x, scores, l2, _ in policy.log:
        if seen <= int(needle.max()):
            continue  # the needle has not fully arrived
        is_needle = torch.isin(positions, needle)  # [h, n]
        for h in range(positions.shape[0]):
            nd = is_needle[h].nonzero().flatten()
            hay = (~is_needle[h]).nonzero().flatten()
            pick = hay[torch.randperm(len(hay), generator=gen)[:haystack_per_head]]
            out.append({"seen": seen, "layer": layer, "head": h,
                        "needle_x": x[h, nd], "hay_x": x[h, pick],
                        "needle_s": scores[h, nd], "hay_s": scores[h, hay],
                        "needle_l2": l2[h, nd], "hay_l2": l2[h, hay]})
    return out, len(ids), needle, survival


def fit_probe(xs: torch.Tensor, ys: torch.Tensor, hidden: int | None, steps: int = 600) -> torch.nn.Module:
    """Logistic regression (``hidden`` None) or a one-hidden-layer MLP, class-balanced, full batch Adam."""
    torch.manual_seed(0)
    d = xs.shape[-1]
    net = torch.nn.Linear(d, 1) if hidden is None else torch.nn.Sequential(
        torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
    w = torch.where(ys > 0, 0.5 / ys.mean(), 0.5 / (1 - ys.mean()))
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xs).squeeze(-1), ys, weight=w)
        loss.backward()
        opt.step()
    return net


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default="namm_bam", choices=["namm_bam", "namm_mlp"])
    ap.add_argument("--checkpoint", default=None, help="a NAMM checkpoint (default: the shipped one)")
    ap.add_argument("--lengths", default="1024,2048")
    ap.add_argument("--depths", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8")
    ap.add_argument("--haystack-per-head", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    lengths = [int(v) for v in args.lengths.split(",")]
    depths = [float(v) for v in args.depths.split(",")]
    model, tokenizer, _ = load_model(None, dtype=args.dtype)
    attach(model)
    policy = recording_policy(args.policy, checkpoint=args.checkpoint)
    suite = NIAH(lengths=lengths, depths=depths)
    gen = torch.Generator().manual_seed(0)
    per_prompt = []
    rows = []
    for length in lengths:
        for k, depth in enumerate(depths):
            t0 = time.perf_counter()
            sample = suite.make_sample("needle", tokenizer, length, depth)
            recs, n_tok, needle, survival = collect(policy, model, tokenizer, sample, 512, args.haystack_per_head, gen)
            per_prompt.append({"length": length, "depth": depth, "tokens": n_tok, "needle_tokens": len(needle),
                               "needle_first": int(needle.min()), "split": "train" if k % 2 == 0 else "test",
                               **survival})
            for r in recs:
                r.update(length=length, depth=depth, split=per_prompt[-1]["split"])
            rows.extend(recs)
            print(f"needle {length} {depth}: {n_tok} tokens, needle at {int(needle.min())}-{int(needle.max())}, "
                  f"{len(recs)} (update, layer, head) records, {time.perf_counter() - t0:.0f}s", flush=True)

    def pooled(sel, key):
        pos = torch.cat([r[f"needle_{key}"] for r in sel])
        neg = torch.cat([r[f"hay_{key}"] for r in sel])
        return pos, neg

    summary = {"policy": args.policy, "checkpoint": args.checkpoint or "shipped", "dtype": args.dtype,
               "prompts": per_prompt, "by_length": {}}
    for length in lengths + [None]:
        sel = [r for r in rows if length is None or r["length"] == length]
        # per (prompt, update, layer, head) AUCs, averaged: the ranking each eviction decision sees
        a_namm = torch.tensor([auc(r["needle_s"], r["hay_s"]) for r in sel]).mean().item()
        a_l2 = torch.tensor([auc(r["needle_l2"], r["hay_l2"]) for r in sel]).mean().item()
        prompts = [p for p in per_prompt if length is None or p["length"] == length]
        entry = {"records": len(sel), "auc_namm": a_namm, "auc_l2": a_l2,
                 **{k: sum(p[k] for p in prompts) / len(prompts)
                    for k in ("needle_survival", "needle_whole", "haystack_survival")}}
        for name, hidden in (("linear", None), ("mlp", 32)):
            train = [r for r in sel if r["split"] == "train"]
            test = [r for r in sel if r["split"] == "test"]
            px, nx = pooled(train, "x")
            net = fit_probe(torch.cat([px, nx]).float(), torch.cat([torch.ones(len(px)), torch.zeros(len(nx))]), hidden)
            with torch.no_grad():
                entry[f"auc_probe_{name}"] = torch.tensor(
                    [auc(net(r["needle_x"].float()).squeeze(-1), net(r["hay_x"].float()).squeeze(-1)) for r in test]
                ).mean().item()
        summary["by_length"]["all" if length is None else str(length)] = entry
        print(length or "all", json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in entry.items()}),
              flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = ["| prompts | records | needle tokens kept | whole needle kept | haystack kept | AUC NAMM scores "
             "| AUC L2 | AUC linear probe | AUC MLP probe |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, e in summary["by_length"].items():
        lines.append(f"| {key} | {e['records']} | {e['needle_survival']:.3f} | {e['needle_whole']:.3f} "
                     f"| {e['haystack_survival']:.3f} | {e['auc_namm']:.3f} | {e['auc_l2']:.3f} "
                     f"| {e['auc_probe_linear']:.3f} | {e['auc_probe_mlp']:.3f} |")
    (out / "probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
