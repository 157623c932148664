"""``model.init_from``: the pretrained body is loaded exactly, the head is fresh, the tokenizer is reused.

The source is a tiny BERT tagger trained for two steps on sample data. Each fine-tuning run uses
``train.max_epochs=0``, so the saved model *is* the initialised one and can be compared tensor by
tensor with the source's safetensors (read independently with ``safetensors``). The Hub path runs
the real CLI in a subprocess with ``HF_HUB_OFFLINE=1`` and ``HF_HOME`` pointing at a folder laid
out as the Hub cache (``hub/models--ORG--NAME/{refs/main,snapshots/<commit>/}``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlpipe.errors import NlpipeError
from nlpipe.run import run_recipe

TINY_BERT = ["model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
             "model.intermediate_size=64", "data.max_train_examples=64", "data.max_eval_examples=16",
             "train.batch_size=8", "train.warmup_steps=0", "eval.splits=[validation]"]
ARCHITECTURE = {"model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
                "model.intermediate_size=64"}
# A fine-tuning recipe without the sizes (the source's config defines them): ner-bert minus its size keys.
FINE_TUNE = [o for o in TINY_BERT if o not in ARCHITECTURE] + ["train.max_epochs=0"]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("src") / "tiny-bert"
    run_recipe("ner-bert", [*TINY_BERT, "tokenizer.vocab_size=300", "train.max_steps=2"], data="sample",
               output_dir=out, progress=False)
    return out


def _fine_tune_recipe(tmp_path: Path) -> Path:
    """ner-bert without its architecture keys, as a user would write ner-bert-pretrained."""
    import yaml

    from nlpipe.recipe import resolve_recipe_path

    raw = yaml.safe_load(resolve_recipe_path("ner-bert").read_text())
    raw["model"] = {"type": "bert", "hidden_dropout_prob": 0.1}
    raw["tokenizer"] = {"spec": "init_from"}
    path = tmp_path / "ner-bert-init.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _assert_body_copied_head_fresh(source: Path, run: Path) -> None:
    before = load_file(str(source / "model.safetensors"))
    after = load_file(str(run / "model.safetensors"))
    body = [k for k in before if k.startswith("bert.")]
    assert len(body) > 10
    for key in body:  # the pretrained body, bit for bit
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])  # a fresh head
    assert json.loads((run / "tokenizer.json").read_text())["model"]["vocab"] == \
        json.loads((source / "tokenizer.json").read_text())["model"]["vocab"]  # the source's tokenizer


def test_init_from_run_folder_loads_the_body_exactly(source_run: Path, tmp_path: Path) -> None:
    recipe = _fine_tune_recipe(tmp_path)
    run_recipe(str(recipe), [*FINE_TUNE, f"model.init_from={source_run}"], data="sample",
               output_dir=tmp_path / "run", progress=False)
    _assert_body_copied_head_fresh(source_run, tmp_path / "run")
    # Repeating the source run's own tokenizer section is also a request for that tokenizer.
    run_recipe(str(recipe), [*FINE_TUNE, f"model.init_from={source_run}", "tokenizer.spec=wordpiece",
                             "tokenizer.vocab_size=300"], data="sample", output_dir=tmp_path / "same", progress=False)
    _assert_body_copied_head_fresh(source_run, tmp_path / "same")


def test_init_from_hub_id_offline_from_the_cache(source_run: Path, tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--someone--tiny-bert"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source_run / name, snapshot / name)  # a Hub model: no nlpipe recipe.yaml
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "NLPIPE_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "nlpipe", "run", "recipe", str(_fine_tune_recipe(tmp_path)), "--data", "sample",
               "--no-progress", *FINE_TUNE, "--output-dir", str(tmp_path / "run")]
    done = subprocess.run([*command, "model.init_from=someone/tiny-bert"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_body_copied_head_fresh(source_run, tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())["init_from"]
    assert info["source"] == "someone/tiny-bert" and info["folder"].endswith(f"snapshots/{commit}")
    missing = subprocess.run([*command[:-2], "--output-dir", str(tmp_path / "other"),
                              "model.init_from=someone/not-cached"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "key 'model.init_from': cannot get 'someone/not-cached' from the Hugging Face Hub" in missing.stderr
    assert not (tmp_path / "other").exists()


def test_init_from_refuses_what_would_not_fit(source_run: Path, tmp_path: Path) -> None:
    recipe = str(_fine_tune_recipe(tmp_path))
    with pytest.raises(NlpipeError, match=r"brings its tokenizer, but this recipe asks for \{'spec': 'wordpiece'\}"):
        run_recipe(recipe, [*FINE_TUNE, f"model.init_from={source_run}", "tokenizer.spec=wordpiece"],
                   data="sample", output_dir=tmp_path / "a", progress=False)
    with pytest.raises(NlpipeError, match=r"recipe sets model.hidden_size=256 \(pretrained: 32\)"):
        run_recipe("ner-bert", ["tokenizer.spec=init_from", f"model.init_from={source_run}", *FINE_TUNE],
                   data="sample", output_dir=tmp_path / "b", progress=False)
    with pytest.raises(NlpipeError, match="holds a 'bert' model but model.type is 'rnn_tagger'"):
        run_recipe("ner-bilstm", ["tokenizer.spec=init_from", f"model.init_from={source_run}", "train.max_epochs=0",
                                  "data.max_train_examples=8"], data="sample", output_dir=tmp_path / "c", progress=False)
    with pytest.raises(NlpipeError, match="is neither a folder nor a Hub model id"):
        run_recipe(recipe, [*FINE_TUNE, "model.init_from=./no/such/run"], data="sample",
                   output_dir=tmp_path / "d", progress=False)
