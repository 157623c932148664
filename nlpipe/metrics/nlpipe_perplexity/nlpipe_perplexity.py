"""Corpus perplexity from log-likelihoods the caller already computed (no model is loaded).

A local `evaluate` module: load it with ``evaluate.load("<path to this folder>")`` (no Hub needed)
or through ``nlpipe.metrics.load_metric("perplexity")``. It imports only evaluate and datasets,
because evaluate copies this file alone into its module cache before importing it.
"""

from __future__ import annotations

import math

import datasets
import evaluate

_DESCRIPTION = """\
Token-level corpus perplexity, exp(total NLL / total predicted tokens), computed from the
negative log-likelihoods a language model produced during evaluation. Unlike the Hub's
"perplexity" metric it never loads a model: the training loop already has the losses.

Input contract (one row per evaluated chunk, e.g. per batch or per sequence):
- `predictions[i]`: the *summed* negative log-likelihood of chunk i, in nats (natural log), over
  the tokens that were actually predicted, i.e. mean cross-entropy loss x number of predicted
  tokens. Padding and positions with label -100 must be excluded from both numbers.
- `references[i]`: the number of predicted tokens in chunk i (an integer).

Summing before dividing weights every token equally, so chunks of different lengths (a short
last batch) do not bias the result, as averaging per-chunk perplexities would.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list[float]`): summed NLL in nats per chunk (>= 0).
    references (`list[int]`): number of predicted tokens per chunk (>= 0, total > 0).

Returns:
    `dict[str, float]` (not on a 0-100 scale: perplexity is not a percentage):
    - `perplexity`: exp(sum(predictions) / sum(references)).
    - `nll_per_token`: sum(predictions) / sum(references), in nats.
    With `num_words` (`int`, optional: the words the predicted tokens spell, e.g. whitespace words plus
    one end-of-line per line), also:
    - `word_perplexity`: exp(sum(predictions) / num_words), comparable across tokenizers.
    - `nll_per_word`: sum(predictions) / num_words, in nats.

Example:
    >>> metric = evaluate.load("nlpipe/metrics/nlpipe_perplexity")
    >>> metric.compute(predictions=[2.0, 4.0], references=[1, 2])["nll_per_token"]
    2.0
"""

_CITATION = ""


class NlpipePerplexity(evaluate.Metric):
    """Perplexity from summed NLLs and token counts; see the module docstring for the contract."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("float64"),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions: list[float], references: list[int], num_words: int | None = None) -> dict[str, float]:
        if any(count < 0 for count in references):
            raise ValueError("perplexity: token counts (references) must be >= 0")
        if any(not nll >= 0 for nll in predictions):  # also catches NaN
            raise ValueError(
                "perplexity: summed NLLs (predictions) must be >= 0 nats (not NaN), got "
                f"{[nll for nll in predictions if not nll >= 0][:3]}"
            )
        total_tokens = sum(references)
        if total_tokens == 0:
            raise ValueError("perplexity: the token counts (references) sum to 0; nothing was scored")
        nll_per_token = math.fsum(predictions) / total_tokens
        # exp overflows past ~709 nats/token; an infinite perplexity is the honest answer there.
        perplexity = math.exp(nll_per_token) if nll_per_token < 709.0 else math.inf
        scores = {"perplexity": perplexity, "nll_per_token": nll_per_token}
        if num_words is not None:
            if num_words <= 0:
                raise ValueError(f"perplexity: num_words must be > 0, got {num_words}")
            # The same total NLL per word: subword models compare with word-level ones.
            nll_per_word = math.fsum(predictions) / num_words
            scores["word_perplexity"] = math.exp(nll_per_word) if nll_per_word < 709.0 else math.inf
            scores["nll_per_word"] = nll_per_word
        return scores
