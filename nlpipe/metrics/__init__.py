"""nlpipe's metrics as local `evaluate` modules: they load from this package, never from the Hub.

``evaluate.load("seqeval")`` downloads a script from the Hugging Face Hub. nlpipe instead ships
one folder per metric next to this file (``nlpipe_seqeval/nlpipe_seqeval.py`` ...), and
:func:`load_metric` passes that folder's path to ``evaluate.load``, which imports the script from
disk. The result is an ordinary ``evaluate.Metric``: ``add_batch``, distributed ``compute`` and
``evaluate.combine`` work as usual. Loading writes only evaluate's own module/metric caches under
``HF_HOME``; it needs no network and no pre-filled cache, and sets no global state.

Every metric returns a flat ``dict``; scores are on a 0-100 scale (perplexity excepted):

- ``"seqeval"``: predictions/references ``list[list[str]]`` of IOB2 tags.
  -> ``f1``, ``precision``, ``recall`` with conlleval's chunk rules (seqeval's default mode, the
  CoNLL F1 of the literature), ``f1_strict``, ``precision_strict``, ``recall_strict`` (strict
  IOB2: ill-formed predicted spans dropped), ``accuracy``, and per entity type ``<TYPE>_f1``,
  ``<TYPE>_precision``, ``<TYPE>_recall``, ``<TYPE>_number`` (gold count, unscaled).
- ``"sacrebleu"``: predictions ``list[str]`` (detokenized), references ``list[str]`` or
  ``list[list[str]]`` (several references per prediction).
  -> ``sacrebleu``, ``chrf``, ``sacrebleu_signature`` (str), ``chrf_signature`` (str).
- ``"rouge"``: predictions/references ``list[str]``.
  -> ``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum`` F-measures, stemmed, ROUGE-Lsum over
  regex-split sentences (see ``nlpipe_rouge/nlpipe_rouge.py`` for the splitting rule).
- ``"perplexity"``: predictions ``list[float]`` = summed negative log-likelihood in nats per
  chunk, references ``list[int]`` = number of predicted tokens per chunk.
  -> ``perplexity`` = exp(sum NLL / sum tokens), ``nll_per_token``.

Example::

    from nlpipe.metrics import compute_metric
    compute_metric("seqeval", [["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]])["f1"]  # 100.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import evaluate

from nlpipe.errors import NlpipeError

METRIC_NAMES: tuple[str, ...] = ("seqeval", "sacrebleu", "rouge", "perplexity")

# Folder (and script) names carry our prefix so they never collide in evaluate's module cache
# with the Hub's own "seqeval", "rouge", ... scripts.
_MODULE_DIR = Path(__file__).resolve().parent


def metric_path(name: str) -> Path:
    """Return the folder of the local evaluate module for metric ``name``.

    Raises:
        NlpipeError: ``name`` is not one of :data:`METRIC_NAMES`.
    """
    if name not in METRIC_NAMES:
        raise NlpipeError(f"unknown metric {name!r}; valid metric names are: {', '.join(METRIC_NAMES)}")
    return _MODULE_DIR / f"nlpipe_{name}"


def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load nlpipe's metric ``name`` as an ``evaluate`` module from the package, offline.

    Args:
        name: one of :data:`METRIC_NAMES` (``"seqeval"``, ``"sacrebleu"``, ``"rouge"``,
            ``"perplexity"``).

    Returns:
        A fresh ``evaluate.Metric`` instance; call ``compute`` / ``add_batch`` on it or pass
        several to ``evaluate.combine``.

    Raises:
        NlpipeError: ``name`` is not a known metric (the message lists the valid names).
    """
    return evaluate.load(str(metric_path(name)))


def compute_metric(
    name: str, predictions: list[Any], references: list[Any], **kwargs: Any
) -> dict[str, float | str]:
    """Load metric ``name`` and compute it in one call.

    Args:
        name: one of :data:`METRIC_NAMES`.
        predictions: model outputs in the format the metric expects (see the module docstring).
        references: gold values, one per prediction.
        **kwargs: metric options passed to ``compute`` (e.g. ``tokenize="intl"`` for sacrebleu,
            ``use_stemmer=False`` for rouge, ``zero_division=1`` for seqeval).

    Returns:
        The metric's flat dict of scores (floats; sacrebleu adds signature strings).

    Raises:
        NlpipeError: unknown ``name``, predictions and references of different lengths, or
            inputs the metric rejects (wrong format, misaligned tags, empty input).
    """
    metric_path(name)  # an unknown name fails before the length check and the load
    if len(predictions) != len(references):
        raise NlpipeError(
            f"metric {name!r}: got {len(predictions)} predictions but {len(references)} "
            "references; pass exactly one reference entry per prediction"
        )
    metric = load_metric(name)
    try:
        result = metric.compute(predictions=predictions, references=references, **kwargs)
    except ValueError as err:
        # evaluate and the metric scripts report bad inputs as ValueError; make them ours.
        raise NlpipeError(f"metric {name!r}: {err}") from err
    return dict(result)
