"""Entity-level precision / recall / F1 for IOB2 tag sequences, on a 0-100 scale.

A local `evaluate` module: load it with ``evaluate.load("<path to this folder>")`` (no Hub needed)
or through ``nlpipe.metrics.load_metric("seqeval")``. It imports only evaluate, datasets and
seqeval, because evaluate copies this file alone into its module cache before importing it.
"""

from __future__ import annotations

import re
import warnings

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report
from seqeval.scheme import IOB2

_DESCRIPTION = """\
Entity-level scores in two modes.

Headline (``precision``, ``recall``, ``f1``, ``<TYPE>_*``): seqeval's default mode, which reads
chunks with the rules of the CoNLL shared tasks' ``conlleval`` script. This is the F1 that the
literature (Lample et al. 2016, Ma & Hovy 2016, ...) and Hugging Face's ``run_ner`` report: a
stray ``I-PER`` opens a PER entity, a type change inside a span starts a new entity.

Strict (``precision_strict``, ``recall_strict``, ``f1_strict``): seqeval with
``mode="strict", scheme=IOB2``; a predicted span counts only when it is well formed (``B-<TYPE>``
then ``I-<TYPE>``). Ill-formed spans are dropped, so strict F1 can be higher *or* lower than
conlleval's and is not comparable with published numbers; it is kept as a diagnostic.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list[list[str]]`): predicted IOB2 tags, one list per sentence.
    references (`list[list[str]]`): gold IOB2 tags, same shape as `predictions`.
    zero_division (`int`, *optional*, defaults to 0): value used where a precision or recall
        has a zero denominator (e.g. a type that is never predicted).

Returns:
    `dict[str, float]`, every value on a 0-100 scale except the counts:
    - `precision`, `recall`, `f1`: micro-averaged over all entity types, conlleval chunk rules.
    - `precision_strict`, `recall_strict`, `f1_strict`: the same in strict IOB2 mode.
    - `accuracy`: token-level tag accuracy.
    - `<TYPE>_precision`, `<TYPE>_recall`, `<TYPE>_f1`: the same for each entity type found in
      predictions or references; `<TYPE>_number`: the number of gold entities of that type
      (a float count, not scaled); conlleval chunk rules.
    With no token at all (no sentences, or only empty ones) every score is 0, as conlleval
    reports it.

Example:
    >>> metric = evaluate.load("nlpipe/metrics/nlpipe_seqeval")
    >>> metric.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]])["f1"]
    100.0
"""

_CITATION = """\
@misc{seqeval,
  title={{seqeval}: A Python framework for sequence labeling evaluation},
  url={https://github.com/chakki-works/seqeval},
  author={Hiroki Nakayama},
  year={2018},
}
"""

# What strict IOB2 accepts; seqeval itself fails with a bare KeyError on anything else.
_IOB2_TAG = re.compile(r"O|[BI]-.+")

# Rows of seqeval's report that are averages, not entity types.
_AVERAGE_ROWS = ("micro avg", "macro avg", "weighted avg")


class NlpipeSeqeval(evaluate.Metric):
    """conlleval-compatible seqeval plus strict-IOB2 scores; see the module docstring for the input and output contract."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(
        self, predictions: list[list[str]], references: list[list[str]], zero_division: int = 0
    ) -> dict[str, float]:
        for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
            if len(pred) != len(ref):
                raise ValueError(
                    f"seqeval: sentence {i} has {len(pred)} predicted tags but {len(ref)} reference "
                    "tags; predictions and references must be aligned token by token"
                )
            for side, tags in (("predicted", pred), ("reference", ref)):
                bad = [tag for tag in tags if not _IOB2_TAG.fullmatch(tag)]
                if bad:
                    raise ValueError(
                        f"seqeval: sentence {i} has {side} tag {bad[0]!r}, which is not IOB2; "
                        "use 'O', 'B-<TYPE>' or 'I-<TYPE>' (convert IOB1/BIOES tags first)"
                    )
        if not any(references):
            # seqeval divides by the token count (ZeroDivisionError) or rejects an empty list.
            # conlleval reports zeros when it has nothing to score; so do we.
            return {key: 0.0 for key in ("precision", "recall", "f1", "precision_strict", "recall_strict",
                                         "f1_strict", "accuracy")}
        with warnings.catch_warnings():
            # With no entity in either list seqeval's unused macro average is a mean of an empty
            # array; numpy warns about it while the micro scores we report are well defined.
            warnings.simplefilter("ignore", RuntimeWarning)
            report = classification_report(
                y_true=references, y_pred=predictions, output_dict=True, zero_division=zero_division
            )
            strict = classification_report(
                y_true=references,
                y_pred=predictions,
                mode="strict",
                scheme=IOB2,
                output_dict=True,
                zero_division=zero_division,
            )
        scores: dict[str, float] = {}
        for entity_type, row in report.items():
            if entity_type in _AVERAGE_ROWS:
                continue
            scores[f"{entity_type}_precision"] = 100.0 * float(row["precision"])
            scores[f"{entity_type}_recall"] = 100.0 * float(row["recall"])
            scores[f"{entity_type}_f1"] = 100.0 * float(row["f1-score"])
            scores[f"{entity_type}_number"] = float(row["support"])
        for suffix, rows in (("", report), ("_strict", strict)):
            # With no entity anywhere seqeval still reports a micro row of zeros; keep that.
            micro = rows.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
            scores[f"precision{suffix}"] = 100.0 * float(micro["precision"])
            scores[f"recall{suffix}"] = 100.0 * float(micro["recall"])
            scores[f"f1{suffix}"] = 100.0 * float(micro["f1-score"])
        scores["accuracy"] = 100.0 * float(accuracy_score(y_true=references, y_pred=predictions))
        return scores
