"""Training budgets: ``train.budget`` (``steps``, ``tokens`` or ``minutes``) resolved to optimizer steps.

A budget is resolved to a number of optimizer steps *before* the learning-rate schedule is built,
so warm-up and decay end when the budget does (as torchtune sizes its schedule from the total
step count). The training loop only asks the plan two questions after each step, "has the plan
changed?" and "is the budget spent?"; it never needs to know what kind of budget it runs under.

- ``steps``: the plan is that many steps.
- ``tokens`` (training tokens seen, all processes together; the machine-independent choice):
  tokens per optimizer step are measured with the task's own ``count_tokens`` over the encoded
  training set's batches, and the plan is ``ceil(tokens / tokens_per_step)`` steps.
- ``minutes`` (wall time of training, evaluations included): the first
  ``MEASURE_STEPS`` steps run at the schedule's start (warm-up, then the peak rate) while the speed
  is measured; then the plan is sized from the measured speed and re-sized whenever the projected
  step count moves by more than ``REPLAN_TOLERANCE``. Re-sizing stretches or squeezes only the
  *remaining* part of the schedule (a piecewise-linear map from real to schedule steps), so the
  learning rate never jumps and still reaches its final value at the last planned step.

The plan is JSON data (`BudgetPlan.state_dict`): the loop keeps it in the checkpoint's trainer
state, so ``--resume`` continues the same plan, and the run records it in ``metrics.json``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import NlpipeError

if TYPE_CHECKING:  # torch is imported where a plan is used: `check_budget` serves the light CLI
    import torch

BUDGET_KINDS = ("steps", "tokens", "minutes")
MEASURE_STEPS = 10
"""Steps timed before a ``minutes`` budget makes its first plan."""
REPLAN_TOLERANCE = 0.02
"""A ``minutes`` plan is re-sized when the projected step count moves by more than this fraction."""
MAX_COUNTED_BATCHES = 500
"""A ``tokens`` budget counts tokens in at most this many training batches (a random sample)."""
_UNPLANNED_STEPS = 10**9
"""Schedule length while a ``minutes`` budget is still measuring: the rate stays at its start value."""


@dataclass
class BudgetPlan:
    """How many optimizer steps a budget buys, and how the schedule's steps map onto them.

    ``knots`` are ``[real_step, schedule_step]`` points of a piecewise-linear map; before the first
    knot the map is the identity and after the last it stays at ``schedule_steps``. With no knots
    (``steps``/``tokens`` budgets) real and schedule steps are the same.
    """

    kind: str
    amount: float
    total_steps: int
    """Planned optimizer steps: the schedule ends and training stops here."""
    schedule_steps: int
    """The step count the underlying (transformers) schedule was built for."""
    warmup_steps: int = 0
    knots: list[list[float]] = field(default_factory=list)
    tokens_per_step: float | None = None
    seconds_per_step: float | None = None
    replans: int = 0
    # Not saved: where this process started timing (a resumed run measures its own speed).
    _timer: tuple[int, float, float] | None = field(default=None, repr=False, compare=False)
    _window: tuple[int, float] | None = field(default=None, repr=False, compare=False)
    _last_check: int = field(default=0, repr=False, compare=False)

    # ------------------------------------------------------------------ the schedule
    def schedule_step(self, step: float) -> float:
        """The underlying schedule's step at real optimizer step `step`."""
        if not self.knots or step <= self.knots[0][0]:
            return float(step)
        for (x0, y0), (x1, y1) in zip(self.knots, self.knots[1:], strict=False):
            if step <= x1:
                return y0 + (step - x0) * (y1 - y0) / max(x1 - x0, 1e-12)
        return float(self.schedule_steps)

    def make_scheduler(self, optimizer: torch.optim.Optimizer, name: str) -> torch.optim.lr_scheduler.LambdaLR:
        """A `LambdaLR` following transformers' schedule `name`, re-sized with this plan.

        Raises:
            NlpipeError: the schedule is not a multiplicative one (``reduce_lr_on_plateau``).
        """
        import torch
        from transformers import get_scheduler

        def multiplier_for(length: int) -> Any:
            # The transformers schedule on a throw-away optimizer with rate 1: its multiplier.
            probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
            base = get_scheduler(name, probe, num_warmup_steps=self.warmup_steps, num_training_steps=length)
            if not isinstance(base, torch.optim.lr_scheduler.LambdaLR):
                raise NlpipeError(
                    f"key 'train.lr_scheduler': '{name}' cannot be sized by train.budget; choose linear, "
                    "cosine, constant, inverse_sqrt or another step-based schedule"
                )
            return base.lr_lambdas[0]

        # Rebuilt when a plan (or a resumed plan) changes the schedule's length.
        built: dict[int, Any] = {self.schedule_steps: multiplier_for(self.schedule_steps)}

        def multiplier(step: int) -> float:
            if self.schedule_steps not in built:
                built.clear()
                built[self.schedule_steps] = multiplier_for(self.schedule_steps)
            return built[self.schedule_steps](self.schedule_step(step))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)

    # ------------------------------------------------------------------ what the loop asks
    @property
    def needs_clock(self) -> bool:
        """Whether `update` and `exhausted` read the elapsed time (to be agreed on by all processes)."""
        return self.kind == "minutes"

    def update(self, step: int, train_seconds: float, eval_seconds: float = 0.0) -> bool:
        """After optimizer step `step`: re-plan a ``minutes`` budget from the measured speed.

        Training speed is measured over the steps since the last plan (evaluations excluded), and the
        evaluation time seen so far is spread over all steps, so a periodic evaluation does not make
        the plan swing. Returns True when `total_steps` changed.
        """
        if self.kind != "minutes":
            return False
        if self._timer is None:
            self._timer = (step, train_seconds - eval_seconds, eval_seconds)
            self._last_check = step
            return False
        start_step, start_train, start_eval = self._timer
        first_plan = not self.knots
        interval = MEASURE_STEPS if first_plan else max(MEASURE_STEPS, (self.total_steps - start_step) // 50)
        if step - self._last_check < interval or step <= start_step:
            return False
        self._last_check = step
        # Recent training speed: since the last check (the first plan: since timing started).
        window = self._window if self._window is not None else (start_step, start_train)
        train_now = train_seconds - eval_seconds
        per_step = (train_now - window[1]) / max(step - window[0], 1)
        self._window = (step, train_now)
        eval_per_step = (eval_seconds - start_eval) / max(step - start_step, 1)
        self.seconds_per_step = per_step + eval_per_step
        left = 60.0 * self.amount - train_seconds
        total = step + max(1, int(left / max(self.seconds_per_step, 1e-9)))
        if not first_plan and abs(total - self.total_steps) <= REPLAN_TOLERANCE * max(self.total_steps - step, 1):
            return False
        self._replan(step, total)
        return True

    def exhausted(self, step: int, train_seconds: float) -> bool:
        """Whether the budget is spent after optimizer step `step`."""
        if self.kind == "minutes" and train_seconds >= 60.0 * self.amount:
            return True
        return step >= self.total_steps

    # ------------------------------------------------------------------ re-sizing
    def _replan(self, step: int, total: int) -> None:
        """End the schedule at real step `total`, keeping what was already run (and warm-up in real steps)."""
        warmup = self.warmup_steps
        if not self.knots:
            # First plan. So far the schedule ran over an open-ended length, i.e. warm-up then the
            # peak rate; from here it is the schedule built for the planned length, entered at the
            # point with the same rate (end of warm-up), so the rate does not jump.
            self.schedule_steps = max(total, step + 1)
            here = [float(step), float(min(step, warmup))]
            past: list[list[float]] = []
        else:
            here = [float(step), self.schedule_step(step)]
            past = [k for k in self.knots if k[0] < step]
        if step < warmup < total and not past and self.schedule_step(step) == step:
            here = [float(warmup), float(warmup)]  # warm-up keeps its length in real steps
        self.knots = [*past, here, [float(max(total, here[0] + 1)), float(self.schedule_steps)]]
        self.total_steps = int(self.knots[-1][0])
        self.replans += 1

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> dict[str, Any]:
        """The plan as JSON data (kept in the checkpoint's trainer state)."""
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    def load_state_dict(self, saved: dict[str, Any] | None, source: str = "the checkpoint") -> None:
        """Continue a saved plan (``--resume``), in place: the scheduler built from this plan follows it.

        Raises:
            NlpipeError: the checkpoint has no plan or one for a different budget.
        """
        if not saved or (saved.get("kind"), saved.get("amount")) != (self.kind, self.amount):
            was = f"{saved['kind']}: {saved['amount']:g}" if saved else "no budget"
            raise NlpipeError(
                f"{source} was written with train.budget {was}, the recipe now asks for {self.kind}: "
                f"{self.amount:g}; resume with the budget the run started with, or start a new run"
            )
        for key, value in saved.items():
            if key in self.__dataclass_fields__ and not key.startswith("_"):
                setattr(self, key, value)
        self._timer, self._window = None, None

    def summary(self) -> dict[str, Any]:
        """What ``metrics.json`` records under ``train.budget``."""
        out = {self.kind: self.amount, "planned_steps": self.total_steps}
        if self.tokens_per_step is not None:
            out["tokens_per_step"] = round(self.tokens_per_step, 2)
        if self.seconds_per_step is not None:
            out["seconds_per_step"] = round(self.seconds_per_step, 4)
        if self.kind == "minutes":
            out["replans"] = self.replans
        return out


def budget_of(train: Any) -> tuple[str, float] | None:
    """``(kind, amount)`` of a recipe's ``train.budget``, or None when it sets none."""
    budget = getattr(train, "budget", None)
    if budget is None:
        return None
    chosen = [(kind, getattr(budget, kind)) for kind in BUDGET_KINDS if getattr(budget, kind) is not None]
    return (chosen[0][0], float(chosen[0][1])) if chosen else None


def check_budget(train: Any, source: str) -> None:
    """Validate ``train.budget``: at most one of steps/tokens/minutes, a positive number.

    Raises:
        NlpipeError: naming the key and what to write instead.
    """
    budget = getattr(train, "budget", None)
    if budget is None:
        return
    chosen = [kind for kind in BUDGET_KINDS if getattr(budget, kind) is not None]
    if len(chosen) > 1:
        raise NlpipeError(
            f"{source}: key 'train.budget': sets {' and '.join(chosen)}; give exactly one of steps, tokens, minutes"
        )
    for kind in chosen:
        value = getattr(budget, kind)
        if not value > 0 or not math.isfinite(value):
            raise NlpipeError(f"{source}: key 'train.budget.{kind}': must be a positive number, got {value!r}")


def tokens_per_batch(task: Any, loader: Any, max_batches: int = MAX_COUNTED_BATCHES) -> float:
    """Mean of ``task.count_tokens`` over (up to `max_batches` of) the training loader's first-epoch batches.

    The global random state is left untouched (building a DataLoader iterator draws from it), so
    a run with a budget sees the same dropout masks as one without.
    """
    import torch
    from torch.utils.data import DataLoader

    from .checkpointing import rng_state, set_rng_state

    saved = rng_state()
    try:
        sampler = getattr(loader, "batch_sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(0)
        counting = loader
        if sampler is not None:
            counting = DataLoader(loader.dataset, batch_sampler=sampler, collate_fn=loader.collate_fn,
                                  generator=torch.Generator().manual_seed(0))
        counts = []
        for batch in counting:
            counts.append(task.count_tokens(batch))
            if len(counts) >= max_batches:
                break
    finally:
        set_rng_state(saved)
    if not counts or sum(counts) == 0:
        raise NlpipeError("train.budget.tokens: the training split has no tokens to count; check the data")
    return sum(counts) / len(counts)


def resolve_budget(recipe: Any, task: Any, loader: Any, num_processes: int = 1) -> BudgetPlan | None:
    """Turn ``recipe.train.budget`` into a `BudgetPlan` (None when the recipe sets no budget).

    Args:
        recipe: the run's recipe.
        task: the task (its ``count_tokens`` measures a ``tokens`` budget).
        loader: the task's training DataLoader (before Accelerate shards it).
        num_processes: data-parallel processes; a step consumes a batch from each.
    """
    found = budget_of(recipe.train)
    if found is None:
        return None
    kind, amount = found
    t = recipe.train
    warmup = int(t.warmup_steps)
    if kind == "steps":
        steps = max(1, int(amount))
        return BudgetPlan(kind, amount, steps, steps, warmup)
    if kind == "tokens":
        per_step = tokens_per_batch(task, loader) * t.gradient_accumulation_steps * num_processes
        steps = max(1, math.ceil(amount / per_step))
        return BudgetPlan(kind, amount, steps, steps, warmup, tokens_per_step=per_step)
    return BudgetPlan(kind, amount, _UNPLANNED_STEPS, _UNPLANNED_STEPS, warmup)


def synchronized_clock(accelerator: Any, *seconds: float) -> tuple[float, ...]:
    """The largest of each elapsed time over all processes, so every process makes the same plan."""
    import torch
    if accelerator.num_processes == 1:
        return seconds
    values = torch.tensor([list(seconds)], device=accelerator.device, dtype=torch.float64)  # (1, n)
    return tuple(accelerator.gather(values).max(dim=0).values.tolist())  # (processes, n) -> (n,)
