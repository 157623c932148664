"""Small experiments that measure classic claims about RNNs, LSTMs, GRUs, attention and Transformers.

``nlpipe experiment NAME [--out DIR] [--quick]`` runs one and writes ``table.md`` + ``figure.png``
(``--quick``: tiny settings that finish in seconds, for tests). The results, the data and the
hardware they were measured on are discussed in ``docs/experiments.md``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import NlpipeError
from .reporting import ExperimentResult

EXPERIMENTS = {
    "long-range": "nlpipe.experiments.long_range:run",
    "vanishing-gradients": "nlpipe.experiments.vanishing_gradients:run",
    "gru-vs-lstm": "nlpipe.experiments.recipe_variants:run_gru_vs_lstm",
    "bidirectional": "nlpipe.experiments.recipe_variants:run_bidirectional",
    "attention-vs-none": "nlpipe.experiments.attention_vs_none:run",
    "parallelism": "nlpipe.experiments.parallelism:run",
}


def run_experiment(name: str, out_dir: str | Path, *, quick: bool = False, data_dir: str | Path | None = None
                   ) -> ExperimentResult:
    """Run experiment `name`, writing its table and figure into `out_dir`.

    Raises:
        NlpipeError: unknown experiment name (the message lists them).
    """
    if name not in EXPERIMENTS:
        raise NlpipeError(f"experiment '{name}': unknown; choose one of {', '.join(EXPERIMENTS)}")
    module, function = EXPERIMENTS[name].split(":")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return getattr(importlib.import_module(module), function)(out, quick=quick, data_dir=data_dir)


__all__ = ["EXPERIMENTS", "ExperimentResult", "run_experiment"]
