#!/usr/bin/env bash
# The second BAM fitting campaign (issue 15): the first one's settings (../bam-campaign/command.sh) with
# a hinge memory term instead of the linear one: fitness = mean normalised task score
# - 2 * max(0, kept fraction - 0.5), so caches at or below half cost nothing and larger ones cost a lot
# (beyond the paper). Why: in 29 generations of the first campaign the population drifted from 53% to
# ~90-95% of the cache (the linear 0.3 * kept was too weak against losing a needle).
# Re-running this resumes from the last completed generation.
cd "$(dirname "$0")/../../.."
exec python -m harness fit --policy namm_bam --suite niah --suite-arg lengths=2048 --suite-arg depths=0.00,0.05,0.10,0.15,0.20,0.25,0.30,0.35,0.40,0.45,0.50,0.55,0.60,0.65,0.70,0.75,0.80,0.85,0.90,0.95,1.00 \
    --stages passkey,needle:300 --popsize 8 --prompts-per-task 2 --max-length 2100 --eval-every 5 \
    --gamma 0.9999 --memory-weight 2 --memory-target 0.5 --cma diagonal --fitness-rule offset --dtype bfloat16 \
    --out results/fits/bam-campaign-2 "$@"
