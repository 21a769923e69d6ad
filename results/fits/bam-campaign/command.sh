#!/usr/bin/env bash
# The BAM fitting campaign (issue 15). Re-running this resumes from the last completed generation.
cd "$(dirname "$0")/../../.."
exec python -m harness fit --policy namm_bam --suite niah --suite-arg lengths=2048 --suite-arg depths=0.00,0.05,0.10,0.15,0.20,0.25,0.30,0.35,0.40,0.45,0.50,0.55,0.60,0.65,0.70,0.75,0.80,0.85,0.90,0.95,1.00 \
    --stages passkey,needle:300 --popsize 8 --prompts-per-task 2 --max-length 2100 --eval-every 5 \
    --gamma 0.9999 --memory-weight 0.3 --cma diagonal --fitness-rule offset --dtype bfloat16 \
    --out results/fits/bam-campaign "$@"
