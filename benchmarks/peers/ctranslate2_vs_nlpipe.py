"""`generate()` of translation-transformer through nlpipe (PyTorch and its ONNX export) vs CTranslate2 on the same
converted Marian model.

    python benchmarks/peers/ctranslate2_vs_nlpipe.py [--threads 1] [--new-tokens 32] [--record]

CTranslate2 (`pip install ctranslate2`; what OpenNMT users deploy with) runs the very weights nlpipe runs: the
recipe's Marian model is built fresh (speed does not depend on the weights; 8k vocabulary), saved, and converted
with CTranslate2's own `TransformersConverter` (float32, no quantization). Both decode the same random source
sentences of 20 tokens for exactly ``--new-tokens`` new tokens (minimum = maximum length, so both do the same work
whatever the weights say), greedy and beam 5, at batch 1 (8 sentences one by one) and batch 32, back to back with
the same thread count. The ONNX column is nlpipe's export of the same weights (the graphs `nlpipe export --format onnx`
writes: encoder + decoder step with key/value caches) decoded by the exported folder's own `onnx_runner.py`, whole
batches per decoder call, with the same forced length; its tokenizer is a word-level stand-in over the same id
names, so it tokenizes the very ids the other two receive. New tokens/s per input sentence; the ratios are
nlpipe / CTranslate2. Appends ``generate_ratio_vs_ctranslate2`` lines (PyTorch) and
``onnx_generate_ratio_vs_ctranslate2`` lines to benchmarks/results.jsonl with ``--record``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from generate_speed_seq2seq import VOCAB, build  # noqa: E402
from results_log import append_results  # noqa: E402


class _Vocabulary:
    """The tokenizer CTranslate2's Marian loader reads: token strings for the ids (our ids, no text needed)."""

    pad_token, eos_token, unk_token, bos_token = "<pad>", "</s>", "<unk>", "<s>"

    def get_vocab(self) -> dict[str, int]:
        # CTranslate2's Marian loader takes the *last* entry for Marian's padding row and drops it (Marian puts pad
        # last; nlpipe's recipe has it at 0): name the last id "<pad>", so 7,999 of the 8,000 rows are converted.
        names = {VOCAB - 1: self.pad_token, 1: self.eos_token, 2: self.unk_token}
        return {names.get(i, f"t{i}"): i for i in range(VOCAB)}


def convert(model: torch.nn.Module, folder: Path) -> Path:
    """Save the model and convert it with CTranslate2's TransformersConverter; returns the CTranslate2 folder."""
    import ctranslate2

    model.save_pretrained(folder / "hf")

    class Converter(ctranslate2.converters.TransformersConverter):
        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):  # no tokenizer files: ids only
            return _Vocabulary()

    out = folder / "ct2"
    Converter(str(folder / "hf")).convert(str(out), force=True)
    return out


def export_onnx_folder(model: torch.nn.Module, folder: Path, threads: int):
    """nlpipe's ONNX graphs of `model` (as `nlpipe export` writes them) and the folder's runner opened on them."""
    import json
    import shutil

    from nlpipe.export.onnx_export import RUNNER_FILE, _export_graph, load_runner
    from nlpipe.export.transformer_models import MarianOnnxConfig
    from tokenizers import Tokenizer, models, pre_tokenizers

    out = folder / "onnx"
    out.mkdir()
    family = MarianOnnxConfig(model, None, folder, None)
    for graph in family.graphs():
        _export_graph(graph, out / graph.file_name, family.opset)
    settings = {"format": "nlpipe-onnx", "kind": family.kind, "model_type": "marian", "quantization": "float32",
                **family.runner_config()}
    (out / "onnx_config.json").write_text(json.dumps(settings, indent=1))
    tokenizer = Tokenizer(models.WordLevel(_Vocabulary().get_vocab(), unk_token=_Vocabulary.unk_token))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(out / "tokenizer.json"))
    shutil.copyfile(RUNNER_FILE, out / "onnx_runner.py")
    return load_runner(out, threads=threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="translation-transformer")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--source-length", type=int, default=20)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import ctranslate2

    import nlpipe  # noqa: F401

    model = build(args.recipe)
    vocabulary = _Vocabulary().get_vocab()
    names = {i: token for token, i in vocabulary.items()}
    inputs = torch.randint(3, VOCAB - 1, (32, args.source_length), generator=torch.Generator().manual_seed(0))
    inputs[:, -1] = 1  # end of sentence, as nlpipe's tokenizer adds it
    with tempfile.TemporaryDirectory() as tmp:
        translator = ctranslate2.Translator(str(convert(model, Path(tmp))), device="cpu", inter_threads=1,
                                            intra_threads=args.threads)
        sources = [[names[i] for i in row] for row in inputs.tolist()]
        onnx_runner = export_onnx_folder(model, Path(tmp), args.threads)
        texts = [" ".join(tokens) for tokens in sources]
        assert [e.ids for e in onnx_runner.tokenizer.encode_batch(texts)] == inputs.tolist()
        n = args.new_tokens

        def run_nlpipe(batch: torch.Tensor, beams: int) -> None:
            with torch.inference_mode():
                model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=n,
                               min_new_tokens=n, do_sample=False, num_beams=beams)

        def run_ct2(batch: list[list[str]], beams: int) -> None:
            translator.translate_batch(batch, beam_size=beams, max_decoding_length=n, min_decoding_length=n,
                                       max_batch_size=len(batch))

        def run_onnx(batch: list[str], beams: int) -> None:
            onnx_runner.generate_ids(batch, num_beams=beams, max_new_tokens=n, min_new_tokens=n,
                                     batch_size=len(batch))

        run_nlpipe(inputs[:2], 1)
        run_ct2(sources[:2], 1)  # warm-up
        run_onnx(texts[:2], 1)
        lines = []
        for batch_size in (1, 32):
            for beams in (1, 5):
                rates = {}
                for name in ("nlpipe", "onnx", "ctranslate2"):
                    load = os.getloadavg()[0]
                    started = time.perf_counter()
                    count = 8 if batch_size == 1 else 32
                    for first in range(0, count, batch_size):
                        if name == "nlpipe":
                            run_nlpipe(inputs[first : first + batch_size], beams)
                        elif name == "onnx":
                            run_onnx(texts[first : first + batch_size], beams)
                        else:
                            run_ct2(sources[first : first + batch_size], beams)
                    rates[name] = count * n / (time.perf_counter() - started)
                ratio = rates["nlpipe"] / rates["ctranslate2"]
                onnx_ratio = rates["onnx"] / rates["ctranslate2"]
                print(f"{args.recipe}: batch {batch_size}, beam {beams}: nlpipe {rates['nlpipe']:,.0f} new tokens/s, "
                      f"ONNX {rates['onnx']:,.0f}, CTranslate2 {ctranslate2.__version__} {rates['ctranslate2']:,.0f}: "
                      f"ratios {ratio:.2f} / {onnx_ratio:.2f} (load {load:.1f}, threads {args.threads})", flush=True)
                lines.append({"recipe": args.recipe, "metric": "generate_ratio_vs_ctranslate2", "value": round(ratio, 3),
                              "batch_size": batch_size, "num_beams": beams, "tokens_per_s": round(rates["nlpipe"], 1),
                              "reference_tokens_per_s": round(rates["ctranslate2"], 1),
                              "reference": f"ctranslate2 {ctranslate2.__version__}", "new_tokens": n,
                              "source_length": args.source_length, "threads": args.threads, "load": round(load, 1)})
                lines.append({**lines[-1], "metric": "onnx_generate_ratio_vs_ctranslate2", "value": round(onnx_ratio, 3),
                              "tokens_per_s": round(rates["onnx"], 1)})
    if args.record:
        append_results(lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
