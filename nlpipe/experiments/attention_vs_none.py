"""Attention vs no attention on translation: BLEU by source length.

Two `RnnSeq2SeqForConditionalGeneration` models that differ only in ``attention`` ("additive" vs
"none": the fixed-vector bottleneck) are trained for the same number of steps on the built-in
German→English sample, then translate the test split greedily; sacreBLEU is computed per source
length bucket. The claim under test: without attention, quality drops as sentences get longer.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from .. import progress
from .reporting import ExperimentResult, finish, pyplot, save_figure

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
BUCKETS = ((1, 6), (7, 9), (10, 12), (13, 99))


def _bucket(length: int) -> str:
    for low, high in BUCKETS:
        if low <= length <= high:
            return f"{low}-{high}" if high < 99 else f"{low}+"
    return "?"


class _Vocab:
    """Whitespace word vocabulary shared by source and target (the model has one embedding table size)."""

    def __init__(self, texts: list[str]):
        words = sorted({w for text in texts for w in text.split()})
        self.words = list(SPECIALS) + words
        self.ids = {w: i for i, w in enumerate(self.words)}

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(w, 3) for w in text.split()] + [2]

    def decode(self, ids: list[int]) -> str:
        words = []
        for i in ids:
            if i == 2:
                break
            if i > 2:
                words.append(self.words[i])
        return " ".join(words)


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def train_and_translate(attention: str, pairs: list[dict], test: list[dict], vocab: _Vocab, steps: int,
                        batch_size: int = 32, seed: int = 0) -> list[str]:
    """Train one model for `steps` Adam steps; return its greedy translations of `test`."""
    from ..models.rnn_seq2seq.modeling_rnn_seq2seq import (
        RnnSeq2SeqConfig,
        RnnSeq2SeqForConditionalGeneration,
    )

    torch.manual_seed(seed)
    rng = random.Random(seed)
    config = RnnSeq2SeqConfig(vocab_size=len(vocab.words), embedding_dim=64, hidden_size=128, encoder_cell="gru",
                              decoder_cell="gru", attention=attention, dropout=0.1)
    model = RnnSeq2SeqForConditionalGeneration(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in progress.bar(range(steps), f"attention-vs-none: attention={attention}"):
        batch = rng.sample(pairs, batch_size)
        source = _pad([vocab.encode(p["source"]) for p in batch], 0)
        labels = _pad([vocab.encode(p["target"]) for p in batch], -100)
        loss = model(input_ids=source, attention_mask=(source != 0).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(test), 64):
            chunk = test[start:start + 64]
            source = _pad([vocab.encode(p["source"]) for p in chunk], 0)
            generated = model.generate(input_ids=source, attention_mask=(source != 0).long(), num_beams=1,
                                       do_sample=False, max_new_tokens=int(source.size(1) * 1.5) + 3)
            outputs += [vocab.decode(row[1:].tolist()) for row in generated]
    return outputs


def run(out: Path, *, quick: bool = False, data_dir: Any = None) -> ExperimentResult:
    """BLEU per source-length bucket, attention vs none."""
    import sacrebleu

    from ..data.samples import make_sample

    data = make_sample("translation")
    train, test = data["train"], data["test"]
    steps = 5 if quick else 1500
    if quick:
        test = test[:12]
    vocab = _Vocab([p["source"] for p in train] + [p["target"] for p in train])
    lengths = [len(p["source"].split()) for p in test]
    bucket_names = [_bucket(n) for n in lengths]
    order = [b for b in (_bucket(lo) for lo, _ in BUCKETS) if b in bucket_names]
    rows = []
    for attention in ("additive", "none"):
        hypotheses = train_and_translate(attention, train, test, vocab, steps, batch_size=8 if quick else 32)
        row: dict[str, Any] = {"attention": attention,
                               "BLEU all": sacrebleu.corpus_bleu(hypotheses, [[p["target"] for p in test]]).score}
        for name in order:
            chosen = [i for i, b in enumerate(bucket_names) if b == name]
            row[f"BLEU len {name} (n={len(chosen)})"] = sacrebleu.corpus_bleu(
                [hypotheses[i] for i in chosen], [[test[i]["target"] for i in chosen]]).score
        rows.append(row)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=90)
    keys = [k for k in rows[0] if k.startswith("BLEU len")]
    for row in rows:
        ax.plot(range(len(keys)), [row[k] for k in keys], marker="o", label=f"attention={row['attention']}")
    ax.set_xticks(range(len(keys)), [k.replace("BLEU len ", "") for k in keys], fontsize=8)
    ax.set_xlabel("source length (words)")
    ax.set_ylabel("sacreBLEU")
    ax.set_title("attention vs none, by source length")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure = save_figure(fig, out / "figure.png")
    settings = (f"Built-in German→English sample ({len(train):,} training pairs, {len(test)} test pairs); GRU "
                f"encoder (bi) / decoder, hidden 128, embeddings 64, {steps} Adam steps (lr 3e-3, batch 32), greedy")
    return finish("attention-vs-none", rows, out, figure, settings)
