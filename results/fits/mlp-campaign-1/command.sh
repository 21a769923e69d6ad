#!/usr/bin/env bash
# The first MLP fitting campaign (issue 15): BAM campaign 3's recipe (../bam-campaign-3/command.sh) with
# the token-wise MLP scorer (1,326 parameters): passkey + needle at 2K from the start, hinge memory term
# 2 * max(0, kept - 0.5), answer progress 0.5 (both beyond the paper), gamma 0.9999 (App. F), diagonal
# CMA-ES, bf16. Same seed, so each generation samples the same prompts as the BAM campaigns.
# Re-running this resumes from the last completed generation.
cd "$(dirname "$0")/../../.."
exec python -m harness fit --policy namm_mlp --suite niah --suite-arg lengths=2048 --suite-arg depths=0.00,0.05,0.10,0.15,0.20,0.25,0.30,0.35,0.40,0.45,0.50,0.55,0.60,0.65,0.70,0.75,0.80,0.85,0.90,0.95,1.00 \
    --stages passkey,needle:300 --popsize 8 --prompts-per-task 2 --max-length 2100 --eval-every 5 \
    --gamma 0.9999 --memory-weight 2 --memory-target 0.5 --progress-weight 0.5 --cma diagonal --fitness-rule offset \
    --dtype bfloat16 --out results/fits/mlp-campaign-1 "$@"
