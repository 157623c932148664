#!/usr/bin/env bash
# The GPU check of issue 17 §4, in one call of the device tool (well under ten minutes):
# one recipe per family trained for a minute on CUDA with bf16, then pipeline()/generate() speed there.
#
#   bash benchmarks/gpu_check.sh --prepare     # here, once: real data + missing wheels into ignored folders
#   device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu_data", ".whl"], timeout_s=580)
#   python benchmarks/gpu_check.py --record-from <files_at>/gpu_check.jsonl    # here: into BENCHMARKS.md
#   bash benchmarks/gpu_check.sh --smoke       # a CPU rehearsal of the whole script (2 steps per recipe)
#
# The GPU machine has PyTorch, transformers, accelerate, tokenizers, sacrebleu, typer, pyyaml, ... but
# not datasets, evaluate, seqeval, rouge-score or nltk, and no network: --prepare downloads those wheels
# (for its Python 3.12) into .whl/ and copies the data into .gpu_data/, both listed in .git/info/exclude.
set -euo pipefail
cd "$(dirname "$0")/.."

MISSING=(datasets evaluate seqeval rouge-score nltk dill multiprocess)

if [[ "${1:-}" == "--prepare" ]]; then
    data="${NLPIPE_DATA_DIR:-../shared/data}"
    for folder in .gpu_data .whl; do
        grep -qx "/$folder/" .git/info/exclude 2>/dev/null || echo "/$folder/" >> "$(git rev-parse --git-path info/exclude)"
    done
    rm -rf .gpu_data && mkdir -p .gpu_data && cp -r "$data"/{conll2003,multi30k,ptb} .gpu_data/
    mkdir -p .whl
    python=${PYTHON:-.venv/bin/python}
    for name in "${MISSING[@]}"; do
        version=$("$python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
        # binary wheels for the GPU machine's CPython 3.12; pure-Python sdists are built into wheels here
        "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d .whl "$name==$version" 2>/dev/null \
        || "$python" -m pip wheel -q --no-deps -w .whl "$name==$version"
    done
    du -sh .gpu_data .whl
    exit 0
fi

if [[ "${1:-}" == "--smoke" ]]; then
    exec "${PYTHON:-.venv/bin/python}" benchmarks/gpu_check.py --smoke --out "${OUT:-gpu_check_out}"
fi

# On the GPU machine.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [[ -d .gpu_data/conll2003 ]]; then
    export NLPIPE_DATA_DIR="$PWD/.gpu_data"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
mkdir -p "${OUT:-gpu_check_out}"
# 4 trainings of --minutes each + evaluation + measurements: about 7 minutes; stop at 9 whatever happens.
timeout 540 python3 benchmarks/gpu_check.py --minutes "${GPU_CHECK_MINUTES:-1}" --out "${OUT:-gpu_check_out}" \
    2>&1 | tee "${OUT:-gpu_check_out}/gpu_check.log"
