"""Pictures of what a model attends to, for ``nlpipe attention RUN_DIR "sentence"``.

- RNN seq2seq (``nlpipe_rnn_seq2seq``): the decoder's cross-attention over the source tokens. The
  model first writes its translation greedily; a second, teacher-forced forward pass over that
  output with ``output_attentions=True`` gives the weights ``(heads, T_target, S_source)``. Multi-head
  attention gets one panel per head plus their mean; the positions the model actually used are
  marked: the kept top-k positions in hard-attention mode, the arg-max position otherwise.
- Transformers (transformers' own BERT / GPT-2 / Marian classes): self-attention per layer and head
  (a grid: one row per layer, one column per head); for an encoder–decoder also the decoder's
  cross-attention. ``focus="it"`` adds one picture of what that token attends to in every layer
  (mean over heads) — the classic "The animal didn't cross the street because it was tired." view.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import NlpipeError

_TOKEN_MARKERS = ("Ġ", "▁")


def token_labels(tokenizer: Any, ids: list[int]) -> list[str]:
    """Readable labels for token ids: word-piece markers stripped, special tokens kept, duplicates left as is."""
    labels = []
    for token in tokenizer.convert_ids_to_tokens(ids):
        text = str(token)
        for marker in _TOKEN_MARKERS:
            text = text.replace(marker, "")
        labels.append(text or str(token))
    return labels


def load_model_for_attention(folder: str | Path) -> tuple[Any, Any]:
    """Load a saved model + tokenizer folder with eager attention (so attention weights are returned).

    Raises:
        NlpipeError: the folder is not a saved model with its tokenizer.
    """
    from .run_folder import check_run_folder, open_run

    checked = check_run_folder(folder, "attention", allow_bare_model=True)
    reason = _no_attention(checked.config)
    if reason:
        task = f"a {checked.recipe.task} run of {checked.recipe.model.get('type')}" if checked.recipe else "a model"
        raise NlpipeError(
            f"{folder}: {task}, {reason}; 'nlpipe attention' draws attention seq2seq runs (attention != none) and "
            "Transformer runs (bert, gpt2, marian, summarization-transformer) — give such a run folder"
        )
    try:
        # sdpa kernels return no weights; eager attention does.
        _, model, tokenizer = open_run(folder, "attention", checked=checked,
                                       model_kwargs={"attn_implementation": "eager"})
    except NlpipeError:
        _, model, tokenizer = open_run(folder, "attention", checked=checked)
    return model, tokenizer


def _no_attention(config: dict[str, Any]) -> str | None:
    """Why a saved model has no attention to draw (None when it has)."""
    model_type = config.get("model_type")
    if model_type in ("nlpipe_rnn_tagger", "nlpipe_rnn_lm"):
        return "a recurrent model without attention"
    if model_type == "nlpipe_rnn_seq2seq" and config.get("attention") == "none":
        return "a seq2seq model built without attention (attention: none)"
    return None


# --------------------------------------------------------------------------------------------- plotting


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cross_attention(
    weights: Any, source: list[str], target: list[str], path: str | Path, *, hard: bool = False, title: str = ""
) -> Path:
    """Heatmap(s) of cross-attention `weights` `(heads, T, S)`: one panel per head (+ the mean when heads > 1).

    Marks per target row the source positions used: non-zero weights when `hard`, the arg-max otherwise.
    """
    import numpy as np

    plt = _pyplot()
    weights = np.asarray(weights, dtype=float)
    heads = weights.shape[0]
    panels = [(f"head {h + 1}", weights[h]) for h in range(heads)] if heads > 1 else [("", weights[0])]
    if heads > 1:
        panels.append(("mean over heads", weights.mean(axis=0)))
    cell = 0.38
    width = max(3.0, cell * len(source) + 1.8)
    height = max(2.5, cell * len(target) + 1.6)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height), dpi=90, squeeze=False)
    for ax, (name, grid) in zip(axes[0], panels, strict=True):
        image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=max(float(grid.max()), 1e-6), aspect="auto")
        if hard:
            rows, cols = np.nonzero(grid > 0)
            label = "kept (hard)"
        else:
            rows, cols = np.arange(grid.shape[0]), grid.argmax(axis=1)
            label = "arg-max"
        ax.scatter(cols, rows, marker="s", s=60, facecolors="none", edgecolors="red", linewidths=1.2)
        ax.set_xticks(range(len(source)), source, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(target)), target, fontsize=8)
        ax.set_xlabel("source")
        ax.set_title(name, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    axes[0][0].set_ylabel("generated target")
    fig.suptitle(f"{title}\nred squares: {label} source position per target token".strip(), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


MAX_FIGURE_INCHES = (15.0, 12.0)
"""Largest layer × head grid (width, height) in inches, ~1350 × 1080 pixels at 90 dpi, whatever the model size."""
MAX_TICK_LABELS = 40
"""More tokens than this per axis: label every n-th token so the labels stay readable."""


def layer_head_figure(layers: list[Any], rows: list[str], cols: list[str], *, title: str = "") -> Any:
    """The matplotlib figure of `plot_layer_head_grid` (kept separate so its layout can be tested).

    One colour scale for every panel (a square-root scale, so heads with spread-out weights stay visible next
    to sharp ones) and one colour bar for it; the title sits above the grid (constrained layout), and the
    figure never grows past `MAX_FIGURE_INCHES`, however many layers, heads and tokens.
    """
    import numpy as np
    from matplotlib.colors import PowerNorm

    plt = _pyplot()
    grids = [np.asarray(grid, dtype=float) for grid in layers]
    n_layers, n_heads = len(grids), grids[0].shape[0]
    panel = min(3.0, max(1.6, 0.09 * max(len(rows), len(cols)) + 1.0))
    width = min(MAX_FIGURE_INCHES[0], panel * n_heads + 1.6)
    height = min(MAX_FIGURE_INCHES[1], panel * n_layers + (0.8 if title else 0.3))
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(width, height), dpi=90, squeeze=False, layout="constrained")
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=max(max(float(g.max()) for g in grids), 1e-6))
    fontsize = 6 if max(len(rows), len(cols)) <= 20 else 5
    row_step = max(1, -(-len(rows) // MAX_TICK_LABELS))
    col_step = max(1, -(-len(cols) // MAX_TICK_LABELS))
    image = None
    for layer, grid in enumerate(grids):
        for head in range(n_heads):
            ax = axes[layer][head]
            image = ax.imshow(grid[head], cmap="viridis", norm=norm, aspect="auto")
            last_row, first_col = layer == n_layers - 1, head == 0
            ax.set_xticks(range(0, len(cols), col_step), cols[::col_step] if last_row else [], rotation=90,
                          fontsize=fontsize)
            ax.set_yticks(range(0, len(rows), row_step), rows[::row_step] if first_col else [], fontsize=fontsize)
            if layer == 0:
                ax.set_title(f"head {head + 1}", fontsize=8)
            if first_col:
                ax.set_ylabel(f"layer {layer + 1}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_layer_head_grid(
    layers: list[Any], rows: list[str], cols: list[str], path: str | Path, *, title: str = ""
) -> Path:
    """A grid of heatmaps, one row per layer and one column per head; `layers[i]` is `(heads, len(rows), len(cols))`."""
    plt = _pyplot()
    fig = layer_head_figure(layers, rows, cols, title=title)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_focus(layers: list[Any], tokens: list[str], focus_index: int, path: str | Path, *, title: str = "") -> Path:
    """What token `focus_index` attends to in each layer (mean over heads): rows = layers, columns = tokens."""
    import numpy as np

    plt = _pyplot()
    grid = np.stack([np.asarray(layer, dtype=float)[:, focus_index, :].mean(axis=0) for layer in layers])  # (L, S)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.42 * len(tokens) + 1.5), 0.45 * len(layers) + 1.8), dpi=90)
    image = ax.imshow(grid, cmap="viridis", vmin=0.0, aspect="auto")
    ax.set_xticks(range(len(tokens)), tokens, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(layers)), [f"layer {i + 1}" for i in range(len(layers))], fontsize=8)
    ax.set_title(title or f"what '{tokens[focus_index]}' attends to (mean over heads)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------------------------- models


def _with_suffix(out: Path, suffix: str) -> Path:
    return out.with_name(f"{out.stem}-{suffix}{out.suffix or '.png'}")


def _find_focus(labels: list[str], focus: str) -> int:
    lowered = [label.lower() for label in labels]
    if focus.lower() not in lowered:
        raise NlpipeError(f"--focus {focus}: not a token of the sentence; its tokens are: {' '.join(labels)}")
    return lowered.index(focus.lower())


def seq2seq_cross_attention(model: Any, tokenizer: Any, sentence: str, max_new_tokens: int = 40) -> dict[str, Any]:
    """Greedy translation of `sentence` and the cross-attention that produced it.

    Returns ``{"weights": (layers of) (heads, T, S) numpy arrays (the last decoder layer's),
    "source": labels, "target": labels, "output": text}``; the target labels are the generated tokens,
    row t being the step that produced token t.
    """
    import torch

    encoded = tokenizer(sentence, return_tensors="pt")
    source_ids, mask = encoded["input_ids"], encoded["attention_mask"]
    with torch.no_grad():
        generated = model.generate(input_ids=source_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                   num_beams=1, do_sample=False)  # (1, 1 + T)
        decoder_inputs = generated[:, :-1]
        out = model(input_ids=source_ids, attention_mask=mask, decoder_input_ids=decoder_inputs,
                    output_attentions=True, return_dict=True)
    if not out.cross_attentions:
        raise NlpipeError(f"{type(model).__name__}: this model has no cross-attention (attention='none'?); "
                          "nothing to draw")
    weights = out.cross_attentions[-1][0].float().numpy()  # (heads, T, S) of the last decoder layer
    return {
        "weights": weights,
        "all_layers": [layer[0].float().numpy() for layer in out.cross_attentions],
        "encoder": [layer[0].float().numpy() for layer in (getattr(out, "encoder_attentions", None) or ())],
        "source": token_labels(tokenizer, source_ids[0].tolist()),
        "target": token_labels(tokenizer, generated[0, 1:].tolist()),
        "output": tokenizer.decode(generated[0], skip_special_tokens=True),
    }


def draw_attention(model: Any, tokenizer: Any, sentence: str, out: str | Path, *, focus: str | None = None
                   ) -> list[Path]:
    """Draw the attention maps of `model` on `sentence`; return the PNG files written (first one is `out`).

    Raises:
        NlpipeError: the model has no attention to draw, or `focus` is not a token of the sentence.
    """
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = model.config
    written: list[Path] = []
    if config.model_type == "nlpipe_rnn_seq2seq":
        found = seq2seq_cross_attention(model, tokenizer, sentence)
        hard = getattr(config, "attention_mode", "soft") == "hard"
        title = (f"{config.attention} attention ({getattr(config, 'attention_mode', 'soft')}) — "
                 f"output: {found['output']!r}")
        written.append(plot_cross_attention(found["weights"], found["source"], found["target"], out, hard=hard,
                                            title=title))
        return written
    if config.is_encoder_decoder:
        found = seq2seq_cross_attention(model, tokenizer, sentence)
        written.append(plot_layer_head_grid(found["encoder"], found["source"], found["source"], out,
                                            title="encoder self-attention (rows: query, columns: key)"))
        written.append(plot_layer_head_grid(found["all_layers"], found["target"], found["source"],
                                            _with_suffix(out, "cross"),
                                            title=f"decoder cross-attention — output: {found['output']!r}"))
        if focus:
            index = _find_focus(found["source"], focus)
            written.append(plot_focus(found["encoder"], found["source"], index, _with_suffix(out, "focus")))
        return written
    encoded = tokenizer(sentence, return_tensors="pt")
    with torch.no_grad():
        result = model(**{k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask")},
                       output_attentions=True, return_dict=True)
    attentions = getattr(result, "attentions", None)
    if not attentions:
        raise NlpipeError(f"{type(model).__name__} ({config.model_type}): this model has no attention to draw; "
                          "use an attention seq2seq or a Transformer run")
    layers = [layer[0].float().numpy() for layer in attentions]  # each (heads, S, S)
    labels = token_labels(tokenizer, encoded["input_ids"][0].tolist())
    kind = "causal self-attention" if config.model_type == "gpt2" else "self-attention"
    written.append(plot_layer_head_grid(layers, labels, labels, out,
                                        title=f"{kind} per layer and head (rows: query, columns: key)"))
    if focus:
        written.append(plot_focus(layers, labels, _find_focus(labels, focus), _with_suffix(out, "focus")))
    return written


def draw_attention_for_run(run_dir: str | Path, sentence: str, out: str | Path = "attention.png", *,
                           focus: str | None = None) -> list[Path]:
    """Load a run folder and draw its attention maps on `sentence` (see `draw_attention`)."""
    from .run_folder import refuse_run_folder

    if not sentence.strip():
        raise NlpipeError("the sentence is empty; give the text to look at in quotes")
    refuse_run_folder(out, "--out")
    model, tokenizer = load_model_for_attention(run_dir)
    return draw_attention(model, tokenizer, sentence, out, focus=focus)
