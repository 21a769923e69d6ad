"""``python -m harness namm-init``: a NAMM checkpoint with normalisation statistics.

The paper (App. A.2) z-normalises the spectrogram features with statistics of the base model
computed on full-cache runs of the first training task, then freezes them. This command prefills
a task's prompts with a full cache (an observing NAMM policy that keeps every token), accumulates
the per-frequency mean and variance of the spectrogram EMA over batch, heads, tokens and layers,
and writes a checkpoint with those statistics and initial parameters (zeros — keep everything —
or a N(0, sigma^2) draw, as CMA-ES would sample around a zero mean).
"""

from __future__ import annotations

import sys

import torch

from harness.devices import DEVICE_MAP_HELP, DTYPE_HELP
from harness.errors import UsageError, choose


def add_arguments(p) -> None:
    p.add_argument("--architecture", default="bam", help="bam or mlp (default bam)")
    p.add_argument("--suite", default="niah", help="suite whose prompts give the statistics (default niah)")
    p.add_argument("--suite-arg", action="append", metavar="KEY=VALUE", help="suite option, e.g. lengths=2048")
    p.add_argument("--tasks", help="comma-separated tasks (default: the suite's first task)")
    p.add_argument("--limit", type=int, default=8, help="prompts per task (default 8)")
    p.add_argument("--model", help="model (default: the embedded smollm2)")
    p.add_argument("--max-length", type=int, help="context limit in tokens (default: the model's)")
    p.add_argument("--n-up", type=int, default=512)
    p.add_argument("--gamma", type=float, default=0.99, help="EMA discount per token (default 0.99)")
    p.add_argument("--init-sigma", type=float, default=0.0, help="draw parameters from N(0, sigma^2) (default 0: zeros)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda (with --device-map: where the "
                   "inputs go)")
    p.add_argument("--dtype", default="auto", help="model dtype: " + DTYPE_HELP.format(cpu="float32"))
    p.add_argument("--device-map", help=DEVICE_MAP_HELP)
    p.add_argument("--out", required=True, help="checkpoint path (.safetensors; a .json sidecar is written beside it)")


def collect_statistics(model, tokenizer, samples, architecture: str, n_up: int, gamma: float, max_length: int, progress=True):
    """Prefill every sample with a full cache; return the observing policy's ``RunningStats``."""
    from tqdm import tqdm

    from harness.attention import attach
    from harness.cache import EvictionCache
    from harness.generation import greedy_generate, middle_crop
    from harness.evaluate import format_prompt
    from policies import make_policy
    from policies.namm.scorers import SCORERS

    attach(model)
    policy = make_policy(f"namm_{architecture}", collect_stats=True, gamma=gamma, n_up=n_up,
                         params=torch.zeros(SCORERS[architecture]().n_params))
    device = next(model.parameters()).device
    for sample in tqdm(samples, disable=not progress, desc="statistics", unit="prompt", file=sys.stderr):
        ids = middle_crop(format_prompt(tokenizer, sample, "auto"), max_length - sample.max_new_tokens)
        cache = EvictionCache(model.config, policy, n_up=n_up, stream_rows=True)
        greedy_generate(model, torch.tensor([ids], device=device), cache, max_new_tokens=1, chunk_size=n_up)
    if policy.stats.count == 0:
        raise UsageError(f"no policy update happened: prompts must be at least --n-up ({n_up}) tokens long")
    return policy.stats


def main(args) -> int:
    from harness.models import load_model
    from policies.namm.checkpoint import save_checkpoint
    from policies.namm.scorers import SCORERS

    choose("architecture", args.architecture, SCORERS)
    from harness.suite_args import load_suite, parse_suite_args

    suite = load_suite(args.suite, parse_suite_args(args.suite_arg))
    selected = [t for t in args.tasks.split(",") if t] if args.tasks else [suite.tasks[0]]
    for task in selected:
        choose(f"task of suite {args.suite}", task, suite.tasks)
    if args.limit < 1 or args.init_sigma < 0 or not 0 < args.gamma < 1:
        raise UsageError("--limit must be >= 1, --init-sigma >= 0 and --gamma in (0, 1)")
    from harness.devices import check_device, check_device_map, resolve_dtype

    check_device(args.device)
    dtype = resolve_dtype(args.dtype, args.device)
    check_device_map(args.device_map, args.device)
    model, tokenizer, source = load_model(args.model, device=args.device, dtype=dtype, device_map=args.device_map,
                                          seed=args.seed)
    max_length = args.max_length or model.config.get_text_config().max_position_embeddings
    samples = [s for t in selected for i, s in enumerate(suite.samples(t, tokenizer, max_length=max_length, seed=args.seed))
               if i < args.limit]
    stats = collect_statistics(model, tokenizer, samples, args.architecture, args.n_up, args.gamma, max_length)
    n_params = SCORERS[args.architecture]().n_params
    params = torch.randn(n_params, generator=torch.Generator().manual_seed(args.seed)) * args.init_sigma
    save_checkpoint(
        args.out,
        architecture=args.architecture,
        params=params,
        norm_mean=stats.mean.float(),
        norm_var=stats.var.float(),
        hyperparameters={"gamma": args.gamma, "n_up": args.n_up, "n_fft": 32, "hop": 16, "age_dim": 8},
        fitted_on={"model": source.name, "tasks": [], "statistics_from": [f"{args.suite}/{t}" for t in selected],
                   "statistics_prompts": len(samples), "statistics_values": int(stats.count),
                   "generated_data": suite.generated},
        fitness={"note": f"not fitted: initial parameters (init_sigma={args.init_sigma}, seed={args.seed})"},
    )
    print(args.out)
    return 0
