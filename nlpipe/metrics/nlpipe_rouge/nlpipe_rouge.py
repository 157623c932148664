"""ROUGE-1/2/L/Lsum F-measures from Google's rouge_score, on a 0-100 scale.

A local `evaluate` module: load it with ``evaluate.load("<path to this folder>")`` (no Hub needed)
or through ``nlpipe.metrics.load_metric("rouge")``. It imports only evaluate, datasets and
rouge_score, because evaluate copies this file alone into its module cache before importing it.
"""

from __future__ import annotations

import re

import datasets
import evaluate
from rouge_score import rouge_scorer

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

_DESCRIPTION = """\
ROUGE F-measures with the Porter stemmer on. ROUGE-L is the longest common subsequence over the
whole text; ROUGE-Lsum is the summary-level LCS (union of LCS matches of each reference sentence
against every predicted sentence), which rouge_score computes over sentences separated by "\\n".
This module therefore splits every text into sentences first and joins them with newlines before
scoring ROUGE-Lsum; without that step ROUGE-Lsum silently equals ROUGE-L.

Sentence splitting is a small regular expression, not nltk's punkt: punkt needs a data download
that is not available offline, and a fixed rule keeps scores identical on every machine. A
sentence ends at ".", "!" or "?" (optionally followed by a closing quote or bracket) followed by
whitespace, and at every existing newline. Abbreviations such as "Dr. Smith" are split too; this
only affects ROUGE-Lsum.

rouge_score's tokenizer lowercases and keeps only [a-z0-9] tokens, so it is meant for English.
Scores are the mean over examples of the per-example F-measure (no bootstrap resampling).
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list[str]`): one generated text per example.
    references (`list[str]`): one reference text per example.
    use_stemmer (`bool`, *optional*, defaults to `True`): Porter-stem tokens before matching.

Returns:
    `dict[str, float]`: `rouge1`, `rouge2`, `rougeL`, `rougeLsum` F-measures, 0-100, averaged
    over examples.

Example:
    >>> metric = evaluate.load("nlpipe/metrics/nlpipe_rouge")
    >>> metric.compute(predictions=["the cat sat."], references=["the cat sat."])["rougeLsum"]
    100.0
"""

_CITATION = """\
@inproceedings{lin-2004-rouge,
  title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
  author = "Lin, Chin-Yew",
  booktitle = "Text Summarization Branches Out",
  year = "2004",
  pages = "74--81",
}
"""

# A sentence boundary: whitespace after . ! ? (possibly after one closing quote or bracket), or
# any newline. Two lookbehinds because Python's `re` needs fixed-width lookbehind.
_SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+|\s*\n\s*")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences with the fixed rule described in the module docstring.

    Returns the non-empty sentences, stripped, in order.
    """
    return [s.strip() for s in _SENTENCE_BOUNDARY.split(text) if s.strip()]


class NlpipeRouge(evaluate.Metric):
    """ROUGE with stemming and sentence-split ROUGE-Lsum; see the module docstring."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                }
            ),
        )

    def _compute(
        self, predictions: list[str], references: list[str], use_stemmer: bool = True
    ) -> dict[str, float]:
        if not predictions:
            raise ValueError("rouge: no examples to score (predictions and references are empty)")
        scorer = rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=use_stemmer)
        totals = dict.fromkeys(_ROUGE_TYPES, 0.0)
        for prediction, reference in zip(predictions, references, strict=True):
            # rougeLsum reads sentences from newlines; the other types ignore them.
            scores = scorer.score(
                target="\n".join(split_sentences(reference)),
                prediction="\n".join(split_sentences(prediction)),
            )
            for rouge_type in _ROUGE_TYPES:
                totals[rouge_type] += scores[rouge_type].fmeasure
        return {key: 100.0 * total / len(predictions) for key, total in totals.items()}
