"""Knowledge distillation for taggers: ``train.teacher: RUN_DIR`` ("BERT quality at BiLSTM speed").

A token-classification recipe with ``train.teacher`` (a finished tagger run, typically a fine-tuned
BERT) trains its student (e.g. a BiLSTM or BiLSTM-CRF) on the training text with two losses:

- the usual one on the gold tags (cross-entropy, or the CRF's negative log-likelihood);
- the KL divergence from the teacher's per-word label distribution to the student's, at temperature
  ``train.distill_temperature`` (scaled by T², as in Hinton et al. 2015), weighted by
  ``train.distill_alpha``: ``loss = (1 - alpha) * gold + alpha * KL``.

The teacher is run once over the training split before training. Each word gets the teacher's
distribution at its first sub-token (the alignment ``run_ner`` uses for labels), and the student
learns it at its own first sub-token of that word. With a CRF student the KL applies to the softmax of
its emission scores (a per-token approximation; the CRF loss on gold tags is unchanged). Teacher and
student must share the label set; the teacher's own tokenizer is used for its input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from .errors import NlpipeError

TEACHER_BATCH = 32


def load_teacher(run_dir: str | Path, labels: list[str], source: str) -> tuple[Any, Any, list[int]]:
    """The teacher model and tokenizer, and for each student label id the teacher's id of that label.

    Raises:
        NlpipeError: not a token-classification run, or its labels differ from the student's.
    """
    from .run_folder import open_run

    try:
        _, model, tokenizer = open_run(run_dir, "train.teacher", tasks=("token-classification",))
    except NlpipeError as exc:
        raise NlpipeError(f"{source}: key 'train.teacher': {exc}") from None
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    teacher_ids = {label: i for i, label in id2label.items()}
    if set(teacher_ids) != set(labels):
        raise NlpipeError(
            f"{source}: key 'train.teacher': the teacher's labels ({', '.join(sorted(teacher_ids))}) differ from "
            f"this recipe's ({', '.join(sorted(labels))}); distil from a tagger trained on the same data set"
        )
    return model, tokenizer, [teacher_ids[label] for label in labels]


@torch.no_grad()
def teacher_word_distributions(model: Any, tokenizer: Any, order: list[int], sentences: list[list[str]],
                               temperature: float, max_length: int) -> list[list[list[float] | None]]:
    """Per sentence, per word: the teacher's label distribution (student label order) at the word's first
    sub-token, softened by `temperature`; None for a word lost to the teacher's truncation."""
    out: list[list[list[float] | None]] = []
    index = torch.tensor(order)
    for start in range(0, len(sentences), TEACHER_BATCH):
        chunk = sentences[start : start + TEACHER_BATCH]
        enc = tokenizer(chunk, is_split_into_words=True, truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
        inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        probs = F.softmax(model(**inputs).logits.float() / temperature, dim=-1)[..., index]  # (B, T, L)
        for row, words in enumerate(chunk):
            dists: list[list[float] | None] = [None] * len(words)
            previous = None
            for position, word in enumerate(enc.word_ids(row)):
                if word is not None and word != previous:
                    dists[word] = probs[row, position].tolist()
                previous = word
            out.append(dists)
    return out


def distillation_loss(gold_loss: torch.Tensor, logits: torch.Tensor, soft: torch.Tensor, alpha: float,
                      temperature: float) -> torch.Tensor:
    """``(1 - alpha) * gold_loss + alpha * T² * KL(teacher || student)``, the KL averaged over the words
    that have a teacher distribution (rows of `soft` that sum to more than 0).

    Args:
        logits: (B, T, L) student scores; soft: (B, T, L) teacher probabilities, zeros where none.
    """
    has = soft.sum(-1) > 0  # (B, T)
    if not bool(has.any()):
        return gold_loss
    log_student = F.log_softmax(logits.float() / temperature, dim=-1)[has]  # (N, L)
    teacher = soft[has].float()
    kl = (teacher * (teacher.clamp_min(1e-12).log() - log_student)).sum(-1).mean()
    return (1 - alpha) * gold_loss + alpha * temperature**2 * kl
