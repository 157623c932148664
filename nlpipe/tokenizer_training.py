"""Train tokenizers from the specs in ``tokenizers/*.yaml`` and save them as `PreTrainedTokenizerFast`.

Word-level, WordPiece, BPE (whitespace or byte-level) and Unigram models are trained with the
`tokenizers` library; SentencePiece with the `sentencepiece` library and converted. A trained
tokenizer is cached under a key made of the spec and the training text, so a rerun with the same
spec and data reuses it (`nlpipe cache-dir` shows where; delete the folder to clear it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NlpipeError, shorten
from .package_data import package_data_dir

KINDS = ("word_level", "wordpiece", "bpe", "byte_level_bpe", "unigram", "sentencepiece")
PRE_TOKENIZERS = ("whitespace", "whitespace_punctuation", "byte_level", "metaspace")
TEMPLATES = ("none", "bert", "eos", "bos_eos")


@dataclass
class TokenizerSpec:
    """A tokenizer spec (one file in ``tokenizers/``); every field can be overridden from a recipe."""

    name: str
    kind: str
    """word_level | wordpiece | bpe | byte_level_bpe | unigram | sentencepiece"""
    vocab_size: int = 30000
    """Largest vocabulary the tokenizer may learn (special tokens included)."""
    min_frequency: int = 1
    """Keep only tokens seen at least this often in the training texts."""
    lowercase: bool = False
    """Lower-case texts before tokenizing."""
    normalize_digits: bool = False
    """Map every digit 0-9 to 0 before lookup (``1996`` and ``2003`` share ``0000``): fewer rare words. Offsets
    are unchanged (one character for one), so entity spans still point at the original text."""
    pre_tokenizer: str = "whitespace_punctuation"
    """whitespace (split on spaces only) | whitespace_punctuation (also split off punctuation, like
    CoNLL tokenization) | byte_level (GPT-2) | metaspace (SentencePiece ▁)."""
    line_break_token: str = ""
    """A reserved token each line break becomes (with the whitespace around it), always one piece: the turn
    separator of a dialogue (Gliwa et al. 2019 found it worth ≈ 3 ROUGE-1 on SAMSum). Empty: a line break is
    ordinary text, merged into pieces with its neighbours (``?\\nB``). Decoding without special tokens drops it."""
    template: str = "none"
    """Special tokens added around a text: none | bert ([CLS] x [SEP]) | eos (x </s>) | bos_eos."""
    special_tokens: dict[str, str] = field(default_factory=lambda: {"pad_token": "[PAD]", "unk_token": "[UNK]"})
    """Role → token, roles: pad_token unk_token bos_token eos_token cls_token sep_token mask_token."""
    model_max_length: int = 512
    """Longest input the saved tokenizer accepts (its model_max_length)."""
    description: str = ""
    """One line on what the spec is for."""


def cache_dir() -> Path:
    """nlpipe's cache folder: ``$NLPIPE_CACHE`` or ``~/.cache/nlpipe``."""
    return Path(os.environ.get("NLPIPE_CACHE", Path.home() / ".cache" / "nlpipe"))


def packaged_spec_dir() -> Path:
    """Tokenizer specs shipped in the package (``tokenizers/`` in a checkout)."""
    return package_data_dir("tokenizer_specs", "tokenizers")


def list_specs() -> dict[str, Path]:
    """Spec name → file, packaged specs overlaid by ``./tokenizers/``."""
    found: dict[str, Path] = {}
    for folder in (packaged_spec_dir(), Path("tokenizers")):
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found[path.stem] = path
    return found


def load_spec(name_or_path: str, overrides: dict[str, Any] | None = None, source: str = "recipe") -> TokenizerSpec:
    """Read and validate a tokenizer spec by name (``tokenizers/NAME.yaml``) or path, then apply overrides."""
    from .recipe import _build, read_yaml

    path = Path(name_or_path)
    if not path.is_file():
        path = list_specs().get(name_or_path, Path("/nonexistent"))
    if not path.is_file():
        raise NlpipeError(
            f"{source}: key 'tokenizer.spec': unknown tokenizer spec '{name_or_path}'; "
            f"known: {', '.join(list_specs())}"
        )
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise NlpipeError(f"{path}: a tokenizer spec must be a mapping of keys")
    from .recipe import FIELD_LIMITS

    for key, value in (overrides or {}).items():  # a recipe's value: name the recipe, not the spec file
        if key in FIELD_LIMITS["TokenizerSpec"]:
            FIELD_LIMITS["TokenizerSpec"][key].check(value, f"{source}: key 'tokenizer.{key}'")
    raw.update(overrides or {})
    spec = _build(TokenizerSpec, raw, str(path), "")
    for key, value, allowed in (
        ("kind", spec.kind, KINDS),
        ("pre_tokenizer", spec.pre_tokenizer, PRE_TOKENIZERS),
        ("template", spec.template, TEMPLATES),
    ):
        if value not in allowed:
            raise NlpipeError(f"{path}: key '{key}': {shorten(value)} is not one of {', '.join(allowed)}")
    token = spec.line_break_token
    where = f"{source}: key 'tokenizer.line_break_token'" if "line_break_token" in (overrides or {}) else (
        f"{path}: key 'line_break_token'"
    )
    if token and (not isinstance(token, str) or re.search(r"\s", token) or token in spec.special_tokens.values()):
        raise NlpipeError(
            f"{where}: {shorten(token)} must be one word (no spaces) that is "
            "not already one of the special tokens, e.g. '<turn>'"
        )
    return spec


def _fingerprint(spec: TokenizerSpec, texts: list[str]) -> str:
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(spec), sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return digest.hexdigest()[:20]


def _special_tokens(spec: TokenizerSpec) -> list[str]:
    order = ("pad_token", "unk_token", "bos_token", "eos_token", "cls_token", "sep_token", "mask_token")
    tokens = [spec.special_tokens[r] for r in order if r in spec.special_tokens]
    if spec.line_break_token:
        tokens.append(spec.line_break_token)
    return list(dict.fromkeys(tokens))


LINE_BREAK = r"\s*\n\s*"
"""What one line break is, with the whitespace around it (blank lines and trailing spaces included)."""


def _add_line_break_token(tok: Any, spec: TokenizerSpec) -> None:
    """Match the line-break token in normalized text (where the normalizer put it), as one special piece."""
    from tokenizers import AddedToken

    if spec.line_break_token:
        tok.add_special_tokens([AddedToken(spec.line_break_token, normalized=True, special=True)])


def _build_backend(spec: TokenizerSpec, texts: list[str]):  # -> tokenizers.Tokenizer
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = _special_tokens(spec)
    unk = spec.special_tokens.get("unk_token")
    if spec.kind == "sentencepiece":
        return _train_sentencepiece(spec, texts)
    if spec.kind == "word_level":
        tok = Tokenizer(models.WordLevel(unk_token=unk))
        trainer = trainers.WordLevelTrainer(
            vocab_size=spec.vocab_size, min_frequency=spec.min_frequency, special_tokens=specials
        )
    elif spec.kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=unk, continuing_subword_prefix="##"))
        trainer = trainers.WordPieceTrainer(
            vocab_size=spec.vocab_size, min_frequency=spec.min_frequency, special_tokens=specials
        )
    elif spec.kind in ("bpe", "byte_level_bpe"):
        byte_level = spec.kind == "byte_level_bpe"
        tok = Tokenizer(models.BPE(unk_token=None if byte_level else unk))
        trainer = trainers.BpeTrainer(
            vocab_size=spec.vocab_size,
            min_frequency=spec.min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_level else [],
        )
    else:  # unigram
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=spec.vocab_size, special_tokens=specials, unk_token=unk)

    tok.normalizer = normalizers.Sequence(_normalizers(spec, normalizers.NFC()))
    if spec.pre_tokenizer == "whitespace":
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    elif spec.pre_tokenizer == "whitespace_punctuation":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
        )
    elif spec.pre_tokenizer == "byte_level":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace()

    # A real decoder, so decoded text keeps its spaces (text-generation appends decoded tokens).
    if spec.pre_tokenizer == "byte_level":
        tok.decoder = decoders.ByteLevel()
    elif spec.pre_tokenizer == "metaspace":
        tok.decoder = decoders.Metaspace()
    elif spec.kind == "wordpiece":
        tok.decoder = decoders.WordPiece(prefix="##")
    elif spec.kind == "bpe":
        tok.decoder = decoders.BPEDecoder()
    else:
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # words joined by single spaces

    # The Rust trainer's progress output writes to file descriptor 1 (blank lines without a terminal),
    # which no Python redirect catches; stdout is data (`nlpipe eval ... | jq`), so it stays off.
    trainer.show_progress = False
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    _add_line_break_token(tok, spec)
    if spec.pre_tokenizer == "byte_level":
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
    _set_template(tok, spec)
    return tok


def _normalizers(spec: TokenizerSpec, unicode_form: Any) -> list[Any]:
    """The spec's normalizer chain: Unicode form, then lowercasing and digit mapping if asked."""
    from tokenizers import Regex, normalizers

    chain = [unicode_form]
    if spec.lowercase:
        chain.append(normalizers.Lowercase())
    if spec.normalize_digits:
        chain.append(normalizers.Replace(Regex("[0-9]"), "0"))
    if spec.line_break_token:  # last, so lowercasing cannot change the token; the space starts the next word
        chain.append(normalizers.Replace(Regex(LINE_BREAK), spec.line_break_token + " "))
    return chain


def _set_template(tok: Any, spec: TokenizerSpec) -> None:
    from tokenizers import processors

    st = spec.special_tokens
    if spec.template == "none":
        return
    pairs = {
        "bert": ("cls_token", "sep_token", "{cls}:0 $A:0 {sep}:0", "{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1"),
        "eos": (None, "eos_token", "$A:0 {sep}:0", "$A:0 {sep}:0 $B:1 {sep}:1"),
        "bos_eos": ("bos_token", "eos_token", "{cls}:0 $A:0 {sep}:0", "{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1"),
    }
    first_role, last_role, single, pair = pairs[spec.template]
    for role in (first_role, last_role):
        if role and role not in st:
            raise NlpipeError(f"tokenizer spec '{spec.name}': template '{spec.template}' needs special_tokens.{role}")
    cls = st.get(first_role) if first_role else None
    sep = st[last_role]
    specials = [(t, tok.token_to_id(t)) for t in dict.fromkeys(x for x in (cls, sep) if x)]
    fmt = {"cls": cls or "", "sep": sep}
    tok.post_processor = processors.TemplateProcessing(
        single=single.format(**fmt), pair=pair.format(**fmt), special_tokens=specials
    )


def _train_sentencepiece(spec: TokenizerSpec, texts: list[str]):  # -> tokenizers.Tokenizer
    import sentencepiece as spm

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    st = spec.special_tokens
    if spec.normalize_digits:  # train on the text the tokenizer will see
        texts = [re.sub("[0-9]", "0", text) for text in texts]
    if spec.line_break_token:
        texts = [re.sub(LINE_BREAK, spec.line_break_token + " ", text) for text in texts]
    model = io.BytesIO()
    user_symbols = [t for r, t in st.items() if r not in ("unk_token",)]
    user_symbols += [spec.line_break_token] if spec.line_break_token else []
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([t for t in texts if t.strip()]),
        model_writer=model,
        vocab_size=spec.vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        unk_piece=st.get("unk_token", "<unk>"),
        user_defined_symbols=user_symbols,
        normalization_rule_name="nmt_nfkc_cf" if spec.lowercase else "nmt_nfkc",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    # Rebuild the trained model as a `tokenizers` Unigram with the same pieces and scores (no protobuf needed).
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=processor.unk_id()))
    tok.normalizer = normalizers.Sequence(_normalizers(spec, normalizers.NFKC()))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    _add_line_break_token(tok, spec)
    _set_template(tok, spec)
    return tok


SPEC_FILE = "nlpipe_tokenizer_spec.json"
"""The spec a tokenizer was trained from; in an output folder it also says "nlpipe wrote this folder"."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", SPEC_FILE)
"""What saving a trained tokenizer writes into a folder."""


def check_tokenizer_output(output_dir: str | Path) -> None:
    """Before training a tokenizer into `output_dir`: never into a run folder, never over files nlpipe did not write.

    Raises:
        NlpipeError: `output_dir` is (or lies in) a run folder, or holds tokenizer files of something else.
    """
    from .run_folder import check_output_folder

    check_output_folder(output_dir, "--output-dir", TOKENIZER_FILES, marker=SPEC_FILE)


def train_tokenizer(spec: TokenizerSpec, texts: Iterable[str], output_dir: str | Path | None = None):
    """Train (or reuse from the cache) a tokenizer on `texts` and return a `PreTrainedTokenizerFast`.

    The result is saved in the cache and, when `output_dir` is given, also there.

    Raises:
        NlpipeError: when there is no training text, the spec is inconsistent, or `output_dir` may not be
        written (see `check_tokenizer_output`).
    """
    from transformers import PreTrainedTokenizerFast

    if output_dir is not None:
        check_tokenizer_output(output_dir)
    texts = [t for t in texts]
    if not any(t.strip() for t in texts):
        raise NlpipeError(f"tokenizer '{spec.name}': no training text (is the training split empty?)")
    key = _fingerprint(spec, texts)
    cached = cache_dir() / "tokenizers" / f"{spec.name}-{key}"
    if not (cached / "tokenizer.json").is_file():
        backend = _build_backend(spec, texts)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, model_max_length=spec.model_max_length, **spec.special_tokens
        )
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".tmp-"))
        tokenizer.save_pretrained(tmp)
        (tmp / SPEC_FILE).write_text(json.dumps(dataclasses.asdict(spec), indent=2))
        try:
            os.replace(tmp, cached)
        except OSError:  # another process wrote the same key first
            shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(cached))
    if output_dir is not None:
        tokenizer.save_pretrained(str(output_dir))
        (Path(output_dir) / SPEC_FILE).write_text(json.dumps(dataclasses.asdict(spec), indent=2))
    return tokenizer
