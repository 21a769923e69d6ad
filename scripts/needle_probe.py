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

- ``needle_survival`` / ``haystack_survival`` (a first pass, the checkpoint evicting as in ``run``):
  the fraction of the needle's / the rest's tokens still cached at the end of the prompt, per layer
  and KV head, averaged; ``needle_whole``: the fraction of (layer, head) pairs that keep every needle
  token.
- ``auc_namm``: ROC AUC of the checkpoint's scores, needle tokens against haystack tokens, per
  (update, layer, head) of the observing pass, averaged (1 = every needle token outscores every
  haystack token; 0.5 = chance); ``auc_namm_local``: against the haystack within 64 positions of the
  needle only (neighbours of the same age);
- ``auc_l2``: the same for L2's score (minus the key norm), a key-only baseline;
- ``auc_probe_*``: the best a token-wise scorer (what ``namm_mlp`` is; BAM also looks across tokens)
  could do on these inputs, estimated by a logistic regression and a 25-32-1 MLP, cross-fitted over
  two folds of the depths (all lengths pooled); ``17``: on the 17 spectrogram features alone,
  ``25``: with the oldness embedding too (which can only locate the needle by its position).

    python scripts/needle_probe.py --out results/fits/needle-probe            # shipped namm_bam
    python scripts/needle_probe.py --checkpoint PATH --policy namm_mlp --out DIR

It writes ``DIR/probe.json`` (every number) and ``DIR/probe.md`` (the table). Generated data.
``--save-linear-mlp PATH [--keep F]`` also writes the 17-feature linear probe, fitted on every record,
as a ``namm_mlp`` checkpoint whose bias keeps a fraction F of the haystack: the needle ranking of
these inputs as a runnable policy (supervised on the needle labels, so not a fitted NAMM).
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
from policies.namm.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from policies.namm.scorers import MLPScorer  # noqa: E402
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
    """Run one prompt twice (the NAMM evicting, then observing only); return the observing pass's
    per-(update, layer, head) records (updates after the needle arrived), the prompt's length, the
    needle's token indices and the evicting pass's survival fractions."""
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
                last[layer] = (seen, positions, keep)  # the final update's decision per layer
            # what each (layer, head) holds at the end of the prompt: the final update's survivors and
            # every token that arrived after it
            survivors = [torch.cat([pos[h][keep[h]], torch.arange(seen, len(ids))])
                         for seen, pos, keep in last.values() for h in range(pos.shape[0])]
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
            out.append({"seen": seen, "layer": layer, "head": h, "needle_x": x[h, nd], "hay_x": x[h, pick],
                        "needle_s": scores[h, nd], "hay_s": scores[h, hay], "hay_pos": positions[h, hay],
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


PROBES = {"linear17": (None, 17), "mlp17": (32, 17), "linear25": (None, 25), "mlp25": (32, 25)}
LOCAL = 64  # "local" AUCs compare the needle with the haystack tokens within this many positions of it


def probe_aucs(rows: list[dict]) -> None:
    """Two-fold cross-fitted probes (fit on the prompts of one half of the depths, all lengths pooled;
    tested on the other half): sets ``r["probe_<name>"]``, the AUC on each record of the held-out fold. ``*17``: the
    17 spectrogram features only (no oldness embedding, so the probe cannot find the needle by its
    position); ``*25``: all of the scorer's inputs."""
    for name, (hidden, dims) in PROBES.items():
        for test in ("a", "b"):
            train = [r for r in rows if r["split"] != test]
            px = torch.cat([r["needle_x"] for r in train])[:, :dims].float()
            nx = torch.cat([r["hay_x"] for r in train])[:, :dims].float()
            net = fit_probe(torch.cat([px, nx]), torch.cat([torch.ones(len(px)), torch.zeros(len(nx))]), hidden)
            with torch.no_grad():
                for r in rows:
                    if r["split"] == test:
                        r[f"probe_{name}"] = auc(net(r["needle_x"][:, :dims].float()).squeeze(-1),
                                                 net(r["hay_x"][:, :dims].float()).squeeze(-1))


def linear_mlp_params(weight: torch.Tensor, bias: float) -> torch.Tensor:
    """``[1326]`` ``namm_mlp`` parameters whose score is the linear function ``weight . x + bias`` of the
    inputs (``weight`` ``[d <= 25]``, zero-padded): the residual MLP with zero hidden weights is
    ``h = x``, so its score is ``out_weight . x + out_bias``."""
    scorer = MLPScorer()
    tensors = {name: torch.zeros(shape) for name, shape in scorer.layout()}
    tensors["out_weight"][0, :weight.numel()] = weight.float()
    tensors["out_bias"][0] = float(bias)
    return scorer.flatten(tensors)


def save_linear_mlp(rows: list[dict], keep: float, source, path: str, dims: int = 17) -> dict:
    """Fit the linear probe on every record (no fold held out), set its bias so that a fraction
    ``keep`` of the sampled haystack scores >= 0 (``namm_mlp`` keeps what scores >= 0), and save it
    as a ``namm_mlp`` checkpoint with the normalisation statistics and hyperparameters of ``source``
    (the Checkpoint the records were made with). Returns the checkpoint's summary (the ``fitness`` sidecar)."""
    px = torch.cat([r["needle_x"] for r in rows])[:, :dims].float()
    nx = torch.cat([r["hay_x"] for r in rows])[:, :dims].float()
    net = fit_probe(torch.cat([px, nx]), torch.cat([torch.ones(len(px)), torch.zeros(len(nx))]), None)
    weight, bias = net.weight.detach()[0], float(net.bias.detach()[0])
    with torch.no_grad():
        hay = nx @ weight + bias
        shift = -float(torch.quantile(hay, 1.0 - keep))  # keep the top ``keep`` of the haystack
        needle_kept = float(((px @ weight + bias + shift) >= 0).double().mean())
    params = linear_mlp_params(weight, bias + shift)
    info = {"made_by": "scripts/needle_probe.py --save-linear-mlp (a supervised linear probe, not fitted by CMA-ES)",
            "probe_dims": dims, "haystack_kept_target": keep, "needle_tokens_kept_on_records": needle_kept,
            "records": len(rows)}
    save_checkpoint(path, architecture="mlp", params=params, norm_mean=source.norm_mean,
                    norm_var=source.norm_var, hyperparameters=dict(source.hyperparameters),
                    fitted_on={"model": "smollm2", "suite": "niah", "tasks": ["needle"], "generated_data": True,
                               "labels": "needle tokens against haystack tokens"},
                    fitness=info)
    return info


def near(r: dict) -> torch.Tensor:
    """``[n_haystack]`` bool: the record's haystack tokens within ``LOCAL`` positions of the needle."""
    distance = torch.maximum(r["needle_lo"] - r["hay_pos"], r["hay_pos"] - r["needle_hi"])
    return distance <= LOCAL


def summarise(rows: list[dict], prompts: list[dict]) -> dict:
    """Means over the (update, layer, head) records and the prompts of one group."""
    def mean(values):
        values = list(values)
        return sum(values) / len(values) if values else float("nan")

    entry = {"prompts": len(prompts), "records": len(rows),
             **{k: mean(p[k] for p in prompts) for k in ("needle_survival", "needle_whole", "haystack_survival")},
             # per record: the ranking one eviction decision sees
             "auc_namm": mean(auc(r["needle_s"], r["hay_s"]) for r in rows),
             "auc_namm_local": mean(auc(r["needle_s"], r["hay_s"][near(r)])
                                    for r in rows),
             "auc_l2": mean(auc(r["needle_l2"], r["hay_l2"]) for r in rows)}
    for name in PROBES:
        entry[f"auc_probe_{name}"] = mean(r[f"probe_{name}"] for r in rows)
    return entry


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default="namm_bam", choices=["namm_bam", "namm_mlp"])
    ap.add_argument("--checkpoint", default=None, help="a NAMM checkpoint (default: the shipped one)")
    ap.add_argument("--lengths", default="1024,2048,4096")
    ap.add_argument("--depths", default="0.1,0.25,0.4,0.55,0.7,0.85")
    ap.add_argument("--haystack-per-head", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--records", default=None,
                    help="cache of the collected records (torch.save): read when it exists, else written")
    ap.add_argument("--save-linear-mlp", default=None, metavar="PATH",
                    help="also fit the 17-feature linear probe on every record and save it as a namm_mlp checkpoint")
    ap.add_argument("--keep", type=float, default=0.5,
                    help="with --save-linear-mlp: the fraction of the haystack its bias keeps (default 0.5)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    lengths = [int(v) for v in args.lengths.split(",")]
    depths = [float(v) for v in args.depths.split(",")]
    identity = {"policy": args.policy, "checkpoint": args.checkpoint or "shipped", "dtype": args.dtype,
                "lengths": lengths, "depths": depths, "haystack_per_head": args.haystack_per_head}
    if args.records and Path(args.records).exists():
        saved = torch.load(args.records)
        if saved["identity"] != identity:
            raise SystemExit(f"needle_probe: {args.records} holds records of {saved['identity']}; remove it")
        per_prompt, rows = saved["prompts"], saved["rows"]
    else:
        per_prompt, rows = collect_all(args, lengths, depths)
        if args.records:
            torch.save({"identity": identity, "prompts": per_prompt, "rows": rows}, args.records)
    probe_aucs(rows)
    if args.save_linear_mlp:
        recorder = POLICIES[args.policy](checkpoint=args.checkpoint)
        source = load_checkpoint(recorder.checkpoint or recorder._shipped())
        print("linear probe as namm_mlp:", json.dumps(save_linear_mlp(rows, args.keep, source, args.save_linear_mlp)))
    summary = {**identity, "prompts": per_prompt, "by_length": {}}
    for length in lengths + [None]:
        sel = [r for r in rows if length is None or r["length"] == length]
        prompts = [p for p in per_prompt if length is None or p["length"] == length]
        entry = summarise(sel, prompts)
        summary["by_length"]["all" if length is None else str(length)] = entry
        print(length or "all", json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in entry.items()}),
              flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = ["| prompts | needle tokens kept | whole needle kept | haystack kept | AUC NAMM | AUC NAMM local "
             "| AUC L2 | probe linear 17 | probe MLP 17 | probe linear 25 | probe MLP 25 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, e in summary["by_length"].items():
        lines.append(f"| {key} ({e['prompts']}) | {e['needle_survival']:.2f} | {e['needle_whole']:.2f} "
                     f"| {e['haystack_survival']:.2f} | {e['auc_namm']:.2f} | {e['auc_namm_local']:.2f} "
                     f"| {e['auc_l2']:.2f} | " + " | ".join(f"{e[f'auc_probe_{n}']:.2f}" for n in PROBES) + " |")
    (out / "probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def collect_all(args, lengths: list[int], depths: list[float]) -> tuple[list[dict], list[dict]]:
    model, tokenizer, _ = load_model(None, dtype=args.dtype)
    attach(model)
    policy = recording_policy(args.policy, checkpoint=args.checkpoint)
    suite = NIAH(lengths=lengths, depths=depths)
    gen = torch.Generator().manual_seed(0)
    per_prompt, rows = [], []
    for length in lengths:
        for k, depth in enumerate(depths):
            t0 = time.perf_counter()
            sample = suite.make_sample("needle", tokenizer, length, depth)
            recs, n_tok, needle, survival = collect(policy, model, tokenizer, sample, 512, args.haystack_per_head, gen)
            split = "a" if k % 2 == 0 else "b"  # alternate depths: the probes' two folds
            per_prompt.append({"length": length, "depth": depth, "tokens": n_tok, "needle_tokens": len(needle),
                               "needle_first": int(needle.min()), "split": split, **survival})
            for r in recs:
                r.update(length=length, depth=depth, split=split, needle_lo=int(needle.min()),
                         needle_hi=int(needle.max()))
            rows.extend(recs)
            print(f"needle {length} {depth}: {n_tok} tokens, needle at {int(needle.min())}-{int(needle.max())}, "
                  f"{len(recs)} (update, layer, head) records, needle kept {survival['needle_survival']:.2f}, "
                  f"haystack kept {survival['haystack_survival']:.2f}, {time.perf_counter() - t0:.0f}s", flush=True)
    return per_prompt, rows


if __name__ == "__main__":
    raise SystemExit(main())
