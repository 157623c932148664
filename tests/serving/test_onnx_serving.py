"""`nlpipe serve --onnx`: a real server on an ONNX export answers concurrent clients as the PyTorch predictor does.

Two ways in, one per test: an export folder given directly (NER, exported first as `nlpipe export` does), and a
run folder whose ``RUN_DIR-onnx`` export the server writes on first use (translation).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime", reason="ONNX serving needs the `export` extra (pip install -e '.[test]')")

from server_process import ServerProcess, post_json, request  # noqa: E402

from nlpipe.errors import NlpipeError  # noqa: E402
from nlpipe.export import export_onnx, onnx_predictor  # noqa: E402
from nlpipe.serving.predictors import TorchPredictor, load_predictor  # noqa: E402

NER_TEXTS = [
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn met officials in Brussels on Monday .",
    "Germany 's representative to the European Union 's veterinary committee Werner Zwingmann said on Wednesday .",
    "Japan began the defence of their Asian Cup title with a lucky 2-1 win against Syria .",
    "Nadim Ladki   reported from AL-AIN , United Arab Emirates .",  # extra spaces: offsets must still agree
    "Müller and Straße went to São Paulo with the U.N. delegation .",
    "the quick brown fox",
    "CRICKET - LEICESTERSHIRE TAKE OVER AT TOP AFTER INNINGS VICTORY .",
]
TRANSLATION_TEXTS = ["die Katze das Buch findet .", "ein Hund läuft .", "zwei Männer stehen am Strand .",
                     "eine Frau in einem roten Kleid singt .", "Kinder spielen im Park ."]
CLIENTS = 16
REQUESTS = 96


def _requests(texts: list[str]) -> list[list[str]]:
    """REQUESTS bodies of 1-3 texts each, cycling through `texts`."""
    return [[texts[(i + k) % len(texts)] for k in range(1 + i % 3)] for i in range(REQUESTS)]


def _ask_concurrently(url: str, bodies: list[list[str]]) -> list[tuple[int, Any]]:
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(lambda texts: post_json(url, {"texts": texts}, timeout=120), bodies))


def _entity_keys(entities: list[dict]) -> list[tuple]:
    return [(e["entity_group"], e["word"], e["start"], e["end"]) for e in entities]


def test_onnx_ner_server_answers_concurrent_clients_like_pytorch(ner_run: Path, tmp_path: Path) -> None:
    export_dir = tmp_path / "ner-export"
    export_onnx(ner_run, export_dir, verify=False)  # what `nlpipe export RUN --format onnx --out DIR` writes
    expected = dict(zip(NER_TEXTS, TorchPredictor(ner_run).predict(NER_TEXTS), strict=True))
    assert any(result["entities"] for result in expected.values())  # the tiny tagger finds entities at all

    with ServerProcess(export_dir, tmp_path / "server.log", "--onnx", "--max-wait-ms", "20") as server:
        status, health = request(server.url + "/health")
        assert status == 200 and health["backend"] == "onnx" and health["task"] == "token-classification"
        status, meta = request(server.url + "/")
        assert status == 200 and meta["backend"] == "onnx" and meta["name"] == "ner-bilstm-crf"
        assert meta["onnx"]["folder"] == "ner-export" and meta["onnx"]["quantization"] == "float32"
        assert "f1" in meta["metrics"]["test"]  # the run's card metadata travels with the export

        bodies = _requests(NER_TEXTS)
        answers = _ask_concurrently(server.url + "/entities", bodies)
        status, health = request(server.url + "/health")
    for texts, (status, body) in zip(bodies, answers, strict=True):
        assert status == 200, body
        assert [r["text"] for r in body["results"]] == texts
        for result in body["results"]:
            want = expected[result["text"]]["entities"]
            assert _entity_keys(result["entities"]) == _entity_keys(want)  # identical entities
            for got, ref in zip(result["entities"], want, strict=True):
                assert got["score"] == pytest.approx(ref["score"], abs=1e-4)
    assert health["requests"] == REQUESTS and health["batches"] < REQUESTS  # grouped across clients
    assert "Traceback" not in server.log()


def test_onnx_translation_server_exports_beside_the_run_and_answers_like_pytorch(
        translation_run: Path, tmp_path: Path) -> None:
    sibling = translation_run.parent / f"{translation_run.name}-onnx"
    shutil.rmtree(sibling, ignore_errors=True)  # this test's own export, should an earlier run have left it
    expected = {r["text"]: r["translation"] for r in TorchPredictor(translation_run).predict(TRANSLATION_TEXTS)}

    with ServerProcess(translation_run, tmp_path / "server.log", "--onnx", "--max-wait-ms", "20") as server:
        status, meta = request(server.url + "/")
        assert status == 200 and meta["backend"] == "onnx" and meta["task"] == "translation"
        assert meta["onnx"]["folder"] == sibling.name
        bodies = _requests(TRANSLATION_TEXTS)
        answers = _ask_concurrently(server.url + "/translation", bodies)
        assert request(server.url + "/health")[0] == 200
    assert f"exporting {translation_run}" in server.log()
    config = json.loads((sibling / "onnx_config.json").read_text())
    assert config["task"] == "translation" and config["generation"]["num_beams"] == 1
    for texts, (status, body) in zip(bodies, answers, strict=True):
        assert status == 200, body
        assert [r["translation"] for r in body["results"]] == [expected[t] for t in texts]  # same greedy text

    # A second start reuses the export: nothing is written again.
    stamp = (sibling / "onnx_config.json").stat().st_mtime_ns
    assert onnx_predictor(translation_run).folder.resolve() == sibling.resolve()
    assert (sibling / "onnx_config.json").stat().st_mtime_ns == stamp
    assert not [p for p in translation_run.parent.iterdir() if p.name.startswith(f".{sibling.name}.")]


def test_an_export_of_other_weights_is_refused_and_left_alone(translation_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(translation_run, run_dir)
    sibling = tmp_path / "run-onnx"
    sibling.mkdir()
    (sibling / "notes.txt").write_text("mine")
    with pytest.raises(NlpipeError, match="not an ONNX export"):
        load_predictor(run_dir, onnx=True)
    assert [p.name for p in sibling.iterdir()] == ["notes.txt"]

    shutil.rmtree(sibling)
    load_predictor(run_dir, onnx=True)  # exports into run-onnx
    config_path = sibling / "onnx_config.json"
    config = json.loads(config_path.read_text())
    config["source_weights_sha256"] = "0" * 64  # as if the run had been trained again since
    config_path.write_text(json.dumps(config))
    with pytest.raises(NlpipeError, match="other weights"):
        load_predictor(run_dir, onnx=True)
    assert json.loads(config_path.read_text())["source_weights_sha256"] == "0" * 64
    # The export folder itself can still be served as it is.
    assert load_predictor(sibling, onnx=True).predict(["ein Hund läuft ."])[0]["translation"]


def test_onnx_on_a_folder_that_is_neither_is_one_line_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "nlpipe", "serve", str(tmp_path), "--port", "0", "--onnx"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "neither a finished run folder nor an ONNX export" in lines[0], result.stderr


@pytest.mark.parametrize(("recipe", "overrides", "texts"), [
    ("generation-lstm", ["generate.do_sample=false", "generate.max_new_tokens=6"],  # greedy: comparable answers
     ["the company said", "a young teacher", "stocks fell"]),
    ("summarization-lstm-attn",  # the recipe's beam search, its no-repeat and length settings, a short budget
     ["tokenizer.vocab_size=120", "data.max_length=64", "generate.num_beams=3", "generate.max_new_tokens=10",
      "generate.min_new_tokens=2"],
     ["Amanda: I baked cookies. Do you want some?\nJerry: Sure!\nAmanda: I'll bring you tomorrow :-)",
      "Tom: are we still meeting at 5?\nAnna: yes, see you at the station"]),
], ids=["continuation-greedy", "summary-beam"])
def test_onnx_predictor_gives_the_pytorch_answers(recipe: str, overrides: list[str], texts: list[str],
                                                  tmp_path: Path) -> None:
    from nlpipe.run import run_recipe

    small = ["train.max_steps=3", "data.max_train_examples=64", "data.max_eval_examples=4",
             "train.eval_every_steps=null", "eval.splits=[test]", "model.hidden_size=16", "model.embedding_dim=16"]
    run_dir = run_recipe(recipe, small + overrides, data="sample", output_dir=tmp_path / "run", progress=False).run_dir
    onnx = load_predictor(run_dir, onnx=True)
    assert onnx.backend == "onnx" and onnx.folder.name == "run-onnx"
    assert onnx.predict(texts) == TorchPredictor(run_dir).predict(texts)
