#!/usr/bin/env bash
# The second MLP fitting campaign (issue 15): the first MLP campaign's recipe (../mlp-campaign-1/command.sh:
# answer progress 0.5, gamma 0.9999, diagonal CMA-ES, bf16, the offset fitness rule), changed in three ways:
# - started (--init) from the first campaign's generation 10, its best validation (a passkey-finding MLP
#   that keeps ~0.33 of the cache held out and loses every needle);
# - the hinge memory term's target is 0.6 instead of 0.5 (2 * max(0, kept - 0.6)). The MLP target of
#   issue 15 is a cache of at most 0.7, and at 0.5 the first campaign's population lost the needle in
#   35 of generations 21-61 (needle fitness 0), leaving CMA-ES no needle signal to climb;
# - contexts of 1K and 2K tokens and 3 prompts per task per generation instead of 2K and 2: at 1K more
#   needles survive eviction (signal), and a generation costs about the same as the first campaign's.
# And float32 instead of bfloat16: it was started on an AVX2-only CPU (AMD EPYC, no AVX512-BF16), where a
# bf16 forward is 5.1x slower than fp32 (../../fit-bench/README.md); a fit's dtype is part of its identity.
# Re-running this resumes from the last completed generation.
cd "$(dirname "$0")/../../.."
exec python -m harness fit --policy namm_mlp --suite niah --suite-arg lengths=1024,2048 --suite-arg depths=0.00,0.05,0.10,0.15,0.20,0.25,0.30,0.35,0.40,0.45,0.50,0.55,0.60,0.65,0.70,0.75,0.80,0.85,0.90,0.95,1.00 \
    --stages passkey,needle:300 --popsize 8 --prompts-per-task 3 --max-length 2100 --eval-every 5 \
    --gamma 0.9999 --memory-weight 2 --memory-target 0.6 --progress-weight 0.5 --cma diagonal --fitness-rule offset \
    --init results/fits/mlp-campaign-1/checkpoints/gen10.safetensors --dtype float32 --out results/fits/mlp-campaign-2 "$@"
