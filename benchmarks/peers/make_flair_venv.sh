#!/usr/bin/env bash
# Create Flair's own virtualenv (never a dependency of nlpipe). torch is pinned to the CPU build that
# nlpipe uses (found through PIP_FIND_LINKS=/opt/wheels here); an unpinned torch pulls GBs of CUDA wheels.
#   bash benchmarks/peers/make_flair_venv.sh [VENV_DIR]      (default /tmp/peer-venvs/flair)
set -euo pipefail
VENV="${1:-/tmp/peer-venvs/flair}"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "torch==2.13.0" "flair==0.15.1"
"$VENV/bin/python" -c "import flair, torch; print('flair', flair.__version__, 'torch', torch.__version__)"
