"""Built-in sample data: determinism, sizes, formats, and that each kind is learnable but not trivial."""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict

import pytest
from seqeval.metrics import f1_score

from nlpipe.data.samples import SAMPLE_KINDS, TRANSLATION_LEXICON, make_sample
from nlpipe.errors import NlpipeError

EXPECTED_SIZES = {  # from the specification, not read back from the module
    "ner": (1500, 200, 200),
    "translation": (4000, 300, 300),
    "summarization": (2000, 200, 200),
    "lm": (4000, 400, 400),
}
FIELDS = {"ner": {"tokens", "tags"}, "translation": {"source", "target"},
          "summarization": {"source", "target"}, "lm": {"text"}}


@pytest.fixture(scope="module", params=sorted(EXPECTED_SIZES))
def kind_and_data(request):
    return request.param, make_sample(request.param)


def test_kinds_are_the_documented_ones():
    assert set(SAMPLE_KINDS) == set(EXPECTED_SIZES)


def test_sizes_and_record_fields(kind_and_data):
    kind, data = kind_and_data
    assert list(data) == ["train", "validation", "test"]
    assert tuple(len(data[split]) for split in data) == EXPECTED_SIZES[kind]
    assert all(set(record) == FIELDS[kind] for split in data.values() for record in split)


def test_same_seed_same_data_other_seed_other_data(kind_and_data):
    kind, data = kind_and_data
    assert make_sample(kind, seed=0) == data
    other = make_sample(kind, seed=1)
    assert other["train"] != data["train"] and other["test"] != data["test"]


def test_global_random_state_is_untouched():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    make_sample("ner")
    assert random.random() == expected


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(NlpipeError) as info:
        make_sample("pos")
    assert "'pos'" in str(info.value)
    assert all(kind in str(info.value) for kind in EXPECTED_SIZES)


# ------------------------------------------------------------------------------------------- NER


def entity_spans(tokens: list[str], tags: list[str]) -> list[tuple[str, str]]:
    """(type, text) of each IOB2 span; independent of the generator's code."""
    spans, current = [], None
    for token, tag in zip(tokens, tags, strict=True):
        if tag.startswith("B-"):
            current = [tag[2:], [token]]
            spans.append(current)
        elif tag.startswith("I-"):
            current[1].append(token)
        else:
            current = None
    return [(label, " ".join(words)) for label, words in spans]


def test_ner_is_valid_iob2_with_all_types_and_lengths():
    data = make_sample("ner")
    types, multi_token = Counter(), 0
    for record in (r for split in data.values() for r in split):
        tokens, tags = record["tokens"], record["tags"]
        assert len(tokens) == len(tags) and 5 <= len(tokens) <= 30
        for i, tag in enumerate(tags):
            assert re.fullmatch(r"O|[BI]-(PER|ORG|LOC|MISC)", tag), tag
            if tag.startswith("I-"):  # IOB2: an I- continues a span of the same type
                assert i > 0 and tags[i - 1] in (f"B-{tag[2:]}", tag), (tokens, tags)
        for label, text in entity_spans(tokens, tags):
            types[label] += 1
            multi_token += " " in text
            assert all(word[0].isupper() for word in text.split()), text
    assert set(types) == {"PER", "ORG", "LOC", "MISC"} and min(types.values()) > 100
    assert multi_token > 200
    lengths = [len(r["tokens"]) for r in data["train"]]
    assert min(lengths) <= 8 and max(lengths) >= 24  # a mix of short and long sentences


def test_ner_test_set_has_unseen_entities():
    data = make_sample("ner")
    train_entities = {span for r in data["train"] for span in entity_spans(r["tokens"], r["tags"])}
    test_entities = [span for r in data["test"] for span in entity_spans(r["tokens"], r["tags"])]
    unseen = [span for span in test_entities if span not in train_entities]
    assert 0.1 < len(unseen) / len(test_entities) < 0.6


def test_ner_memorising_tagger_is_useful_but_not_perfect():
    data = make_sample("ner")
    votes: dict[str, Counter] = defaultdict(Counter)
    for record in data["train"]:
        for token, tag in zip(record["tokens"], record["tags"], strict=True):
            votes[token][tag] += 1
    predicted = [[votes[t].most_common(1)[0][0] if t in votes else "O" for t in r["tokens"]]
                 for r in data["test"]]
    score = f1_score([r["tags"] for r in data["test"]], predicted)
    assert 0.5 < score < 0.9, score  # neither noise nor a lookup table


# ----------------------------------------------------------------------------------- translation


def test_translation_is_word_by_word_through_the_lexicon_with_reordering():
    data = make_sample("translation")
    reordered = 0
    for record in (r for split in data.values() for r in split):
        source, target = record["source"].split(), record["target"].split()
        assert 3 <= len(source) <= 15 and source[-1] == "." and target[-1] == "."
        mapped = [TRANSLATION_LEXICON[word] for word in source]
        assert sorted(mapped) == sorted(target), record
        reordered += mapped != target
    assert reordered > 0.5 * sum(len(split) for split in data.values())


def test_translation_each_source_word_has_one_target_word_in_the_data():
    # From the data alone: the target words common to every train pair that contains a source word
    # must include its lexicon entry. Agreement adds at most one companion ("sehe" always comes
    # with "I", "großer" with "a"), so no intersection is larger than two words.
    data = make_sample("translation")
    common: dict[str, set[str]] = {}
    for record in data["train"]:
        target = set(record["target"].split()) - {"."}
        for word in set(record["source"].split()) - {"."}:
            common[word] = common[word] & target if word in common else set(target)
    assert len(common) >= 140  # ~150 source words are really used
    assert all(TRANSLATION_LEXICON[word] in targets for word, targets in common.items())
    assert max(len(targets) for targets in common.values()) <= 2
    assert sum(len(targets) == 1 for targets in common.values()) > 0.5 * len(common)


def test_translation_test_sentences_are_not_in_train():
    data = make_sample("translation")
    train = {r["source"] for r in data["train"]}
    assert sum(r["source"] in train for r in data["test"]) < 10


# --------------------------------------------------------------------------------- summarization

SUMMARY_GLUE = {"will", "can't", "so", "do", "it", "and", "meet"}


def test_summarization_dialogues_and_summaries_follow_the_content():
    data = make_sample("summarization")
    key_positions = Counter()
    for record in (r for split in data.values() for r in split):
        turns = record["source"].split("\n")
        assert 3 <= len(turns) <= 8
        speakers = set()
        for turn in turns:
            match = re.fullmatch(r"([A-Z][a-z]+): (.+)", turn)
            assert match, turn
            speakers.add(match.group(1))
        summary = record["target"]
        assert summary.endswith(".") and summary.split()[0] in speakers
        dialogue_words = set(re.findall(r"[\w']+", record["source"]))
        summary_words = set(re.findall(r"[\w']+", summary))
        assert summary_words - dialogue_words <= SUMMARY_GLUE, record
        key_positions[next(i for i, t in enumerate(turns) if re.search(r"I will|can you|let's", t))] += 1
    assert len(key_positions) >= 5  # the key turn moves around among distractor turns


# -------------------------------------------------------------------------------------------- LM


def perplexities(train: list[list[str]], test: list[list[str]]) -> tuple[float, float]:
    """Add-one unigram and interpolated bigram perplexity of ``test`` under counts from ``train``."""
    unigram = Counter(w for line in train for w in line)
    total, vocab = sum(unigram.values()), len(unigram) + 1
    bigram = Counter(pair for line in train for pair in zip(["<s>"] + line[:-1], line, strict=True))
    context = Counter(w for line in train for w in ["<s>"] + line[:-1])
    uni_nll = bi_nll = n = 0.0
    for line in test:
        for previous, word in zip(["<s>"] + line[:-1], line, strict=True):
            p_uni = (unigram[word] + 1) / (total + vocab)
            p_bi = bigram[previous, word] / context[previous] if context[previous] else 0.0
            uni_nll -= math.log(p_uni)
            bi_nll -= math.log(0.9 * p_bi + 0.1 * p_uni)
            n += 1
    return math.exp(uni_nll / n), math.exp(bi_nll / n)


def test_lm_lines_are_lowercase_and_predictable():
    data = make_sample("lm")
    for record in (r for split in data.values() for r in split):
        words = record["text"].split()
        assert 5 <= len(words) <= 20 and record["text"] == record["text"].lower()
        assert record["text"] == " ".join(words)
    train = [r["text"].split() + ["</s>"] for r in data["train"]]
    test = [r["text"].split() + ["</s>"] for r in data["test"]]
    unigram_ppl, bigram_ppl = perplexities(train, test)
    assert unigram_ppl > 30  # not a handful of words
    assert bigram_ppl < 0.5 * unigram_ppl  # context helps a lot
