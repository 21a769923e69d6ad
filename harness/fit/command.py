"""``python -m harness fit``: command-line arguments → :class:`harness.fit.loop.FitConfig`."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UsageError


def add_arguments(p) -> None:
    from harness.devices import DEVICE_MAP_HELP
    from harness.fit.loop import DEFAULT_FIT_DTYPE

    p.add_argument("--policy", default="namm_bam", help="namm_bam (default) or namm_mlp")
    p.add_argument("--suite", default="niah", help="suite whose tasks are fitted (default niah)")
    p.add_argument("--suite-arg", action="append", metavar="KEY=VALUE",
                   help="suite option, repeatable, e.g. lengths=2048 for niah")
    p.add_argument("--data-dir", help="folder with local copies of the suite's official data files")
    p.add_argument("--stages", action="append", metavar="TASKS[:GENERATIONS]",
                   help="one per stage, e.g. --stages passkey:300 --stages needle:250; a stage ADDS its tasks "
                        "and starts from the previous stage's best mean (default generations 10)")
    p.add_argument("--popsize", type=int, default=32, help="CMA-ES population (paper 32)")
    p.add_argument("--elite-ratio", type=float, default=0.5)
    p.add_argument("--sigma0", type=float, default=0.065, help="initial step size (paper's code 0.065)")
    p.add_argument("--mean0", type=float, default=0.0)
    p.add_argument("--cma", default="diagonal", metavar="{diagonal,full}",
                   help="CMA-ES covariance: diagonal (default; separable CMA-ES, a ~0.7 MB state for BAM) or full "
                        "(the paper; a ~280 MB state, and at ~4k parameters it barely adapts: see README)")
    p.add_argument("--fitness-rule", default="offset", metavar="{offset,paper}",
                   help="a task where the full cache scores 0: offset (default) counts it 1 + mean score; paper "
                        "divides every task by (full-cache mean + 1e-7), as the paper's code")
    p.add_argument("--memory-weight", type=float, default=0.0, metavar="W",
                   help="beyond the paper: fitness minus W times the mean kept fraction of the cache (default 0)")
    p.add_argument("--memory-target", type=float, metavar="T",
                   help="beyond the paper: with --memory-weight W, the memory term is W * max(0, kept fraction - T) "
                        "(caches at or below T cost nothing); default: W * kept fraction")
    p.add_argument("--progress-weight", type=float, default=0.0, metavar="P",
                   help="beyond the paper: fitness plus P times each task's mean answer progress, how far greedy "
                        "decoding follows the reference answer (in [0, 1]; breaks ties between right-or-wrong "
                        "scores); default 0")
    p.add_argument("--prompts-per-task", type=int, default=64, help="training prompts sampled per task and generation")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each task's prompts held out")
    p.add_argument("--eval-every", type=int, default=10, help="score the CMA-ES mean on validation every N generations")
    p.add_argument("--member-batch", type=int, help="population members per forward pass (default: all)")
    p.add_argument("--stats-prompts", type=int, default=8, help="prompts for the normalisation statistics")
    p.add_argument("--model", help="model (default: the embedded smollm2)")
    p.add_argument("--dtype", default="auto", metavar="{auto,float32,bfloat16,float16}",
                   help=f"model weights: auto (default: bfloat16 on CUDA, {DEFAULT_FIT_DTYPE} on a CPU with bf16 "
                        "arithmetic (AVX512-BF16, AMX), float32 on other CPUs), float32, bfloat16 or float16")
    p.add_argument("--max-length", type=int, help="context limit in tokens (default: the model's)")
    p.add_argument("--n-up", type=int, default=512)
    p.add_argument("--cache-mode", default="original")
    p.add_argument("--gamma", type=float, default=0.99, help="NAMM EMA discount per token")
    p.add_argument("--threshold", type=float, default=0.0, help="NAMM eviction threshold")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start stage 1 from this NAMM checkpoint's parameters and frozen normalisation statistics "
                        "(continue an earlier fit with new stages)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda (with --device-map: where the "
                   "inputs go)")
    p.add_argument("--device-map", help=DEVICE_MAP_HELP)
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--stop-after", metavar="DURATION",
                   help="stop between generations before this much wall time since the command started is "
                        "passed (the previous generation's time estimates the next's), e.g. 2h, 90m, 2h15m, 3600s, 3600; "
                        "SIGTERM/SIGINT also stop, after the current generation. Re-running resumes")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", required=True, help="fit folder (re-running the same command resumes; --threads "
                   "and --stop-after may differ between runs)")


def main(args) -> int:
    import torch

    from harness.devices import check_device, check_device_map, resolve_dtype
    from harness.fit.inputs import parse_stage
    from harness.fit.loop import DEFAULT_FIT_DTYPE, Fit, FitConfig
    from harness.fit.stopping import Stopper, parse_duration
    from harness.suite_args import parse_suite_args

    check_device(args.device)
    check_device_map(args.device_map, args.device)
    dtype = resolve_dtype(args.dtype, args.device, cpu_default=DEFAULT_FIT_DTYPE)  # concrete before it is recorded
    stopper = Stopper(parse_duration(args.stop_after), args.stop_after) if args.stop_after is not None else Stopper()
    if not args.stages:
        raise UsageError("give at least one --stages TASKS[:GENERATIONS], e.g. --stages passkey:10")
    if args.member_batch is not None and args.member_batch < 1:
        raise UsageError(f"--member-batch must be a positive integer, got {args.member_batch}")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    config = FitConfig(
        policy=args.policy, suite=args.suite, suite_args=parse_suite_args(args.suite_arg),
        data_dir=args.data_dir, stages=[parse_stage(s) for s in args.stages], popsize=args.popsize,
        elite_ratio=args.elite_ratio, sigma0=args.sigma0, mean0=args.mean0, cma=args.cma,
        fitness_rule=args.fitness_rule, memory_weight=args.memory_weight, memory_target=args.memory_target,
        progress_weight=args.progress_weight, prompts_per_task=args.prompts_per_task,
        val_fraction=args.val_fraction, eval_every=args.eval_every, member_batch=args.member_batch,
        stats_prompts=args.stats_prompts, model=args.model, dtype=dtype,
        max_length=args.max_length, n_up=args.n_up, cache_mode=args.cache_mode, gamma=args.gamma,
        threshold=args.threshold, seed=args.seed, device=args.device, device_map=args.device_map, init=args.init,
    )
    print(Fit(config, Path(args.out), progress=not args.quiet, stopper=stopper).run())
    return 0
