"""Choose a seq2seq run's generation settings on validation, then score test once with the choice.

    python benchmarks/tune_generation.py RUN_DIR length_penalty=1.0,1.5,2.0 min_new_tokens=5,15 \
        [--data-dir ../shared/data] [--max-examples N]

Every combination of the grid is decoded on the validation split with the recipe's test-time beam
(`generate.num_beams`, not the cheaper `validation_num_beams`) and scored with the recipe's selection
metric; the best combination is then used once on test. Test never takes part in the choice. The
results (every validation score and the test scores of the winner) are appended to
benchmarks/results.jsonl; the run folder is not changed.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``key=v1,v2`` items → {key: [v1, v2]} with YAML-typed values."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise SystemExit(f"grid item '{item}': write key=value1,value2 (e.g. length_penalty=1.0,1.5)")
        grid[key] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


def main(argv: list[str] | None = None) -> int:
    from results_log import append_results

    from nlpipe.run import open_run_evaluation

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("grid", nargs="+", help="generate settings to try, key=v1,v2")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-examples", type=int, default=None, help="first N examples of each split (smoke runs)")
    args = parser.parse_intermixed_args(argv)
    grid = parse_grid(args.grid)
    run = open_run_evaluation(args.run_dir, data_dir=args.data_dir, max_eval_examples=args.max_examples)
    recipe, metric = run.recipe, run.recipe.eval.metric
    sign = 1 if recipe.eval.greater_is_better else -1
    validation = run.encode("validation")  # encoded once; only the generate settings change
    rows: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any]] | None = None
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values, strict=True))
        started = time.perf_counter()
        recipe.generate.update(settings)
        recipe.generate["validation_num_beams"] = recipe.generate.get("num_beams", 1)  # decode as on test
        scores = run.evaluate("validation", validation)
        print(f"validation {settings}: {metric}={scores[metric]:.2f} ({time.perf_counter() - started:.0f} s)", flush=True)
        rows.append({"recipe": recipe.name, "run_dir": str(args.run_dir), "split": "validation", "metric": metric,
                     "value": round(scores[metric], 3), "generate": settings})
        if best is None or sign * scores[metric] > sign * best[0]:
            best = (scores[metric], settings)
    assert best is not None
    recipe.generate.update(best[1])
    test = run.evaluate("test")
    print(f"chosen on validation: {best[1]}; test: " + "  ".join(
        f"{k}={v:.2f}" for k, v in test.items() if isinstance(v, float)))
    rows += [{"recipe": recipe.name, "run_dir": str(args.run_dir), "split": "test", "metric": k,
              "value": round(v, 3), "generate": best[1]} for k, v in test.items() if isinstance(v, float)]
    if args.max_examples is None:
        append_results(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
