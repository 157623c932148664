"""`pipeline("ner")` throughput of saved NER runs, back to back with Flair's `SequenceTagger.predict`.

    python benchmarks/perf_inference.py RUN_DIR [RUN_DIR ...] [--sentences 320] [--threads 1] [--bf16]
        [--flair /tmp/peer-venvs/flair/bin/python] [--record]

Sentences are the first N of the CoNLL-2003 test split (shared/data, `-DOCSTART-` removed), given as raw
text (tokens joined by spaces), so the figure includes tokenization, char ids, the model, CRF decoding and
entity grouping (`aggregation_strategy="simple"`). Each run is measured at batch size 1 and 32 in float32 and,
with ``--bf16``, under bfloat16 autocast (the pipeline's opt-in ``bf16=True``; AMX on recent Xeons).

With ``--flair PYTHON`` (a Flair venv: benchmarks/peers/make_flair_venv.sh), Flair's `SequenceTagger.predict`
with a BiLSTM-CRF of ner-bilstm-crf's sizes tags the same sentences (benchmarks/peers/flair_predict_speed.py),
between two measurements of the first CRF run, whose mean is compared with it: the ratio is back to back on
the same loaded machine, which matters more than the absolute figures there.

Each row also gives words/s against what the CPU's matrix units allow for the model's matrix products (a
rough count: 2 FLOP per multiply-add of the LSTMs and the classifier), for AVX-512 float32 and AMX bfloat16.
(`generate()` speed of seq2seq/LM models is measured by benchmarks/generate_speed.py.)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_log import ROOT, append_results  # noqa: E402

# Peak matrix throughput per core per cycle: AVX-512 float32 = 2 FMA units x 16 lanes x 2 FLOP; AMX bf16 =
# one 16x32x16 tile multiply (8,192 multiply-adds) every 16 cycles = 1,024 multiply-adds = 2,048 FLOP.
AVX512_FP32_FLOP_PER_CYCLE = 64
AMX_BF16_FLOP_PER_CYCLE = 2048


def test_sentences(data_dir: str, n: int) -> list[str]:
    """The first `n` CoNLL-2003 test sentences as space-joined text."""
    sentences, words = [], []
    with gzip.open(Path(data_dir) / "conll2003" / "test.txt.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("-DOCSTART-"):
                if words:
                    sentences.append(" ".join(words))
                    words = []
                if len(sentences) >= n:
                    break
                continue
            words.append(line.split()[0])
    return sentences[:n]


def cpu_ghz() -> float:
    """The CPU clock from /proc/cpuinfo (GHz), 2.0 when unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    except OSError:
        pass
    return 2.0


def flop_per_word(config, texts: list[str]) -> float:
    """Matrix FLOP per word of a recurrent tagger: word (Bi)LSTM, classifier and the char encoder per character."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[config.cell]
    directions = 2 if config.bidirectional else 1
    input_size = config.embedding_dim
    chars = sum(len(w) for t in texts for w in t.split()) / max(1, sum(len(t.split()) for t in texts))
    char_flop = 0.0
    if config.char_encoder == "lstm":
        input_size += 2 * config.char_hidden_size
        char_flop = chars * 2 * 2 * 4 * config.char_hidden_size * (config.char_embedding_dim + config.char_hidden_size)
    elif config.char_encoder == "cnn":
        input_size += config.char_hidden_size
        char_flop = chars * 2 * config.char_hidden_size * config.char_embedding_dim * config.char_kernel_size
    flop = 0.0
    for layer in range(config.num_layers):
        size = input_size if layer == 0 else directions * config.hidden_size
        flop += directions * 2 * gates * config.hidden_size * (size + config.hidden_size)
    flop += 2 * directions * config.hidden_size * config.num_labels
    return flop + char_flop


def measure(ner, texts: list[str], batch_size: int, bf16: bool) -> tuple[float, float]:
    """(seconds, load average) for tagging all `texts` once at `batch_size`."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    ner(texts, batch_size=batch_size, **({"bf16": True} if bf16 else {}))
    return time.perf_counter() - start, load


def run_flair(python: str, texts: list[str], data_dir: str, threads: int) -> dict:
    """Flair's predict speed at batch 1 and 32 (benchmarks/peers/flair_predict_speed.py in its own venv)."""
    with tempfile.TemporaryDirectory() as tmp:
        sentences = Path(tmp) / "sentences.txt"
        sentences.write_text("\n".join(texts) + "\n", encoding="utf-8")
        script = ROOT / "benchmarks" / "peers" / "flair_predict_speed.py"
        out = subprocess.run(
            [python, str(script), "--sentences", str(sentences), "--data-dir", data_dir, "--threads", str(threads)],
            capture_output=True, text=True, timeout=1800, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )
    if out.returncode != 0:
        raise SystemExit(f"error: Flair benchmark failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--sentences", type=int, default=320)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="also measure under bfloat16 autocast")
    parser.add_argument("--flair", default=None, help="python of a Flair venv: compare with SequenceTagger.predict")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    from transformers import pipeline

    import nlpipe  # noqa: F401  (registers the Auto classes and pipelines)

    texts = test_sentences(args.data_dir, args.sentences)
    words = sum(len(t.split()) for t in texts)
    ghz = cpu_ghz()
    peak = {"avx512_fp32": AVX512_FP32_FLOP_PER_CYCLE * ghz * 1e9 * threads,
            "amx_bf16": AMX_BF16_FLOP_PER_CYCLE * ghz * 1e9 * threads}
    records, crf_rates, crf_run = [], {}, None
    pipelines = {}
    for run in args.runs:
        recipe = json.loads((Path(run) / "run_info.json").read_text()).get("recipe", Path(run).name)
        ner = pipeline("ner", model=run, aggregation_strategy="simple")
        ner(texts[:4])  # warm-up
        pipelines[run] = (recipe, ner)
        flop = flop_per_word(ner.model.config, texts)
        print(f"{recipe}: ≈{flop / 1e6:.2f} MFLOP/word of matrix products; {threads} thread(s) at {ghz:.1f} GHz "
              f"allow ≈{peak['avx512_fp32'] / flop:,.0f} words/s (AVX-512 fp32), "
              f"≈{peak['amx_bf16'] / flop:,.0f} (AMX bf16)", flush=True)
        if crf_run is None and getattr(ner.model.config, "use_crf", False):
            crf_run = run
        for precision in ("float32", "bf16") if args.bf16 else ("float32",):
            if precision == "bf16":
                ner(texts[:4], bf16=True)  # warm-up of the bf16 kernels
            for batch_size in (1, 32):
                elapsed, load = measure(ner, texts, batch_size, precision == "bf16")
                rate, word_rate = len(texts) / elapsed, words / elapsed
                share = word_rate * flop / peak["amx_bf16" if precision == "bf16" else "avx512_fp32"]
                print(f"{recipe} ({run}) {precision}: batch {batch_size}: {rate:.1f} sentences/s, "
                      f"{word_rate:.0f} words/s ({100 * share:.2f}% of the matrix units' peak; load {load:.1f})",
                      flush=True)
                if run == crf_run:
                    crf_rates[(precision, batch_size)] = [rate]
                records.append({
                    "recipe": recipe, "dataset": "conll2003", "split": "test", "metric": "pipeline_sentences_per_s",
                    "value": round(rate, 1), "batch_size": batch_size, "precision": precision,
                    "wall_s": round(elapsed, 2), "tokens_per_s": round(word_rate, 1), "sentences": len(texts),
                    "threads": threads, "load": round(load, 1), "peak_share": round(share, 5),
                })
    if args.flair and crf_run is not None:
        flair = run_flair(args.flair, texts, args.data_dir, threads)
        recipe, ner = pipelines[crf_run]
        for (precision, batch_size), rates in crf_rates.items():  # measured again: before and after Flair
            elapsed, _ = measure(ner, texts, batch_size, precision == "bf16")
            rates.append(len(texts) / elapsed)
        for (precision, batch_size), rates in crf_rates.items():
            reference = flair["rows"][str(batch_size)]
            ours = sum(rates) / len(rates)
            ratio = ours / reference["sentences_per_s"]
            print(f"{recipe} {precision} vs Flair {flair['flair_version']} predict: batch {batch_size}: "
                  f"{ours:.1f} / {reference['sentences_per_s']:.1f} sentences/s = {ratio:.2f}x "
                  f"(load {reference['load']})", flush=True)
            records.append({
                "recipe": recipe, "dataset": "conll2003", "split": "test",
                "metric": "throughput_ratio_vs_flair_predict", "value": round(ratio, 2), "batch_size": batch_size,
                "precision": precision, "sentences_per_s": round(ours, 1),
                "reference_sentences_per_s": reference["sentences_per_s"], "reference": f"flair {flair['flair_version']}",
                "sentences": len(texts), "threads": threads, "load": reference["load"],
            })
    if args.record:
        append_results(records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
