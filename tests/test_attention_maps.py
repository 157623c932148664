"""`nlpipe attention`: cross-attention maps of RNN seq2seq models, layer/head maps of Transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    BertConfig,
    BertForTokenClassification,
    MarianConfig,
    MarianMTModel,
    PreTrainedTokenizerFast,
)

from nlpipe.attention_maps import draw_attention, draw_attention_for_run, seq2seq_cross_attention
from nlpipe.errors import NlpipeError
from nlpipe.models.rnn_seq2seq.modeling_rnn_seq2seq import (
    RnnSeq2SeqConfig,
    RnnSeq2SeqForConditionalGeneration,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SENTENCE = "the animal didn't cross the street because it was tired ."
WORDS = "<pad> <s> </s> <unk> the animal didn't cross street because it was tired .".split()


def _tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def _rnn(attention: str = "additive", mode: str = "soft", heads: int = 2) -> RnnSeq2SeqForConditionalGeneration:
    torch.manual_seed(0)
    config = RnnSeq2SeqConfig(vocab_size=len(WORDS), embedding_dim=16, hidden_size=16, attention=attention,
                              attention_mode=mode, attention_heads=heads, hard_attention_k=2)
    return RnnSeq2SeqForConditionalGeneration(config).eval()


def _assert_png(path: Path) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    height, width = matplotlib.image.imread(path).shape[:2]
    assert height > 150 and width > 150


@pytest.fixture(scope="module")
def rnn_run(tmp_path_factory) -> Path:
    """A saved RNN seq2seq + tokenizer folder (what a translation run folder holds)."""
    folder = tmp_path_factory.mktemp("rnn-run")
    _rnn("multihead").save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder


def test_rnn_cross_attention_weights_match_generation():
    model, tok = _rnn("additive", heads=1), _tokenizer()
    found = seq2seq_cross_attention(model, tok, SENTENCE, max_new_tokens=6)
    generated = model.generate(**tok(SENTENCE, return_tensors="pt"), max_new_tokens=6, num_beams=1, do_sample=False)
    steps = generated.shape[1] - 1
    assert found["weights"].shape == (1, steps, len(SENTENCE.split()))
    assert found["source"] == SENTENCE.split()
    assert found["target"] == tok.convert_ids_to_tokens(generated[0, 1:].tolist())
    np.testing.assert_allclose(found["weights"].sum(-1), 1.0, atol=1e-5)
    # Independent recomputation of the first step: one decoder step from the start token.
    first = model(**tok(SENTENCE, return_tensors="pt"), decoder_input_ids=generated[:, :1], output_attentions=True)
    np.testing.assert_allclose(found["weights"][:, 0], first.cross_attentions[0][0, :, 0].detach().numpy(), atol=1e-6)


def test_hard_attention_keeps_k_positions(tmp_path):
    model, tok = _rnn("dot", mode="hard", heads=1), _tokenizer()
    found = seq2seq_cross_attention(model, tok, SENTENCE, max_new_tokens=5)
    assert ((found["weights"] > 0).sum(-1) == 2).all()  # hard_attention_k=2 kept per step
    paths = draw_attention(model, tok, SENTENCE, tmp_path / "hard.png")
    _assert_png(paths[0])


def test_cli_draws_rnn_multihead_map(rnn_run, tmp_path):
    from typer.testing import CliRunner

    from nlpipe.cli import app

    out = tmp_path / "att.png"
    result = CliRunner().invoke(app, ["attention", str(rnn_run), SENTENCE, "--out", str(out)])
    assert result.exit_code == 0, result.output
    _assert_png(out)
    single = draw_attention(_rnn("additive", heads=1), _tokenizer(), SENTENCE, tmp_path / "single.png")[0]
    # One panel per head + the mean makes the multi-head picture wider than the single-head one.
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[1] > 2 * matplotlib.image.imread(single).shape[1]


def test_transformer_encoder_maps_and_focus(tmp_path):
    config = BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, attn_implementation="eager")
    model = BertForTokenClassification(config).eval()
    paths = draw_attention(model, _tokenizer(), SENTENCE, tmp_path / "bert.png", focus="it")
    assert [p.name for p in paths] == ["bert.png", "bert-focus.png"]
    for path in paths:
        _assert_png(path)
    with pytest.raises(NlpipeError, match="--focus dog: not a token"):
        draw_attention(model, _tokenizer(), SENTENCE, tmp_path / "x.png", focus="dog")


def test_transformer_seq2seq_folder(tmp_path):
    config = MarianConfig(vocab_size=len(WORDS), d_model=16, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                          decoder_ffn_dim=32, pad_token_id=0, eos_token_id=2, decoder_start_token_id=1,
                          bos_token_id=1, max_position_embeddings=64)
    folder = tmp_path / "marian"
    MarianMTModel(config).save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    paths = draw_attention_for_run(folder, SENTENCE, tmp_path / "m.png", focus="it")
    assert [p.name for p in paths] == ["m.png", "m-cross.png", "m-focus.png"]
    for path in paths:
        _assert_png(path)


def test_errors(tmp_path, rnn_run):
    with pytest.raises(NlpipeError, match="config.json' is missing"):
        draw_attention_for_run(tmp_path, SENTENCE)
    with pytest.raises(NlpipeError, match="sentence is empty"):
        draw_attention_for_run(rnn_run, "  ")
    with pytest.raises(NlpipeError, match="no cross-attention"):
        draw_attention(_rnn("none", heads=1), _tokenizer(), SENTENCE, tmp_path / "n.png")


def test_layer_head_grid_stays_readable_for_a_big_transformer(tmp_path):
    """4 layers × 4 heads over 60 tokens: a bounded image, the title above the top row, one colour bar."""
    from nlpipe.attention_maps import MAX_FIGURE_INCHES, layer_head_figure, plot_layer_head_grid

    rng = np.random.default_rng(0)
    tokens = [f"w{i}" for i in range(60)]
    layers = [rng.dirichlet(np.ones(60), size=(4, 60)) for _ in range(4)]  # (heads, T, T), rows sum to 1
    fig = layer_head_figure(layers, tokens, tokens, title="self-attention per layer and head")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels, colorbars = fig.axes[:16], fig.axes[16:]
    assert len(colorbars) == 1 and colorbars[0].get_ylabel() == "attention weight"
    title_bottom = fig._suptitle.get_window_extent(renderer).y0
    for ax in panels[:4]:  # the top row, head titles included
        assert ax.get_tightbbox(renderer).y1 <= title_bottom + 1, "the title overlaps the top row"
    import matplotlib.pyplot as plt

    plt.close(fig)
    path = plot_layer_head_grid(layers, tokens, tokens, tmp_path / "grid.png", title="t")
    import matplotlib.image

    height, width = matplotlib.image.imread(path).shape[:2]
    assert width <= MAX_FIGURE_INCHES[0] * 90 + 1 and height <= MAX_FIGURE_INCHES[1] * 90 + 1, (width, height)
    assert width >= 600 and height >= 500  # still big enough to read
