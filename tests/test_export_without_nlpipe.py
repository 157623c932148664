"""An exported run folder loads and predicts the same without nlpipe (``trust_remote_code=True``).

For one model of each family — the CRF tagger, the RNN seq2seq, the RNN LM — a tiny run folder is
built and exported; a fresh Python process in which ``import nlpipe`` fails and whose working
folder is outside the repository loads it through transformers' Auto classes and pipelines. Its
outputs (logits, pipeline entities, generated ids and text) must equal what nlpipe's own classes give
in this process.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from nlpipe.hub import export_run, find_custom_pipeline
from nlpipe.model_card import write_model_card
from nlpipe.model_registry import build_model
from nlpipe.recipe import dump_recipe, parse_recipe
from nlpipe.tokenizer_training import load_spec, train_tokenizer

NER_TEXTS = [
    "Angela Merkel visited Paris on Monday .",
    "The United Nations met in New York .",
    "Peter works for Siemens in Berlin .",
]
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
LM_TEXTS = ["the company said it will sell shares", "the market fell in new york", "shares rose on monday"]
MT_SOURCES = ["ein hund läuft über die wiese", "zwei männer spielen fußball", "eine frau liest ein buch"]
MT_TARGETS = ["a dog runs across the meadow", "two men play football", "a woman reads a book"]

RECIPES: dict[str, dict[str, Any]] = {
    "tagger": {
        "name": "ner-tiny-crf", "task": "token-classification", "data": {"dataset": "conll2003"},
        "tokenizer": {"spec": "word-level"},
        "model": {"type": "rnn_tagger", "cell": "lstm", "embedding_dim": 16, "hidden_size": 16, "use_crf": True},
        "eval": {"metric": "f1"},
    },
    "seq2seq": {
        "name": "translation-tiny", "task": "translation", "data": {"dataset": "multi30k"},
        "tokenizer": {"spec": "bpe", "vocab_size": 90, "min_frequency": 1},
        "model": {"type": "rnn_seq2seq", "embedding_dim": 16, "hidden_size": 16, "attention": "additive"},
        "eval": {"metric": "sacrebleu"},
    },
    "lm": {
        "name": "generation-tiny", "task": "causal-lm", "data": {"dataset": "ptb"},
        "tokenizer": {"spec": "word-level-lm"},
        "model": {"type": "rnn_lm", "cell": "lstm", "num_layers": 1, "embedding_dim": 16, "hidden_size": 16},
        "eval": {"metric": "perplexity", "greater_is_better": False},
    },
}
METRICS = {
    "tagger": {"f1": 12.5, "precision": 10.0, "recall": 16.67},
    "seq2seq": {"sacrebleu": 3.21, "chrf": 20.5},
    "lm": {"perplexity": 88.8},
}


def make_run_folder(kind: str, run_dir: Path, source: str = "sample") -> Path:
    """A run folder like `run_recipe` writes, with a tiny randomly initialised model (no training).

    `source` is the data source recorded in run_info.json ("sample", "dir" or "hub")."""
    recipe = parse_recipe(RECIPES[kind], f"<test {kind}>")
    spec = load_spec(recipe.tokenizer["spec"], {k: v for k, v in recipe.tokenizer.items() if k != "spec"})
    texts = {"tagger": NER_TEXTS, "seq2seq": MT_SOURCES + MT_TARGETS, "lm": LM_TEXTS}[kind]
    tokenizer = train_tokenizer(spec, texts)
    values: dict[str, Any] = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    if kind == "tagger":
        values.update(id2label=dict(enumerate(NER_LABELS)), label2id={t: i for i, t in enumerate(NER_LABELS)},
                      unk_token_id=tokenizer.unk_token_id)
    elif kind == "seq2seq":
        values.update(eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                      decoder_start_token_id=tokenizer.bos_token_id)
    else:
        values.update(eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = build_model(recipe.model["type"], recipe.model, **values).eval()
    run_dir.mkdir(parents=True)
    model.save_pretrained(run_dir)
    tokenizer.save_pretrained(run_dir)
    dump_recipe(recipe, run_dir / "recipe.yaml")
    metrics = {
        "validation": METRICS[kind], "test": METRICS[kind],
        "train": {"wall_s": 61.0, "tokens": 1000, "tokens_per_s": 16.4, "steps": 4, "epochs": 1.0,
                  "stopped_because": "max_epochs"},
        "parameters": sum(p.numel() for p in model.parameters()), "selection_metric": recipe.eval.metric,
    }
    info = {"recipe": recipe.name, "task": recipe.task, "dataset": recipe.data.dataset,
            "data": {"source": source}, "machine": "CPU test, 1 threads", "num_processes": 1}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "run_info.json").write_text(json.dumps(info))
    metric = recipe.eval.metric
    (run_dir / "train_log.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [{"step": 2, "loss": 2.0}, {"step": 4, "loss": 1.5},
                                                 {"step": 4, "split": "validation", metric: 1.0}])
    )
    write_model_card(run_dir, recipe, metrics, info)
    # What a run folder may also hold and an export must leave out.
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "events.out.tfevents.1").write_bytes(b"\0events")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "state.pt").write_bytes(b"\0state")
    return run_dir


# The fresh process: nlpipe cannot be imported; everything comes from the exported folder.
REMOTE_SCRIPT = r'''
import sys
sys.modules["nlpipe"] = None  # `import nlpipe` now raises ImportError
import json
import torch
from transformers import (AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForTokenClassification,
                          AutoTokenizer, pipeline)

jobs = json.loads(sys.argv[1])
out = {}
try:
    import nlpipe  # noqa: F401
    out["nlpipe_importable"] = True
except ImportError:
    out["nlpipe_importable"] = False
for kind, job in jobs.items():
    folder = job["folder"]
    # With auto_map in config.json AutoTokenizer asks about remote code too (it reads the config).
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    auto = {"tagger": AutoModelForTokenClassification, "seq2seq": AutoModelForSeq2SeqLM,
            "lm": AutoModelForCausalLM}[kind]
    model = auto.from_pretrained(folder, trust_remote_code=True).eval()
    res = {"model_module": type(model).__module__}
    with torch.no_grad():
        if kind == "tagger":
            enc = tok(job["texts"], padding=True, return_tensors="pt")
            res["logits"] = model(**enc).logits.tolist()
            ner = pipeline("ner", model=folder, trust_remote_code=True)
            res["pipeline_class"] = type(ner).__name__
            res["pipeline"] = [ner(t) for t in job["texts"]]
        elif kind == "seq2seq":
            enc = tok(job["texts"], padding=True, return_tensors="pt")
            res["generated"] = model.generate(**enc, num_beams=3, max_new_tokens=8, min_new_tokens=3).tolist()
        else:
            enc = tok(job["texts"][:1], return_tensors="pt")
            res["logits"] = model(**enc).logits.tolist()
            gen = pipeline("text-generation", model=folder, trust_remote_code=True)
            res["pipeline"] = gen(job["texts"][0], max_new_tokens=6, min_new_tokens=6, do_sample=False)
    out[kind] = res
print("RESULT " + json.dumps(out, default=float))
'''


def _inputs(kind: str) -> list[str]:
    return {"tagger": NER_TEXTS, "seq2seq": MT_SOURCES, "lm": ["the company said"]}[kind]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run folders + exports for the three families, and what the nlpipe-free process computed on them."""
    root = tmp_path_factory.mktemp("export")
    folders = {}
    for kind in RECIPES:
        run_dir = make_run_folder(kind, root / f"run-{kind}")
        folders[kind] = (run_dir, export_run(run_dir, root / f"export-{kind}", repo_id=f"me/{kind}-tiny"))
    jobs = {kind: {"folder": str(out), "texts": _inputs(kind)} for kind, (_, out) in folders.items()}
    outside = root / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_MODULES_CACHE=str(root / "modules"), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, json.dumps(jobs)], cwd=outside, env=env,
                          capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Do you wish to run the custom code" not in proc.stdout + proc.stderr  # no interactive prompt
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return {"folders": folders, "remote": json.loads(line[len("RESULT "):])}


def test_fresh_process_had_no_nlpipe(exported: dict[str, Any]) -> None:
    remote = exported["remote"]
    assert remote["nlpipe_importable"] is False
    for kind in RECIPES:
        # The classes were built from the folder's copied code, not from an installed package.
        assert remote[kind]["model_module"].startswith("transformers_modules."), remote[kind]["model_module"]


def test_export_folder_contents(exported: dict[str, Any]) -> None:
    run_dir, out = exported["folders"]["tagger"]
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "recipe.yaml", "metrics.json",
            "training_curve.png", "configuration_rnn_tagger.py", "modeling_rnn_tagger.py", "crf.py",
            "two_pass_rnn.py", "char_encoder.py"} <= names
    assert not names & {"logs", "checkpoints"}
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_rnn_tagger.RnnTaggerConfig",
        "AutoModelForTokenClassification": "modeling_rnn_tagger.RnnForTokenClassification",
    }
    # The run folder itself is untouched, and later saves in this process do not copy code.
    assert "auto_map" not in json.loads((run_dir / "config.json").read_text())
    for py in out.glob("*.py"):  # real import statements (docstring examples may mention nlpipe)
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "nlpipe" for a in node.names), py.name
            elif isinstance(node, ast.ImportFrom):
                assert node.level in (0, 1) and (node.module or "").split(".")[0] != "nlpipe", py.name
                assert node.level == 0 or node.module, f"{py.name}: 'from . import' is not followed"
    lm_config = json.loads((exported["folders"]["lm"][1] / "config.json").read_text())
    assert lm_config["auto_map"]["AutoModelForCausalLM"] == "modeling_rnn_lm.RnnForCausalLM"
    s2s_config = json.loads((exported["folders"]["seq2seq"][1] / "config.json").read_text())
    assert s2s_config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_rnn_seq2seq.RnnSeq2SeqForConditionalGeneration"


def test_crf_tagger_same_outputs_without_nlpipe(exported: dict[str, Any]) -> None:
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        TokenClassificationPipeline,
        pipeline,
    )

    run_dir, out = exported["folders"]["tagger"]
    remote = exported["remote"]["tagger"]
    model = AutoModelForTokenClassification.from_pretrained(run_dir).eval()  # nlpipe's own class
    assert model.config.use_crf and type(model).__module__.startswith("nlpipe.")
    tok = AutoTokenizer.from_pretrained(run_dir)
    with torch.no_grad():
        logits = model(**tok(NER_TEXTS, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(torch.tensor(remote["logits"]), logits, rtol=0, atol=1e-5)

    custom = find_custom_pipeline(type(model), TokenClassificationPipeline)
    config = json.loads((out / "config.json").read_text())
    if custom is not None:
        # The family's own pipeline (CRF Viterbi) is what pipeline("ner") builds without nlpipe.
        assert config["custom_pipelines"]["ner"]["impl"].endswith(f".{custom.__name__}")
        assert remote["pipeline_class"] == custom.__name__
    else:
        assert "custom_pipelines" not in config
        assert remote["pipeline_class"] == "TokenClassificationPipeline"
    ner = pipeline("ner", model=str(run_dir), **({"pipeline_class": custom} if custom else {}))
    local = json.loads(json.dumps([ner(t) for t in NER_TEXTS], default=float))
    assert len(local) == len(remote["pipeline"])
    for mine, theirs in zip(local, remote["pipeline"], strict=True):
        assert [(e["word"], e["entity"], e["start"], e["end"]) for e in mine] == \
            [(e["word"], e["entity"], e["start"], e["end"]) for e in theirs]
        assert [e["score"] for e in mine] == pytest.approx([e["score"] for e in theirs], abs=1e-5)


def test_seq2seq_same_generation_without_nlpipe(exported: dict[str, Any]) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    run_dir, _ = exported["folders"]["seq2seq"]
    model = AutoModelForSeq2SeqLM.from_pretrained(run_dir).eval()
    assert type(model).__module__.startswith("nlpipe.")
    tok = AutoTokenizer.from_pretrained(run_dir)
    with torch.no_grad():
        generated = model.generate(**tok(MT_SOURCES, padding=True, return_tensors="pt"), num_beams=3,
                                   max_new_tokens=8, min_new_tokens=3)
    assert exported["remote"]["seq2seq"]["generated"] == generated.tolist()
    assert generated.shape[1] >= 4  # start token + at least 3 generated: a real comparison


def test_lm_same_logits_and_text_generation_without_nlpipe(exported: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    run_dir, _ = exported["folders"]["lm"]
    remote = exported["remote"]["lm"]
    model = AutoModelForCausalLM.from_pretrained(run_dir).eval()
    assert type(model).__module__.startswith("nlpipe.")
    tok = AutoTokenizer.from_pretrained(run_dir)
    with torch.no_grad():
        logits = model(**tok(["the company said"], return_tensors="pt")).logits
    torch.testing.assert_close(torch.tensor(remote["logits"]), logits, rtol=0, atol=1e-5)
    local = pipeline("text-generation", model=str(run_dir))("the company said", max_new_tokens=6, min_new_tokens=6,
                                                          do_sample=False)
    assert remote["pipeline"] == local
    assert local[0]["generated_text"].startswith("the company said")
    assert len(local[0]["generated_text"]) > len("the company said")
