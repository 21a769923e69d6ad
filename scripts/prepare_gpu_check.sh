#!/usr/bin/env bash
# Run HERE (the CPU machine, with .venv built): puts what scripts/gpu_check.sh needs on a GPU machine
# that has no network and only torch + transformers into .gpu-check/ (git-ignored, carried with the
# working tree, a few MB): pytest's wheels and SmolLM2's tokenizer (for the random:<arch> models).
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
rm -rf .gpu-check && mkdir -p .gpu-check/wheels
pip download -q --no-deps -d .gpu-check/wheels pytest pluggy iniconfig
python - <<'PY'
from harness.random_models import tokenizer
tokenizer().save_pretrained(".gpu-check/tokenizer")
PY
du -sh .gpu-check
