#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# headless Chromium for the report.html browser test (skipped without it); only where missing and apt works
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 \
    && apt-get install -y -q chromium >/dev/null 2>&1) || echo "chromium not installed: the browser test will skip" >&2
fi
. "${NEUROTRACE_VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1
# Contracts first (fast): lint and the import layering of ../shared/ARCHITECTURE.md.
ruff check neurotrace tests bench factworld
lint-imports
exec python -m pytest -q "$@"
