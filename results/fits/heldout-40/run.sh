#!/usr/bin/env bash
# The held-out table of issue 15: 40 generated NIAH prompts that no fit has seen — passkey and needle,
# contexts of 1K, 2K, 3K and 4K tokens, at depths 0.025/0.275/0.525/0.775/0.975 (every fit here used
# depths on the 0.05 grid and 2K contexts). bf16 weights, as the fits (DTYPE sets another). Every run resumes where it
# stopped, so this script can be stopped and re-run.
#   bash results/fits/heldout-40/run.sh                          # full cache + baselines at CACHE_SIZES
#   CACHE_SIZES=0.42 bash results/fits/heldout-40/run.sh         # baselines at a NAMM's mean cache
#   NAMMS="campaign2-best=namm_bam:results/fits/bam-campaign-2/stage1/best.safetensors" bash results/fits/heldout-40/run.sh
#   MODEL=gemma bash results/fits/heldout-40/run.sh              # zero-shot transfer (runs/gemma/...)
#   NAMM_ARGS="--n-sink 4" NAMMS=... bash results/fits/heldout-40/run.sh   # extra options for the NAMM runs
#   DTYPE=float32 bash results/fits/heldout-40/run.sh            # fp32 weights (runs/smollm2-float32/...)
# A list set empty (e.g. NAMMS="") runs none of it.
# kvpress's own presses run in the kvpress environment (.venv-kvpress; see .ci/kvpress) when it exists.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=${PYTHON:-python}
KVPY=${KVPRESS_PYTHON:-.venv-kvpress/bin/python}
MODEL=${MODEL:-smollm2}
DTYPE=${DTYPE:-bfloat16}   # bf16 unless set: on a CPU without bf16 arithmetic (AVX2 only) fp32 is ~5x faster
CACHE_SIZES=${CACHE_SIZES-"0.5 0.3"}
BASELINES=${BASELINES-"h2o l2 streaming"}
PRESSES=${PRESSES-"KnormPress TOVAPress KeyDiffPress ObservedAttentionPress"}
NAMMS=${NAMMS-"namm_bam-default=namm_bam namm_mlp-default=namm_mlp"}   # label=policy[:checkpoint] (none: the shipped default)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
SET=$MODEL; [ "$DTYPE" = bfloat16 ] || SET=$MODEL-$DTYPE   # bf16 runs keep their original folders
OUT=results/fits/heldout-40/runs/$SET
common=(--model "$MODEL" --suite niah --tasks passkey,needle --suite-arg lengths=1024,2048,3072,4096
        --suite-arg depths=0.025,0.275,0.525,0.775,0.975 --max-length 4200 --dtype "$DTYPE" --quiet)
run() { local out=$1; shift; "$PY" -m harness run "${common[@]}" --out "$OUT/$out" "$@"; }

run full --policy full
for spec in $NAMMS; do
  label=${spec%%=*}; policy=${spec#*=}; ckpt=
  case $policy in *:*) ckpt=${policy#*:}; policy=${policy%%:*};; esac
  # shellcheck disable=SC2086  # NAMM_ARGS: extra options for the NAMM runs, e.g. "--n-sink 4"
  if [ -n "$ckpt" ]; then run "$label" --policy "$policy" --policy-checkpoint "$ckpt" ${NAMM_ARGS-}; else run "$label" --policy "$policy" ${NAMM_ARGS-}; fi
done
for C in $CACHE_SIZES; do
  for P in $BASELINES; do run "$P-cs$C" --policy "$P" --cache-size "$C"; done
  if [ -x "$KVPY" ]; then
    for press in $PRESSES; do
      "$KVPY" -m harness run "${common[@]}" --out "$OUT/kvpress-$press-cs$C" --policy "kvpress:$press" --cache-size "$C"
    done
  fi
done
labels=()  # NAMM rows named by their run folder (default, or which fit and generation)
for d in "$OUT"/*; do case ${d##*/} in namm_*|campaign*|mlp-campaign*|linear*) labels+=(--label "$d=NAMM ${d##*/}");; esac; done
"$PY" -m harness report "$OUT"/* "${labels[@]}" --out "results/fits/heldout-40/report-$SET" --no-figures
