#!/usr/bin/env bash
# Build a throwaway venv with the real circuit-tracer 0.5.* OUTSIDE the repository, for writing the golden
# graphs of tests/golden/circuit_tracer/ (scripts/circuit_tracer_golden.py). circuit-tracer 0.5 pins
# transformers >=4.56,<=4.57.3, so it can never be a dependency of neurotrace (transformers 5).
#   bash scripts/circuit_tracer_venv.sh [VENV_DIR]          # default: ${TMPDIR:-/tmp}/neurotrace-circuit-tracer
#   VENV_DIR/bin/python scripts/circuit_tracer_golden.py    # writes tests/golden/circuit_tracer/
set -euo pipefail
VENV="${1:-${TMPDIR:-/tmp}/neurotrace-circuit-tracer}"
case "$(cd "$(dirname "$VENV")" && pwd)/" in "$(cd "$(dirname "$0")/.." && pwd)/"*)
  echo "refusing: $VENV is inside the repository" >&2; exit 2;; esac
python3 -m venv "$VENV"
# torch first, pinned to the project's version (the CPU build where one is on the index), so that pip
# does not pull a CUDA torch for circuit-tracer's 'torch>=2.0'.
"$VENV/bin/pip" install -q "torch==2.13.0"
"$VENV/bin/pip" install -q "circuit-tracer==0.5.*" "torch==2.13.0"
"$VENV/bin/python" -c "import circuit_tracer, transformers, torch; print('circuit-tracer', circuit_tracer.__version__ if hasattr(circuit_tracer, '__version__') else '?', 'transformers', transformers.__version__, 'torch', torch.__version__)"
