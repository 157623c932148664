"""The model card (README.md) parses as Hub metadata and shows the run's real numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, metadata_load
from test_export_without_nlpipe import make_run_folder

from nlpipe.hub import export_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("cards")
    out = {}
    for kind in ("tagger", "seq2seq"):
        run = make_run_folder(kind, root / f"run-{kind}", source="dir")  # trained on the real data set
        out[kind] = (run, export_run(run, root / f"export-{kind}", repo_id=f"me/{kind}-tiny"))
    return out


@pytest.mark.parametrize("kind", ["tagger", "seq2seq"])
def test_card_metadata_parses_with_metric_values(runs: dict[str, tuple[Path, Path]], kind: str) -> None:
    for folder in runs[kind]:
        card = ModelCard.load(folder / "README.md")
        meta = metadata_load(folder / "README.md")
        metrics = json.loads((folder / "metrics.json").read_text())
        assert meta["library_name"] == "transformers"
        assert "nlpipe" in meta["tags"]
        expected = {(f"{split} {name}", round(value, 2)) for split in ("validation", "test")
                    for name, value in metrics[split].items()}
        got = {(r.metric_name, r.metric_value) for r in card.data.eval_results}
        assert got == expected
        assert {r.dataset_type for r in card.data.eval_results} == {meta["datasets"][0]}
        if meta["license"] == "other":  # the Hub wants a name for a custom licence
            assert meta["license_name"]


def test_tagger_card_content(runs: dict[str, tuple[Path, Path]]) -> None:
    run, export = runs["tagger"]
    meta = metadata_load(run / "README.md")
    assert meta["pipeline_tag"] == "token-classification"
    assert meta["datasets"] == ["eriktks/conll2003"] or meta["datasets"][0].endswith("conll2003")
    text = (export / "README.md").read_text()
    body = text.split("---", 2)[2]
    # The results table carries the numbers of metrics.json.
    assert "| validation | 12.50 | 10.00 | 16.67 |" in body
    assert "| test | 12.50 | 10.00 | 16.67 |" in body
    # Training time, hardware, the curve (a real PNG next to it) and the whole recipe.
    assert "61 s" in body and "CPU test, 1 threads" in body
    assert "| data | conll2003 (local files) |" in body
    assert "![training curve](training_curve.png)" in body
    assert (export / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recipe_block = body.split("```yaml\n", 1)[1].split("\n```", 1)[0]
    assert yaml.safe_load(recipe_block) == yaml.safe_load((run / "recipe.yaml").read_text())
    assert "## Intended use and limitations" in body
    # The export's usage loads by repo id without nlpipe; the run folder's with nlpipe.
    assert 'pipeline("ner", model="me/tagger-tiny", trust_remote_code=True' in body
    assert "trust_remote_code" not in (run / "README.md").read_text()


def test_seq2seq_card_usage_uses_generate_without_nlpipe(runs: dict[str, tuple[Path, Path]]) -> None:
    body = (runs["seq2seq"][1] / "README.md").read_text()
    assert 'AutoModelForSeq2SeqLM.from_pretrained("me/seq2seq-tiny", trust_remote_code=True)' in body
    assert 'pipeline("translation", model="me/seq2seq-tiny")' in body  # with nlpipe installed


def test_sample_data_card_claims_no_data_set_and_says_what_it_was_trained_on(tmp_path: Path) -> None:
    """A model trained on the built-in sample must not be listed as a CoNLL-2003 model with CoNLL-2003 scores."""
    run = make_run_folder("tagger", tmp_path / "run", source="sample")
    meta = metadata_load(run / "README.md")
    assert "datasets" not in meta and "model-index" not in meta
    assert ModelCard.load(run / "README.md").data.eval_results is None
    assert meta["license"] == "apache-2.0" and "nlpipe-sample-data" in meta["tags"]
    body = (run / "README.md").read_text().split("---", 2)[2]
    assert "built-in sample data" in body and "**not** trained or scored on `conll2003`" in body
    assert "| data | nlpipe built-in sample (synthetic, conll2003 format; not conll2003) |" in body
    assert "inherits the biases and domain of" not in body


def test_a_single_logged_loss_is_drawn_as_a_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that logged one loss and one validation score: both appear (a one-point line draws nothing)."""
    from matplotlib.figure import Figure

    from nlpipe.model_card import plot_training_curve

    (tmp_path / "train_log.jsonl").write_text(
        json.dumps({"step": 3, "loss": 2.0}) + "\n" + json.dumps({"step": 3, "split": "validation", "f1": 10.0}) + "\n")
    markers = []
    original = Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        markers.extend(line.get_marker() for ax in fig.axes for line in ax.lines)
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    assert plot_training_curve(tmp_path, "f1") is not None
    assert len(markers) == 2 and all(m not in (None, "None", "", " ") for m in markers), markers


def test_seq2seq_card_says_generate_uses_the_saved_beam_and_how_to_stream() -> None:
    """`model.generate()` decodes with the recipe's beams (saved in generation_config.json); the card says so and
    shows the greedy call streaming needs. Greedy recipes and taggers get no such note."""
    from nlpipe.model_card import model_card_text
    from nlpipe.recipe import load_recipe

    info = {"data": {"source": "dir"}, "machine": "CPU test, 1 threads", "num_processes": 1}
    metrics = {"test": {"sacrebleu": 30.0}, "train": {}, "parameters": 1}
    recipe = load_recipe("translation-gru-attn")
    beams = recipe.generate["num_beams"]
    body = model_card_text(recipe, metrics, info, has_curve=False)
    assert f"beam search with {beams} beams" in body and f"`num_beams={beams}`" in body
    assert "num_beams=1, streamer=TextStreamer(" in body
    greedy = load_recipe("translation-gru-attn", ["generate.num_beams=1"])
    assert "TextStreamer" not in model_card_text(greedy, metrics, info, has_curve=False)
    tagger = load_recipe("ner-bilstm")
    assert "TextStreamer" not in model_card_text(tagger, {"test": {"f1": 1.0}}, info, has_curve=False)
