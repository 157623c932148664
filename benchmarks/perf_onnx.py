"""`pipeline("ner")` vs the ONNX export's runner (float32 and int8): sentences/s at batch 1 and 32, and test F1.

    python benchmarks/perf_onnx.py RUN_DIR [--sentences 320] [--threads 1] [--rounds 3] [--f1] [--record]
    python benchmarks/perf_onnx.py TRANSLATION_RUN_DIR --bleu [--sentences 1000] [--record]
    python benchmarks/perf_onnx.py RUN_DIR --profile [--sentences 320]   # where pipeline("ner") spends its time

The run folder is exported twice (float32, int8) into a temporary folder with `nlpipe.export.export_onnx`.
Speed: the first N CoNLL-2003 test sentences as raw text (tokens joined by spaces), so every path includes
tokenization, char ids, the model, CRF decoding (numpy Viterbi + marginals in the runner) and entity grouping.
The three paths run back to back in interleaved rounds (the machine is shared: ratios measured side by side are
steadier than absolute rates); the median round is reported. ``--f1``: entity-level F1 (exact type and
character span, as seqeval counts chunks) of the whole test split through the float32 and int8 runners.
``--bleu`` (a translation run): sacreBLEU of the float32 and int8 exports on the first N Multi30k test
sentences (the run's decoding settings), and their generation speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_inference import test_sentences  # noqa: E402
from results_log import ROOT, append_results  # noqa: E402


def gold_spans(tokens: list[str], tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, start, end) character spans of the IOB2 chunks of a sentence written as `" ".join(tokens)`."""
    spans, start, kind, position, end = set(), None, None, 0, 0
    for token, tag in zip(tokens, tags, strict=True):
        begins = tag.startswith("B-") or (tag.startswith("I-") and kind != tag[2:])
        if (tag == "O" or begins) and kind is not None:
            spans.add((kind, start, end))
            kind = None
        if begins:
            start, kind = position, tag[2:]
        end = position + len(token)
        position = end + 1
    if kind is not None:
        spans.add((kind, start, end))
    return spans


def entity_f1(runner, examples: list[dict]) -> float:
    """Entity-level F1 (0–100) of `runner` on CoNLL examples (tokens + IOB2 tags)."""
    texts = [" ".join(e["tokens"]) for e in examples]
    predicted = runner(texts, batch_size=64)
    tp = n_pred = n_gold = 0
    for example, entities in zip(examples, predicted, strict=True):
        gold = gold_spans(example["tokens"], example["tags"])
        pred = {(e["entity_group"], e["start"], e["end"]) for e in entities}
        tp += len(gold & pred)
        n_pred += len(pred)
        n_gold += len(gold)
    precision, recall = tp / max(n_pred, 1), tp / max(n_gold, 1)
    return 100 * 2 * precision * recall / max(precision + recall, 1e-12)


def bleu_float32_vs_int8(run: str, data_dir: str, count: int, threads: int) -> list[dict]:
    """sacreBLEU and sentences/s of the float32 and int8 exports of a translation run on Multi30k test."""
    import gzip

    import sacrebleu

    from nlpipe.export import export_onnx
    from nlpipe.export.onnx_export import load_runner

    def lines(name: str) -> list[str]:
        with gzip.open(Path(data_dir) / "multi30k" / name, "rt", encoding="utf-8") as handle:
            return [line.strip() for line, _ in zip(handle, range(count), strict=False)]

    sources, references = lines("test_2016_flickr.de.gz"), lines("test_2016_flickr.en.gz")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for quantize in (None, "int8"):
            out = Path(tmp) / (quantize or "float32")
            export_onnx(run, out, quantize=quantize, verify=False)
            runner = load_runner(out, threads=threads)
            start = time.perf_counter()
            hypotheses = runner(sources)
            elapsed = time.perf_counter() - start
            bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
            name = f"onnx {quantize or 'float32'}"
            print(f"{name}: BLEU {bleu:.2f} on {len(sources)} sentences, {len(sources) / elapsed:.1f} sentences/s "
                  f"(beams {runner.generation.get('num_beams', 1)})", flush=True)
            results.append({"run": run, "dataset": "multi30k", "split": "test", "metric": "onnx_bleu", "path": name,
                            "value": round(bleu, 2), "sentences": len(sources),
                            "sentences_per_s": round(len(sources) / elapsed, 1), "threads": threads})
    return results


def profile_pipeline(run: str, texts: list[str]) -> None:
    """cProfile `pipeline("ner")` at batch 1 and 32: the functions with the most cumulative time."""
    import cProfile
    import pstats

    from transformers import pipeline

    ner = pipeline("ner", model=run, aggregation_strategy="simple")
    ner(texts[:4])
    for batch_size in (1, 32):
        profiler = cProfile.Profile()
        profiler.runcall(ner, texts, batch_size=batch_size)
        stats = pstats.Stats(profiler)
        print(f"batch {batch_size}: {stats.total_tt:.2f} s for {len(texts)} sentences")
        stats.sort_stats("cumulative").print_stats(
            "preprocess|_forward|postprocess|decode_scores|viterbi|log_partition|char_encoder|two_pass|"
            "gather_pre|group_entities|char_ids_from|encode_batch|run_backward", 25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--sentences", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--f1", action="store_true", help="also the test F1 of the float32 and int8 exports")
    parser.add_argument("--bleu", action="store_true", help="a translation run: BLEU of the float32 and int8 exports")
    parser.add_argument("--profile", action="store_true", help="cProfile pipeline('ner') at batch 1 and 32")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.profile:
        profile_pipeline(args.run, test_sentences(args.data_dir, args.sentences))
        return 0
    if args.bleu:
        lines = bleu_float32_vs_int8(args.run, args.data_dir, args.sentences, args.threads)
        if args.record:
            append_results(lines)
        return 0
    from transformers import pipeline

    from nlpipe.export import export_onnx
    from nlpipe.export.onnx_export import load_runner

    texts = test_sentences(args.data_dir, args.sentences)
    words = sum(len(t.split()) for t in texts)
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(args.run, Path(tmp) / "float32", verify=False)
        export_onnx(args.run, Path(tmp) / "int8", quantize="int8", verify=False)
        paths = {
            "pipeline": pipeline("ner", model=args.run, aggregation_strategy="simple"),
            "onnx float32": load_runner(Path(tmp) / "float32", threads=args.threads),
            "onnx int8": load_runner(Path(tmp) / "int8", threads=args.threads),
        }
        for run in paths.values():
            run(texts[:4])  # warm-up
        rates: dict[tuple[str, int], list[float]] = {}
        loads = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for batch_size in (1, 32):
                for name, run in paths.items():
                    start = time.perf_counter()
                    run(texts, batch_size=batch_size)
                    rates.setdefault((name, batch_size), []).append(len(texts) / (time.perf_counter() - start))
        loads.append(os.getloadavg()[0])
        scores = {}
        if args.f1:
            from nlpipe.data.readers import read_conll

            examples = [e for e in read_conll(Path(args.data_dir) / "conll2003" / "test.txt.gz") if e["tokens"]
                        and e["tokens"][0] != "-DOCSTART-"]
            for name in ("onnx float32", "onnx int8"):
                scores[name] = entity_f1(paths[name], examples)
                print(f"{name}: test F1 {scores[name]:.2f} ({len(examples)} sentences)", flush=True)

    lines = []
    for batch_size in (1, 32):
        base = statistics.median(rates[("pipeline", batch_size)])
        for name in paths:
            rate = statistics.median(rates[(name, batch_size)])
            print(f"{name:13s} batch {batch_size:2d}: {rate:7.1f} sentences/s ({rate * words / len(texts):8.0f} words/s)"
                  f"  ×{rate / base:.2f} vs pipeline  rounds {[round(r) for r in rates[(name, batch_size)]]}",
                  flush=True)
            metric = "pipeline_sentences_per_s" if name == "pipeline" else "onnx_sentences_per_s"
            lines.append({"run": args.run, "dataset": "conll2003", "split": "test", "metric": metric,
                          "path": name, "value": round(rate, 1), "batch_size": batch_size,
                          "ratio_vs_pipeline": round(rate / base, 2), "words_per_s": round(rate * words / len(texts)),
                          "sentences": len(texts), "threads": args.threads, "rounds": args.rounds,
                          "load": [round(x, 1) for x in loads]})
    print(f"load {loads[0]:.1f} → {loads[1]:.1f}")
    for name, f1 in scores.items():
        lines.append({"run": args.run, "dataset": "conll2003", "split": "test", "metric": "onnx_f1", "path": name,
                      "value": round(f1, 2)})
    if args.record:
        append_results(lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
