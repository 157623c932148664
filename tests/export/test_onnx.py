"""ONNX export (nlpipe/export): graphs vs PyTorch, the standalone runner vs pipeline()/generate(), int8, the CLI.

Tolerances: float32 ONNX Runtime vs PyTorch logits within 1e-3 (measured ~1e-6: same math, other kernels);
entities identical in group/word/start/end and scores within 1e-3; greedy tokens identical.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")

from tiny_models import TINY_CRF_TAGGER  # noqa: E402

from nlpipe.data.readers import read_conll  # noqa: E402
from nlpipe.export import export_onnx  # noqa: E402
from nlpipe.export.onnx_config import OnnxGraph  # noqa: E402
from nlpipe.export.onnx_export import _export_graph, load_runner  # noqa: E402
from nlpipe.export.recurrent import PaddedRnn  # noqa: E402
from nlpipe.export.rnn_tagger import RnnTaggerOnnxConfig  # noqa: E402
from nlpipe.models.rnn_tagger.configuration_rnn_tagger import RnnTaggerConfig  # noqa: E402
from nlpipe.models.rnn_tagger.modeling_rnn_tagger import RnnForTokenClassification  # noqa: E402
from nlpipe.run import run_recipe  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONLL_TEST = REPO.parent / "shared" / "data" / "conll2003" / "test.txt.gz"
# Runs a script with torch, transformers and nlpipe made unimportable: the export must not need them.
NO_TORCH = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "nlpipe", "accelerate", "datasets"):
            raise ImportError(f"{name} is blocked: the ONNX export must run without it")
        return None
sys.meta_path.insert(0, Block())
sys.path.insert(0, sys.argv[1])
from onnx_runner import load
model = load(sys.argv[1], threads=1)
print(json.dumps(model(json.loads(sys.argv[2]))))
assert "torch" not in sys.modules
"""


def real_sentences(count: int) -> list[str]:
    """CoNLL-2003 test sentences when the shared data is there, else the built-in sample's."""
    if CONLL_TEST.is_file():
        return [" ".join(example["tokens"]) for example in read_conll(CONLL_TEST)[1 : count + 1]]
    from nlpipe.data.samples import make_sample

    return [" ".join(example["tokens"]) for example in make_sample("ner")["test"][:count]]


def run_without_torch(export_dir: Path, inputs: list[str]) -> list:
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(export_dir), json.dumps(inputs)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def onnx_outputs(graph: OnnxGraph, path: Path, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
    _export_graph(graph, path, 17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v.numpy() for k, v in inputs.items() if k in names})


# -- the export-friendly recurrent layers -----------------------------------------------------------


@pytest.mark.parametrize("cell", [torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU])
@pytest.mark.parametrize(("layers", "bidirectional"), [(1, True), (2, True), (2, False)])
def test_padded_rnn_equals_packing(cell: type, layers: int, bidirectional: bool) -> None:
    torch.manual_seed(0)
    rnn = cell(5, 4, num_layers=layers, bidirectional=bidirectional, batch_first=True).eval()
    inputs, lengths = torch.randn(3, 6, 5), torch.tensor([6, 2, 4])
    packed = torch.nn.utils.rnn.pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=6)
    with torch.no_grad():
        got = PaddedRnn(rnn)(inputs, lengths)
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(("cell", "layers", "bidirectional", "char_encoder"), [
    ("lstm", 1, True, "lstm"), ("gru", 2, True, "cnn"), ("rnn", 1, False, "none"), ("lstm", 2, False, "lstm"),
])
def test_tagger_graph_equals_pytorch_on_a_padded_batch(
    tmp_path: Path, cell: str, layers: int, bidirectional: bool, char_encoder: str
) -> None:
    labels = {0: "O", 1: "B-PER", 2: "I-PER"}
    torch.manual_seed(0)
    model = RnnForTokenClassification(RnnTaggerConfig(
        vocab_size=30, embedding_dim=8, hidden_size=8, cell=cell, num_layers=layers, bidirectional=bidirectional,
        char_encoder=char_encoder, char_vocab=list("abcdef"), char_embedding_dim=4, char_hidden_size=4,
        max_word_chars=6, use_crf=True, id2label=labels, label2id={v: k for k, v in labels.items()},
    )).eval()
    graph = RnnTaggerOnnxConfig(model, None, tmp_path, None).graphs()[0]
    # Other batch and sequence sizes than the traced example: the axes are dynamic.
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2])
    input_ids = torch.randint(1, 30, (3, 7)) * mask
    char_ids = torch.randint(0, 8, (3, 7, 6)) * mask[..., None]
    char_ids[..., 0] = torch.where(mask.bool(), char_ids[..., 0].clamp(min=2), 0)  # every real word has a char
    inputs = {"input_ids": input_ids, "attention_mask": mask}
    if char_encoder != "none":
        inputs["char_ids"] = char_ids
    (logits,) = onnx_outputs(graph, tmp_path / "model.onnx", inputs)
    with torch.no_grad():
        expected = model(**inputs).logits.numpy()
    real = mask.bool().numpy()  # scores at padding are never read
    assert np.abs(logits[real] - expected[real]).max() < 1e-4


# -- a trained CRF tagger, end to end ---------------------------------------------------------------


@pytest.fixture(scope="module")
def crf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("onnx-crf") / "run"
    run_recipe("ner-bilstm-crf", TINY_CRF_TAGGER, data="sample", output_dir=run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def crf_export(crf_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    texts = real_sentences(40) + ["Peter Blackburn of the U.S. met EU officials in Zürich on Monday ."]
    out = tmp_path_factory.mktemp("onnx-crf-export") / "onnx"
    result = export_onnx(crf_run, out, texts=texts)
    assert result.parity is not None and result.parity.ok, result.parity.as_dict()
    return out, texts


def test_crf_tagger_export_gives_the_pipeline_entities(crf_run: Path, crf_export: tuple[Path, list[str]]) -> None:
    from transformers import pipeline

    out, texts = crf_export
    expected = pipeline("ner", model=str(crf_run), aggregation_strategy="simple")(texts)
    got = load_runner(out, threads=1)(texts)
    assert load_runner(out, threads=1)(["", "  "]) == [[], []]
    assert sum(len(e) for e in expected) > 10, "the model predicts (almost) no entity: the test would be empty"
    for want, have in zip(expected, got, strict=True):
        assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in have] == [
            (e["entity_group"], e["word"], e["start"], e["end"]) for e in want]
        assert [e["score"] for e in have] == pytest.approx([float(e["score"]) for e in want], abs=1e-3)
    report = json.loads((out / "parity.json").read_text())
    assert report["ok"] and report["identical"] == len(texts) and report["max_abs_logit_diff"] < 1e-3


def test_crf_tagger_export_runs_without_torch(crf_run: Path, crf_export: tuple[Path, list[str]]) -> None:
    out, texts = crf_export
    expected = load_runner(out, threads=1)(texts[:8])
    got = run_without_torch(out, texts[:8])
    assert any(got)
    for want, have in zip(expected, got, strict=True):
        assert [{**e, "score": 0} for e in have] == [{**e, "score": 0} for e in want]
        assert [e["score"] for e in have] == pytest.approx([e["score"] for e in want], abs=1e-6)


def test_int8_export_is_quantized_and_agrees_mostly(crf_run: Path, crf_export: tuple[Path, list[str]],
                                                   tmp_path: Path) -> None:
    import onnx

    _, texts = crf_export
    result = export_onnx(crf_run, tmp_path / "int8", quantize="int8", texts=texts)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "int8" / "model.onnx")).graph.node}
    assert ops & {"DynamicQuantizeLSTM", "MatMulInteger", "DynamicQuantizeLinear"}, ops
    assert json.loads((tmp_path / "int8" / "onnx_config.json").read_text())["quantization"] == "int8"
    # A tiny, barely trained model is the worst case for int8; the entities still mostly agree.
    assert result.parity.identical >= 0.5 * len(texts)


def test_cli_exports_and_refuses_to_overwrite(crf_run: Path, tmp_path: Path) -> None:
    cli = [str(Path(sys.executable).with_name("nlpipe"))]
    first = subprocess.run([*cli, "export", str(crf_run), "--format", "onnx"],  # default: RUN_DIR-onnx beside it
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    out = crf_run.parent / f"{crf_run.name}-onnx"
    assert "24 identical" in first.stdout and (out / "model.onnx").is_file()
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "mine.txt").write_text("not nlpipe's")
    again = subprocess.run([*cli, "export", str(crf_run), "--format", "onnx", "--out", str(tmp_path / "o")],
                           capture_output=True, text=True, timeout=300)
    assert (tmp_path / "o" / "mine.txt").read_text() == "not nlpipe's" and not (tmp_path / "o" / "model.onnx").exists()
    assert again.returncode != 0
    assert again.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in again.stderr



@pytest.mark.parametrize(("args", "message"), [
    (["--format", "tflite"], "choose onnx"), (["--quantize", "int8"], "needs --format onnx"),
    (["--format", "onnx", "--quantize", "int4", "--out", "{tmp}/q"], "choose one of"), ([], "give OUT_DIR"),
])
def test_cli_option_errors_are_one_line(args: list[str], message: str, tmp_path: Path, monkeypatch, capsys) -> None:
    from nlpipe.cli import main

    (tmp_path / "run").mkdir()
    argv = ["nlpipe", "export", str(tmp_path / "run"), *[a.format(tmp=tmp_path) for a in args]]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()  # the console script's entry point, in-process (a subprocess per case costs ~10 s to start)
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("recipe", ["ner-gru", "ner-bilstm"])
def test_taggers_without_crf_or_chars_give_the_pipeline_entities(recipe: str, tmp_path: Path) -> None:
    overrides = [o for o in TINY_CRF_TAGGER if not o.startswith("model.char")]
    run = run_recipe(recipe, overrides, data="sample", output_dir=tmp_path / "run", progress=False).run_dir
    # Sample sentences: a words-only tagger trained on the sample knows their words (CoNLL's are mostly unknown).
    from nlpipe.data.samples import make_sample

    texts = [" ".join(example["tokens"]) for example in make_sample("ner")["test"][:30]]
    result = export_onnx(run, tmp_path / "onnx", texts=texts)  # softmax scores, no CRF in the config
    assert result.parity.ok, result.parity.as_dict()
    assert "crf" not in json.loads((tmp_path / "onnx" / "onnx_config.json").read_text())
    assert sum(map(len, load_runner(tmp_path / "onnx", threads=1)(texts))) > 5, "no entities: a vacuous comparison"


# -- recurrent seq2seq and LM -------------------------------------------------------------------------

MULTI30K_DE = REPO.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"
PTB_TEST = REPO.parent / "shared" / "data" / "ptb" / "ptb.test.txt.gz"
TINY_GENERATION = ["model.hidden_size=32", "model.embedding_dim=16", "data.max_train_examples=200",
                   "data.max_eval_examples=8", "train.max_steps=25", "train.learning_rate=0.01",
                   "eval.splits=[test]", "train.eval_every_steps=null"]
SEQ2SEQ_CASES = {  # recipe → extra overrides; together: no attention, additive (soft/hard), general + input
    "translation-gru": [],  # feeding (LSTM), multi-head with two layers, and the copy mechanism
    "translation-gru-hard": [],
    "translation-lstm-luong": [],
    "translation-gru-multihead": ["model.attention_heads=4", "model.encoder_layers=2", "model.decoder_layers=2"],
    "summarization-lstm-attn": [],
}


def first_lines(path: Path, count: int, words: int | None = None) -> list[str]:
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = [line.strip() for line, _ in zip(handle, range(count * 3), strict=False) if line.strip()]
    return [" ".join(line.split()[:words]) if words else line for line in lines[:count]]


def source_texts(recipe: str, count: int) -> list[str]:
    """Real German sources (Multi30k test) for translation when present, else the sample's sources."""
    if recipe.startswith("translation") and MULTI30K_DE.is_file():
        return first_lines(MULTI30K_DE, count)
    from nlpipe.data.samples import make_sample

    kind = "summarization" if recipe.startswith("summarization") else "translation"
    return [example["source"] for example in make_sample(kind)["test"][:count]]


@pytest.mark.parametrize("recipe", list(SEQ2SEQ_CASES))
def test_seq2seq_export_gives_generate_tokens_greedy_and_beam(recipe: str, tmp_path: Path) -> None:
    run = run_recipe(recipe, TINY_GENERATION + SEQ2SEQ_CASES[recipe] + ["generate.max_new_tokens=12"],
                     data="sample", output_dir=tmp_path / "run", progress=False).run_dir
    texts = source_texts(recipe, 10)
    result = export_onnx(run, tmp_path / "onnx", texts=texts)
    assert result.parity.ok, result.parity.as_dict()  # greedy tokens identical, log-probs within 1e-3
    assert {"encoder.onnx", "decoder_step.onnx"} <= set(result.files)
    runner = load_runner(tmp_path / "onnx", threads=1)
    # Beam search (the recipe's width and length penalty) in numpy equals generate()'s.
    from nlpipe.run import load_run

    _, _, model, tokenizer = load_run(run)
    beams = max(2, model.generation_config.num_beams or 1)
    for text in texts[:4]:
        with torch.no_grad():
            expected = model.generate(**tokenizer([text], return_tensors="pt"), num_beams=beams)[0].tolist()[1:]
        while expected and expected[-1] == model.config.pad_token_id:
            expected.pop()
        assert runner.generate_ids([text], num_beams=beams)[0] == expected
    # Batched decoding (one decoder call per step for all texts and beams, padded sources) gives each text's
    # own result, greedy and beam, also with a forced minimum length.
    for settings in ({"num_beams": 1}, {"num_beams": beams}, {"num_beams": beams, "min_new_tokens": 6}):
        one_by_one = [runner.generate_ids([text], **settings)[0] for text in texts[:6]]
        assert runner.generate_ids(texts[:6], batch_size=4, **settings) == one_by_one
    assert all(len(ids) >= 6 for ids in runner.generate_ids(texts[:6], min_new_tokens=6))
    # The folder runs without torch and decodes the same texts.
    assert run_without_torch(tmp_path / "onnx", texts[:3]) == runner(texts[:3])


def test_rnn_lm_export_continues_prompts_like_generate(tmp_path: Path) -> None:
    run = run_recipe("generation-lstm", TINY_GENERATION + ["model.num_layers=2"], data="sample",
                     output_dir=tmp_path / "run", progress=False).run_dir
    prompts = first_lines(PTB_TEST, 8, words=4) if PTB_TEST.is_file() else None
    result = export_onnx(run, tmp_path / "onnx", texts=prompts)
    assert result.parity.ok, result.parity.as_dict()  # greedy ids identical, logits within 1e-3
    runner = load_runner(tmp_path / "onnx", threads=1)
    texts = ["the company said", "in the morning"]
    assert run_without_torch(tmp_path / "onnx", texts) == runner(texts)


# -- the Transformer recipes' models (transformers' BERT, Marian, GPT-2) ------------------------------

TINY_BERT = ["model.hidden_size=32", "model.num_hidden_layers=2", "model.num_attention_heads=2",
             "model.intermediate_size=64", "train.max_steps=40", "train.warmup_steps=1", "train.learning_rate=0.003",
             "data.max_train_examples=300", "data.max_eval_examples=20", "tokenizer.vocab_size=400"]
TINY_TRANSFORMER_GENERATION = ["eval.splits=[test]", "train.eval_every_steps=null", "data.max_train_examples=200",
                               "data.max_eval_examples=8", "train.max_steps=25"]


def test_bert_token_classification_export_gives_the_pipeline_entities(tmp_path: Path) -> None:
    run = run_recipe("ner-bert", TINY_BERT, data="sample", output_dir=tmp_path / "run", progress=False).run_dir
    texts = real_sentences(30)
    result = export_onnx(run, tmp_path / "onnx", texts=texts)
    assert result.parity.ok, result.parity.as_dict()  # entities (sub-word groups too) identical, logits 1e-3
    got = run_without_torch(tmp_path / "onnx", texts[:5])
    assert got == load_runner(tmp_path / "onnx", threads=1)(texts[:5]) and any(got)


def test_marian_export_with_kv_cache_gives_generate_tokens(tmp_path: Path) -> None:
    overrides = TINY_TRANSFORMER_GENERATION + [
        "model.d_model=32", "model.encoder_layers=2", "model.decoder_layers=2", "model.encoder_attention_heads=2",
        "model.decoder_attention_heads=2", "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64",
        "generate.max_new_tokens=10"]
    run = run_recipe("translation-transformer", overrides, data="sample", output_dir=tmp_path / "run",
                     progress=False).run_dir
    texts = source_texts("translation-transformer", 8)
    result = export_onnx(run, tmp_path / "onnx", texts=texts)
    assert result.parity.ok, result.parity.as_dict()
    from nlpipe.run import load_run

    _, _, model, tokenizer = load_run(run)
    runner = load_runner(tmp_path / "onnx", threads=1)
    for text in texts[:3]:  # beam search (the recipe's 5 beams, forced end at max length) too
        with torch.no_grad():
            expected = model.generate(**tokenizer([text], return_tensors="pt"))[0].tolist()[1:]
        while expected and expected[-1] == model.config.pad_token_id:
            expected.pop()
        assert runner.generate_ids([text])[0] == expected
    assert runner.generate_ids(texts[:6], batch_size=3) == [runner.generate_ids([t])[0] for t in texts[:6]]
    assert run_without_torch(tmp_path / "onnx", texts[:2]) == runner(texts[:2])


def test_gpt2_export_with_kv_cache_continues_like_generate(tmp_path: Path) -> None:
    overrides = TINY_TRANSFORMER_GENERATION + ["model.n_embd=32", "model.n_layer=2", "model.n_head=2"]
    run = run_recipe("generation-gpt", overrides, data="sample", output_dir=tmp_path / "run", progress=False).run_dir
    prompts = first_lines(PTB_TEST, 6, words=4) if PTB_TEST.is_file() else None
    result = export_onnx(run, tmp_path / "onnx", texts=prompts)
    assert result.parity.ok, result.parity.as_dict()
    texts = ["the company said", "in the morning"]
    assert run_without_torch(tmp_path / "onnx", texts) == load_runner(tmp_path / "onnx", threads=1)(texts)


def test_missing_onnxruntime_is_one_clear_error(monkeypatch, tmp_path: Path) -> None:
    import importlib.util

    from nlpipe.errors import NlpipeError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(NlpipeError, match=r"pip install 'nlpipe\[export\]'"):
        export_onnx(tmp_path / "run", tmp_path / "out")
    assert not (tmp_path / "out").exists()
