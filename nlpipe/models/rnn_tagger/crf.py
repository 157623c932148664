"""A linear-chain conditional random field (CRF) for sequence tagging.

The CRF scores a whole tag sequence ``y_1 .. y_n`` for emissions ``e`` (one score per position and tag,
usually the output of a BiLSTM) as

    score(y) = start[y_1] + sum_t e[t, y_t] + sum_{t>1} transitions[y_{t-1}, y_t] + end[y_n]

and turns it into a distribution over all ``K ** n`` paths with ``p(y) = exp(score(y)) / Z``. Training
minimises ``log Z - score(gold)``; decoding takes the highest-scoring path with Viterbi. Both ``log Z``
(forward algorithm) and Viterbi are vectorised over the batch and loop only over time.

Padding is on the right: ``mask`` rows look like ``1 .. 1 0 .. 0`` and every row has at least one
valid position. Everything is computed in float32, whatever the dtype of the emissions.

This file is copied next to saved weights for ``trust_remote_code``, so it imports only torch.
"""

from __future__ import annotations

import torch
from torch import nn

# Score given to forbidden transitions / start tags. A finite value rather than -inf keeps
# ``logsumexp`` and its gradient free of NaN even when a gold path breaks a constraint (its NLL is
# then ~1e4: large, but the batch still trains), and no realistic emission difference outweighs it.
FORBIDDEN_SCORE = -1e4


class ConditionalRandomField(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags with optional hard transition constraints.

    Args:
        num_tags (`int`):
            Number of tags ``K``.
        allowed_transitions (`torch.Tensor` of shape `(K, K)`, dtype bool, *optional*):
            ``allowed_transitions[i, j]`` says whether tag ``j`` may directly follow tag ``i``.
            Defaults to everything allowed. See `iob2_transition_constraints`.
        allowed_start (`torch.Tensor` of shape `(K,)`, dtype bool, *optional*):
            Which tags may open a sequence. Defaults to all.

    Parameters (learned): ``transitions`` `(K, K)` indexed ``[from, to]``, ``start_transitions`` `(K,)`,
    ``end_transitions`` `(K,)`.

    Buffers (never learned): ``allowed_transitions`` `(K, K)` bool and ``allowed_start`` `(K,)` bool.
    They are *persistent*, i.e. saved in the state dict / ``model.safetensors``: transformers 5 builds
    models on the meta device before loading, and a non-persistent buffer comes back from
    ``from_pretrained`` as uninitialised memory (checked by experiment), whereas a saved one is
    restored exactly. They always exist (all ``True`` without constraints), so the state-dict keys do
    not depend on whether constraints are used. Forbidden entries score `FORBIDDEN_SCORE` in every
    computation; the underlying parameters there receive no gradient.

    Example:

    ```python
    >>> allowed, allowed_start = iob2_transition_constraints({0: "O", 1: "B-PER", 2: "I-PER"})
    >>> crf = ConditionalRandomField(3, allowed, allowed_start)
    >>> loss = crf(emissions, tags, mask).mean()  # emissions (B, T, 3), tags (B, T), mask (B, T)
    >>> best_paths = crf.viterbi_decode(emissions, mask)  # (B, T), 0 at padding
    ```
    """

    def __init__(
        self,
        num_tags: int,
        allowed_transitions: torch.Tensor | None = None,
        allowed_start: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"ConditionalRandomField needs num_tags >= 1, got {num_tags}.")
        self.num_tags = num_tags

        if allowed_transitions is None:
            allowed_transitions = torch.ones(num_tags, num_tags, dtype=torch.bool)
        if allowed_start is None:
            allowed_start = torch.ones(num_tags, dtype=torch.bool)
        if tuple(allowed_transitions.shape) != (num_tags, num_tags):
            raise ValueError(
                f"allowed_transitions must have shape ({num_tags}, {num_tags}), "
                f"got {tuple(allowed_transitions.shape)}."
            )
        if tuple(allowed_start.shape) != (num_tags,):
            raise ValueError(f"allowed_start must have shape ({num_tags},), got {tuple(allowed_start.shape)}.")
        if not bool(allowed_start.any()):
            raise ValueError("allowed_start forbids every tag: no sequence could start.")
        self.register_buffer("allowed_transitions", allowed_transitions.detach().clone().bool(), persistent=True)
        self.register_buffer("allowed_start", allowed_start.detach().clone().bool(), persistent=True)

        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the learned scores with small uniform values in ``[-0.1, 0.1]``.

        The owning model's ``_init_weights`` must call this: transformers 5 does not initialise custom
        ``nn.Parameter``s. ``nn.init.uniform_`` is looked up on the module at call time on purpose:
        during ``from_pretrained`` transformers patches ``torch.nn.init`` so that already-loaded
        weights are left alone. The constraint buffers are not touched.
        """
        for param in (self.transitions, self.start_transitions, self.end_transitions):
            nn.init.uniform_(param, -0.1, 0.1)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    # -- scores with constraints applied, in float32 -----------------------------------------------

    def _constrained_scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(transitions (K, K), start (K,), end (K,))`` in float32 with forbidden entries masked."""
        transitions = self.transitions.float().masked_fill(~self.allowed_transitions, FORBIDDEN_SCORE)
        start = self.start_transitions.float().masked_fill(~self.allowed_start, FORBIDDEN_SCORE)
        return transitions, start, self.end_transitions.float()

    def _check_inputs(self, emissions: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate shapes; return float32 emissions and a bool mask (all valid when ``mask`` is None)."""
        if emissions.dim() != 3 or emissions.size(-1) != self.num_tags:
            raise ValueError(
                f"emissions must have shape (batch, seq_len, {self.num_tags}), got {tuple(emissions.shape)}."
            )
        if mask is None:
            mask = torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        if mask.shape != emissions.shape[:2]:
            raise ValueError(
                f"mask must have shape {tuple(emissions.shape[:2])} like emissions' first two dims, "
                f"got {tuple(mask.shape)}."
            )
        mask = mask.bool()
        if emissions.size(1) == 0 or not bool(mask[:, 0].all()):
            raise ValueError(
                "Every sequence needs at least one valid position, with padding on the right "
                "(mask[:, 0] must be all true)."
            )
        return emissions.float(), mask

    # -- training ----------------------------------------------------------------------------------

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Negative log-likelihood of the gold tags, one value per sequence.

        Args:
            emissions: `(B, T, K)` float32 or bfloat16 scores.
            tags: `(B, T)` long gold tags; values at masked positions are ignored (``-100`` is fine).
            mask: `(B, T)` bool/int, right-padded, at least one valid position per row.

        Returns:
            `(B,)` float32 ``log Z - score(gold)``; ``.mean()`` is a loss.

        Raises:
            ValueError: on wrong shapes or a row without a valid first position.
        """
        return self.log_partition(emissions, mask) - self.score(emissions, tags, mask)

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``log Z`` with the forward algorithm in log space: `(B, T, K)`, `(B, T)` -> `(B,)` float32."""
        emissions, mask = self._check_inputs(emissions, mask)
        transitions, start, end = self._constrained_scores()

        # alpha[b, j] = log-sum of the scores of all prefixes ending in tag j at the current position.
        alpha = start.unsqueeze(0) + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.size(1)):
            # (B, K_from, 1) + (1, K_from, K_to) + (B, 1, K_to), then sum out the previous tag.
            step = alpha.unsqueeze(2) + transitions.unsqueeze(0) + emissions[:, t].unsqueeze(1)
            step = torch.logsumexp(step, dim=1)  # (B, K)
            # Finished sequences keep their alpha, so it is read off correctly at the end.
            alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
        return torch.logsumexp(alpha + end.unsqueeze(0), dim=1)  # (B,)

    def score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Score of the given tag paths: `(B, T, K)`, `(B, T)`, `(B, T)` -> `(B,)` float32.

        Tags at masked positions are ignored.
        """
        emissions, mask = self._check_inputs(emissions, mask)
        if tags.shape != mask.shape:
            raise ValueError(f"tags must have shape {tuple(mask.shape)}, got {tuple(tags.shape)}.")
        transitions, start, end = self._constrained_scores()
        # Replace ignored tags (e.g. -100) by a valid index so gathers work; their terms are masked out.
        tags = tags.long().masked_fill(~mask, 0)  # (B, T)
        maskf = mask.float()

        emission_scores = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        total = start[tags[:, 0]] + (emission_scores * maskf).sum(dim=1)
        if tags.size(1) > 1:
            pair_scores = transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
            total = total + (pair_scores * maskf[:, 1:]).sum(dim=1)
        lengths = mask.long().sum(dim=1)  # (B,)
        last_tags = tags.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)  # (B,)
        return total + end[last_tags]

    # -- decoding ----------------------------------------------------------------------------------

    @torch.no_grad()
    def viterbi_decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Highest-scoring tag path per sequence: `(B, T, K)`, `(B, T)` -> `(B, T)` long, 0 at padding.

        Forbidden transitions/start tags are never chosen (unless nothing else is possible).
        """
        emissions, mask = self._check_inputs(emissions, mask)
        transitions, start, end = self._constrained_scores()
        batch_size, seq_len, num_tags = emissions.shape

        best_score = start.unsqueeze(0) + emissions[:, 0]  # (B, K)
        # At padded steps the backpointer is the identity, so backtracking walks through the padding
        # unchanged and arrives at each sequence's real last position with its best final tag.
        identity = torch.arange(num_tags, device=emissions.device).expand(batch_size, num_tags)  # (B, K)
        backpointers = []
        for t in range(1, seq_len):
            candidates = best_score.unsqueeze(2) + transitions.unsqueeze(0)  # (B, K_from, K_to)
            step_best, step_argmax = candidates.max(dim=1)  # (B, K_to)
            valid = mask[:, t].unsqueeze(1)  # (B, 1)
            best_score = torch.where(valid, step_best + emissions[:, t], best_score)
            backpointers.append(torch.where(valid, step_argmax, identity))

        last_tag = (best_score + end.unsqueeze(0)).argmax(dim=1)  # (B,)
        path = [last_tag]
        for pointers in reversed(backpointers):
            last_tag = pointers.gather(1, last_tag.unsqueeze(1)).squeeze(1)  # (B,)
            path.append(last_tag)
        path.reverse()
        best_paths = torch.stack(path, dim=1)  # (B, T)
        return best_paths.masked_fill(~mask, 0)


    @torch.no_grad()
    def marginals_and_viterbi(
        self, emissions: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior marginals and the Viterbi path in one pass over time, without autograd (inference).

        The marginals are ``exp(alpha_t + beta_t - log Z)`` from the forward-backward algorithm: the same
        quantity as the gradient of `log_partition` with respect to the emissions, but computed in one loop
        that also runs Viterbi (and the backward recursion), so decoding a batch costs ``T`` steps of a few
        small batched ops instead of a forward pass, an autograd backward and a separate Viterbi pass.

        Args:
            emissions: `(B, T, K)` float32 or bfloat16 scores.
            mask: `(B, T)` bool/int, right-padded, at least one valid position per row.

        Returns:
            ``(marginals, path)``: `(B, T, K)` float32 probabilities (rows sum to 1, all zero at padding) and
            `(B, T)` long Viterbi tags (0 at padding), the same path as `viterbi_decode`.
        """
        emissions, mask = self._check_inputs(emissions, mask)
        transitions, start, end = self._constrained_scores()
        batch_size, seq_len, num_tags = emissions.shape
        transitions_from = transitions.unsqueeze(0)  # (1, K_from, K_to)
        identity = torch.arange(num_tags, device=emissions.device).expand(batch_size, num_tags)  # (B, K)

        alphas = [start.unsqueeze(0) + emissions[:, 0]]  # each (B, K)
        best_score = alphas[0]
        backpointers = []
        # beta_t[b, i]: log-sum of the scores of all suffixes after position t given tag i there; `end` at
        # each row's last real position (and at the padding, where it is never read as a marginal).
        betas = [end.unsqueeze(0).expand(batch_size, num_tags)] * seq_len
        # Without padding (always so at batch 1) the masking selects are skipped: half the small ops per step.
        padded = not bool(mask.all())
        for t in range(1, seq_len):
            step = torch.logsumexp(alphas[-1].unsqueeze(2) + transitions_from, dim=1) + emissions[:, t]
            step_best, step_argmax = (best_score.unsqueeze(2) + transitions_from).max(dim=1)  # (B, K_to)
            back = seq_len - 1 - t  # the backward recursion runs in the same loop, from the end
            following = (emissions[:, back + 1] + betas[back + 1]).unsqueeze(1)  # (B, 1, K_to)
            beta = torch.logsumexp(transitions_from + following, dim=2)  # (B, K_from)
            if padded:
                valid = mask[:, t].unsqueeze(1)  # (B, 1)
                step = torch.where(valid, step, alphas[-1])
                best_score = torch.where(valid, step_best + emissions[:, t], best_score)
                step_argmax = torch.where(valid, step_argmax, identity)
                beta = torch.where(mask[:, back + 1].unsqueeze(1), beta, betas[back])
            else:
                best_score = step_best + emissions[:, t]
            alphas.append(step)
            backpointers.append(step_argmax)
            betas[back] = beta

        log_z = torch.logsumexp(alphas[-1] + end.unsqueeze(0), dim=1)  # (B,)
        marginals = (torch.stack(alphas, dim=1) + torch.stack(betas, dim=1) - log_z.view(-1, 1, 1)).exp()
        if padded:
            marginals = marginals * mask.unsqueeze(2).to(marginals.dtype)  # (B, T, K)

        last_tag = (best_score + end.unsqueeze(0)).argmax(dim=1)  # (B,)
        path = [last_tag]
        for pointers in reversed(backpointers):
            last_tag = pointers.gather(1, last_tag.unsqueeze(1)).squeeze(1)  # (B,)
            path.append(last_tag)
        path.reverse()
        return marginals, torch.stack(path, dim=1).masked_fill(~mask, 0)


def iob2_transition_constraints(id2label: dict[int, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard constraints of the IOB2 scheme for `ConditionalRandomField`.

    ``I-X`` may only follow ``B-X`` or ``I-X``, and no sequence may start with ``I-X``. Labels without
    a ``B-``/``I-`` prefix (``O``, or any other name) are unconstrained, as is everything that follows
    any label. Entity types ``X`` are arbitrary strings (``I-B-Y`` has type ``B-Y``).

    Args:
        id2label: maps each tag id ``0 .. K-1`` to its label (keys may be ints or digit strings,
            as in a ``config.json``).

    Returns:
        ``(allowed, allowed_start)``: `(K, K)` bool indexed ``[from, to]`` and `(K,)` bool.

    Raises:
        ValueError: when the ids are not exactly ``0 .. K-1``.
    """
    labels = {int(tag_id): label for tag_id, label in id2label.items()}
    num_tags = len(labels)
    if sorted(labels) != list(range(num_tags)):
        raise ValueError(f"id2label must have ids 0..{num_tags - 1}, got {sorted(labels)}.")

    def split(label: str) -> tuple[str | None, str]:
        if label.startswith(("B-", "I-")):
            return label[0], label[2:]
        return None, label

    allowed = torch.ones(num_tags, num_tags, dtype=torch.bool)
    allowed_start = torch.ones(num_tags, dtype=torch.bool)
    for to_id in range(num_tags):
        to_prefix, to_type = split(labels[to_id])
        if to_prefix != "I":
            continue
        allowed_start[to_id] = False
        for from_id in range(num_tags):
            from_prefix, from_type = split(labels[from_id])
            allowed[from_id, to_id] = from_prefix in ("B", "I") and from_type == to_type
    return allowed, allowed_start
