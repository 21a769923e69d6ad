"""``python -m harness {run,list,bench}``: the command line. Bad input → one line, exit code 2."""

from __future__ import annotations

import argparse
import sys

from harness.devices import DEVICE_MAP_HELP, DTYPE_HELP
from harness.errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _cache_size(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cache-size must be a number of tokens or a fraction, got {text!r}")
    return value


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default="full", help="eviction policy (see `list`); default: full")
    p.add_argument("--suite", default="niah", help="benchmark suite (see `list`); default: niah")
    p.add_argument("--suite-arg", action="append", metavar="KEY=VALUE",
                   help="suite option, repeatable, e.g. lengths=2048,4096 depths=0.5 for niah; "
                   "chat_template=on for infinitebench (default off, the official setting)")
    p.add_argument("--data-dir", help="folder with local copies of the suite's official data files "
                   "(<task>.jsonl); default: the hub when reachable, else generated tasks only")
    p.add_argument("--data", help="suite jsonl: your records, a .jsonl/.parquet file or a folder of them (README)")
    p.add_argument("--metric", help="suite jsonl: default metric, exact, contains (default), first_int, f1 or rouge_l")
    p.add_argument("--tasks", help="comma-separated subset of the suite's tasks")
    p.add_argument("--limit", type=int, help="at most N samples per task")
    p.add_argument(
        "--model",
        help="built-in name (smollm2 [default], gemma), random:<arch> (random weights: speed/memory only; "
        "see `list`), a local folder, a .gguf file, or a hub id",
    )
    p.add_argument(
        "--cache-size",
        type=_cache_size,
        help="KV budget per layer and KV head: tokens (e.g. 1024) or a fraction of the prompt (e.g. 0.25); "
        "default: the policy's own (1024 tokens for h2o/l2/streaming)",
    )
    p.add_argument("--recent-window", type=int, help="newest tokens always kept by h2o/l2 (default: budget // 2)")
    p.add_argument("--n-sink", type=int, help="attention-sink tokens kept by streaming (default: 4) and by namm_* (default: 0, the paper's NAMM)")
    p.add_argument("--cache-mode", default="original", help="original (all heads keep the same count) or exact")
    p.add_argument("--policy-checkpoint", help="NAMM checkpoint (.safetensors with its .json sidecar)")
    p.add_argument("--namm-threshold", type=float, help="NAMM: evict tokens scoring below this (default 0; video suites: 5)")
    p.add_argument("--namm-gamma", type=float, help="NAMM: EMA discount per token (default: the checkpoint's, 0.99)")
    p.add_argument("--max-length", type=int, help="context limit in tokens (default: the model's); longer prompts "
                   "are middle-cropped; one that would crop a prompt below 64 tokens is refused")
    p.add_argument("--n-up", type=int, default=512, help="run the policy every N tokens (default 512)")
    p.add_argument("--prefill-chunk", type=int, help="prompt tokens per forward pass (default: n-up)")
    p.add_argument("--chat-template", default="auto", help="auto (use the model's if it has one), on or off")
    p.add_argument("--truncation", default="paper", help="paper: middle-crop the templated prompt to max-length "
                   "minus max new tokens; longbench: the official pred.py rule (crop the plain prompt to max-length)")
    p.add_argument("--protocol", default="paper", help="paper: the policy runs every n-up tokens over the whole "
                   "prompt (default); kvpress: the context is prefilled and compressed once, the question never "
                   "(NVIDIA kvpress's leaderboard protocol; needs --compression-ratio)")
    p.add_argument("--compression-ratio", type=float, help="kvpress protocol: fraction of the context's tokens "
                   "evicted per KV head, 0 <= R < 1 (kept: int(n_context * (1 - R)))")
    p.add_argument("--query-aware", action="store_true", help="kvpress protocol: compress the question with "
                   "the context (kvpress's query_aware)")
    p.add_argument("--seed", type=int, default=0, help="samples' seed, and the weights of random:<arch> (default 0)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (with --device-map: "
                   "where the inputs go, the first layer's device)")
    p.add_argument("--dtype", default="auto", help=DTYPE_HELP.format(cpu="float32"))
    p.add_argument("--device-map", help=DEVICE_MAP_HELP)


def _run(args) -> int:
    from harness.runner import RunConfig, run
    from harness.suite_args import suite_args_of

    config = RunConfig(
        policy=args.policy,
        suite=args.suite,
        suite_args=suite_args_of(args),
        data_dir=args.data_dir,
        tasks=[t for t in args.tasks.split(",") if t] if args.tasks else None,
        limit=args.limit,
        model=args.model,
        cache_size=args.cache_size,
        recent_window=args.recent_window,
        n_sink=args.n_sink,
        cache_mode=args.cache_mode,
        policy_checkpoint=args.policy_checkpoint,
        namm_threshold=args.namm_threshold,
        namm_gamma=args.namm_gamma,
        max_length=args.max_length,
        n_up=args.n_up,
        prefill_chunk=args.prefill_chunk,
        chat_template=args.chat_template,
        truncation=args.truncation,
        protocol=args.protocol,
        compression_ratio=args.compression_ratio,
        query_aware=args.query_aware,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,  # "auto" is resolved by run() before it is recorded
        device_map=args.device_map,
    )
    run_dir = run(config, out=args.out, progress=not args.quiet)
    print(run_dir)
    return 0


def _list(args) -> int:
    import policies
    import tasks as suites
    from harness import random_models
    from harness.models import BUILTIN_MODELS

    print("policies:")
    for name in sorted(policies.POLICIES):
        print(f"  {name:12s} {policies.policy_summary(name)}")
    print("suites:")
    for name in sorted(suites.SUITES):
        suite = suites.SUITES[name]
        label = " (generated data)" if suite.generated else ""
        print(f"  {name}{label}: {', '.join(suite.tasks) or 'tasks from your data (--data PATH)'}")
    print(f"models: {', '.join(BUILTIN_MODELS)} (built-in), or a folder / .gguf file / hub id")
    print("random-weight models (real shapes, SmolLM2's tokenizer; speed/memory only, accuracy means nothing):")
    for name in random_models.names():
        print(f"  {random_models.PREFIX + name:22s} {random_models.summary(name)}")
    return 0


def _bench(args) -> int:
    from harness.bench import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m harness", description="KV-cache eviction harness (NAMM paper reproduction).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p_run = sub.add_parser("run", help="evaluate a policy on a suite", description="Evaluate a policy on a suite. "
                           "Re-running the same command resumes: finished samples are skipped.")
    _add_run_args(p_run)
    p_run.add_argument("--out", help="run directory (default: runs/<suite>/<policy>[-cs<size>]-<model>)")
    p_run.add_argument("--quiet", action="store_true", help="no progress bar")
    p_run.set_defaults(func=_run)

    p_list = sub.add_parser("list", help="list policies, suites and tasks, built-in models")
    p_list.set_defaults(func=_list)

    from harness.report import command as report_command

    p_rep = sub.add_parser("report", help="paper-style tables (Markdown, LaTeX, CSV) and figures from run directories",
                           description="Tables and figures from run directories (and fit folders with --fit).")
    report_command.add_arguments(p_rep)
    p_rep.set_defaults(func=report_command.main)

    from tasks.d4rl import train as dt_train

    p_dt = sub.add_parser("fit-dt", help="train a small Decision Transformer on a minari dataset (d4rl suite)",
                          description="Train a Decision Transformer (transformers format) on a minari dataset, "
                          "on CPU; the d4rl suite runs it with --model DIR.")
    dt_train.add_arguments(p_dt)
    p_dt.set_defaults(func=dt_train.main)

    from harness import namm_init

    p_init = sub.add_parser("namm-init", help="NAMM checkpoint with normalisation statistics from full-cache runs",
                            description="Write a NAMM checkpoint: normalisation statistics from full-cache "
                            "prefills of a task (paper App. A.2) and zero or N(0, sigma^2) parameters.")
    namm_init.add_arguments(p_init)
    p_init.set_defaults(func=namm_init.main)

    from harness.fit import command as fit_command

    p_fit = sub.add_parser("fit", help="fit a NAMM with CMA-ES in incremental stages (resumable)",
                           description="Fit a NAMM's parameters with CMA-ES, stage by stage (paper §3.3). "
                           "Re-running the same command resumes from the last completed generation.")
    fit_command.add_arguments(p_fit)
    p_fit.set_defaults(func=fit_command.main)

    p_bench = sub.add_parser("bench", help="prefill/decode speed and memory per policy and context length")
    from harness.bench import add_arguments

    add_arguments(p_bench)
    p_bench.set_defaults(func=_bench)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
