"""Corpus BLEU and chrF from sacreBLEU, with their signatures, on a 0-100 scale.

A local `evaluate` module: load it with ``evaluate.load("<path to this folder>")`` (no Hub needed)
or through ``nlpipe.metrics.load_metric("sacrebleu")``. It imports only evaluate, datasets and
sacrebleu, because evaluate copies this file alone into its module cache before importing it.
"""

from __future__ import annotations

import datasets
import evaluate
from sacrebleu.metrics import BLEU, CHRF

_DESCRIPTION = """\
sacreBLEU corpus BLEU and chrF on detokenized text. sacreBLEU tokenizes internally (13a by
default), so scores are comparable across papers when the signature is reported with them:
the signature strings name the tokenizer, casing, smoothing and sacreBLEU version.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list[str]`): one detokenized hypothesis per segment.
    references (`list[str]` or `list[list[str]]`): for each prediction either one detokenized
        reference, or a list of references (every prediction must have the same number).
    tokenize (`str`, *optional*, defaults to `"13a"`): sacreBLEU tokenizer for BLEU
        (`"13a"`, `"intl"`, `"zh"`, `"ja-mecab"`, `"char"`, `"none"`, ...).
    lowercase (`bool`, *optional*, defaults to `False`): lowercase before scoring (BLEU and chrF).
    smooth_method (`str`, *optional*, defaults to `"exp"`): BLEU smoothing
        (`"none"`, `"floor"`, `"add-k"`, `"exp"`).
    smooth_value (`float`, *optional*): parameter of the `"floor"` / `"add-k"` smoothing.

Returns:
    `dict[str, float | str]`:
    - `sacrebleu`: corpus BLEU, 0-100.
    - `chrf`: corpus chrF (character 6-grams, beta 2), 0-100.
    - `sacrebleu_signature`, `chrf_signature`: sacreBLEU signatures, e.g.
      `"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"`.

Example:
    >>> metric = evaluate.load("nlpipe/metrics/nlpipe_sacrebleu")
    >>> out = metric.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])
    >>> round(out["sacrebleu"], 6), out["sacrebleu_signature"]
    (100.0, 'nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0')

    (BLEU of a segment shorter than 4 tokens is 0 even when it matches: it has no 4-gram.)
"""

_CITATION = """\
@inproceedings{post-2018-call,
  title = "A Call for Clarity in Reporting {BLEU} Scores",
  author = "Post, Matt",
  booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
  year = "2018",
  pages = "186--191",
}
"""


class NlpipeSacrebleu(evaluate.Metric):
    """sacreBLEU BLEU + chrF; see the module docstring for the input and output contract."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # evaluate picks the first format the first example fits: several references per
            # prediction, or a single reference string.
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Value("string"),
                    }
                ),
            ],
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[str] | list[list[str]],
        tokenize: str = "13a",
        lowercase: bool = False,
        smooth_method: str = "exp",
        smooth_value: float | None = None,
    ) -> dict[str, float | str]:
        per_prediction = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
        counts = {len(refs) for refs in per_prediction}
        if len(counts) > 1:
            raise ValueError(
                f"sacrebleu: every prediction needs the same number of references, got {sorted(counts)}"
            )
        if counts == {0}:
            raise ValueError("sacrebleu: a prediction has an empty list of references")
        # sacreBLEU wants reference *streams*: stream k holds the k-th reference of every segment.
        streams = [list(stream) for stream in zip(*per_prediction, strict=True)]
        bleu = BLEU(
            tokenize=tokenize,
            lowercase=lowercase,
            smooth_method=smooth_method,
            smooth_value=smooth_value,
        )
        chrf = CHRF(lowercase=lowercase)
        return {
            "sacrebleu": float(bleu.corpus_score(predictions, streams).score),
            "chrf": float(chrf.corpus_score(predictions, streams).score),
            "sacrebleu_signature": bleu.get_signature().format(),
            "chrf_signature": chrf.get_signature().format(),
        }
