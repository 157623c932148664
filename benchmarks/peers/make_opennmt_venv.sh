#!/usr/bin/env bash
# Create OpenNMT-py's own virtualenv (never a dependency of nlpipe). OpenNMT-py 3.0.4 is the newest release
# whose metadata accepts the torch nlpipe pins (3.4+ require torch < 2.2/2.3); torch is pinned to that CPU build
# (an unpinned torch pulls GBs of CUDA wheels).
#   bash benchmarks/peers/make_opennmt_venv.sh [VENV_DIR]      (default /tmp/peer-venvs/onmt)
set -euo pipefail
VENV="${1:-/tmp/peer-venvs/onmt}"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "torch==2.13.0" "OpenNMT-py==3.0.4"
"$VENV/bin/python" -c "import onmt, torch; print('OpenNMT-py', onmt.__version__, 'torch', torch.__version__)"
