#!/usr/bin/env bash
# The one prepared GPU check (issue 16), for ONE call of at most 8 minutes on a lent GPU machine with
# no network, torch and transformers preinstalled. First run scripts/prepare_gpu_check.sh on the CPU
# machine and carry .gpu-check/ with the working tree. Writes $OUT/gpu_check.md (one table: the card,
# the device tests' result, the bench rows) plus the bench's jsonl; commit them to results/bench/gpu/.
#   bash scripts/gpu_check.sh                              # on the GPU machine ($OUT set by the caller)
#   DEVICE=cpu LENGTHS=256 MODEL=random:tiny-llama bash scripts/gpu_check.sh   # a dry run on CPU
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-random:llama-3.1-8b}
LENGTHS=${LENGTHS:-"8192 32768 131072"}
LONG_POLICIES=${LONG_POLICIES:-"full,l2"}   # at the longest length only these (eager probabilities at 128K are slow)
BUDGET_S=${BUDGET_S:-450}   # the whole check stays under 8 minutes: each step gets what is left
deadline=$((SECONDS + BUDGET_S))
left() { echo $((deadline - SECONDS)); }
mkdir -p "$OUT"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HARNESS_TOKENIZER=$PWD/.gpu-check/tokenizer
pip install -q --no-deps --no-index .gpu-check/wheels/*.whl 2>&1 | tail -1
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee "$OUT/versions.txt"

# 1. the eviction equivalence and the policies on the device, fp32 and bf16 (tests/test_devices.py)
timeout 100 python -m pytest -q -p no:cacheprovider tests/test_devices.py > "$OUT/tests.txt" 2>&1
tests_rc=$?
tail -1 "$OUT/tests.txt"

# 2. bench: full, h2o, l2, namm_bam at a 25% budget, bf16, CUDA events, warm-up 1, median of 2
set -- $LENGTHS
longest=${!#}
for L in "$@"; do
  policies=full,h2o,l2,namm_bam
  [ "$L" = "$longest" ] && [ $# -gt 1 ] && policies=$LONG_POLICIES
  if [ "$(left)" -lt 30 ]; then echo "no time left for $L tokens" | tee -a "$OUT/skipped.txt"; continue; fi
  timeout "$(left)" python -m harness bench --model "$MODEL" --device "$DEVICE" --dtype bfloat16 --lengths "$L" \
    --policies "$policies" --cache-size 0.25 --decode-tokens 32 --repeats 2 --warmup 1 --out "$OUT/bench-$L" \
    2>&1 | grep -v Warning | tail -6
done

# 3. one table
python - "$OUT" "$tests_rc" <<'PY'
import json, pathlib, sys
from harness.bench import markdown_table
out, rc = pathlib.Path(sys.argv[1]), int(sys.argv[2])
rows = [json.loads(l) for f in sorted(out.glob("bench-*/*.jsonl")) for l in f.read_text().splitlines()]
tests = (out / "tests.txt").read_text().strip().splitlines()
lines = ["# GPU check", "", (out / "versions.txt").read_text().strip(), "",
         f"tests/test_devices.py (fp32 and bf16 on the device): {tests[-1] if tests else 'no output'} (exit {rc})", ""]
if rows:
    lines += [f"bench: {rows[0]['model']} (random weights: speed and memory only), device {rows[0].get('device')}", "",
              markdown_table(rows)]
skipped = out / "skipped.txt"
if skipped.exists():
    lines += ["Not measured (the 8-minute budget ran out): " + "; ".join(skipped.read_text().split("\n")).strip("; "), ""]
(out / "gpu_check.md").write_text("\n".join(lines) + "\n")
print(out / "gpu_check.md")
PY
