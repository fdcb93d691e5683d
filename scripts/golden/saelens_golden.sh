#!/usr/bin/env bash
# Regenerate tests/golden/saelens/ with the real sae-lens, in a throwaway venv OUTSIDE the repository.
#
# sae-lens pins transformer-lens < 4, so it can never be a dependency of neurotrace; this script is how
# the golden files were made (and how to remake them):
#   1. (project venv) scripts/golden/export_ours.py writes dictionaries with neurotrace's own export
#      into tests/golden/saelens/ours_*/ (cfg.json + sae_weights.safetensors);
#   2. (throwaway venv: torch==2.13.0 first, then sae-lens==6.54.*) scripts/golden/saelens_golden.py
#      writes small SAEs/transcoders of each architecture with SAELens' own classes (save_model /
#      save_inference_model) plus encode/decode outputs on fixed inputs, and loads the ours_* folders
#      with SAE.load_from_disk to record SAELens' outputs on them.
# Usage: bash scripts/golden/saelens_golden.sh [VENV_DIR]   (default: $TMPDIR/neurotrace-saelens-golden)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-${TMPDIR:-/tmp}/neurotrace-saelens-golden}"
case "$venv" in "$repo"*) echo "the venv must lie outside the repository" >&2; exit 2;; esac
out="$repo/tests/golden/saelens"
mkdir -p "$out"
python "$repo/scripts/golden/export_ours.py" "$out"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "torch==2.13.0"
  "$venv/bin/pip" install -q "sae-lens==6.54.*"
fi
"$venv/bin/python" "$repo/scripts/golden/saelens_golden.py" "$out"
