"""``train.budget``: the schedule is sized before it is built and ends when the budget does.

References: transformers' own ``get_scheduler`` over the same number of steps (steps budget), the
task's token count over the encoded training set (tokens budget), a fake clock with a speed change
and evaluation pauses (minutes budget), and an interrupted run resumed from its checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from transformers import get_scheduler

import nlpipe.training.loop as loop_module
from nlpipe.errors import NlpipeError
from nlpipe.recipe import load_recipe
from nlpipe.run import run_recipe
from nlpipe.training import budget as budget_module
from nlpipe.training.budget import BudgetPlan, resolve_budget

TINY = ["data.max_train_examples=96", "data.max_eval_examples=16", "model.hidden_size=16",
        "model.embedding_dim=8", "train.batch_size=8", "train.log_every_steps=1", "train.lr_scheduler=linear",
        "train.warmup_steps=3", "train.max_epochs=1", "train.early_stopping_patience=null",
        "eval.splits=[validation]"]


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def _lrs(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        scheduler.optimizer.step()
        scheduler.step()
        out.append(scheduler.get_last_lr()[0])
    return out


def _logged_lrs(run_dir: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["lr"]) for r in records if "lr" in r]


@pytest.mark.parametrize("name", ["linear", "cosine", "constant_with_warmup"])
def test_steps_plan_is_transformers_schedule_over_the_budget(name: str) -> None:
    plan = BudgetPlan("steps", 40, 40, 40, warmup_steps=5)
    ours = _lrs(plan.make_scheduler(_optimizer(), name), 40)
    reference = _lrs(get_scheduler(name, _optimizer(), num_warmup_steps=5, num_training_steps=40), 40)
    assert ours == pytest.approx(reference, abs=1e-12)
    if name != "constant_with_warmup":
        assert ours[-1] == pytest.approx(0.0, abs=1e-12)  # the final value, at the last step


def test_minutes_plan_follows_a_fake_clock_and_ends_the_schedule_with_the_time() -> None:
    # 1 minute; 0.05 s per step at first, then the machine gets 3x slower; a 1.5 s evaluation every 100 steps.
    plan = BudgetPlan("minutes", 1.0, *(2 * [budget_module._UNPLANNED_STEPS]), warmup_steps=20)
    scheduler = plan.make_scheduler(_optimizer(), "linear")
    train_s = eval_s = 0.0
    lrs, totals, step = [], [], 0
    plan.update(0, 0.0, 0.0)
    while True:
        step += 1
        train_s += 0.05 if step <= 300 else 0.15
        if step % 100 == 0:
            train_s += 1.5
            eval_s += 1.5
        scheduler.optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
        plan.update(step, train_s, eval_s)
        totals.append(plan.total_steps)
        if plan.exhausted(step, train_s):
            break
    # Warm-up kept its 20 real steps, the first plan came after 10 measured steps.
    assert lrs[19] == pytest.approx(1.0) and lrs[9] == pytest.approx(0.5)
    assert totals[9] < budget_module._UNPLANNED_STEPS and plan.replans >= 2
    assert totals[9] == pytest.approx(10 + (60 - 0.5) / 0.05, abs=2)  # sized from the measured speed
    assert totals[-1] < totals[299]  # re-planned shorter once it got slower
    assert step == plan.total_steps  # the schedule, not the clock, ended the run...
    assert train_s == pytest.approx(60.0, abs=0.5)  # ...when the time was up
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)  # LR at its final value at the last step
    jumps = [abs(b - a) for a, b in zip(lrs[20:], lrs[21:], strict=False)]
    assert max(jumps) < 0.02  # re-sizing stretches what is left: no jump in the learning rate
    assert all(b <= a + 1e-12 for a, b in zip(lrs[20:], lrs[21:], strict=False))  # decays monotonically


def test_tokens_budget_plans_steps_from_the_task_token_count(tmp_path: Path) -> None:
    budget = 2500
    result = run_recipe("ner-bilstm", [*TINY, f"train.budget.tokens={budget}"], data="sample",
                        output_dir=tmp_path / "run", progress=False)
    train = result.metrics["train"]
    # Reference: the tokens one whole epoch feeds the loop (run without a budget), per batch.
    epoch = run_recipe("ner-bilstm", TINY, data="sample",
                       output_dir=tmp_path / "epoch", progress=False).metrics["train"]
    per_batch = epoch["tokens"] / epoch["steps"]
    planned = math.ceil(budget / per_batch)
    assert train["budget"] == {"tokens": budget, "planned_steps": planned, "tokens_per_step": pytest.approx(per_batch, abs=0.01)}
    assert train["steps"] == planned > 12  # past max_epochs=1 (12 batches): the budget decides
    assert train["stopped_because"] == "budget"
    assert abs(train["tokens"] - budget) < 2 * per_batch  # what was seen is the budget, to a batch or so
    lrs = _logged_lrs(result.run_dir)
    assert lrs[-1] == (planned, pytest.approx(0.0, abs=1e-12))  # decay ended at the last step
    assert max(lr for _, lr in lrs) == pytest.approx(load_recipe("ner-bilstm").train.learning_rate)  # warm-up done
    card = (result.run_dir / "README.md").read_text()
    assert f"| budget | 2,500 tokens ({planned} steps planned" in card


def test_steps_budget_from_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "NLPIPE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "nlpipe", "run", "recipe", "ner-bilstm", "--data", "sample", "--no-progress",
         *TINY, "train.budget.steps=7", "--output-dir", str(tmp_path / "run")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train"]["budget"] == {"steps": 7, "planned_steps": 7}
    assert metrics["train"]["steps"] == 7
    assert _logged_lrs(tmp_path / "run")[-1] == (7, pytest.approx(0.0, abs=1e-12))
    bad = subprocess.run(
        [sys.executable, "-m", "nlpipe", "run", "recipe", "ner-bilstm", "--data", "sample", "--no-progress",
         "train.budget.steps=7", "train.budget.minutes=2", "--output-dir", str(tmp_path / "bad")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "key 'train.budget': sets steps and minutes; give exactly one of steps, tokens, minutes" in bad.stderr


class _Stop(Exception):
    pass


def test_resume_keeps_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = [*TINY, "train.budget.tokens=2500", "train.checkpoint_every_steps=5"]
    original = loop_module.save_checkpoint

    def save_then_die(root, model, optimizer, scheduler, state, *args, **kwargs):
        path = original(root, model, optimizer, scheduler, state, *args, **kwargs)
        if state["global_step"] == 10:
            raise _Stop
        return path

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_die)
    with pytest.raises(_Stop):
        run_recipe("ner-bilstm", overrides, data="sample", output_dir=tmp_path / "run", progress=False)
    monkeypatch.setattr(loop_module, "save_checkpoint", original)
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step-00000010" / "trainer_state.json").read_text())
    planned = saved["budget"]["total_steps"]
    # The resumed run must not plan again: make a fresh count disagree, it must not matter.
    real_count = budget_module.tokens_per_batch
    monkeypatch.setattr(budget_module, "tokens_per_batch", lambda *a, **k: 3 * real_count(*a, **k))
    result = run_recipe("ner-bilstm", overrides, data="sample", output_dir=tmp_path / "run", resume=True,
                        progress=False)
    assert result.metrics["train"]["steps"] == planned
    assert result.metrics["train"]["budget"]["planned_steps"] == planned
    assert _logged_lrs(result.run_dir)[-1] == (planned, pytest.approx(0.0, abs=1e-12))
    # Resuming under another budget is refused, naming both.
    monkeypatch.setattr(budget_module, "tokens_per_batch", real_count)
    with pytest.raises(_Stop):
        monkeypatch.setattr(loop_module, "save_checkpoint", save_then_die)
        run_recipe("ner-bilstm", overrides, data="sample", output_dir=tmp_path / "again", progress=False)
    monkeypatch.setattr(loop_module, "save_checkpoint", original)
    # The resume's recipe check names the budget keys before anything is loaded.
    with pytest.raises(NlpipeError, match=r"cannot resume: recipe differs \(train.budget.steps: null -> 30; "
                                          r"train.budget.tokens: 2500.0 -> null\)"):
        run_recipe("ner-bilstm", [*TINY, "train.budget.steps=30", "train.checkpoint_every_steps=5"], data="sample",
                   output_dir=tmp_path / "again", resume=True, progress=False)


def test_no_budget_is_no_plan() -> None:
    recipe = load_recipe("ner-bilstm")
    assert resolve_budget(recipe, SimpleNamespace(), None) is None


def test_minutes_budget_stops_the_loop_on_time(tmp_path: Path) -> None:
    result = run_recipe("ner-bilstm", [*TINY, "train.budget.minutes=0.05"], data="sample",
                        output_dir=tmp_path / "run", progress=False)
    train = result.metrics["train"]
    assert train["stopped_because"] == "budget"
    assert set(train["budget"]) == {"minutes", "planned_steps", "seconds_per_step", "replans"}
    assert train["steps"] > 12  # past max_epochs=1
    # The time ran out or the plan ended: either way within a few steps of the plan.
    assert train["steps"] <= train["budget"]["planned_steps"]


def test_a_recipe_sized_in_minutes_runs_under_the_budget_given_on_the_command_line(tmp_path: Path) -> None:
    """nlpipe compare gives every recipe one tokens/steps budget: a recipe's own minutes must give way, not clash."""
    raw = yaml.safe_load(Path(load_recipe("ner-bilstm").source).read_text())
    raw["train"]["budget"] = {"minutes": 60}
    path = tmp_path / "sized-in-minutes.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = run_recipe(str(path), [*TINY, "train.budget.steps=4"], data="sample", output_dir=tmp_path / "run",
                        progress=False)
    assert result.metrics["train"]["budget"] == {"steps": 4, "planned_steps": 4}
    assert result.metrics["train"]["steps"] == 4
    recorded = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["train"]["budget"]
    assert recorded == {"steps": 4, "tokens": None, "minutes": None}


def test_a_schedule_that_is_not_step_based_is_refused() -> None:
    with pytest.raises(NlpipeError, match="'reduce_lr_on_plateau' cannot be sized by train.budget"):
        BudgetPlan("steps", 10, 10, 10).make_scheduler(_optimizer(), "reduce_lr_on_plateau")


def test_max_steps_still_stops_a_budgeted_run_early(tmp_path: Path) -> None:
    result = run_recipe("ner-bilstm", [*TINY, "train.budget.steps=30", "train.max_steps=4"], data="sample",
                        output_dir=tmp_path / "run", progress=False)
    train = result.metrics["train"]
    assert (train["steps"], train["stopped_because"]) == (4, "max_steps")
    assert train["budget"] == {"steps": 30, "planned_steps": 30}
    assert _logged_lrs(result.run_dir)[-1][1] > 0  # the schedule was sized for 30 steps, not 4
