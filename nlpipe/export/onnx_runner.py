"""Run an nlpipe ONNX export with onnxruntime, numpy and tokenizers only (no torch, no transformers, no nlpipe).

This file is copied into every folder written by ``nlpipe export RUN_DIR --format onnx``. The folder holds
the ONNX graphs, ``tokenizer.json`` and ``onnx_config.json`` (which family, the graphs' inputs, labels, special
token ids, decoding settings), and this runner, which gives the same outputs as ``transformers.pipeline()`` on
the original run folder:

- token classification (``rnn_tagger``, ``bert``): entities like ``pipeline("ner", aggregation_strategy="simple")``
  — ``entity_group``, ``score``, ``word``, ``start``, ``end``. A CRF tagger's graph gives emission scores; the
  Viterbi path and the CRF marginals (the scores) are computed here in numpy.
- seq2seq (``rnn_seq2seq``): the encoder graph runs once; the decoder-step graph takes and returns the
  recurrent state, so each generated token costs one step. Greedy search and beam search.
- causal LM (``rnn_lm``): one graph that reads tokens from a state and returns the next state; greedy
  continuation of a prompt.

Usage::

    python onnx_runner.py EXPORT_DIR "EU rejects German call to boycott British lamb ."

    from onnx_runner import load
    model = load("EXPORT_DIR")          # an OnnxTagger, OnnxSeq2Seq or OnnxCausalLM
    model(["a sentence", "another one"])  # entities / generated texts, one per input

Only ``numpy``, ``onnxruntime`` and ``tokenizers`` are imported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from tokenizers import Tokenizer

CONFIG_NAME = "onnx_config.json"


def _session(path: Path, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _tokenizer(folder: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    # The pipelines call the tokenizer without truncation or padding: undo what tokenizer.json stores.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    top = values.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis=axis) + np.log(np.exp(values - top).sum(axis=axis))


class LinearChainCrf:
    """Viterbi decoding and marginals of nlpipe's CRF, from its constrained scores (forbidden ones already -1e4)."""

    def __init__(self, transitions: list, start: list, end: list) -> None:
        self.transitions = np.asarray(transitions, dtype=np.float32)  # (K_from, K_to)
        self.start = np.asarray(start, dtype=np.float32)  # (K,)
        self.end = np.asarray(end, dtype=np.float32)  # (K,)

    def viterbi(self, emissions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Best paths (B, T) of right-padded emissions (B, T, K) with `lengths` (B,), as
        `ConditionalRandomField.viterbi_decode` (0 at padding); vectorised over the batch."""
        batch, steps, tags = emissions.shape
        valid = np.arange(steps)[None, :] < lengths[:, None]  # (B, T)
        score = self.start + emissions[:, 0]  # (B, K)
        identity = np.broadcast_to(np.arange(tags), (batch, tags))
        backpointers = []
        for t in range(1, steps):
            candidates = score[:, :, None] + self.transitions  # (B, K_from, K_to)
            step_valid = valid[:, t, None]
            backpointers.append(np.where(step_valid, candidates.argmax(axis=1), identity))
            score = np.where(step_valid, candidates.max(axis=1) + emissions[:, t], score)
        tag = (score + self.end).argmax(axis=1)  # (B,)
        path = [tag]
        for pointers in reversed(backpointers):
            tag = np.take_along_axis(pointers, tag[:, None], axis=1)[:, 0]
            path.append(tag)
        return np.where(valid, np.stack(path[::-1], axis=1), 0)

    def marginals(self, emissions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """P(tag at t) under the CRF, (B, T, K) (zeros at padding), by forward-backward in float64."""
        emissions = emissions.astype(np.float64)
        transitions = self.transitions.astype(np.float64)
        batch, steps, _ = emissions.shape
        valid = np.arange(steps)[None, :] < lengths[:, None]  # (B, T)
        alpha = np.empty_like(emissions)
        beta = np.empty_like(emissions)
        alpha[:, 0] = self.start + emissions[:, 0]
        final = alpha[:, 0]  # alpha at each row's last real position
        for t in range(1, steps):
            alpha[:, t] = _logsumexp(alpha[:, t - 1, :, None] + transitions, axis=1) + emissions[:, t]
            final = np.where(valid[:, t, None], alpha[:, t], final)
        beta[:, steps - 1] = self.end
        for t in range(steps - 2, -1, -1):
            inner = _logsumexp(transitions + (emissions[:, t + 1] + beta[:, t + 1])[:, None, :], axis=2)
            beta[:, t] = np.where(valid[:, t + 1, None], inner, self.end)  # a row's last position ends it
        log_z = _logsumexp(final + self.end, axis=1)  # (B,)
        return np.exp(alpha + beta - log_z[:, None, None]) * valid[..., None]

    def token_scores(self, emissions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Per-token label probabilities (B, T, K) whose argmax is the Viterbi path, as the ``ner`` pipeline scores.

        The marginals, except that where the Viterbi label is not the most probable its value is swapped with
        the top one (`RnnForTokenClassification.decode_scores`).
        """
        scores = np.maximum(self.marginals(emissions, lengths), 1e-12)  # (B, T, K)
        path = self.viterbi(emissions, lengths)[..., None]  # (B, T, 1)
        top = scores.argmax(axis=-1)[..., None]
        top_value = np.take_along_axis(scores, top, axis=-1)
        path_value = np.take_along_axis(scores, path, axis=-1)
        np.put_along_axis(scores, top, path_value, axis=-1)
        np.put_along_axis(scores, path, top_value, axis=-1)
        return scores / scores.sum(axis=-1, keepdims=True)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _bio(label: str) -> tuple[str, str]:
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


class OnnxTagger:
    """Named entities of texts, like ``pipeline("ner", aggregation_strategy="simple")``."""

    def __init__(self, folder: Path, config: dict[str, Any], threads: int | None = None) -> None:
        self.config = config
        self.session = _session(folder / config["graphs"]["model"], threads)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = _tokenizer(folder)
        self.id2label = {int(k): v for k, v in config["id2label"].items()}
        crf = config.get("crf")
        self.crf = None if crf is None else LinearChainCrf(crf["transitions"], crf["start"], crf["end"])
        chars = config.get("char_vocab")
        self.char_to_id = None if chars is None else {c: i + 2 for i, c in enumerate(chars)}
        self.max_word_chars = int(config.get("max_word_chars") or 0)
        self.words_from_text = bool(config.get("words_from_text", True))

    def _char_row(self, word: str) -> list[int]:
        """Character ids of one token (as nlpipe's `encode_words_to_char_ids`: long words keep head and tail)."""
        limit = self.max_word_chars
        if len(word) > limit:
            head = limit // 2
            word = word[:head] + word[len(word) - (limit - head) :]
        return [self.char_to_id.get(char, 1) for char in word] or [1]

    def emissions(self, texts: list[str]) -> tuple[list[Any], np.ndarray]:
        """Encodings of `texts` and the graph's scores (B, T, K) for them, right-padded together."""
        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        pad = int(self.config["pad_token_id"])
        input_ids = np.full((len(texts), width), pad, dtype=np.int64)
        attention_mask = np.zeros((len(texts), width), dtype=np.int64)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        rows = []
        for row, (text, encoding) in enumerate(zip(texts, encodings, strict=True)):
            n = len(encoding.ids)
            input_ids[row, :n] = encoding.ids
            attention_mask[row, :n] = 1
            if self.char_to_id is not None:
                rows.extend((row, position, self._char_row(text[start:end])) for position, ((start, end), special)
                            in enumerate(zip(encoding.offsets, encoding.special_tokens_mask, strict=True))
                            if not special)
        if self.char_to_id is not None:
            # Only as wide as the batch's longest word: the graph's char axis is dynamic, padding costs LSTM steps.
            char_width = max((len(chars) for _, _, chars in rows), default=1)
            char_ids = np.zeros((len(texts), width, char_width), dtype=np.int64)
            for row, position, chars in rows:
                char_ids[row, position, : len(chars)] = chars
            feeds["char_ids"] = char_ids
        self.last_char_ids = feeds.get("char_ids")  # kept for the exporter's parity check
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (logits,) = self.session.run(["logits"], feeds)
        return encodings, logits

    def __call__(self, texts: str | list[str], batch_size: int = 32) -> list[dict] | list[list[dict]]:
        """Entities of one text (a list of dicts) or of each text of a list (a list of lists)."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        # Batches of similar lengths (restored to the input order below): less padding to run through the RNNs.
        # Blank texts have no tokens and no entities (as the pipeline answers).
        order = sorted((i for i, text in enumerate(texts) if text.strip()), key=lambda i: len(texts[i]))
        results: list = [[] for _ in texts]
        for first in range(0, len(order), batch_size):
            indices = order[first : first + batch_size]
            chunk = [texts[i] for i in indices]
            encodings, logits = self.emissions(chunk)
            lengths = np.asarray([len(e.ids) for e in encodings])
            if self.crf is None:
                scores = _softmax(logits.astype(np.float32))
            else:
                scores = self.crf.token_scores(logits, lengths)  # the whole batch at once
            for row, (index, encoding) in enumerate(zip(indices, encodings, strict=True)):
                results[index] = self._entities(texts[index], encoding, scores[row, : lengths[row]])
        return results[0] if single else results

    def _join_tokens(self, text: str, group: list[dict]) -> str:
        """A group's word as the standard pipeline writes it: its tokens through the tokenizer's decoder, an
        unknown token replaced by the text it covers."""
        unk = self.config.get("unk_token_id")
        tokens = [text[t["start"]:t["end"]] if unk is not None and self.tokenizer.token_to_id(t["token"]) == unk
                  else t["token"] for t in group]
        decoder = self.tokenizer.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)

    def _entities(self, text: str, encoding: Any, scores: np.ndarray) -> list[dict]:
        tokens = []
        for position, (start, end) in enumerate(encoding.offsets):
            if encoding.special_tokens_mask[position]:
                continue
            label_id = int(scores[position].argmax())
            tokens.append({"entity": self.id2label[label_id], "score": float(scores[position, label_id]),
                           "token": encoding.tokens[position], "start": start, "end": end})
        groups: list[list[dict]] = []
        for token in tokens:
            bi, tag = _bio(token["entity"])
            if groups and bi != "B" and _bio(groups[-1][-1]["entity"])[1] == tag:
                groups[-1].append(token)
            else:
                groups.append([token])
        entities = []
        for group in groups:
            label = group[0]["entity"].split("-", 1)[-1]
            if label == "O" or group[0]["entity"] == "O":
                continue
            start, end = group[0]["start"], group[-1]["end"]
            word = text[start:end] if self.words_from_text else self._join_tokens(text, group)
            entities.append({"entity_group": label, "score": float(np.mean([t["score"] for t in group])),
                             "word": word, "start": start, "end": end})
        return entities


def _ngram_banned(tokens: list[int], size: int) -> set[int]:
    """Tokens that would repeat an n-gram of `size` already in `tokens` (``no_repeat_ngram_size``)."""
    if size <= 0 or len(tokens) + 1 < size:
        return set()
    prefix = tuple(tokens[len(tokens) - size + 1 :])
    return {tokens[i + size - 1] for i in range(len(tokens) - size + 1) if tuple(tokens[i : i + size - 1]) == prefix}


MEMORY_NAMES = ("memory_keys", "memory_values", "attention_mask", "input_ids")  # batch on axis 0


class _BeamSearch:
    """One text's beam search as transformers 5 runs it: each step keeps the top 2·beams continuations; an end
    token among the top `beams` (or the last allowed step) finishes a hypothesis, scored sum(log p) / length **
    length_penalty; the search stops when `beams` hypotheses are finished and either ``early_stopping`` is set
    or no running beam can still beat the worst of them."""

    def __init__(self, config: dict[str, Any], generation: dict[str, Any], beams: int) -> None:
        self.beams, self.eos = beams, int(config["eos_token_id"])
        self.length_penalty = float(generation.get("length_penalty", 1.0) or 1.0)
        self.early_stopping = bool(generation.get("early_stopping", False))
        self.no_repeat = int(generation.get("no_repeat_ngram_size") or 0)
        self.sequences = [[int(config["decoder_start_token_id"])] for _ in range(beams)]
        self.scores = np.full(beams, -1e9, dtype=np.float64)
        self.scores[0] = 0.0  # all beams start identical: only the first one may expand at step 1
        self.finished: list[tuple[float, list[int]]] = []
        self.done = False

    def ban_repeats(self, log_probs: np.ndarray) -> None:
        """``no_repeat_ngram_size``: no beam may repeat an n-gram it already holds."""
        for row, sequence in enumerate(self.sequences):
            for banned in _ngram_banned(sequence, self.no_repeat):
                log_probs[row, banned] = -np.inf

    def advance(self, candidates: np.ndarray, candidate_scores: np.ndarray, vocab: int, last: bool) -> np.ndarray:
        """Take one step's best 2·beams continuations (flat indices beam·V + token, best first, and their summed
        log-probabilities); returns each new beam's origin row (0 … beams − 1)."""
        beams = self.beams
        next_sequences, next_scores, origins = [], [], []
        for rank, (flat, score) in enumerate(zip(candidates.tolist(), candidate_scores.tolist(), strict=True)):
            origin, token = divmod(flat, vocab)
            if token == self.eos or last:
                # Among the top `beams` candidates, an end (or reaching max_new_tokens) finishes a hypothesis;
                # the other candidates are only spares for the running beams.
                if rank < beams:
                    length = len(self.sequences[origin])  # generated tokens incl. this one, as transformers counts
                    self.finished.append((score / (length ** self.length_penalty), self.sequences[origin][1:] + [token]))
                continue
            next_sequences.append(self.sequences[origin] + [token])
            next_scores.append(score)
            origins.append(origin)
            if len(next_sequences) == beams:
                break
        self.finished.sort(key=lambda item: -item[0])
        self.finished = self.finished[:beams]
        if last or len(next_sequences) < beams:
            self.done = True
            return np.arange(beams)
        self.sequences, self.scores = next_sequences, np.asarray(next_scores)
        if len(self.finished) == beams:
            best_possible = self.scores.max() / ((len(self.sequences[0]) - 1) ** self.length_penalty)
            self.done = self.early_stopping or self.finished[-1][0] >= best_possible
        return np.asarray(origins)

    def best(self) -> list[int]:
        return max(self.finished, key=lambda item: item[0])[1]


class OnnxSeq2Seq:
    """Translation / summarization: the encoder graph once, then one decoder-step graph call per token."""

    def __init__(self, folder: Path, config: dict[str, Any], threads: int | None = None) -> None:
        self.config = config
        self.encoder = _session(folder / config["graphs"]["encoder"], threads)
        self.decoder = _session(folder / config["graphs"]["decoder_step"], threads)
        self.state_names = list(config["state_names"])
        self.state_shapes = dict(config["state_shapes"])  # "batch" marks the batch axis (beams are reordered on it)
        self.memory_names = list(config.get("memory_names", MEMORY_NAMES))  # batch on axis 0
        self.decoder_inputs = {i.name for i in self.decoder.get_inputs()}
        self.tokenizer = _tokenizer(folder)
        self.generation = dict(config.get("generation", {}))

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Encoder outputs and the decoder's initial state for right-padded `texts`."""
        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        input_ids = np.full((len(texts), width), int(self.config["pad_token_id"]), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        names = [o.name for o in self.encoder.get_outputs()]
        outputs = dict(zip(names, self.encoder.run(names, {"input_ids": input_ids, "attention_mask": mask}),
                           strict=True))
        outputs["input_ids"], outputs["attention_mask"] = input_ids, mask
        return outputs

    def initial_state(self, memory: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The decoder state before the first token: from the encoder graph (RNN: tanh(W·final encoder state)),
        or empty self-attention caches (Transformer)."""
        batch = len(memory["attention_mask"])
        return {name: memory[f"initial_{name}"] if f"initial_{name}" in memory else
                np.zeros([batch if d == "batch" else int(d) for d in self.state_shapes[name]], np.float32)
                for name in self.state_names}

    def step(self, tokens: np.ndarray, memory: dict[str, np.ndarray], state: dict[str, np.ndarray]):
        """One decoder step: (B,) previous tokens → (B, V) log-probabilities and the next state."""
        feeds = {"decoder_input_ids": tokens.reshape(-1, 1).astype(np.int64), **state}
        feeds.update({k: memory[k] for k in self.memory_names if k in self.decoder_inputs})
        outputs = self.decoder.run(["logits", *[f"next_{n}" for n in self.state_names]], feeds)
        logits = outputs[0].astype(np.float32)
        log_probs = logits - _logsumexp(logits, axis=-1)[:, None]
        return log_probs, dict(zip(self.state_names, outputs[1:], strict=True))

    def generate_ids(self, texts: list[str], num_beams: int | None = None, max_new_tokens: int | None = None,
                     min_new_tokens: int | None = None, batch_size: int = 32) -> list[list[int]]:
        """Generated token ids per text (decoder start token excluded). Texts are decoded `batch_size` at a time:
        one encoder call and one decoder-step call per token for the whole batch (beams of all texts together)."""
        settings = self.generation
        num_beams = int(num_beams or settings.get("num_beams") or 1)
        limits = (int(max_new_tokens or settings.get("max_new_tokens") or 64),
                  int(min_new_tokens if min_new_tokens is not None else settings.get("min_new_tokens") or 0))
        # Batches of similar lengths (restored to the input order below): less padding through the encoder.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list[list[int]] = [[] for _ in texts]
        for first in range(0, len(order), max(1, batch_size)):
            indices = order[first : first + max(1, batch_size)]
            memory = self.encode([texts[i] for i in indices])
            state = self.initial_state(memory)
            if num_beams == 1:
                decoded = self._greedy(memory, state, *limits)
            else:
                decoded = self._beam(memory, state, *limits, num_beams)
            for i, ids in zip(indices, decoded, strict=True):
                results[i] = ids
        return results

    def _restrict(self, log_probs: np.ndarray, generated: int, max_new: int, min_new: int) -> np.ndarray:
        """``min_new_tokens`` (no end before it) and ``forced_eos_token_id`` (the end at the last allowed step)."""
        eos = int(self.config["eos_token_id"])
        if generated < min_new:
            log_probs[:, eos] = -np.inf
        forced = self.generation.get("forced_eos_token_id")
        if forced is not None and generated == max_new - 1:
            log_probs[:] = -np.inf
            log_probs[:, int(forced)] = 0.0  # as transformers' ForcedEOSTokenLogitsProcessor
        return log_probs

    def _greedy(self, memory: dict, state: dict, max_new: int, min_new: int) -> list[list[int]]:
        eos, start = int(self.config["eos_token_id"]), int(self.config["decoder_start_token_id"])
        no_repeat = int(self.generation.get("no_repeat_ngram_size") or 0)
        batch = len(memory["attention_mask"])
        sequences = [[start] for _ in range(batch)]
        running = np.ones(batch, dtype=bool)
        previous = np.full(batch, start, dtype=np.int64)
        for generated in range(max_new):
            log_probs, state = self.step(previous, memory, state)
            if no_repeat:
                for row in np.flatnonzero(running):
                    for banned in _ngram_banned(sequences[row], no_repeat):
                        log_probs[row, banned] = -np.inf
            previous = self._restrict(log_probs, generated, max_new, min_new).argmax(axis=-1)
            for row in np.flatnonzero(running):  # finished rows keep decoding (one batched call); ignored
                sequences[row].append(int(previous[row]))
            running &= previous != eos
            if not running.any():
                break
        return [sequence[1:] for sequence in sequences]

    def _beam(self, memory: dict, state: dict, max_new: int, min_new: int, beams: int) -> list[list[int]]:
        """Beam search for every text of the batch at once (rows text·beams … text·beams + beams − 1), one
        decoder call per step; each text's bookkeeping is a `_BeamSearch`."""
        batch = len(memory["attention_mask"])
        memory = {k: np.repeat(v, beams, axis=0) for k, v in memory.items() if k in self.memory_names}
        axis = {name: self.state_shapes[name].index("batch") for name in self.state_names}
        state = {k: np.repeat(v, beams, axis=axis[k]) for k, v in state.items()}
        searches = [_BeamSearch(self.config, self.generation, beams) for _ in range(batch)]
        previous = np.full(batch * beams, int(self.config["decoder_start_token_id"]), dtype=np.int64)
        for step in range(max_new):
            log_probs, state = self.step(previous, memory, state)
            log_probs = log_probs.astype(np.float64)
            for text, search in enumerate(searches):  # processors in transformers' order: repeats, then lengths
                if not search.done:
                    search.ban_repeats(log_probs[text * beams : (text + 1) * beams])
            log_probs = self._restrict(log_probs, step, max_new, min_new)
            # Each text's best 2·beams continuations at once: partial selection, then sorted by score (ties by
            # index, as a stable sort of all beams·V scores would order them).
            vocab = log_probs.shape[1]
            scores = np.stack([search.scores for search in searches])
            total = (scores[:, :, None] + log_probs.reshape(batch, beams, vocab)).reshape(batch, beams * vocab)
            top = np.argpartition(-total, 2 * beams - 1, axis=1)[:, : 2 * beams]
            top_scores = np.take_along_axis(total, top, axis=1)
            order = np.lexsort((top, -top_scores), axis=-1)
            top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
            origins = np.arange(batch * beams)
            for text, search in enumerate(searches):
                rows = slice(text * beams, (text + 1) * beams)
                if not search.done:
                    origins[rows] = text * beams + search.advance(top[text], top_scores[text], vocab,
                                                                  last=step == max_new - 1)
                    previous[rows] = [sequence[-1] for sequence in search.sequences]
            if all(search.done for search in searches):
                break
            state = {k: np.take(v, origins, axis=axis[k]) for k, v in state.items()}
        return [search.best() for search in searches]

    def __call__(self, texts: str | list[str], **kwargs: Any) -> list[str] | str:
        """Generated text per input text (special tokens removed), like the ``translation`` pipeline."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        outputs = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in self.generate_ids(texts, **kwargs)]
        return outputs[0] if single else outputs


class OnnxCausalLM:
    """Continue a prompt with a recurrent LM graph that takes and returns the state."""

    def __init__(self, folder: Path, config: dict[str, Any], threads: int | None = None) -> None:
        self.config = config
        self.session = _session(folder / config["graphs"]["model"], threads)
        self.state_names = list(config["state_names"])
        # Per state tensor its starting shape, "batch" standing for the batch size: an RNN's (layers, batch, H)
        # zeros, or a Transformer's empty (batch, heads, 0, head_dim) key/value caches.
        self.state_shapes = dict(config["state_shapes"])
        self.tokenizer = _tokenizer(folder)
        self.generation = dict(config.get("generation", {}))

    def initial_state(self, batch: int = 1) -> dict[str, np.ndarray]:
        """The state before the first token."""
        return {name: np.zeros([batch if d == "batch" else int(d) for d in self.state_shapes[name]], np.float32)
                for name in self.state_names}

    def step(self, input_ids: np.ndarray, state: dict[str, np.ndarray]):
        """Logits (B, T, V) for `input_ids` (B, T) read from `state`, and the state after them."""
        outputs = self.session.run(["logits", *[f"next_{n}" for n in self.state_names]],
                                   {"input_ids": input_ids.astype(np.int64), **state})
        return outputs[0], dict(zip(self.state_names, outputs[1:], strict=True))

    def generate_ids(self, prompt: str, max_new_tokens: int | None = None, do_sample: bool = False,
                     seed: int | None = None) -> list[int]:
        """Continuation ids of one prompt (prompt ids included, as `generate()` returns them): greedy, or with
        ``do_sample`` drawn from the top ``top_k`` tokens at ``temperature`` (the run's generation settings)."""
        max_new = int(max_new_tokens or self.generation.get("max_new_tokens") or 40)
        rng = np.random.default_rng(seed)
        top_k = int(self.generation.get("top_k") or 0)
        temperature = float(self.generation.get("temperature") or 1.0)
        eos = self.config.get("eos_token_id")
        ids = self.tokenizer.encode(prompt).ids
        logits, state = self.step(np.asarray([ids]), self.initial_state())
        tokens = list(ids)
        for _ in range(max_new):
            scores = logits[0, -1].astype(np.float64)
            if do_sample:
                scores = scores / temperature
                if 0 < top_k < len(scores):
                    scores[scores < np.partition(scores, -top_k)[-top_k]] = -np.inf
                token = int(rng.choice(len(scores), p=_softmax(scores)))
            else:
                token = int(scores.argmax())
            tokens.append(token)
            if eos is not None and token == int(eos):
                break
            logits, state = self.step(np.asarray([[token]]), state)
        return tokens

    def __call__(self, prompts: str | list[str], **kwargs: Any) -> list[str] | str:
        """Prompt plus greedy continuation per prompt, like ``pipeline("text-generation")``'s generated_text."""
        single = isinstance(prompts, str)
        prompts = [prompts] if single else list(prompts)
        outputs = [self.tokenizer.decode(self.generate_ids(p, **kwargs), skip_special_tokens=True) for p in prompts]
        return outputs[0] if single else outputs


RUNNERS = {"token-classification": OnnxTagger, "seq2seq": OnnxSeq2Seq, "causal-lm": OnnxCausalLM}


def load(folder: str | Path, threads: int | None = None) -> OnnxTagger | OnnxSeq2Seq | OnnxCausalLM:
    """Open an exported folder; `threads` sets onnxruntime's intra-op threads (default: all cores)."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    return RUNNERS[config["kind"]](folder, config, threads)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python onnx_runner.py EXPORT_DIR TEXT [TEXT ...]")
    print(json.dumps(load(sys.argv[1])(sys.argv[2:]), ensure_ascii=False, indent=1))
