#!/usr/bin/env bash
# Set up a virtual environment for neurotrace (idempotent). Installs torch first so pip never
# pulls a different build: here `torch==2.13.0` is the CPU wheel on local disk; elsewhere you get
# your platform's torch of that version (override with NEUROTRACE_TORCH="torch==X.Y.Z" or "torch").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${NEUROTRACE_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" >/dev/null 2>&1; then
  python -m pip install -q "${NEUROTRACE_TORCH:-torch==2.13.0}"
fi
if ! python -c "import neurotrace, pytest, mcp, transformer_lens" >/dev/null 2>&1 \
   || [ pyproject.toml -nt "$VENV/.neurotrace-installed" ]; then
  python -m pip install -q -e ".[dev]"
  touch "$VENV/.neurotrace-installed"
fi
