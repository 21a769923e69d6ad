"""Time the two NAMM parts alone, on warm caches: the BAM scorer and one update's streamed spectrogram.

    python scripts/namm_parts.py [--tokens 1000,1900,4800] [--threads 1] [--device cpu]

For each number of held tokens ``n`` (at an update: the kept tokens plus the ``n_up`` = 512 that
arrived), with SmolLM2-135M's 3 KV heads and group of 3 query heads per KV head:

- ``bam ms``: ``BAMScorer.score`` on ``[1, 3, n, 25]`` features with random parameters, and
  ``sdpa ms`` the fused causal attention inside it alone (``[1, 3, n, 32]``), with its rate in
  GFLOP/s (causal: ``3 heads x 2 matmuls x n^2/2 x 32 x 2`` flops);
- ``stream ms``: one update of ``SpectrogramStream``: 512 query rows pushed in chunks of 30 (as the
  CPU attention chunks them), keys growing from ``n - 512`` to ``n``, GQA mean included.

Medians of 20 repeats after 3 warm-ups. Random inputs: timing only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from policies.namm.features import FeatureConfig  # noqa: E402
from policies.namm.scorers import BAMScorer  # noqa: E402
from policies.namm.stream import SpectrogramStream  # noqa: E402

HEADS, GROUP, N_UP, CHUNK = 3, 3, 512, 30


def median_ms(fn, repeats: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", default="1000,1900,4800", help="tokens held at an update, comma-separated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    scorer = BAMScorer()
    params = (torch.randn(scorer.n_params, generator=gen) * 0.1).to(dev)
    cfg = FeatureConfig(gamma=0.9999)
    print("| tokens held | bam ms | sdpa ms | sdpa GFLOP/s | stream ms |")
    print("|---:|---:|---:|---:|---:|")
    for n in (int(t) for t in args.tokens.split(",")):
        x = torch.randn(1, HEADS, n, 25, generator=gen).to(dev)
        valid = torch.ones(1, HEADS, n, dtype=torch.bool, device=dev)
        q = torch.randn(1, HEADS, n, scorer.hidden, generator=gen).to(dev)
        bam = median_ms(lambda: scorer.score(x, valid, params))
        sdpa = median_ms(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True))
        gflops = HEADS * 2 * (n * n / 2) * scorer.hidden * 2 / (sdpa * 1e-3) / 1e9
        n0 = max(n - N_UP, 1)
        chunks = []
        for start in range(0, N_UP, CHUNK):
            c = min(CHUNK, N_UP - start)
            chunks.append(torch.rand(1, HEADS, GROUP, c, n0 + start + c, generator=gen).to(dev))
        carry, prev = torch.rand(1, HEADS, n0, cfg.n_carry).to(dev), torch.rand(1, HEADS, n0, cfg.n_freq).to(dev)

        def update():
            s = SpectrogramStream(carry, prev, cfg)
            for probs in chunks:
                s.push(probs.mean(2))
            s.finish()

        stream = median_ms(update)
        print(f"| {n} | {bam:.2f} | {sdpa:.2f} | {gflops:.1f} | {stream:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
