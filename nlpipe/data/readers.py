"""Readers for the real file formats nlpipe trains on, returning plain lists of dicts.

Every reader streams its file line by line through :func:`open_text`, which accepts plain or
gzip files (detected by the gzip magic bytes, not by the suffix, so a renamed file still works),
decodes UTF-8 strictly and turns every problem a user can cause into an :class:`NlpipeError`
that names ``file:line``. The loading code turns these lists into ``datasets.Dataset`` objects.

Record formats (the same ones :mod:`nlpipe.data.samples` generates):

- :func:`read_conll` -> ``{"tokens": list[str], "tags": list[str]}`` (tags in IOB2)
- :func:`read_parallel`, :func:`read_csv` -> ``{"source": str, "target": str}`` (or the fields asked for)
- :func:`read_lines` -> ``{"text": str}``
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
import re
import statistics
import zlib
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path

from nlpipe.errors import NlpipeError, shorten

logger = logging.getLogger(__name__)

MAX_LINE_CHARS = 1_000_000
"""Longest line (in characters) :func:`open_text` accepts; longer lines mean a wrong or binary file."""

_GZIP_MAGIC = b"\x1f\x8b"
_DOCSTART = "-DOCSTART-"


def _open_binary(path: Path, description: str):
    """Open ``path`` for binary reading, transparently gunzipping; raise NlpipeError if unreadable."""
    try:
        raw = open(path, "rb")  # closed by open_text's ``with``
    except FileNotFoundError:
        raise NlpipeError(f"{path}: file not found; expected {description} here (plain or .gz)") from None
    except IsADirectoryError:
        raise NlpipeError(f"{path}: is a directory; expected {description} (plain or .gz)") from None
    except OSError as exc:
        raise NlpipeError(f"{path}: cannot open ({exc.strerror}); expected {description}") from None
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


def open_text(
    path: str | Path,
    *,
    description: str = "a UTF-8 text file",
    max_line_chars: int = MAX_LINE_CHARS,
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for each line of a plain or gzip-compressed UTF-8 file.

    Line numbers are 1-based; the trailing ``\\n`` (and a ``\\r`` before it) and a UTF-8 byte-order
    mark at the start of the file are removed. The file is read one line at a time, so memory
    stays bounded by ``max_line_chars``.

    Args:
        path: the file; gzip is detected from its first bytes, whatever the suffix.
        description: what the caller expected to find, used in the "file not found" message.
        max_line_chars: longest accepted line, in characters.

    Raises:
        NlpipeError: the file is missing or unreadable, is a corrupt gzip file, contains bytes that
            are not UTF-8 (message names ``file:line`` and the byte), or has a line longer than
            ``max_line_chars``.
    """
    path = Path(path)
    stream, raw = _open_binary(path, description)
    # A UTF-8 character takes at most 4 bytes, so reading 4 * max + 2 bytes without meeting a
    # newline proves the line has more than max characters, without reading the rest of it.
    byte_limit = 4 * max_line_chars + 2
    lineno = 0
    with raw, stream:
        while True:
            try:
                data = stream.readline(byte_limit)
            except (OSError, EOFError, zlib.error) as exc:
                raise NlpipeError(
                    f"{path}:{lineno + 1}: cannot decompress ({exc}); the gzip file is corrupt or "
                    "truncated, copy or download it again"
                ) from None
            if not data:
                return
            lineno += 1
            if len(data) == byte_limit and not data.endswith(b"\n"):
                raise NlpipeError(
                    f"{path}:{lineno}: line longer than {max_line_chars} characters; this is not a "
                    f"line-based text file (expected {description})"
                )
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = exc.object[exc.start]
                raise NlpipeError(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{bad:02x}); re-encode the file as UTF-8"
                ) from None
            if lineno == 1 and text.startswith("\ufeff"):
                text = text[1:]  # a byte-order mark (Excel's "UTF-8 CSV") is not part of the data
            if text.endswith("\n"):
                text = text[:-1]
                if text.endswith("\r"):
                    text = text[:-1]
            if len(text) > max_line_chars:
                raise NlpipeError(
                    f"{path}:{lineno}: line longer than {max_line_chars} characters; this is not a "
                    f"line-based text file (expected {description})"
                )
            yield lineno, text


_IOB_TAG = re.compile(r"O|[BI]-\S+")


def check_iob_tag(tag: str) -> str | None:
    """None if ``tag`` is an IOB/IOB2 tag (``O``, ``B-TYPE``, ``I-TYPE``), else what to do about it."""
    if _IOB_TAG.fullmatch(tag):
        return None
    prefix, sep, label = tag.partition("-")
    if sep and prefix.upper() in ("B", "I", "O") and label:
        return f"write the prefix upper-case ({prefix.upper()}-{label})"
    if sep and prefix.upper() in ("S", "E", "L", "U") and label:
        return "this looks like BIOES/BILOU; convert the file to IOB2 (S-X -> B-X, E-X/L-X -> I-X, U-X -> B-X)"
    return "tags must be O, B-TYPE or I-TYPE (IOB/IOB2, e.g. B-PER); check the tag column (label_column)"


def _split_tag(tag: str) -> tuple[str, str]:
    """Split ``"B-PER"`` into ``("B", "PER")``; a tag without a prefix (``"O"``) gives ``(tag, "")``."""
    prefix, sep, label = tag.partition("-")
    return (prefix, label) if sep else (tag, "")


def _starts_with_inside(tags: list[str]) -> bool:
    """True if some ``I-X`` tag opens a span (the mark of IOB1, which IOB2 forbids)."""
    previous = "O"
    for tag in tags:
        prefix, label = _split_tag(tag)
        if prefix == "I":
            prev_prefix, prev_label = _split_tag(previous)
            if prev_prefix not in ("B", "I") or prev_label != label:
                return True
        previous = tag
    return False


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """Return IOB1 ``tags`` rewritten as IOB2: every ``I-X`` that opens a span becomes ``B-X``.

    An ``I-X`` opens a span when it follows ``O``, the sentence start, or a tag of another type.
    ``B-X`` tags (IOB1 uses them only between two adjacent spans of one type) and tags without a
    ``B-``/``I-`` prefix are kept. Already-IOB2 input is returned unchanged.
    """
    converted: list[str] = []
    previous = "O"
    for tag in tags:
        prefix, label = _split_tag(tag)
        if prefix == "I":
            prev_prefix, prev_label = _split_tag(previous)
            if prev_prefix not in ("B", "I") or prev_label != label:
                tag = f"B-{label}"
        converted.append(tag)
        previous = tag
    return converted


def read_conll(
    path: str | Path,
    *,
    label_column: int = -1,
    expected_columns: int | None = None,
    iob: bool = True,
) -> list[dict]:
    """Read a CoNLL column file (one ``word ... tag`` line per token) into tagged sentences.

    Columns are split on whitespace; blank lines separate sentences; ``-DOCSTART-`` lines (and the
    blank line after them) are skipped. Every token line must have the same number of columns as
    the first one (or ``expected_columns``). If some ``I-X`` opens a span, the file is IOB1 and
    all sentences are converted to IOB2 with :func:`iob1_to_iob2`.

    Args:
        path: plain or gzip file.
        label_column: index of the tag column (negative counts from the end); the word is column 0.
        expected_columns: the column count every token line must have; ``None`` takes it from the
            first token line.
        iob: the tags are entity tags: each must be IOB/IOB2 (checked per line) and IOB1 files are
            converted to IOB2. ``False`` reads any tag column as it is (e.g. part-of-speech tags).

    Returns:
        One ``{"tokens": list[str], "tags": list[str]}`` dict per sentence.

    Raises:
        NlpipeError: unreadable file (see :func:`open_text`), a line with the wrong number of
            columns (``file:line``), a ``label_column`` that is not a tag column, a tag that is not
            IOB/IOB2 (``b-per``, ``X-ORG``, BIOES's ``S-PER``; ``file:line``), or no sentences.
    """
    path = Path(path)
    description = "a CoNLL file (one token per line: word ... tag, blank line between sentences)"
    sentences: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    n_columns = expected_columns

    def flush() -> None:
        nonlocal tokens, tags
        if tokens:
            sentences.append({"tokens": tokens, "tags": tags})
            tokens, tags = [], []

    for lineno, line in open_text(path, description=description):
        columns = line.split()
        if not columns:
            flush()
            continue
        if columns[0] == _DOCSTART:
            flush()
            continue
        if n_columns is None:
            n_columns = len(columns)
        if len(columns) != n_columns:
            raise NlpipeError(
                f"{path}:{lineno}: expected {n_columns} columns (word ... tag), found {len(columns)}; "
                "every token line needs the same columns, separated by spaces or tabs"
            )
        tag_index = label_column if label_column >= 0 else n_columns + label_column
        if not 0 < tag_index < n_columns:
            raise NlpipeError(
                f"{path}:{lineno}: label_column={label_column} is not a tag column in a line with "
                f"{n_columns} columns (column 0 is the word); set label_column to the tag column"
            )
        problem = check_iob_tag(columns[tag_index]) if iob else None
        if problem is not None:
            raise NlpipeError(f"{path}:{lineno}: tag {shorten(columns[tag_index])} is not an IOB tag; {problem}")
        tokens.append(columns[0])
        tags.append(columns[tag_index])
    flush()

    if not sentences:
        raise NlpipeError(f"no sentences in {path}; expected {description}")
    if iob and any(_starts_with_inside(sentence["tags"]) for sentence in sentences):
        logger.info("%s: tags are IOB1 (an I- tag opens a span); converting to IOB2", path)
        for sentence in sentences:
            sentence["tags"] = iob1_to_iob2(sentence["tags"])
    return sentences


MISALIGNED_RATIO = 2.0
"""A line pair is a length outlier when its length ratio is this many times off the files' median ratio."""
MISALIGNED_SHARE = 0.03
"""Warn when more than this share of line pairs are length outliers. On Multi30k, aligned files have
0-0.02% outliers; the same files shifted by 1, 10 or 100 lines have 6-17%."""


def misaligned_pairs(pairs: list[dict], min_pairs: int = 20) -> tuple[int, int | None]:
    """Count line pairs whose length ratio is far from the usual one (a cheap sign of misaligned files).

    Translations have lengths roughly proportional to each other; when one file has a line missing or
    extra, every later pair joins unrelated sentences and many ratios go far off the median.

    Returns:
        ``(outliers, first_index)``: the number of outlier pairs and the 0-based index of the first one
        (``(0, None)`` for fewer than ``min_pairs`` pairs).
    """
    if len(pairs) < min_pairs:
        return 0, None
    logs = [math.log((len(p["source"]) + 1) / (len(p["target"]) + 1)) for p in pairs]
    median = statistics.median(logs)
    limit = math.log(MISALIGNED_RATIO)
    outliers = [i for i, value in enumerate(logs) if abs(value - median) > limit]
    return len(outliers), (outliers[0] if outliers else None)


def read_parallel(source_path: str | Path, target_path: str | Path) -> list[dict]:
    """Read two line-aligned files (line *i* of one translates line *i* of the other).

    Pairs where either side is empty (or only whitespace) are dropped with a warning; the text is
    otherwise kept raw (tokenization is the task's job).

    Returns:
        One ``{"source": str, "target": str}`` dict per line pair.

    Logs one warning line when many pairs have a length ratio far from the usual one
    (:func:`misaligned_pairs`): equal line counts do not prove the lines correspond.

    Raises:
        NlpipeError: an unreadable file, different line counts (names both files and counts), or
            no non-empty pairs.
    """
    source_path, target_path = Path(source_path), Path(target_path)
    description = "a text file with one sentence per line, line-aligned with its translation"
    pairs: list[dict] = []
    line_numbers: list[int] = []
    dropped: list[int] = []
    n_source = n_target = 0
    for source_item, target_item in zip_longest(
        open_text(source_path, description=description), open_text(target_path, description=description)
    ):
        n_source += source_item is not None
        n_target += target_item is not None
        if source_item is None or target_item is None:
            continue  # keep counting the longer file for the error message
        (lineno, source), (_, target) = source_item, target_item
        if not source.strip() or not target.strip():
            dropped.append(lineno)
            continue
        pairs.append({"source": source, "target": target})
        line_numbers.append(lineno)
    if n_source != n_target:
        raise NlpipeError(
            f"{source_path} has {n_source} lines but {target_path} has {n_target}; parallel files "
            "must be line-aligned (one translation per line in both)"
        )
    if dropped:
        logger.warning(
            "%s / %s: dropped %d line pairs with an empty side (first at line %d)",
            source_path, target_path, len(dropped), dropped[0],
        )
    if not pairs:
        raise NlpipeError(f"no sentence pairs in {source_path} / {target_path}; expected {description}")
    outliers, first = misaligned_pairs(pairs)
    if outliers > MISALIGNED_SHARE * len(pairs) and first is not None:
        logger.warning(
            "warning: %s / %s: %d of %d line pairs (%.0f%%, first at line %d) differ in length more than %gx "
            "from the usual ratio; the files may be misaligned (a line missing or extra in one), check them "
            "side by side", source_path, target_path, outliers, len(pairs), 100 * outliers / len(pairs),
            line_numbers[first], MISALIGNED_RATIO,
        )
    return pairs


def read_csv(path: str | Path, columns: dict[str, str]) -> list[dict]:
    """Read selected columns of a CSV file with a header row (RFC 4180 quoting, newlines in fields).

    Args:
        path: plain or gzip CSV file.
        columns: output field -> CSV column, e.g. ``{"source": "dialogue", "target": "summary"}``.

    Returns:
        One dict per row with the keys of ``columns``. Rows where any requested field is empty (or
        only whitespace) are dropped, with a warning saying how many.

    Raises:
        NlpipeError: an unreadable file, no header, a missing column (names the column and the
            header found), a row with a different number of fields than the header or a malformed
            CSV (``file:line``), or no rows.
    """
    path = Path(path)
    description = "a CSV file with a header row"

    def physical_lines() -> Iterator[str]:
        # csv needs the newline back to keep newlines inside quoted fields (SAMSum dialogues).
        for _, line in open_text(path, description=description):
            yield line + "\n"

    reader = csv.reader(physical_lines())
    try:
        header = next(reader, None)
        if header is None:
            raise NlpipeError(f"{path}: empty file; expected {description}")
        missing = [name for name in columns.values() if name not in header]
        if missing:
            raise NlpipeError(
                f"{path}: column {missing[0]!r} not found; the header has {shorten(header)}. Fix the column "
                "mapping or the file"
            )
        indices = {field: header.index(name) for field, name in columns.items()}
        rows: list[dict] = []
        n_dropped = 0
        for row in reader:
            if not row:
                continue  # a blank physical line between records
            if len(row) != len(header):
                raise NlpipeError(
                    f"{path}:{reader.line_num}: expected {len(header)} fields ({','.join(header)}), "
                    f"found {len(row)}; check the quoting of this row"
                )
            record = {field: row[index] for field, index in indices.items()}
            if any(not value.strip() for value in record.values()):
                n_dropped += 1
                continue
            rows.append(record)
    except csv.Error as exc:
        raise NlpipeError(f"{path}:{reader.line_num}: malformed CSV ({exc}); check the quoting") from None
    if n_dropped:
        logger.warning("%s: dropped %d rows with an empty %s", path, n_dropped, "/".join(columns.values()))
    if not rows:
        raise NlpipeError(f"no rows in {path}; expected {description}")
    return rows


def read_lines(path: str | Path) -> list[dict]:
    """Read a text file as one record per line, keeping empty lines and the raw text.

    Nothing is stripped (PTB lines start with a space) and empty lines stay as ``""``: the language
    modelling task decides how to tokenize and what to do with them.

    Returns:
        One ``{"text": str}`` dict per line.

    Raises:
        NlpipeError: an unreadable file (see :func:`open_text`) or an empty file.
    """
    path = Path(path)
    records = [{"text": line} for _, line in open_text(path, description="a text file, one text per line")]
    if not records:
        raise NlpipeError(f"no lines in {path}; expected a text file, one text per line")
    return records
