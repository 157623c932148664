"""`pipeline("translation" | "summarization" | "text2text-generation")` after `import nlpipe`, on a saved run
folder in a fresh process (RNN seq2seq) and on a saved Marian model: same text as `nlpipe.prediction.predict`
and as a direct `model.generate()`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nlpipe.run import run_recipe

SOURCES = ["die Katze das Buch findet .", "das Pferd das alte Buch neben einer Straße findet ."]

FRESH_PROCESS = r"""
import json, sys
import nlpipe  # registers the pipelines
from transformers import pipeline
from nlpipe.prediction import predict

run_dir, sources = sys.argv[1], json.loads(sys.argv[2])
result = {"predict": [r["output"] for r in predict(run_dir, sources)]}
for task, key in (("translation", "translation_text"), ("summarization", "summary_text"),
                  ("text2text-generation", "generated_text")):
    pipe = pipeline(task, model=run_dir)
    result[task] = [out[key] for out in pipe(sources)]  # a list of texts: one dict per text (transformers 4)
    result[task + "-single"] = pipe(sources[0])[0][key]  # one text: a list with one dict
    result[task + "-two-each"] = [len(out) for out in pipe(sources, num_beams=2, num_return_sequences=2)]
# generation keywords given to the call override the saved generation config
result["greedy"] = pipeline("translation", model=run_dir)(sources[0], num_beams=1)[0]["translation_text"]
print("RESULT" + json.dumps(result))
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("runs") / "tiny-translation"
    overrides = [
        "tokenizer.vocab_size=90", "model.embedding_dim=16", "model.hidden_size=32", "train.max_steps=3",
        "data.max_train_examples=200", "data.max_eval_examples=8", "generate.num_beams=3", "generate.max_new_tokens=12",
    ]
    run_recipe("translation-gru-attn", overrides, data="sample", output_dir=out, progress=False)
    return out


def test_pipelines_match_predict_in_a_fresh_process(run_dir) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(run_dir), json.dumps(SOURCES)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert len(result["predict"]) == 2
    for task in ("translation", "summarization", "text2text-generation"):
        assert result[task] == result["predict"], task
    assert result["translation-single"] == result["predict"][0]
    assert result["translation-two-each"] == [2, 2]  # several outputs per text: one list per text

    # independent reference: the saved model decoded directly with the recipe's beam settings
    import transformers

    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(run_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(run_dir)
    assert model.generation_config.num_beams == 3
    ids = model.generate(**tokenizer(SOURCES[0], return_tensors="pt"), num_beams=3, max_new_tokens=12)
    assert result["predict"][0] == tokenizer.decode(ids[0], skip_special_tokens=True).strip()
    greedy = model.generate(**tokenizer(SOURCES[0], return_tensors="pt"), num_beams=1, max_new_tokens=12)
    assert result["greedy"] == tokenizer.decode(greedy[0], skip_special_tokens=True).strip()


def test_marian_model_through_the_registered_pipeline(run_dir, tmp_path) -> None:
    import torch
    import transformers

    import nlpipe  # noqa: F401

    tokenizer = transformers.AutoTokenizer.from_pretrained(run_dir)
    config = transformers.MarianConfig(
        vocab_size=len(tokenizer), decoder_vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, forced_eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config).eval()
    model.generation_config.max_new_tokens = 6
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    pipe = transformers.pipeline("text2text-generation", model=str(tmp_path))
    ids = model.generate(**tokenizer(SOURCES[1], return_tensors="pt"), max_new_tokens=6)
    expected = tokenizer.decode(ids[0], skip_special_tokens=True).strip()
    assert pipe(SOURCES[1]) == [{"generated_text": expected}]
