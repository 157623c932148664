"""The cross-entropy over the vocabulary, as the trainer computes it, against a chunked fused version.

    python benchmarks/perf_vocab_loss.py [--rows 1100] [--vocab 8000] [--threads 1] [--allocator system] [--record]

The seq2seq loss upcasts a batch's bf16 logits to float32 and takes a float32 log-softmax
(nlpipe/tasks/seq2seq.py, nlpipe/models/rnn_seq2seq/modeling_rnn_seq2seq.py): two (rows, vocab) float32
tensors a step. The fused version (a custom autograd function, here only) never forms them: it walks
the bf16 logits in row blocks that stay in cache, keeps only each row's log-sum-exp, and writes the
bf16 gradient directly. Both are timed forward + backward in CPU time (best of 3 rounds) with
label smoothing 0 and 0.1, after checking that they agree. The answer depends on the memory allocator
(docs/performance.md), so the script re-runs itself with tcmalloc preloaded, as the `nlpipe` command does
(`--allocator system` keeps the C library's malloc).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (N, V) logits of any float dtype, float32 inside, row blocks of `block` rows."""

    @staticmethod
    def forward(ctx, logits, labels, smoothing, block):  # type: ignore[override]
        rows, vocab = logits.shape
        valid = labels != -100
        safe = torch.where(valid, labels, 0)
        lse = torch.empty(rows)
        per_row = torch.empty(rows)
        for start in range(0, rows, block):
            part = logits[start:start + block].float()
            part_lse = torch.logsumexp(part, -1)
            lse[start:start + block] = part_lse
            nll = part_lse - part.gather(1, safe[start:start + block, None]).squeeze(1)
            if smoothing:  # -mean_k log p_k = lse - mean_k logit_k
                nll = (1 - smoothing) * nll + smoothing * (part_lse - part.mean(-1))
            per_row[start:start + block] = nll
        count = valid.sum()
        ctx.save_for_backward(logits, safe, valid, lse, count)
        ctx.smoothing, ctx.block = smoothing, block
        return (per_row * valid).sum() / count

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        logits, safe, valid, lse, count = ctx.saved_tensors
        smoothing, block = ctx.smoothing, ctx.block
        vocab = logits.shape[1]
        grad = torch.empty_like(logits)
        scale = grad_output / count * valid.float()
        for start in range(0, logits.shape[0], block):
            part = logits[start:start + block].float().sub_(lse[start:start + block, None]).exp_()
            part.scatter_add_(1, safe[start:start + block, None], torch.full((part.shape[0], 1), smoothing - 1.0))
            if smoothing:
                part.sub_(smoothing / vocab)
            grad[start:start + block] = part.mul_(scale[start:start + block, None])
        return grad, None, None, None


def cpu_ms(step, reps: int) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(reps):
            step().backward()
        best = min(best, (time.process_time() - started) / reps * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1100, help="B*T target tokens (translation-lstm-luong: 64 x ~17)")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--allocator", choices=["tcmalloc", "system"], default="tcmalloc")
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/results.jsonl")
    args = parser.parse_args()
    from nlpipe.cpu_allocator import loaded_allocator, use_tcmalloc

    if args.allocator == "tcmalloc":
        use_tcmalloc()  # re-executes this script with tcmalloc preloaded (once), where it is installed
    allocator = loaded_allocator()  # what is really mapped (an LD_PRELOAD of the caller's counts too)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    logits = (torch.randn(args.rows, args.vocab) * 3).bfloat16().requires_grad_()
    labels = torch.randint(0, args.vocab, (args.rows,))
    labels[::7] = -100
    results = []
    for smoothing in (0.0, 0.1):
        def trainer(smoothing=smoothing):
            return F.cross_entropy(logits.float(), labels, ignore_index=-100, label_smoothing=smoothing)

        def fused(block=64, smoothing=smoothing):
            return ChunkedCrossEntropy.apply(logits, labels, smoothing, block)

        expected, = torch.autograd.grad(trainer(), logits)
        got, = torch.autograd.grad(fused(), logits)
        assert torch.allclose(trainer(), fused(), rtol=1e-5), "the fused loss disagrees"
        assert torch.allclose(expected.float(), got.float(), atol=1e-6), "the fused gradient disagrees"
        base = cpu_ms(trainer, args.reps)
        blocks = {block: cpu_ms(lambda block=block: fused(block), args.reps) for block in (32, 64, 128)}
        print(f"{allocator}, label smoothing {smoothing}: trainer's loss {base:.1f} ms, fused "
              + ", ".join(f"block {b} {ms:.1f} ms" for b, ms in blocks.items())
              + f" (forward + backward, CPU time, {args.rows} x {args.vocab}, {args.threads} thread(s))")
        results.append({"metric": "fused_over_trainer_vocab_loss_speed", "value": round(base / min(blocks.values()), 3),
                        "allocator": allocator, "label_smoothing": smoothing, "rows": args.rows, "vocab": args.vocab,
                        "threads": args.threads, "trainer_ms": round(base, 1),
                        "fused_ms": {str(b): round(ms, 1) for b, ms in blocks.items()}})
    if args.record:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results_log import append_results

        append_results(results)


if __name__ == "__main__":
    main()
