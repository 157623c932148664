"""OpenNMT-py vs nlpipe on Multi30k de→en: training tokens/s and test BLEU after the same wall time.

    bash benchmarks/peers/make_opennmt_venv.sh                     # once: OpenNMT-py 3.0.4 in its own venv
    python benchmarks/peers/opennmt_vs_nlpipe.py --model lstm --minutes 8 [--threads 1] [--record]
    python benchmarks/peers/opennmt_vs_nlpipe.py --model transformer --minutes 8

Same data, same subwords, same sizes, same machine, back to back (OpenNMT-py first):

- the nlpipe recipe (``lstm``: `translation-lstm-luong`, bidirectional LSTM 2×256 + LSTM 512 decoder,
  "general" attention, input feeding, embeddings shared and tied, here 512-dimensional on both sides because
  OpenNMT-py can tie only when embedding and decoder state have one size; ``transformer``: `translation-transformer`,
  3+3 layers, d 256, 4 heads, ff 1024) trains its own joint tokenizer on the training split; the training,
  validation and test text is written out in those subword pieces, so OpenNMT-py reads exactly the pieces
  nlpipe's model reads (its vocabulary is built from them with ``onmt_build_vocab``);
- OpenNMT-py gets the matching configuration (below), batch 64 sentences, Adam at the recipe's learning rate
  (the Transformer: the recipe's warm-up 1000 + inverse square root, which is OpenNMT-py's ``noam`` with
  ``learning_rate`` scaled to the same peak), no validation during training, a checkpoint every
  ``--checkpoint-every`` steps (100); ``onmt_train`` is stopped ``--minutes`` after it logs "Start training
  loop" (its first data bucket is loaded inside that budget), and its last checkpoint translates the test set
  with beam 5;
- nlpipe runs the recipe with ``train.max_train_minutes=--minutes`` (training time; its validation passes are
  not counted), and evaluates on the test set with its recipe's beam 5.

Precision: each tool as it trains out of the box on this machine. The nlpipe recipes say
``mixed_precision: auto`` (bf16 autocast on a GPU or a CPU with bf16 units, AMX or AVX-512 BF16; float32 elsewhere); OpenNMT-py 3.0.4
offers ``model_dtype`` fp32 or fp16, and its fp16 is ``torch.cuda.amp`` (CUDA only), so on a CPU it trains in
float32. For float32 on both sides pass ``--nlpipe-override 'train.mixed_precision="no"'``. Label smoothing
is the recipe's on both sides (``label_smoothing``).

Memory allocator: the script runs as the ``nlpipe`` command does, with tcmalloc preloaded where it is installed
(nlpipe/cpu_allocator.py), and OpenNMT-py's processes inherit it, so both sides train with the same allocator;
``NLPIPE_ALLOCATOR=system`` runs both on glibc's malloc. The device column of the record names it.

Both outputs are detokenized by the same tokenizer and scored by nlpipe's sacreBLEU (same signature).
Tokens/s counts source + target subword tokens: OpenNMT-py's own "src/tgt tok/s" report lines (median of the
windows after the first), nlpipe's log windows (median after the first) and its whole-run figure.
``torch.load`` in OpenNMT-py 3.0 predates torch's ``weights_only`` default; its own checkpoints (written by
this script) are loaded with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in its venv only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from perf_overhead import prepare  # noqa: E402
from results_log import ROOT, append_results  # noqa: E402

RECIPES = {"lstm": "translation-lstm-luong", "transformer": "translation-transformer"}
# OpenNMT-py ties the output layer to the target embeddings only when the decoder state has the embedding's
# size (it has no projection in between, nlpipe's RNN decoder has one), so the LSTM comparison runs both sides
# with 512-dimensional embeddings: the same architecture, tied, on both sides.
NLPIPE_OVERRIDES = {"lstm": ["model.embedding_dim=512"], "transformer": []}
ONMT_REPORT = re.compile(r"Step (\d+)/\s*\d+;.*?(\d+)/\s*(\d+) tok/s")


def onmt_config(model: str, recipe, work: Path, checkpoint_every: int) -> dict:
    """OpenNMT-py 3.0 options matching the nlpipe recipe's model and optimizer."""
    m, t = recipe.model, recipe.train
    common = {
        "save_data": str(work / "onmt"), "src_vocab": str(work / "vocab.txt"), "tgt_vocab": str(work / "vocab.txt"),
        "share_vocab": True, "src_vocab_size": 100000, "tgt_vocab_size": 100000, "overwrite": True,
        "data": {"corpus_1": {"path_src": str(work / "train.de"), "path_tgt": str(work / "train.en")},
                 "valid": {"path_src": str(work / "valid.de"), "path_tgt": str(work / "valid.en")}},
        "src_seq_length": recipe.data.max_length, "tgt_seq_length": recipe.data.max_target_length,
        "share_embeddings": True, "share_decoder_embeddings": True,
        "batch_size": t.batch_size, "batch_type": "sents", "valid_batch_size": 64,
        "train_steps": 1_000_000, "valid_steps": 1_000_000, "save_checkpoint_steps": checkpoint_every, "keep_checkpoint": 2,
        "save_model": str(work / "model"), "report_every": 20, "seed": t.seed, "world_size": 1, "gpu_ranks": [],
        "max_grad_norm": t.max_grad_norm, "label_smoothing": t.label_smoothing, "log_file": str(work / "train.log"),
    }
    if model == "lstm":
        return {**common, "encoder_type": "brnn", "decoder_type": "rnn", "rnn_type": "LSTM", "layers": 1,
                "word_vec_size": m["embedding_dim"], "hidden_size": m["hidden_size"], "global_attention": "general",
                "input_feed": 1, "dropout": [m["dropout"]], "optim": "adam", "learning_rate": t.learning_rate}
    d_model = m["d_model"]
    # noam: lr * d^-0.5 * min(step^-0.5, step * warmup^-1.5), i.e. peak lr * d^-0.5 * warmup^-0.5 at the warm-up's end.
    noam_lr = t.learning_rate * d_model**0.5 * t.warmup_steps**0.5
    return {**common, "encoder_type": "transformer", "decoder_type": "transformer", "position_encoding": True,
            "enc_layers": m["encoder_layers"], "dec_layers": m["decoder_layers"], "heads": m["encoder_attention_heads"],
            "hidden_size": d_model, "word_vec_size": d_model, "transformer_ff": m["encoder_ffn_dim"],
            "dropout": [m["dropout"]], "attention_dropout": [m["attention_dropout"]], "optim": "adam",
            "adam_beta2": 0.998, "decay_method": "noam", "learning_rate": noam_lr, "warmup_steps": t.warmup_steps,
            "param_init": 0.0, "param_init_glorot": True}


def write_pieces(tokenizer, data, work: Path) -> dict[str, int]:
    """Write every split as space-joined subword pieces; return the number of pieces per split (src+tgt)."""
    counts = {}
    for split, name in (("train", "train"), ("validation", "valid"), ("test", "test")):
        total = 0
        for column, suffix in (("source", "de"), ("target", "en")):
            with open(work / f"{name}.{suffix}", "w", encoding="utf-8") as handle:
                for text in data[split][column]:
                    pieces = tokenizer.tokenize(text)
                    total += len(pieces)
                    handle.write(" ".join(pieces) + "\n")
        counts[split] = total
    return counts


def run_onmt(venv: Path, config: Path, work: Path, minutes: float, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    subprocess.run([str(venv / "bin" / "onmt_build_vocab"), "-config", str(config), "-n_sample", "-1"],
                   check=True, env=env, capture_output=True, text=True)
    # The budget starts at OpenNMT-py's "Start training loop" line, as nlpipe's train.max_train_minutes starts at
    # its loop (tokenizer, data and model set-up are not counted on either side).
    log_path = work / "train.log"
    for stale in [log_path, *work.glob("model_step_*.pt")]:  # a kept --work-dir must not mislead this run
        stale.unlink(missing_ok=True)
    stderr_path = work / "train.stderr"
    with open(stderr_path, "w") as stderr:  # a file, not a pipe: a full pipe would block onmt_train
        # Its own process group: onmt_train's data-loading workers outlive a plain terminate() and would sit on
        # the machine through the nlpipe half and later measurements.
        process = subprocess.Popen([str(venv / "bin" / "onmt_train"), "-config", str(config)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    started = None
    while process.poll() is None:
        time.sleep(2)
        if started is None and log_path.exists() and "Start training loop" in log_path.read_text(errors="replace"):
            started = time.perf_counter()
        if started is not None and time.perf_counter() - started >= minutes * 60:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
            break
    else:
        tail = stderr_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"onmt_train stopped by itself (exit {process.returncode}):\n{tail}")
    wall = time.perf_counter() - started
    log = (work / "train.log").read_text(encoding="utf-8", errors="replace")
    reports = [(int(s), int(a), int(b)) for s, a, b in ONMT_REPORT.findall(log)]
    if not reports:
        raise SystemExit(f"OpenNMT-py wrote no progress report; see {work / 'train.log'}")
    checkpoints = sorted(work.glob("model_step_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if not checkpoints:
        raise SystemExit(f"OpenNMT-py saved no checkpoint in {minutes} minutes; see {work / 'train.log'}")
    windows = [src + tgt for _, src, tgt in reports[1:]] or [reports[0][1] + reports[0][2]]
    last = checkpoints[-1]
    subprocess.run([str(venv / "bin" / "onmt_translate"), "-model", str(last), "-src", str(work / "test.de"),
                    "-output", str(work / "pred.en"), "-beam_size", "5", "-max_length", "80", "-batch_size", "64",
                    "-gpu", "-1"], check=True, env=env, capture_output=True, text=True)
    return {"wall_s": wall, "steps": int(last.stem.rsplit("_", 1)[1]), "last_reported_step": reports[-1][0],
            "tokens_per_s": statistics.median(windows), "checkpoint": last.name}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(RECIPES), default="lstm")
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--onmt-venv", default="/tmp/peer-venvs/onmt")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--work-dir", default=None, help="keep OpenNMT-py's files here (default: a temp folder)")
    parser.add_argument("--checkpoint-every", type=int, default=100,
                        help="OpenNMT-py checkpoint interval: its last checkpoint is what gets translated")
    parser.add_argument("--nlpipe-override", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra recipe override for the nlpipe side (repeatable), e.g. train.mixed_precision=no")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    import nlpipe  # noqa: F401
    from nlpipe.run import run_recipe

    venv = Path(args.onmt_venv)
    if not (venv / "bin" / "onmt_train").exists():
        raise SystemExit(f"{venv}: no OpenNMT-py here; run bash benchmarks/peers/make_opennmt_venv.sh {venv}")
    recipe_name = RECIPES[args.model]
    overrides = [*NLPIPE_OVERRIDES[args.model], *args.nlpipe_override]
    recipe, data, task, tokenizer, _ = prepare(recipe_name, overrides, args.data_dir)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="onmt-") as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        write_pieces(tokenizer, data, work)
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump(onmt_config(args.model, recipe, work, args.checkpoint_every)))
        onmt = run_onmt(venv, config, work, args.minutes, args.threads)
        hypotheses = [tokenizer.convert_tokens_to_string(line.split())
                      for line in (work / "pred.en").read_text(encoding="utf-8").splitlines()]
    onmt_scores = task.score(hypotheses, list(data["test"]["target"]), list(data["test"]["source"]))
    print(f"OpenNMT-py {args.model}: {onmt['steps']} steps in {onmt['wall_s']:.0f} s, {onmt['tokens_per_s']:.0f} "
          f"src+tgt tok/s, test sacreBLEU {onmt_scores['sacrebleu']:.2f} (beam 5, {onmt['checkpoint']})", flush=True)

    with tempfile.TemporaryDirectory(prefix="nlpipe-vs-onmt-") as tmp:
        result = run_recipe(recipe_name, [*overrides, f"train.max_train_minutes={args.minutes}"], data_dir=args.data_dir,
                            output_dir=Path(tmp) / "run", overwrite=True, progress=False)
        log = [json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text().splitlines()]
        precision = json.loads((result.run_dir / "run_info.json").read_text()).get("mixed_precision")
    windows = [r["tokens_per_s"] for r in log if "tokens_per_s" in r][1:]
    train = result.metrics["train"]
    ours = {"tokens_per_s": statistics.median(windows) if windows else train["tokens_per_s"],
            "whole_run_tokens_per_s": train["tokens_per_s"], "steps": train["steps"],
            "sacrebleu": result.metrics["test"]["sacrebleu"]}
    ratio = ours["tokens_per_s"] / onmt["tokens_per_s"]
    print(f"nlpipe {recipe_name}: {ours['steps']} steps, {ours['tokens_per_s']:.0f} src+tgt tok/s "
          f"(whole run {ours['whole_run_tokens_per_s']:.0f}; {precision}), test sacreBLEU {ours['sacrebleu']:.2f} (beam 5)")
    print(f"throughput_ratio_vs_opennmt = {ratio:.2f}; BLEU after {args.minutes:g} minutes: nlpipe "
          f"{ours['sacrebleu']:.2f} vs OpenNMT-py {onmt_scores['sacrebleu']:.2f}; load before {load_before:.1f}, "
          f"after {os.getloadavg()[0]:.1f}")
    if args.record:
        append_results([{
            "recipe": recipe_name, "dataset": "multi30k", "split": "test", "metric": "throughput_ratio_vs_opennmt",
            "value": round(ratio, 3), "minutes": args.minutes, "threads": args.threads,
            "tokens_per_s": round(ours["tokens_per_s"], 1), "reference_tokens_per_s": round(onmt["tokens_per_s"], 1),
            "whole_run_tokens_per_s": round(ours["whole_run_tokens_per_s"], 1), "steps": ours["steps"],
            "reference_steps": onmt["steps"], "sacrebleu": round(ours["sacrebleu"], 2),
            "reference_sacrebleu": round(onmt_scores["sacrebleu"], 2), "peer": "OpenNMT-py 3.0.4",
            "nlpipe_overrides": overrides, "nlpipe_precision": precision,
            "reference_precision": "fp32",
            "load_before": round(load_before, 1), "load_after": round(os.getloadavg()[0], 1),
        }])
    return 0


if __name__ == "__main__":
    from nlpipe.cpu_allocator import use_tcmalloc

    use_tcmalloc()  # as the nlpipe command does (nlpipe/cpu_allocator.py); NLPIPE_ALLOCATOR=system: glibc
    raise SystemExit(main())
