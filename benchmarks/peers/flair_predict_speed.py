"""Flair `SequenceTagger.predict` speed on raw sentences, with a BiLSTM-CRF of ner-bilstm-crf's sizes.

Runs inside Flair's own venv (benchmarks/peers/make_flair_venv.sh), never nlpipe's; benchmarks/perf_inference.py
starts it between its own measurements:

    /tmp/peer-venvs/flair/bin/python benchmarks/peers/flair_predict_speed.py --sentences FILE --threads 1

The tagger is randomly initialised (speed does not depend on the weights) with the recipe's sizes: one-hot word
embeddings of 100 over the CoNLL-2003 training words, a character BiLSTM 50/50, a BiLSTM of 256 and a CRF over
the 9 IOB2 labels. The timing includes making Flair `Sentence`s from the space-separated text (nlpipe's includes
its tokenizer), `predict` (Flair sorts by length itself) and reading the spans. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", required=True, help="a file with one space-separated sentence per line")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-sizes", default="1,32")
    args = parser.parse_args()

    import flair
    import torch
    from flair.data import Dictionary, Sentence
    from flair.embeddings import CharacterEmbeddings, OneHotEmbeddings, StackedEmbeddings
    from flair.models import SequenceTagger

    if args.threads:
        torch.set_num_threads(args.threads)
    flair.device = torch.device("cpu")
    words, chars = Dictionary(add_unk=True), Dictionary(add_unk=True)
    with gzip.open(Path(args.data_dir) / "conll2003" / "train.txt.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip() and not line.startswith("-DOCSTART-"):
                word = line.split()[0]
                words.add_item(word)
                for char in word:
                    chars.add_item(char)
    tags = Dictionary(add_unk=False)
    for label in LABELS:
        tags.add_item(label)
    embeddings = StackedEmbeddings([
        OneHotEmbeddings(words, field="text", embedding_length=100),
        CharacterEmbeddings(path_to_char_dict=chars, char_embedding_dim=50, hidden_size_char=50),
    ])
    tagger = SequenceTagger(hidden_size=256, embeddings=embeddings, tag_dictionary=tags, tag_type="ner",
                            use_crf=True).eval()
    texts = Path(args.sentences).read_text(encoding="utf-8").splitlines()
    tagger.predict([Sentence(t.split()) for t in texts[:4]], mini_batch_size=4)  # warm-up
    rows = {}
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        load = os.getloadavg()[0]
        start = time.perf_counter()
        sentences = [Sentence(text.split()) for text in texts]
        tagger.predict(sentences, mini_batch_size=batch_size)
        spans = [sentence.get_spans("ner") for sentence in sentences]
        elapsed = time.perf_counter() - start
        rows[str(batch_size)] = {"sentences_per_s": round(len(texts) / elapsed, 1), "wall_s": round(elapsed, 3),
                                 "load": round(load, 1), "spans": sum(map(len, spans))}
    print(json.dumps({"tool": "flair", "flair_version": flair.__version__, "threads": torch.get_num_threads(),
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
