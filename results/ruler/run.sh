#!/usr/bin/env bash
# RULER with the embedded SmolLM2-135M-Instruct (issue 17): the kvpress protocol at compression ratios
# 0.25-0.875 and the paper's periodic schedule beside it. Every run resumes where it stopped, so this
# script can be stopped and re-run; it fills the lengths in order (LENGTHS, default 1024 2048 4096) and
# writes one report per length (report-L<length>/).
#   bash results/ruler/run.sh                 # everything
#   LENGTHS=1024 bash results/ruler/run.sh    # one length
#   LENGTHS=4096 PAPER_SIZES="0.31 0.4" bash results/ruler/run.sh   # paper-schedule rows at other sizes
# kvpress's own presses run in the kvpress environment (.venv-kvpress, transformers 5.2; see .ci/kvpress).
set -euo pipefail
cd "$(dirname "$0")/../.."
LENGTHS=${LENGTHS:-"1024 2048 4096"}
N=${N_SAMPLES:-2}
PY=${PYTHON:-python}
KVPY=${KVPRESS_PYTHON:-.venv-kvpress/bin/python}
RATIOS=${RATIOS:-"0.25 0.5 0.75 0.875"}
PAPER_SIZES=${PAPER_SIZES:-"0.5 0.25"}   # --cache-size of the paper-schedule h2o/l2 rows
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

for L in $LENGTHS; do
  common=(--suite ruler --suite-arg "lengths=$L" --suite-arg "n_samples=$N" --max-length "$L" --dtype bfloat16 --quiet)
  run() { local out=$1; shift; "$PY" -m harness run "${common[@]}" --out "results/ruler/runs/L$L/$out" "$@"; }
  run full --policy full
  for R in $RATIOS; do
    kv=(--protocol kvpress --compression-ratio "$R")
    run "l2-rw0-R$R" --policy l2 --recent-window 0 "${kv[@]}"   # = kvpress KnormPress (tests/test_kvpress_protocol.py)
    run "streaming-R$R" --policy streaming "${kv[@]}"           # = kvpress StreamingLLMPress
    run "h2o-R$R" --policy h2o "${kv[@]}"
    run "namm_bam-R$R" --policy namm_bam "${kv[@]}"
  done
  # the paper's schedule (the policy every n_up = 512 tokens over the whole prompt, question included)
  run paper-namm_bam --policy namm_bam
  for C in $PAPER_SIZES; do
    run "paper-h2o-cs$C" --policy h2o --cache-size "$C"
    run "paper-l2-cs$C" --policy l2 --cache-size "$C"
  done
  if [ -x "$KVPY" ]; then  # a kvpress press that needs kvpress itself (attention-based TOVA)
    for R in $RATIOS; do
      "$KVPY" -m harness run "${common[@]}" --out "results/ruler/runs/L$L/kvpress-TOVAPress-R$R" \
        --policy kvpress:TOVAPress --protocol kvpress --compression-ratio "$R"
    done
  fi
  "$PY" -m harness report "results/ruler/runs/L$L"/* --out "results/ruler/report-L$L" --no-figures
done
