#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${NEUROTRACE_VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1
exec python -m pytest -q "$@"
