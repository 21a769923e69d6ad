"""``python -m harness bench``: prefill/decode tokens per second, peak memory and policy time.

Each (policy, context length) runs in its own subprocess so its peak memory is its own: peak RSS on
CPU, ``torch.cuda.max_memory_allocated`` on CUDA (reset after the warm-up). The prompt is NIAH
haystack text cut to the requested token count, prefilled in ``n_up`` chunks; decoding is forced to
``--decode-tokens`` steps (stop tokens ignored). After ``--warmup`` untimed runs (default 1 on CUDA,
0 on CPU) the configuration runs ``--repeats`` times (fresh cache each time) and the row reports the
median prefill and decode times (CUDA events on a GPU, :mod:`harness.measure`). Results go to
``results/bench/<model>.jsonl`` and a Markdown table beside it, with what each policy saves
against the full cache of the same dtype and length, in KV memory and in tok/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from harness.devices import DEVICE_MAP_HELP, DTYPE_HELP

DEFAULT_POLICIES = "full,h2o,l2,streaming"
DEFAULT_LENGTHS = "2048,4096,8192"


def add_arguments(p) -> None:
    p.add_argument("--policies", default=DEFAULT_POLICIES, help=f"comma-separated (default {DEFAULT_POLICIES})")
    p.add_argument("--lengths", default=DEFAULT_LENGTHS, help=f"prompt tokens, comma-separated (default {DEFAULT_LENGTHS})")
    p.add_argument("--model", help="model (default: the embedded smollm2)")
    p.add_argument("--cache-size", type=float, default=0.25, help="budget: tokens or fraction of the prompt (default 0.25)")
    p.add_argument("--policy-checkpoint", help="NAMM checkpoint for namm_* policies (default: the shipped one)")
    p.add_argument("--decode-tokens", type=int, default=64, help="decoding steps to time (default 64)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per configuration; the row is their median (default 1)")
    p.add_argument("--warmup", type=int, help="untimed runs first (default: 1 on CUDA, 0 on CPU)")
    p.add_argument("--n-up", type=int, default=512)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda (with --device-map: where the "
                   "inputs go)")
    p.add_argument("--dtype", default="auto", help="model dtype: " + DTYPE_HELP.format(cpu="float32"))
    p.add_argument("--device-map", help=DEVICE_MAP_HELP + "; peak memory is --device's")
    p.add_argument("--out", default="results/bench", help="output folder (default results/bench)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure POLICY:LENGTH in this process


def _measure(args, policy_name: str, length: int) -> dict:
    """One configuration in this process: prefill, then forced greedy decoding."""
    import torch

    from harness.attention import attach
    from harness.cache import EvictionCache
    from harness.devices import resolve_dtype
    from harness.generation import greedy_generate
    from harness.measure import kv_bytes_per_token, median, peak_memory, reset_peak_memory
    from harness.models import load_model
    from harness.runner import RunConfig, make_run_policy, policy_for_sample
    from tasks.niah import haystack_text

    if args.threads:
        torch.set_num_threads(args.threads)
    args.dtype = resolve_dtype(args.dtype, args.device)
    model, tokenizer, source = load_model(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map)
    attach(model)
    ids = tokenizer(haystack_text(), add_special_tokens=False).input_ids
    while len(ids) < length:
        ids = ids + ids
    input_ids = torch.tensor([ids[:length]], device=args.device)
    checkpoint = args.policy_checkpoint if policy_name.startswith("namm") else None
    config = RunConfig(policy=policy_name, cache_size=args.cache_size, n_up=args.n_up, policy_checkpoint=checkpoint)
    policy = policy_for_sample(make_run_policy(config), config, length)
    warmup = args.warmup if args.warmup is not None else int(torch.device(args.device).type == "cuda")
    prefill, decode = [], []
    for i in range(warmup + max(1, args.repeats)):
        if i == warmup:
            reset_peak_memory(args.device)
        # no stop ids: exactly decode_tokens forward steps after the prefill's first token
        cache = EvictionCache(model.config, policy, n_up=args.n_up, stream_rows=True,
                              max_tokens=length + args.decode_tokens)
        for key in getattr(policy, "seconds", {}):  # NAMM breakdown: the last repeat's
            policy.seconds[key] = 0.0
        gen = greedy_generate(model, input_ids, cache, args.decode_tokens + 1, args.n_up)
        if i >= warmup:
            prefill.append(gen.prefill_s)
            decode.append(gen.decode_s)
    prefill_s, decode_s = median(prefill), median(decode)
    stats = [s for s in cache.stats() if s.get("evicts", True)]
    kept = sum(s["physical"] for s in stats) / len(stats)
    per_token = kv_bytes_per_token(model.config, next(model.parameters()).dtype)
    return {
        "model": source.name,
        **({"random_weights": True} if source.random_weights else {}),  # speed/memory only
        **({"device_map": args.device_map} if args.device_map else {}),
        "policy": policy_name,
        "dtype": args.dtype,
        "device": torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else "cpu",
        "length": length,
        "budget": getattr(policy, "budget", None),
        "prefill_tok_s": round(length / prefill_s, 1),
        "decode_tok_s": round(args.decode_tokens / decode_s, 2),
        "prefill_s": round(prefill_s, 3),
        "decode_s": round(decode_s, 3),
        "repeats": len(prefill),
        "warmup": warmup,
        "policy_s": round(cache.policy_seconds(), 3),  # the last repeat's
        "policy_fraction": round(cache.policy_seconds() / (gen.prefill_s + gen.decode_s), 4),
        **{f"{k}_s": round(v, 3) for k, v in getattr(policy, "seconds", {}).items()},  # NAMM breakdown
        **peak_memory(args.device),
        "kv_bytes_per_token": per_token,
        "kv_cache_mb": round(kept * per_token / 2**20, 2),  # at the end: kept slots x bytes per token
        "final_cache_physical": round(kept, 1),
        "torch_threads": torch.get_num_threads(),
    }


def main(args) -> int:
    if args.one:
        policy_name, length = args.one.split(":")
        print(json.dumps(_measure(args, policy_name, int(length))), flush=True)
        return 0
    import policies
    from harness.errors import UsageError, choose

    from harness.devices import check_device, check_device_map, resolve_dtype

    check_device(args.device)
    args.dtype = resolve_dtype(args.dtype, args.device)  # the rows record the concrete dtype
    check_device_map(args.device_map, args.device)
    names = [p for p in args.policies.split(",") if p]
    for name in names:
        choose("policy", name, policies.POLICIES)
    try:
        lengths = [int(x) for x in args.lengths.split(",") if x]
    except ValueError:
        raise UsageError(f"--lengths must be comma-separated integers, got {args.lengths!r}")
    if args.policy_checkpoint and not Path(args.policy_checkpoint).is_file():
        raise UsageError(f"--policy-checkpoint {args.policy_checkpoint}: no such file; pass a NAMM checkpoint "
                         "(.safetensors, e.g. from `fit` or `namm-init`)")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for length in lengths:
        for name in names:
            cmd = [sys.executable, "-m", "harness", "bench", "--one", f"{name}:{length}", "--cache-size", str(args.cache_size),
                   "--decode-tokens", str(args.decode_tokens), "--n-up", str(args.n_up), "--threads", str(args.threads),
                   "--repeats", str(args.repeats)] + (["--warmup", str(args.warmup)] if args.warmup is not None else []) + [
                   "--device", args.device, "--dtype", args.dtype] + (["--model", args.model] if args.model else []) \
                + (["--device-map", args.device_map] if args.device_map else []) \
                + (["--policy-checkpoint", args.policy_checkpoint] if args.policy_checkpoint else [])
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"bench of {name} at {length} tokens failed")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            _write(out_dir, rows)  # after every configuration: a failure later keeps the rows measured
            print(f"{name:10s} {length:6d} prefill {row['prefill_tok_s']:8.1f} tok/s  decode {row['decode_tok_s']:6.2f} tok/s  "
                  f"peak {row['peak_memory_mb']:7.1f} MB  policy {row['policy_s']:6.2f} s ({100 * row['policy_fraction']:.1f}%)", file=sys.stderr, flush=True)
    print(_write(out_dir, rows))
    return 0


def _write(out_dir: Path, rows: list[dict]) -> Path:
    """``<model>.jsonl`` (one row per configuration) and ``<model>.md`` (their table), rows so far."""
    model = rows[0]["model"] if rows else "model"
    jsonl = out_dir / f"{model}.jsonl"
    tmp = jsonl.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(jsonl)
    (out_dir / f"{model}.md").write_text(markdown_table(rows))
    return out_dir / f"{model}.md"


def markdown_table(rows: list[dict]) -> str:
    """Bench rows as a Markdown table: speed relative to ``full`` at the same length and dtype, peak
    memory, and the KV cache a policy saves against the full cache (the fraction of its bytes)."""
    full = {(r["length"], r.get("dtype")): r for r in rows if r["policy"] == "full"}
    lines = [
        "| policy | dtype | prompt tokens | budget | kept tokens | KV cache MB | KV saved vs full | prefill tok/s | "
        "prefill vs full | decode tok/s | decode vs full | peak memory MB | policy s | policy % of prefill+decode |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref = full.get((r["length"], r.get("dtype")))
        decode = f"{r['decode_tok_s'] / ref['decode_tok_s']:.2f}x" if ref else "n/a"
        prefill = f"{r['prefill_tok_s'] / ref['prefill_tok_s']:.2f}x" if ref else "n/a"
        kv = r.get("kv_cache_mb")
        saved = (f"{1 - r['final_cache_physical'] / ref['final_cache_physical']:.0%}"
                 if ref and ref.get("final_cache_physical") else "n/a")
        peak = r.get("peak_memory_mb", r.get("peak_rss_mb"))  # rows made before peak_memory_mb: RSS
        lines.append(
            f"| {r['policy']} | {r.get('dtype', 'float32')} | {r['length']} | {r['budget'] or 'all'} | "
            f"{r['final_cache_physical']} | {kv if kv is not None else 'n/a'} | {saved} | {r['prefill_tok_s']} | "
            f"{prefill} | {r['decode_tok_s']} | {decode} | {peak} | {r['policy_s']} | "
            f"{100 * r.get('policy_fraction', 0):.1f} |"
        )
    return "\n".join(lines) + "\n"
