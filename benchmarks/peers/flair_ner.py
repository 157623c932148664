"""Flair SequenceTagger (BiLSTM-CRF, one-hot + character embeddings) on CoNLL-2003 for a fixed wall time.

Runs inside Flair's own venv (benchmarks/peers/make_flair_venv.sh), never nlpipe's:

    /tmp/peer-venvs/flair/bin/python benchmarks/peers/flair_ner.py --minutes 10 --out /tmp/flair-ner

Same data as nlpipe (shared/data/conll2003, `-DOCSTART-` lines removed, as PEERS.md advises), same sizes
as recipes/ner-bilstm-crf.yaml (word embedding 100 from the training corpus, character embeddings,
BiLSTM 256, CRF, batch 32; Flair's default optimiser SGD lr 0.1, clipping 5). The training loop is
Flair's own `forward_loss` + SGD, stopped after `--minutes` of training time (evaluation not counted);
the in-memory model is then scored with Flair's span-level micro-F1 on the test split. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import time
from pathlib import Path


def write_without_docstart(source: Path, target: Path) -> None:
    """Copy a CoNLL file, dropping `-DOCSTART-` lines and the blank line after each."""
    lines = gzip.open(source, "rt", encoding="utf-8").read().splitlines()
    out, skip_blank = [], False
    for line in lines:
        if line.startswith("-DOCSTART-"):
            skip_blank = True
            continue
        if skip_blank and not line.strip():
            skip_blank = False
            continue
        skip_blank = False
        out.append(line)
    target.write_text("\n".join(out) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", default="/tmp/flair-ner")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import flair
    import torch
    from flair.data import Dictionary
    from flair.datasets import ColumnCorpus
    from flair.embeddings import CharacterEmbeddings, OneHotEmbeddings, StackedEmbeddings
    from flair.models import SequenceTagger

    if args.threads:
        torch.set_num_threads(args.threads)
    flair.set_seed(args.seed)
    flair.device = torch.device("cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    conll = Path(args.data_dir) / "conll2003"
    for name in ("train", "valid", "test"):
        write_without_docstart(conll / f"{name}.txt.gz", out / f"{name}.txt")
    corpus = ColumnCorpus(out, {0: "text", 3: "ner"}, train_file="train.txt", dev_file="valid.txt",
                          test_file="test.txt")
    tags = corpus.make_label_dictionary(label_type="ner", add_unk=False)
    chars = Dictionary(add_unk=True)  # from the training words (offline: no download of Flair's char list)
    for sentence in corpus.train:
        for token in sentence:
            for char in token.text:
                chars.add_item(char)
    embeddings = StackedEmbeddings([
        OneHotEmbeddings.from_corpus(corpus, field="text", embedding_length=100, min_freq=3),
        CharacterEmbeddings(path_to_char_dict=chars, char_embedding_dim=25, hidden_size_char=25),
    ])
    tagger = SequenceTagger(hidden_size=256, embeddings=embeddings, tag_dictionary=tags, tag_type="ner",
                            use_crf=True)
    optimizer = torch.optim.SGD(tagger.parameters(), lr=0.1)
    sentences = list(corpus.train)
    budget = 60 * args.minutes
    trained_tokens, train_s, epochs = 0, 0.0, 0
    tagger.train()
    while train_s < budget:
        random.shuffle(sentences)
        for start in range(0, len(sentences), 32):
            batch = sentences[start : start + 32]
            began = time.perf_counter()
            loss, count = tagger.forward_loss(batch)
            (loss / count).backward() if count else None
            torch.nn.utils.clip_grad_norm_(tagger.parameters(), 5.0)
            optimizer.step()
            optimizer.zero_grad()
            for sentence in batch:  # embeddings_storage_mode="none": nothing kept between steps
                sentence.clear_embeddings()
            train_s += time.perf_counter() - began
            trained_tokens += sum(len(s) for s in batch)
            if train_s >= budget:
                break
        else:
            epochs += 1
    epochs_float = epochs + (start + 32) / len(sentences) if train_s >= budget else epochs
    tagger.eval()
    began = time.perf_counter()
    result = tagger.evaluate(corpus.test, gold_label_type="ner", mini_batch_size=64,
                             embedding_storage_mode="none")
    eval_s = time.perf_counter() - began
    test_tokens = sum(len(s) for s in corpus.test)
    print(json.dumps({
        "tool": "flair", "flair_version": flair.__version__, "torch_threads": torch.get_num_threads(),
        "train_seconds": round(train_s, 1), "train_tokens": trained_tokens,
        "tokens_per_s": round(trained_tokens / train_s, 1), "epochs": round(epochs_float, 3),
        "test_f1": round(100 * result.main_score, 2), "eval_tokens_per_s": round(test_tokens / eval_s, 1),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
