#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${NEUROTRACE_VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec neurotrace demo "$@"
