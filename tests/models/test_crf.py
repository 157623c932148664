"""ConditionalRandomField against brute force over every tag path, plus IOB2 constraints and training."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nlpipe.models.rnn_tagger.crf import ConditionalRandomField, iob2_transition_constraints

IOB2_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


# -- independent reference: plain Python loops over all K**n paths ------------------------------------


def path_score(crf: ConditionalRandomField, emissions: torch.Tensor, path: tuple[int, ...]) -> float:
    """Score of one path of one sequence (emissions (n, K) already cut to its length), unconstrained."""
    trans = crf.transitions.detach().double()
    total = crf.start_transitions.detach().double()[path[0]] + emissions[0, path[0]].double()
    for t in range(1, len(path)):
        total = total + trans[path[t - 1], path[t]] + emissions[t, path[t]].double()
    return float(total + crf.end_transitions.detach().double()[path[-1]])


def may_follow(previous: str, label: str) -> bool:
    """IOB2 judged from label strings: I-X must continue a B-X or I-X ("O" stands for the start)."""
    if not label.startswith("I-"):
        return True
    return previous[:2] in ("B-", "I-") and previous[2:] == label[2:]


def is_legal_iob2(path: tuple[int, ...], labels: dict[int, str]) -> bool:
    previous = "O"
    for tag in path:
        if not may_follow(previous, labels[tag]):
            return False
        previous = labels[tag]
    return True


def brute_force(crf, emissions, length, legal=None) -> tuple[float, tuple[int, ...]]:
    """(log Z, best path) over all paths of one sequence (optionally only those with legal(path))."""
    scores = {}
    for path in itertools.product(range(crf.num_tags), repeat=length):
        if legal is None or legal(path):
            scores[path] = path_score(crf, emissions[:length], path)
    log_z = math.log(sum(math.exp(s) for s in scores.values()))
    return log_z, max(scores, key=scores.get)


def random_batch(num_tags: int, lengths: list[int], seed: int):
    generator = torch.Generator().manual_seed(seed)
    seq_len = max(lengths)
    emissions = torch.randn(len(lengths), seq_len, num_tags, generator=generator) * 2
    mask = torch.arange(seq_len).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)  # (B, T)
    tags = torch.randint(0, num_tags, (len(lengths), seq_len), generator=generator)
    tags = tags.masked_fill(~mask, -100)
    return emissions, tags, mask


def make_crf(num_tags: int, seed: int, **kwargs) -> ConditionalRandomField:
    torch.manual_seed(seed)
    crf = ConditionalRandomField(num_tags, **kwargs)
    with torch.no_grad():  # larger than the default init so transitions matter in the comparisons
        for param in crf.parameters():
            param.normal_(0, 1)
    return crf


# -- tests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_tags", [3, 4])
@pytest.mark.parametrize("lengths", [[4, 2, 1], [3, 4, 4], [1, 1, 1]])
def test_partition_viterbi_and_nll_match_brute_force(num_tags, lengths):
    crf = make_crf(num_tags, seed=num_tags)
    emissions, tags, mask = random_batch(num_tags, lengths, seed=sum(lengths) + num_tags)

    log_z = crf.log_partition(emissions, mask)
    best = crf.viterbi_decode(emissions, mask)
    nll = crf(emissions, tags, mask)
    gold = crf.score(emissions, tags, mask)
    assert log_z.shape == nll.shape == gold.shape == (len(lengths),)
    assert best.shape == tags.shape and best.dtype == torch.long

    for b, length in enumerate(lengths):
        ref_log_z, ref_best = brute_force(crf, emissions[b], length)
        assert log_z[b].item() == pytest.approx(ref_log_z, abs=1e-5)
        assert tuple(best[b, :length].tolist()) == ref_best
        assert best[b, length:].eq(0).all()
        ref_gold = path_score(crf, emissions[b], tuple(tags[b, :length].tolist()))
        assert gold[b].item() == pytest.approx(ref_gold, abs=1e-5)
        assert nll[b].item() == pytest.approx(ref_log_z - ref_gold, abs=1e-5)
        assert nll[b].item() > 0  # a probability below one


def test_padding_content_changes_nothing():
    crf = make_crf(4, seed=0)
    emissions, tags, mask = random_batch(4, [4, 2, 1], seed=1)
    noisy = emissions.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), 4) * 100
    other_tags = tags.masked_fill(~mask, 3)  # anything at pad positions, not only -100

    assert torch.equal(crf.log_partition(emissions, mask), crf.log_partition(noisy, mask))
    assert torch.equal(crf(emissions, tags, mask), crf(noisy, other_tags, mask))
    assert torch.equal(crf.viterbi_decode(emissions, mask), crf.viterbi_decode(noisy, mask))
    # A row decoded alone (no padding at all) gives the same as inside the padded batch.
    alone = crf.viterbi_decode(emissions[1:2, :2], mask[1:2, :2])
    assert torch.equal(alone[0], crf.viterbi_decode(emissions, mask)[1, :2])
    assert crf.log_partition(emissions[1:2, :2]).item() == pytest.approx(
        crf.log_partition(emissions, mask)[1].item(), abs=1e-6
    )


def test_iob2_constraints_table():
    allowed, allowed_start = iob2_transition_constraints(IOB2_LABELS)
    assert allowed_start.tolist() == [True, True, False, True, False]
    for i, j in itertools.product(range(5), repeat=2):
        assert allowed[i, j].item() == may_follow(IOB2_LABELS[i], IOB2_LABELS[j]), (IOB2_LABELS[i], IOB2_LABELS[j])
    # String keys (as read from config.json) and arbitrary label names work too.
    allowed2, start2 = iob2_transition_constraints({"0": "B-a-b", "1": "I-a-b", "2": "X", "3": "I-x"})
    assert start2.tolist() == [True, False, True, False]
    assert allowed2[:, 1].tolist() == [True, True, False, False]
    assert allowed2[:, 3].tolist() == [False, False, False, True]
    with pytest.raises(ValueError, match="ids 0..1"):
        iob2_transition_constraints({0: "O", 2: "B-PER"})


@pytest.mark.parametrize("lengths", [[4, 3, 1], [2, 4, 3]])
def test_constrained_crf_matches_brute_force_over_legal_paths(lengths):
    allowed, allowed_start = iob2_transition_constraints(IOB2_LABELS)
    crf = make_crf(5, seed=3, allowed_transitions=allowed, allowed_start=allowed_start)
    emissions, _, mask = random_batch(5, lengths, seed=7)
    legal = lambda path: is_legal_iob2(path, IOB2_LABELS)  # noqa: E731

    log_z = crf.log_partition(emissions, mask)
    best = crf.viterbi_decode(emissions, mask)
    for b, length in enumerate(lengths):
        ref_log_z, ref_best = brute_force(crf, emissions[b], length, legal=legal)
        assert log_z[b].item() == pytest.approx(ref_log_z, abs=1e-5)
        assert tuple(best[b, :length].tolist()) == ref_best


def test_viterbi_never_illegal_even_when_emissions_favour_it():
    allowed, allowed_start = iob2_transition_constraints(IOB2_LABELS)
    crf = make_crf(5, seed=4, allowed_transitions=allowed, allowed_start=allowed_start)
    unconstrained = make_crf(5, seed=4)
    emissions = torch.zeros(2, 4, 5)
    emissions[0, :, 2] = 50.0  # I-PER everywhere, including position 0
    emissions[1, :, 0] = 50.0  # O then I-LOC: O -> I-LOC is illegal
    emissions[1, 2, 4] = 200.0
    mask = torch.ones(2, 4, dtype=torch.bool)

    # Without constraints the favoured illegal paths win, so the test below can fail.
    free = unconstrained.viterbi_decode(emissions, mask)
    assert not is_legal_iob2(tuple(free[0].tolist()), IOB2_LABELS)
    assert not is_legal_iob2(tuple(free[1].tolist()), IOB2_LABELS)

    best = crf.viterbi_decode(emissions, mask)
    for row in best.tolist():
        assert is_legal_iob2(tuple(row), IOB2_LABELS), row
    assert best[0].tolist() == [1, 2, 2, 2]  # B-PER I-PER I-PER I-PER
    assert best[1, 1:3].tolist() == [3, 4]  # B-LOC I-LOC: the only legal way to take the 200


def test_constraint_buffers_are_saved_and_not_learned():
    allowed, allowed_start = iob2_transition_constraints(IOB2_LABELS)
    crf = ConditionalRandomField(5, allowed, allowed_start)
    state = crf.state_dict()
    assert torch.equal(state["allowed_transitions"], allowed)
    assert torch.equal(state["allowed_start"], allowed_start)
    assert {name for name, _ in crf.named_parameters()} == {"transitions", "start_transitions", "end_transitions"}
    # Default constraints exist too (all allowed), so state-dict keys never depend on constraints.
    assert ConditionalRandomField(3).state_dict()["allowed_transitions"].all()

    restored = ConditionalRandomField(5)
    restored.load_state_dict(state)
    emissions, _, mask = random_batch(5, [3, 2], seed=5)
    assert torch.equal(restored.viterbi_decode(emissions, mask), crf.viterbi_decode(emissions, mask))


def test_reset_parameters_gives_small_uniform_values():
    crf = ConditionalRandomField(6)
    with torch.no_grad():
        crf.transitions.fill_(7.0)
    crf.reset_parameters()
    for param in crf.parameters():
        assert param.abs().max() <= 0.1
        assert param.std() > 0  # random, not constant


def test_bfloat16_emissions_are_computed_in_float32():
    crf = make_crf(4, seed=6)
    emissions, tags, mask = random_batch(4, [4, 3, 2], seed=6)
    rounded = emissions.bfloat16()
    nll = crf(rounded, tags, mask)
    assert nll.dtype == torch.float32
    assert torch.allclose(nll, crf(rounded.float(), tags, mask))
    assert torch.equal(crf.viterbi_decode(rounded, mask), crf.viterbi_decode(rounded.float(), mask))


def test_training_reduces_nll_and_viterbi_reproduces_gold():
    allowed, allowed_start = iob2_transition_constraints(IOB2_LABELS)
    torch.manual_seed(0)
    crf = ConditionalRandomField(5, allowed, allowed_start)
    features = torch.randn(3, 4, 8)  # fixed inputs; a linear layer makes the emissions
    emitter = torch.nn.Linear(8, 5)
    tags = torch.tensor([[1, 2, 0, 3], [0, 3, 4, -100], [1, -100, -100, -100]])
    mask = tags.ne(-100)
    optimizer = torch.optim.Adam([*crf.parameters(), *emitter.parameters()], lr=0.1)

    initial = crf(emitter(features), tags, mask).mean().item()
    for _ in range(60):
        optimizer.zero_grad()
        loss = crf(emitter(features), tags, mask).mean()
        loss.backward()
        optimizer.step()
    assert crf.transitions.grad is not None and crf.transitions.grad.abs().sum() > 0
    # Forbidden entries are masked out of every score, so they get no gradient.
    assert crf.transitions.grad[~allowed].eq(0).all()
    assert loss.item() < 0.2 * initial
    decoded = crf.viterbi_decode(emitter(features), mask)
    assert torch.equal(decoded, tags.masked_fill(~mask, 0))


def test_bad_inputs_raise():
    crf = ConditionalRandomField(3)
    with pytest.raises(ValueError, match="emissions must have shape"):
        crf.log_partition(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="at least one valid position"):
        crf.log_partition(torch.zeros(2, 3, 3), torch.tensor([[1, 1, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="allowed_transitions must have shape"):
        ConditionalRandomField(3, torch.ones(2, 2, dtype=torch.bool))


@pytest.mark.parametrize("lengths", [[4, 2, 1], [3, 3, 3], [1]])
def test_marginals_and_viterbi_match_brute_force_and_autograd(lengths):
    """The one-loop forward-backward + Viterbi used for inference: marginals = brute-force path posteriors
    (= the gradient of log Z), path = viterbi_decode's, with and without padding and IOB2 constraints."""
    allowed, allowed_start = iob2_transition_constraints(IOB2_LABELS)
    crf = make_crf(5, seed=7, allowed_transitions=allowed, allowed_start=allowed_start)
    emissions, _, mask = random_batch(5, lengths, seed=len(lengths))
    marginals, path = crf.marginals_and_viterbi(emissions, mask)
    assert torch.equal(path, crf.viterbi_decode(emissions, mask))
    leaf = emissions.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(crf.log_partition(leaf, mask).sum(), leaf)
    assert torch.allclose(marginals, gradient, atol=1e-5)
    transitions, start, end = (t.detach().double() for t in crf._constrained_scores())
    for b, length in enumerate(lengths):
        expected = torch.zeros(length, 5, dtype=torch.float64)
        weights = {}
        for candidate in itertools.product(range(5), repeat=length):
            score = start[candidate[0]] + end[candidate[-1]] + sum(
                emissions[b, t, candidate[t]].double() for t in range(length))
            score += sum(transitions[candidate[t - 1], candidate[t]] for t in range(1, length))
            weights[candidate] = math.exp(float(score))
        total = sum(weights.values())
        for candidate, weight in weights.items():
            for t, tag in enumerate(candidate):
                expected[t, tag] += weight / total
        assert torch.allclose(marginals[b, :length].double(), expected, atol=1e-5)
        assert marginals[b, length:].eq(0).all()
