"""Every `nlpipe experiment NAME --quick` runs and returns a table with the expected rows and a figure."""

from __future__ import annotations

import math

import pytest
import torch

from nlpipe.errors import NlpipeError
from nlpipe.experiments import EXPERIMENTS, run_experiment
from nlpipe.experiments.long_range import make_batch
from nlpipe.experiments.synthetic_models import RecurrentClassifier
from nlpipe.experiments.vanishing_gradients import gradient_norms

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

EXPECTED = {
    "long-range": ("model", ["rnn", "lstm", "gru", "attention seq2seq", "transformer"], ["k=2", "k=4"]),
    "vanishing-gradients": ("cell", ["rnn", "rnn", "lstm", "lstm", "gru", "gru"], ["first / last"]),
    "gru-vs-lstm": ("variant", ["bilstm", "bigru"], ["parameters", "tokens/s", "test f1"]),
    "bidirectional": ("variant", ["lstm uni", "lstm bi"], ["parameters", "tokens/s", "test f1"]),
    "attention-vs-none": ("attention", ["additive", "none"], ["BLEU all"]),
    "parallelism": ("model", ["lstm", "transformer"], ["T=8", "T=16"]),
}


def test_every_experiment_is_tested():
    assert set(EXPECTED) == set(EXPERIMENTS)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_quick_mode(name, tmp_path, monkeypatch):
    monkeypatch.setenv("NLPIPE_CACHE", str(tmp_path / "cache"))
    result = run_experiment(name, tmp_path / name, quick=True)
    key, labels, columns = EXPECTED[name]
    assert [row[key] for row in result.rows] == labels
    for row in result.rows:
        for column in columns:
            assert isinstance(row[column], (int, float)) and not math.isnan(row[column]), (column, row)
    # The Markdown table has a header, a rule and one line per row.
    lines = result.table_path.read_text().split("\n\n")[2].splitlines()
    assert len(lines) == 2 + len(labels) and lines[0].startswith(f"| {key} |")
    data = result.figure_path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_parameters_of_recipe_variants_differ_as_expected(tmp_path, monkeypatch):
    """A GRU has 3 gate blocks where an LSTM has 4: fewer parameters with everything else equal."""
    monkeypatch.setenv("NLPIPE_CACHE", str(tmp_path / "cache"))
    rows = run_experiment("gru-vs-lstm", tmp_path / "g", quick=True).rows
    lstm, gru = rows[0]["parameters"], rows[1]["parameters"]
    # Bi-RNN layer of hidden 16 (8 per direction) over embedding 8: LSTM - GRU = one gate block per direction.
    assert lstm > gru


def test_long_range_labels_are_k_back():
    inputs, labels = make_batch(torch.Generator().manual_seed(0), 5, k=3)
    assert inputs.shape == (5, 7)
    assert torch.equal(inputs[:, 7 - 1 - 3] - 3, labels)


def test_gradient_norms_match_finite_differences():
    torch.manual_seed(0)
    model = RecurrentClassifier("gru", 10, 10, hidden_size=8, embedding_dim=4).double()
    inputs, labels = torch.randint(0, 10, (1, 6)), torch.tensor([3])
    norms = gradient_norms(model, inputs, labels)
    embedded = model.embedding(inputs).detach()
    assert len(norms) == 6
    with torch.no_grad():
        for t in (0, 5):
            # Central differences along each embedding coordinate of position t give the gradient there.
            grad = []
            for e in range(4):
                delta = torch.zeros_like(embedded)
                delta[0, t, e] = 1e-6
                up = torch.nn.functional.cross_entropy(model.forward_embeddings(embedded + delta), labels)
                down = torch.nn.functional.cross_entropy(model.forward_embeddings(embedded - delta), labels)
                grad.append(float(up - down) / 2e-6)
            assert norms[t] == pytest.approx(float(torch.tensor(grad).norm()), rel=1e-4)


def test_unknown_experiment(tmp_path):
    with pytest.raises(NlpipeError, match="unknown; choose one of long-range"):
        run_experiment("nope", tmp_path)
