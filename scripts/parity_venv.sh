#!/usr/bin/env bash
# Creates .venv-parity: the pinned Python runtimes the export_gan job checks its exports with
# (scripts/gan_parity.py): onnx (checker), onnxruntime, ncnn and numpy from PyPI. Idempotent.
#   scripts/parity_venv.sh            (ATELIER_PARITY_VENV=path to put it elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ATELIER_PARITY_VENV:-.venv-parity}
PINS=(onnx==1.23.2 onnxruntime==1.32.0 ncnn==1.0.20261020 numpy==2.4.6)
PY=${ATELIER_PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
if ! "$VENV/bin/python" - "${PINS[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(any(version(p.split("==")[0]) != p.split("==")[1] for p in sys.argv[1:]))
PY
then
  printf '[setup] installing the parity runtimes into %s: %s\n' "$VENV" "${PINS[*]}"
  "$VENV/bin/pip" install -q "${PINS[@]}"
fi
