#!/usr/bin/env bash
# Flair SequenceTagger (BiLSTM-CRF, one-hot + chars) vs nlpipe's ner-bilstm-crf: same data, sizes, machine,
# equal training minutes, back to back; tokens/s and test F1. Appends throughput_ratio_vs_flair to
# benchmarks/results.jsonl.
#   bash benchmarks/peers/flair_vs_nlpipe.sh [MINUTES=10] [THREADS=1]
set -euo pipefail
MINUTES="${1:-10}"
THREADS="${2:-1}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DATA="${DATA_DIR:-$ROOT/../shared/data}"
VENV="${FLAIR_VENV:-/tmp/peer-venvs/flair}"
WORK="${WORK_DIR:-/tmp/flair-vs-nlpipe}"
[ -x "$VENV/bin/python" ] || bash "$ROOT/benchmarks/peers/make_flair_venv.sh" "$VENV"
mkdir -p "$WORK"
export OMP_NUM_THREADS="$THREADS"
LOAD_BEFORE="$(cut -d' ' -f1 /proc/loadavg)"
"$VENV/bin/python" "$ROOT/benchmarks/peers/flair_ner.py" --data-dir "$DATA" --minutes "$MINUTES" \
  --threads "$THREADS" --out "$WORK/flair" 2>"$WORK/flair.err" | tail -1 > "$WORK/flair.json"
"$ROOT/.venv/bin/nlpipe" run recipe ner-bilstm-crf --data-dir "$DATA" --output-dir "$WORK/nlpipe" --overwrite \
  "train.max_train_minutes=$MINUTES" > "$WORK/nlpipe.log" 2>&1
LOAD_AFTER="$(cut -d' ' -f1 /proc/loadavg)"
"$ROOT/.venv/bin/python" - "$WORK" "$MINUTES" "$THREADS" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import datetime as dt, json, sys
from pathlib import Path
from nlpipe.run import git_commit, machine_description
work, minutes, threads, before, after = Path(sys.argv[1]), *sys.argv[2:]
flair = json.loads((work / "flair.json").read_text())
metrics = json.loads((work / "nlpipe" / "metrics.json").read_text())
ours = metrics["train"]["tokens_per_s"]
ratio = ours / flair["tokens_per_s"]
line = {"recipe": "ner-bilstm-crf", "dataset": "conll2003", "split": "test", "metric": "throughput_ratio_vs_flair",
        "value": round(ratio, 3), "wall_s": metrics["train"]["wall_s"], "tokens_per_s": ours,
        "reference_tokens_per_s": flair["tokens_per_s"], "test_f1": round(metrics["test"]["f1"], 2),
        "reference_test_f1": flair["test_f1"], "minutes_each": float(minutes), "threads": int(threads),
        "load_before": float(before), "load_after": float(after), "device": machine_description(),
        "commit": git_commit(), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": f"bash benchmarks/peers/flair_vs_nlpipe.sh {minutes} {threads}"}
print(json.dumps(line))
(work / "result.json").write_text(json.dumps(line) + "\n")
PY
cat "$WORK/result.json" >> "$ROOT/benchmarks/results.jsonl"
echo "nlpipe vs Flair: $(cat "$WORK/result.json")"
