"""What runs cost: run lengths and model sizes, and the runs chosen for information per FLOP.

A proposal may choose each run's length (steps) from ``run_lengths`` and, for a law with a
model-size axis, its model size (parameters) from ``model_sizes``. Each run records
``checkpoints`` evenly spaced evaluations and costs the compute of training it,

    C(N, D) = 6 N D  FLOPs            (N parameters, D tokens; Kaplan et al. 2020),

and the batch spends a budget of FLOPs: by default that of q runs of the target length at the
largest size offered, each run the (mixture, length, size) with the most variance of r* (the
optimum at the target step and size) removed per FLOP (``cost_aware``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bayesmix.acquisition.base import ProposalError
from bayesmix.acquisition.functions import optimum_variance_function
from bayesmix.acquisition.optim import Problem, optimize_on_simplex, raw_points
from bayesmix.separability import SeparabilityError, check_separability

# By default a batch holds at most this many times q runs: cheap runs could otherwise fill
# it by the hundred, each a mixture to optimise (``propose(..., max_runs=...)`` sets it).
MAX_RUNS_PER_Q = 4


@dataclass(frozen=True)
class RunOption:
    """A run's length (steps; None: the law has no step axis and the run gives its final
    loss) and model size (parameters; None: the target size), and what it costs."""

    length: float | None
    model_size: float | None
    flops: float


@dataclass(frozen=True)
class RunPlan:
    """The target the runs inform (``step``, ``model_size``), the options a run may take,
    and the batch's budget in FLOPs."""

    step: float | None
    model_size: float | None
    options: list[RunOption]
    budget: float
    max_runs: int


def check_run_lengths(
    posterior: Any,
    acquisition: str,
    run_lengths: Sequence[float],
    step: float | None,
    pool: Any,
) -> tuple[float, list[float]]:
    """The target step and the sorted run lengths, or one clear error."""
    check_cost_aware(acquisition, pool, "run lengths")
    if not posterior.observations.has_steps:
        raise ProposalError(
            "run lengths need a law fitted with a step axis: the observations have no steps"
        )
    lengths = sorted({float(x) for x in run_lengths})
    if not lengths or not all(np.isfinite(x) and x > 0 for x in lengths):
        raise ProposalError(f"run lengths must be positive numbers of steps, got {run_lengths!r}")
    target = float(step) if step is not None else posterior.reference_step
    if lengths[0] > target:
        raise ProposalError(
            f"the shortest run length {lengths[0]:g} is longer than the target step {target:g}"
        )
    return target, lengths


def check_cost_aware(acquisition: str, pool: Any, what: str) -> None:
    if acquisition != "optimum-variance":
        raise ProposalError(
            f"{what} can be proposed by the optimum-variance acquisition only "
            f"(information per unit of compute), not {acquisition!r}"
        )
    if pool is not None:
        raise ProposalError(f"{what} cannot be proposed from a pool of finished runs")


def check_model_sizes(
    posterior: Any, acquisition: str, model_sizes: Sequence[float], pool: Any
) -> list[float]:
    """The sorted model sizes a run may take, or one clear error."""
    check_cost_aware(acquisition, pool, "model sizes")
    if not posterior.has_sizes:
        raise ProposalError(
            "model sizes need a law fitted with a model-size axis (runs of several sizes, "
            "law 'additive' or 'cross-scaling'): this posterior has none"
        )
    try:
        sizes = sorted({float(x) for x in model_sizes})
    except (TypeError, ValueError):
        sizes = []
    if not sizes or not all(np.isfinite(x) and x > 0 for x in sizes):
        raise ProposalError(f"model sizes must be positive parameter counts, got {model_sizes!r}")
    return sizes


def tokens_per_step(posterior: Any) -> float | None:
    """Tokens one step trains: from the fitted runs' tokens beside their steps, else 1 (with
    several model sizes a step counts tokens); None without a step axis."""
    if not posterior.observations.has_steps:
        return None
    frame = posterior.observations.frame
    if "tokens" in frame and frame["tokens"].notna().any():
        return 1.0 / posterior.step_for_tokens(1.0)
    return 1.0


def run_plan(
    posterior: Any,
    q: int,
    *,
    step: float | None,
    model_size: float | None,
    lengths: list[float] | None,
    model_sizes: list[float] | None,
    tokens: float | None,
    flops: float | None,
    max_runs: int | None = None,
) -> RunPlan:
    """The options of a cost-aware batch and its budget (module docstring).

    lengths: the run lengths offered (None: runs of the target length, or final losses
    without a step axis); model_sizes: the sizes offered (None: the target size); tokens:
    the tokens each run trains, needed without a step axis; flops: the batch's budget (None:
    q runs of the target length at the largest size offered); max_runs: the most runs
    the batch may hold (None: ``MAX_RUNS_PER_Q`` q).
    """
    per_step = tokens_per_step(posterior)
    if per_step is None and tokens is None and model_sizes is not None:
        raise ProposalError(
            "the law has no step axis, so the tokens each run trains must be given "
            "(tokens=...) to price runs of several sizes at 6 N D FLOPs"
        )
    if tokens is not None and not (np.isfinite(tokens) and tokens > 0):
        raise ProposalError(f"tokens must be a positive number, got {tokens!r}")
    target_step = None
    if posterior.observations.has_steps:
        target_step = float(step) if step is not None else posterior.reference_step
    target_size = model_size
    if posterior.has_sizes and target_size is None:
        target_size = float(posterior.settings.reference_size)

    def cost(length: float | None, size: float | None) -> float:
        n = size if size is not None else (target_size or 1.0)
        d = tokens if per_step is None else (length or target_step) * per_step
        return 6.0 * n * float(d if d is not None else 1.0)

    options = [
        RunOption(length, size, cost(length, size))
        for size in (model_sizes or [None])
        for length in (lengths or [target_step])
    ]
    budget = q * cost(target_step, max(model_sizes) if model_sizes else None)
    if flops is not None:
        if not (np.isfinite(flops) and flops > 0):
            raise ProposalError(f"flops must be a positive budget, got {flops!r}")
        cheapest = min(option.flops for option in options)
        if flops < cheapest:
            raise ProposalError(
                f"a budget of {flops:.3g} FLOPs buys no run: the cheapest costs {cheapest:.3g}"
            )
        budget = float(flops)
    if max_runs is None:
        max_runs = MAX_RUNS_PER_Q * q
    if isinstance(max_runs, bool) or not isinstance(max_runs, int | np.integer) or max_runs < q:
        raise ProposalError(f"max_runs must be an integer of at least q={q}, got {max_runs!r}")
    return RunPlan(target_step, target_size, options, budget, int(max_runs))


def pending_sizes(pending: pd.DataFrame | None, n: int, plan: RunPlan) -> list[float | None]:
    """Each pending run's model size: its ``model_size`` column, else the largest size
    offered (a study's runs at the proxy size)."""
    sizes = [o.model_size for o in plan.options]
    default = max((s for s in sizes if s is not None), default=None)
    if pending is None or "model_size" not in pending:
        return [default] * n
    return [default if pd.isna(v) else float(v) for v in pending["model_size"]]


def separable_lengths(
    observations: Any, lengths: list[float], target: float, seed: int
) -> list[float]:
    """``lengths``, or the target length alone where short runs would mislead or the
    runs cannot tell yet.

    The test's level is 0.1, not the customary 0.05: a false alarm only forgoes the savings
    of short runs, a missed change in a domain's effect costs regret (6 times that of
    full-length runs where it was large, ``results/run_length.md``).
    """
    try:
        check = check_separability(observations, lengths[0], level=0.1, seed=seed)
    except SeparabilityError as err:
        warnings.warn(
            f"proposing runs of the target length {target:g} until short runs can be checked "
            f"against long ones: {err}",
            UserWarning,
            stacklevel=3,
        )
        return [target]
    if check.separable:
        return lengths
    warnings.warn(
        f"short runs would mislead here ({check}); proposing runs of the target length "
        f"{target:g} only",
        UserWarning,
        stacklevel=3,
    )
    return [target]


def checkpoint_steps(length: float | None, checkpoints: int) -> tuple[float | None, ...]:
    """The steps a run of ``length`` is evaluated at (None: its final loss only)."""
    if length is None:
        return (None,)
    return tuple(length * k / checkpoints for k in range(1, checkpoints + 1))


def cost_aware(
    problem: Problem,
    q: int,
    plan: RunPlan,
    checkpoints: int,
    pending_size: Sequence[float | None] = (),
) -> tuple[Tensor, list[RunOption], np.ndarray]:
    r"""Greedy runs until the plan's budget is spent (at most ``plan.max_runs`` runs):
    each the (mixture, option) pair with the largest variance of r* removed per FLOP,

        argmax_{o, x} [alpha(B + (x, o)) - alpha(B)] / C(o),

    B the runs chosen so far, each observed at its checkpoints and model size. A short run
    or a small model shows the mixture's effect through the parameters it shares with the
    target; under a law whose mixture term changes with size (``cross-scaling``) small models
    inform the target's optimum less, and the rate says by how much. Where the law is wrong
    about that, short runs and small models mislead.
    """
    model, settings = problem.model, problem.settings
    acq = optimum_variance_function(problem)
    if problem.x_pend is not None:
        sizes = list(pending_size) or [None] * len(problem.x_pend)
        for size in dict.fromkeys(sizes):
            rows = torch.as_tensor([s == size for s in sizes])
            acq.add_pending(problem.x_pend[rows], checkpoint_steps(plan.step, checkpoints), size)
    raw_t = raw_points(model, problem.lo, problem.hi, problem.x_obs, settings, problem.gen)
    chosen: list[Tensor] = []
    picked: list[RunOption] = []
    values: list[float] = []
    spent = 0.0
    while len(chosen) < plan.max_runs:
        options = [o for o in plan.options if spent + o.flops <= plan.budget * (1 + 1e-9)]
        if not options:
            break
        # The option by the best rate among the candidate starts, then one optimisation of
        # the mixture for it: optimising every option costs len(options) times more.
        removed = float(acq.removed(acq.pending_gram[None]))
        rates, shortlist = [], []
        for option in options:
            acq.checkpoints = checkpoint_steps(option.length, checkpoints)
            acq.run_size = option.model_size
            with torch.no_grad():
                scores = torch.cat([acq(c[:, None, :]) for c in raw_t.split(256)])
            rates.append((float(scores.max()) - removed) / option.flops)
            shortlist.append(raw_t[torch.argsort(scores, descending=True)[: settings.shortlist]])
        if not chosen:  # later runs score the first scoring's shortlists only
            raw_t = torch.unique(torch.cat(shortlist), dim=0)
        option = options[int(np.argmax(rates))]
        acq.checkpoints = checkpoint_steps(option.length, checkpoints)
        acq.run_size = option.model_size
        X, value = optimize_on_simplex(
            acq,
            model,
            1,
            problem.lo,
            problem.hi,
            problem.x_obs,
            settings,
            problem.gen,
            candidates=raw_t,
            taken=torch.cat([problem.taken(), *(x[None] for x in chosen)]),
            min_distance=problem.min_distance,
        )
        acq.add_pending(X, acq.checkpoints, option.model_size)
        chosen.append(X[0])
        picked.append(option)
        values.append(float(value))
        spent += option.flops
    return torch.stack(chosen), picked, np.array(values)
