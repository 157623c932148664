"""nlpipe.metrics: each local evaluate module against its backend computed directly or by hand."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import evaluate
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from seqeval.metrics import f1_score as seqeval_default_f1

from nlpipe.errors import NlpipeError
from nlpipe.metrics import METRIC_NAMES, compute_metric, load_metric, metric_path


@pytest.fixture(scope="module")
def metrics() -> dict[str, evaluate.EvaluationModule]:
    return {name: load_metric(name) for name in METRIC_NAMES}


def test_loaded_modules_are_genuine_evaluate_metrics(metrics):
    for name, metric in metrics.items():
        assert isinstance(metric, evaluate.Metric), name
        assert metric_path(name).name == f"nlpipe_{name}"


# ---------------------------------------------------------------- seqeval


def test_seqeval_hand_worked_example(metrics):
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    predictions = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"]]
    # Gold entities (4): PER[0:2], LOC[3] in sentence 1; ORG[0], PER[2] in sentence 2.
    # Predicted (3): PER[0:2] (correct), ORG[3] (wrong), ORG[0] in sentence 2 (correct).
    # precision = 2/3, recall = 2/4, F1 = 2 * (2/3 * 1/2) / (2/3 + 1/2) = 4/7.
    # Tokens: 7, correct tags 3 + 2 = 5 -> accuracy 5/7.
    # PER: 1 of 1 predicted right, 1 of 2 gold found -> P 1, R 1/2, F1 2/3, number 2.
    # ORG: 1 of 2 predicted right, 1 of 1 gold found -> P 1/2, R 1, F1 2/3.
    # LOC: never predicted -> P 0 (zero_division=0), R 0, F1 0.
    out = metrics["seqeval"].compute(predictions=predictions, references=references)
    assert out["precision"] == pytest.approx(100 * 2 / 3)
    assert out["recall"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(100 * 4 / 7)
    assert out["accuracy"] == pytest.approx(100 * 5 / 7)
    assert out["PER_precision"] == pytest.approx(100.0)
    assert out["PER_recall"] == pytest.approx(50.0)
    assert out["PER_f1"] == pytest.approx(100 * 2 / 3)
    assert out["PER_number"] == 2
    assert out["ORG_precision"] == pytest.approx(50.0)
    assert out["ORG_recall"] == pytest.approx(100.0)
    assert out["ORG_f1"] == pytest.approx(100 * 2 / 3)
    assert out["LOC_f1"] == 0.0
    assert all(isinstance(value, float) for value in out.values())


def test_seqeval_headline_reads_span_opened_by_i_tag_like_conlleval_strict_does_not(metrics):
    references = [["B-PER", "I-PER", "O"]]
    predictions = [["I-PER", "I-PER", "O"]]
    # conlleval's rules (seqeval's default mode) read the leading I-PER as the start of an entity
    # that matches the gold one; strict IOB2 does not count it, so nothing correct is predicted.
    assert seqeval_default_f1(references, predictions) == pytest.approx(1.0)
    out = metrics["seqeval"].compute(predictions=predictions, references=references)
    assert out["f1"] == pytest.approx(100.0)
    assert out["PER_f1"] == pytest.approx(100.0)
    assert out["f1_strict"] == 0.0
    assert out["precision_strict"] == 0.0
    assert out["recall_strict"] == 0.0
    assert out["PER_number"] == 1


@pytest.mark.parametrize("empty", [[], [[]], [[], []]])
def test_seqeval_empty_input_scores_zero_like_conlleval(empty):
    # seqeval itself raises ZeroDivisionError (no tokens) or TypeError (no sentences) here.
    out = compute_metric("seqeval", empty, empty)
    assert out == {key: 0.0 for key in ("precision", "recall", "f1", "precision_strict", "recall_strict",
                                        "f1_strict", "accuracy")}


def test_seqeval_misaligned_or_non_iob2_tags_raise_nlpipe_error():
    with pytest.raises(NlpipeError, match="sentence 0 has 2 predicted tags but 3 reference"):
        compute_metric("seqeval", [["B-PER", "O"]], [["B-PER", "O", "O"]])
    with pytest.raises(NlpipeError, match="sentence 1 has predicted tag 'PER', which is not IOB2"):
        compute_metric("seqeval", [["O"], ["PER"]], [["O"], ["B-PER"]])


# ---------------------------------------------------------------- sacrebleu

HYPOTHESES = ["The cat sat on the mat.", "A quick brown dog jumps over the lazy fox."]
REFERENCES = ["The cat is sitting on the mat.", "The quick brown fox jumps over the lazy dog."]
SECOND_REFERENCES = ["A cat sat on the mat.", "A fast brown fox leaps over the lazy dog."]


def test_sacrebleu_equals_sacrebleu_corpus_scores(metrics):
    out = metrics["sacrebleu"].compute(predictions=HYPOTHESES, references=REFERENCES)
    assert out["sacrebleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score)
    assert out["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score)
    assert 0.0 < out["sacrebleu"] < 100.0
    assert "tok:13a" in out["sacrebleu_signature"]
    assert "nrefs:1" in out["sacrebleu_signature"]
    assert "nc:6" in out["chrf_signature"]


def test_sacrebleu_multiple_references_per_prediction(metrics):
    per_prediction = [list(pair) for pair in zip(REFERENCES, SECOND_REFERENCES, strict=True)]
    out = metrics["sacrebleu"].compute(predictions=HYPOTHESES, references=per_prediction)
    expected = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES, SECOND_REFERENCES]).score
    assert out["sacrebleu"] == pytest.approx(expected)
    assert "nrefs:2" in out["sacrebleu_signature"]


def test_sacrebleu_perfect_match_and_tokenizer_option():
    out = compute_metric("sacrebleu", REFERENCES, REFERENCES)
    assert out["sacrebleu"] == pytest.approx(100.0)
    assert out["chrf"] == pytest.approx(100.0)
    out = compute_metric("sacrebleu", HYPOTHESES, REFERENCES, tokenize="char")
    assert "tok:char" in out["sacrebleu_signature"]
    assert out["sacrebleu"] == pytest.approx(
        sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES], tokenize="char").score
    )


# ---------------------------------------------------------------- rouge


def test_rouge_equals_rouge_score_on_single_sentences(metrics):
    predictions = ["the cats were sitting on the mat", "a dog barked loudly"]
    references = ["the cat sat on the mat", "the dog barks"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    direct = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    out = metrics["rouge"].compute(predictions=predictions, references=references)
    for rouge_type in ("rouge1", "rouge2", "rougeL"):
        expected = 100 * sum(s[rouge_type].fmeasure for s in direct) / len(direct)
        assert out[rouge_type] == pytest.approx(expected), rouge_type
    # One sentence per text: the summary-level LCS is the plain LCS.
    assert out["rougeLsum"] == pytest.approx(out["rougeL"])
    # Stemming is on: "barked"/"barks" both stem to "bark", so it counts as a unigram match.
    unstemmed = compute_metric("rouge", predictions, references, use_stemmer=False)
    assert out["rouge1"] > unstemmed["rouge1"]


def test_rouge_lsum_splits_sentences(metrics):
    prediction = "The dog ran away. The cat sat on the mat!"
    reference = "The cat sat on the mat. The dog ran away."
    out = metrics["rouge"].compute(predictions=[prediction], references=[reference])
    scorer = rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=True)
    split = scorer.score(
        "The cat sat on the mat.\nThe dog ran away.", "The dog ran away.\nThe cat sat on the mat!"
    )
    unsplit = scorer.score(reference, prediction)
    # Swapped sentences: the whole-text LCS keeps only one of them (6 of 10 tokens), the
    # sentence-level union LCS recovers both.
    assert out["rougeL"] == pytest.approx(60.0)
    assert out["rougeLsum"] == pytest.approx(100 * split["rougeLsum"].fmeasure)
    assert out["rougeLsum"] == pytest.approx(100.0)
    # Without splitting, rouge_score's ROUGE-Lsum would collapse to ROUGE-L.
    assert unsplit["rougeLsum"].fmeasure == pytest.approx(unsplit["rougeL"].fmeasure)


# ---------------------------------------------------------------- perplexity


def test_perplexity_is_exp_of_token_weighted_mean_nll(metrics):
    # Chunk 1: 2 tokens, NLL 1.0 + 2.0 = 3.0; chunk 2: 1 token, NLL 0.5.
    # Mean NLL per token = 3.5 / 3; a per-chunk average would give (1.5 + 0.5) / 2 = 1.0 instead.
    out = metrics["perplexity"].compute(predictions=[3.0, 0.5], references=[2, 1])
    assert out["nll_per_token"] == pytest.approx(3.5 / 3)
    assert out["perplexity"] == pytest.approx(math.exp(3.5 / 3))


def test_perplexity_matches_cross_entropy_over_chunks():
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 11, generator=generator)  # (tokens, vocab)
    labels = torch.randint(0, 11, (7,), generator=generator)
    full = torch.nn.functional.cross_entropy(logits, labels)  # mean over all 7 tokens
    chunks = [(0, 3), (3, 7)]
    nll_sums = [
        float(torch.nn.functional.cross_entropy(logits[a:b], labels[a:b], reduction="sum")) for a, b in chunks
    ]
    out = compute_metric("perplexity", nll_sums, [b - a for a, b in chunks])
    assert out["perplexity"] == pytest.approx(math.exp(float(full)), rel=1e-5)


def test_word_perplexity_divides_the_same_nll_by_words(metrics):
    # 3.5 nats over 3 subword tokens that spell 2 words: per word 3.5 / 2.
    out = metrics["perplexity"].compute(predictions=[3.0, 0.5], references=[2, 1], num_words=2)
    assert out["nll_per_word"] == pytest.approx(1.75)
    assert out["word_perplexity"] == pytest.approx(math.exp(1.75))
    assert out["perplexity"] == pytest.approx(math.exp(3.5 / 3))  # the token figure is unchanged


def test_perplexity_rejects_zero_tokens():
    with pytest.raises(NlpipeError, match="sum to 0"):
        compute_metric("perplexity", [0.0], [0])


# ---------------------------------------------------------------- API


def test_unknown_metric_names_valid_ones():
    with pytest.raises(NlpipeError) as info:
        load_metric("bleu")
    message = str(info.value)
    assert "'bleu'" in message
    for name in METRIC_NAMES:
        assert name in message
    with pytest.raises(NlpipeError, match="valid metric names"):
        compute_metric("accuracy", [1], [1])


def test_compute_metric_length_mismatch():
    with pytest.raises(NlpipeError, match="2 predictions but 1 references"):
        compute_metric("rouge", ["a", "b"], ["a"])


def test_combine_works_with_local_modules(metrics):
    combined = evaluate.combine([load_metric("sacrebleu"), load_metric("rouge")])
    out = combined.compute(predictions=HYPOTHESES, references=REFERENCES)
    alone = metrics["rouge"].compute(predictions=HYPOTHESES, references=REFERENCES)
    assert out["rougeL"] == pytest.approx(alone["rougeL"])
    assert out["sacrebleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score)


_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import socket

    def _no_network(*args, **kwargs):
        raise OSError("network access attempted")

    # Any attempt to open a connection fails loudly, not only requests that honour HF_*_OFFLINE.
    socket.socket.connect = _no_network
    socket.create_connection = _no_network

    from nlpipe.metrics import METRIC_NAMES, load_metric

    inputs = {
        "seqeval": ([["B-PER", "O"]], [["B-PER", "O"]]),
        "sacrebleu": (["the cat sat on the mat"], ["the cat sat on the mat"]),
        "rouge": (["the cat sat. it slept."], ["the cat sat. it slept."]),
        "perplexity": ([2.0], [2]),
    }
    for name in METRIC_NAMES:
        predictions, references = inputs[name]
        out = load_metric(name).compute(predictions=predictions, references=references)
        print(name, out[{"seqeval": "f1", "sacrebleu": "sacrebleu", "rouge": "rougeLsum",
                         "perplexity": "nll_per_token"}[name]])
    """
)


def test_modules_load_offline_in_fresh_process_with_empty_cache(tmp_path):
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        # Every cache location must derive from the empty HF_HOME.
        if not key.startswith(("HF_", "XDG_CACHE"))
    }
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert set(lines) == set(METRIC_NAMES)
    assert float(lines["seqeval"]) == pytest.approx(100.0)
    assert float(lines["sacrebleu"]) == pytest.approx(100.0)
    assert float(lines["rouge"]) == pytest.approx(100.0)
    assert float(lines["perplexity"]) == pytest.approx(1.0)
    # The scripts were imported from copies evaluate made under the fresh HF_HOME.
    copied = {p.name for p in hf_home.rglob("nlpipe_*.py")}
    assert copied == {f"nlpipe_{name}.py" for name in METRIC_NAMES}
