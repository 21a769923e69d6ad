#!/usr/bin/env bash
# The third BAM fitting campaign (issue 15): campaign 2's settings (../bam-campaign-2/command.sh: hinge
# memory term 2 * max(0, kept - 0.5)) plus the answer-progress term (beyond the paper):
# fitness += 0.5 * each task's mean answer progress, how far greedy decoding follows the reference
# answer, in [0, 1]. Why: in campaign 2 the needle is right-or-wrong on 2 prompts, so members that lose
# it tie at 0 however close they come, and in 4 of 16 generations every member tied (no ranking for
# CMA-ES). Same seed, so each generation samples the same prompts as campaign 2's: the curves compare.
# Re-running this resumes from the last completed generation.
cd "$(dirname "$0")/../../.."
exec python -m harness fit --policy namm_bam --suite niah --suite-arg lengths=2048 --suite-arg depths=0.00,0.05,0.10,0.15,0.20,0.25,0.30,0.35,0.40,0.45,0.50,0.55,0.60,0.65,0.70,0.75,0.80,0.85,0.90,0.95,1.00 \
    --stages passkey,needle:300 --popsize 8 --prompts-per-task 2 --max-length 2100 --eval-every 5 \
    --gamma 0.9999 --memory-weight 2 --memory-target 0.5 --progress-weight 0.5 --cma diagonal --fitness-rule offset \
    --dtype bfloat16 --out results/fits/bam-campaign-3 "$@"
