"""Readers against the real benchmark files (counts from their READMEs) and small hand-made files."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from nlpipe.data.readers import iob1_to_iob2, open_text, read_conll, read_csv, read_lines, read_parallel
from nlpipe.errors import NlpipeError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def real_file(relative: str) -> Path:
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"real data file {path} is absent (it lives in the shared data folder, not the repo)")
    return path


def write(path: Path, text: str | bytes, *, gz: bool = False) -> Path:
    data = text.encode("utf-8") if isinstance(text, str) else text
    if gz:
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def iob2_errors(tags: list[str]) -> list[int]:
    """Positions where an I-X does not continue a B-X/I-X span (independent of the reader's code)."""
    bad = []
    for i, tag in enumerate(tags):
        if tag.startswith("I-"):
            previous = tags[i - 1] if i else "O"
            if previous[2:] != tag[2:] or previous == "O":
                bad.append(i)
    return bad


# ------------------------------------------------------------------------------------- open_text


def test_open_text_plain_and_gzip_give_same_numbered_lines(tmp_path):
    text = "first\n\nthird line\r\nfourth without newline"
    expected = [(1, "first"), (2, ""), (3, "third line"), (4, "fourth without newline")]
    assert list(open_text(write(tmp_path / "a.txt", text))) == expected
    # gzip is recognised by its magic bytes, even without a .gz suffix
    assert list(open_text(write(tmp_path / "a.txt.gz", text, gz=True))) == expected
    assert list(open_text(write(tmp_path / "renamed.txt", text, gz=True))) == expected


def test_open_text_missing_file_names_path_and_expectation(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(NlpipeError, match=r"nope\.txt: file not found; expected a CSV file"):
        list(open_text(missing, description="a CSV file"))


@pytest.mark.parametrize("gz", [False, True])
def test_open_text_non_utf8_names_file_line_and_byte(tmp_path, gz):
    path = write(tmp_path / "latin1.txt", "ok\ncaf\xe9\n".encode("latin-1"), gz=gz)
    with pytest.raises(NlpipeError) as info:
        list(open_text(path))
    assert str(info.value) == f"{path}:2: not valid UTF-8 (byte 0xe9); re-encode the file as UTF-8"


def test_open_text_line_length_limit_counts_characters_not_bytes(tmp_path):
    path = write(tmp_path / "long.txt", "é" * 10 + "\n" + "x" * 11 + "\n")
    with pytest.raises(NlpipeError, match=r"long\.txt:2: line longer than 10 characters"):
        list(open_text(path, max_line_chars=10))
    # a line far past the byte limit is refused without reading all of it
    path = write(tmp_path / "huge.txt", "ok\n" + "y" * 1000)
    with pytest.raises(NlpipeError, match=r"huge\.txt:2: line longer than 10 characters"):
        list(open_text(path, max_line_chars=10))


def test_open_text_truncated_gzip_is_a_user_error(tmp_path):
    data = gzip.compress(("word O\n" * 2000).encode())
    path = write(tmp_path / "cut.txt.gz", data[: len(data) // 2])
    with pytest.raises(NlpipeError, match=r"cut\.txt\.gz:\d+: cannot decompress"):
        list(open_text(path))


# ------------------------------------------------------------------------------------ read_conll


def test_read_conll_real_valid_matches_readme_counts():
    sentences = read_conll(real_file("conll2003/valid.txt.gz"))
    assert len(sentences) == 3250
    assert sum(len(s["tokens"]) for s in sentences) == 51362
    assert all(len(s["tokens"]) == len(s["tags"]) for s in sentences)
    assert not any("-DOCSTART-" in s["tokens"] for s in sentences)
    assert all(not iob2_errors(s["tags"]) for s in sentences)
    begins = [tag[2:] for s in sentences for tag in s["tags"] if tag.startswith("B-")]
    assert {label: begins.count(label) for label in ("PER", "ORG", "LOC", "MISC")} == {
        "PER": 1842, "ORG": 1341, "LOC": 1837, "MISC": 922,
    }
    assert sentences[0] == {"tokens": ["CRICKET", "-", "LEICESTERSHIRE", "TAKE", "OVER", "AT", "TOP",
                                       "AFTER", "INNINGS", "VICTORY", "."],
                            "tags": ["O", "O", "B-ORG", "O", "O", "O", "O", "O", "O", "O", "O"]}


def test_read_conll_gz_and_plain_give_the_same_result(tmp_path):
    source = real_file("conll2003/valid.txt.gz")
    plain = write(tmp_path / "valid.txt", gzip.decompress(source.read_bytes()))
    assert read_conll(plain) == read_conll(source)


CONLL_IOB1 = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
Paul NNP I-NP B-PER
Smith NNP I-NP I-PER
in IN I-PP O
New NNP I-NP I-LOC
York NNP I-NP I-LOC
"""


@pytest.mark.parametrize("gz", [False, True])
def test_read_conll_converts_iob1_to_iob2(tmp_path, gz):
    sentences = read_conll(write(tmp_path / "iob1.txt", CONLL_IOB1, gz=gz))
    assert sentences == [
        {"tokens": ["EU", "rejects", "German", "call", "."],
         "tags": ["B-ORG", "O", "B-MISC", "O", "O"]},
        {"tokens": ["Peter", "Blackburn", "Paul", "Smith", "in", "New", "York"],
         "tags": ["B-PER", "I-PER", "B-PER", "I-PER", "O", "B-LOC", "I-LOC"]},
    ]


def test_read_conll_label_column_picks_another_column(tmp_path):
    sentences = read_conll(write(tmp_path / "iob1.txt", CONLL_IOB1), label_column=1, iob=False)
    assert sentences[0]["tags"] == ["NNP", "VBZ", "JJ", "NN", "."]


def test_iob1_to_iob2_rules():
    assert iob1_to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-LOC"]) == [
        "B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG", "B-LOC",
    ]
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O"]
    assert iob1_to_iob2(iob2) == iob2


def test_read_conll_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.txt", "EU NNP I-NP B-ORG\nrejects VBZ I-VP O\n\nGerman I-NP B-MISC\n")
    with pytest.raises(NlpipeError) as info:
        read_conll(path)
    assert str(info.value).startswith(f"{path}:4: expected 4 columns (word ... tag), found 3")


def test_read_conll_expected_columns_checks_first_line(tmp_path):
    path = write(tmp_path / "two.txt", "EU B-ORG\nrejects O\n")
    assert read_conll(path, expected_columns=2) == [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}]
    with pytest.raises(NlpipeError, match=r"two\.txt:1: expected 4 columns \(word \.\.\. tag\), found 2"):
        read_conll(path, expected_columns=4)


def test_read_conll_docstart_without_blank_line_ends_the_sentence(tmp_path):
    path = write(tmp_path / "d.txt", "a O\nb O\n-DOCSTART- -X- -X- O\nc B-LOC\n")
    assert read_conll(path) == [{"tokens": ["a", "b"], "tags": ["O", "O"]},
                                {"tokens": ["c"], "tags": ["B-LOC"]}]


def test_read_conll_non_utf8_and_empty_files(tmp_path):
    path = write(tmp_path / "latin.txt", "a O\n\nK\xf6ln B-LOC\n".encode("latin-1"))
    with pytest.raises(NlpipeError, match=r"latin\.txt:3: not valid UTF-8 \(byte 0xf6\)"):
        read_conll(path)
    path = write(tmp_path / "empty.txt", "-DOCSTART- -X- -X- O\n\n\n")
    with pytest.raises(NlpipeError, match=r"no sentences in .*empty\.txt"):
        read_conll(path)


# --------------------------------------------------------------------------------- read_parallel


def test_read_parallel_real_multi30k_val():
    pairs = read_parallel(real_file("multi30k/val.de.gz"), real_file("multi30k/val.en.gz"))
    assert len(pairs) == 1014
    assert pairs[0] == {"source": "Eine Gruppe von Männern lädt Baumwolle auf einen Lastwagen",
                        "target": "A group of men are loading cotton onto a truck"}
    assert sum(len(p["source"].split()) for p in pairs) == 11568  # README whitespace token counts
    assert sum(len(p["target"].split()) for p in pairs) == 12167


def test_read_parallel_mismatched_lengths_names_both_files_and_counts(tmp_path):
    source = write(tmp_path / "x.de", "eins\nzwei\ndrei\n")
    target = write(tmp_path / "x.en.gz", "one\ntwo\n", gz=True)
    with pytest.raises(NlpipeError) as info:
        read_parallel(source, target)
    assert f"{source} has 3 lines but {target} has 2" in str(info.value)


def test_read_parallel_drops_pairs_with_an_empty_side(tmp_path, caplog):
    source = write(tmp_path / "y.de", "eins\n\ndrei\n")
    target = write(tmp_path / "y.en", "one\ntwo\nthree\n")
    with caplog.at_level(logging.WARNING, logger="nlpipe.data.readers"):
        pairs = read_parallel(source, target)
    assert pairs == [{"source": "eins", "target": "one"}, {"source": "drei", "target": "three"}]
    assert "dropped 1 line pairs" in caplog.text


# -------------------------------------------------------------------------------------- read_csv

SAMSUM = {"source": "dialogue", "target": "summary"}


def test_read_csv_real_samsum_validation():
    rows = read_csv(real_file("samsum/validation.csv.gz"), SAMSUM)
    assert len(rows) == 818
    assert set(rows[0]) == {"source", "target"}
    assert rows[0]["source"].startswith("A: Hi Tom, are you busy tomorrow’s afternoon?\nB: I’m pretty sure")
    assert rows[0]["target"].startswith("A will go to the animal shelter tomorrow")
    assert sum("\n" in row["source"] for row in rows) > 800  # quoted newlines stay inside the field
    assert sum(len(row["source"].split()) for row in rows) == 74963  # README dialogue word count


def test_read_csv_missing_column_names_file_column_and_header(tmp_path):
    path = write(tmp_path / "s.csv", "id,dialogue,summary\n1,hi,greeting\n")
    with pytest.raises(NlpipeError) as info:
        read_csv(path, {"source": "dialogue", "target": "summry"})
    message = str(info.value)
    assert str(path) in message and "'summry'" in message and "['id', 'dialogue', 'summary']" in message


def test_read_csv_quoted_newlines_and_empty_rows(tmp_path, caplog):
    text = 'id,dialogue,summary\n1,"A: hi\nB: ""yo"", ok",B greets A\n2,"A: x",\n3,C: bye,C leaves\n'
    for gz in (False, True):
        path = write(tmp_path / f"s{gz}.csv", text, gz=gz)
        with caplog.at_level(logging.WARNING, logger="nlpipe.data.readers"):
            rows = read_csv(path, SAMSUM)
        assert rows == [{"source": 'A: hi\nB: "yo", ok', "target": "B greets A"},
                        {"source": "C: bye", "target": "C leaves"}]
        assert "dropped 1 rows" in caplog.text


def test_read_csv_ignores_a_byte_order_mark(tmp_path):
    path = write(tmp_path / "bom.csv", "\ufeffdialogue,summary\nA: hi,A says hi\n")
    assert read_csv(path, SAMSUM) == [{"source": "A: hi", "target": "A says hi"}]


def test_read_csv_row_with_wrong_field_count_names_line(tmp_path):
    path = write(tmp_path / "w.csv", 'id,dialogue,summary\n1,"a\nb",s\n2,only\n')
    with pytest.raises(NlpipeError, match=r"w\.csv:4: expected 3 fields"):
        read_csv(path, SAMSUM)


# ------------------------------------------------------------------------------------ read_lines


def test_read_lines_real_ptb_valid():
    lines = read_lines(real_file("ptb/ptb.valid.txt.gz"))
    assert len(lines) == 3370
    assert lines[0]["text"].startswith(" consumers may want")  # raw text: leading space kept
    assert sum(len(line["text"].split()) for line in lines) == 70390


def test_read_lines_keeps_empty_lines_and_raw_text(tmp_path):
    path = write(tmp_path / "l.txt", " a b \n\n = T = \n")
    assert read_lines(path) == [{"text": " a b "}, {"text": ""}, {"text": " = T = "}]
    with pytest.raises(NlpipeError, match=r"no lines in .*e\.txt"):
        read_lines(write(tmp_path / "e.txt", ""))


@pytest.mark.parametrize(("tag", "hint"), [
    ("b-per", "upper-case (B-per)"), ("X-ORG", "O, B-TYPE or I-TYPE"), ("S-PER", "BIOES"), ("B-", "O, B-TYPE"),
    ("PER", "O, B-TYPE"), ("NNP", "label_column"), ("o", "O, B-TYPE"),
])
def test_read_conll_rejects_tags_that_are_not_iob_naming_file_and_line(tmp_path, tag, hint):
    path = write(tmp_path / "bad.txt", f"EU B-ORG\nrejects O\n\nPeter {tag}\n")
    with pytest.raises(NlpipeError) as err:
        read_conll(path)
    assert str(err.value).startswith(f"{path}:4: tag '{tag}' is not an IOB tag; ") and hint in str(err.value)


def test_read_conll_accepts_iob_tags_with_hyphenated_types(tmp_path):
    path = write(tmp_path / "ok.txt", "New B-DATE-TIME\nYork I-DATE-TIME\nis O\n")
    assert read_conll(path)[0]["tags"] == ["B-DATE-TIME", "I-DATE-TIME", "O"]


def test_read_conll_iob1_where_a_type_only_has_i_tags_becomes_b_tags(tmp_path):
    path = write(tmp_path / "iob1.txt", "EU I-ORG\nrejects O\nGerman I-MISC\nBritish I-MISC\n")
    assert read_conll(path)[0]["tags"] == ["B-ORG", "O", "B-MISC", "I-MISC"]


# ------------------------------------------------------------------------- parallel misalignment


def _sentences(n: int) -> tuple[list[str], list[str]]:
    """Fake translations: target length tracks source length (times 1.2), lengths vary a lot."""
    import random

    rng = random.Random(0)
    lengths = [rng.choice([3, 5, 8, 13, 21, 34]) for _ in range(n)]
    return ["w" * k for k in lengths], ["v" * round(1.2 * k) for k in lengths]


@pytest.mark.parametrize("shift", [0, 1, 7])
def test_read_parallel_warns_once_when_lines_look_misaligned(tmp_path, caplog, shift):
    source, target = _sentences(200)
    target = target[shift:] + target[:shift]  # same line count; from line 1 on, lines of other sentences
    src = write(tmp_path / "a.de", "\n".join(source) + "\n")
    tgt = write(tmp_path / "a.en", "\n".join(target) + "\n")
    with caplog.at_level(logging.WARNING, logger="nlpipe.data.readers"):
        assert len(read_parallel(src, tgt)) == 200
    warnings = [r.getMessage() for r in caplog.records if "misaligned" in r.getMessage()]
    if shift == 0:
        assert not warnings
    else:
        assert len(warnings) == 1 and "\n" not in warnings[0]
        assert str(src) in warnings[0] and str(tgt) in warnings[0] and "check them side by side" in warnings[0]


def test_read_parallel_real_multi30k_is_not_flagged_but_a_one_line_shift_is(tmp_path, caplog):
    de = list(open_text(real_file("multi30k/val.de.gz")))
    en = list(open_text(real_file("multi30k/val.en.gz")))
    src = write(tmp_path / "v.de", "\n".join(t for _, t in de[1:]) + "\n")
    shifted = write(tmp_path / "v.en", "\n".join(t for _, t in en[:-1]) + "\n")  # one line missing at the top
    aligned = write(tmp_path / "w.en", "\n".join(t for _, t in en[1:]) + "\n")
    with caplog.at_level(logging.WARNING, logger="nlpipe.data.readers"):
        read_parallel(src, aligned)
        assert "misaligned" not in caplog.text
        read_parallel(src, shifted)
    assert "misaligned" in caplog.text and "of 1013 line pairs" in caplog.text
