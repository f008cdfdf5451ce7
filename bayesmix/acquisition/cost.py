"""What runs cost: run lengths, and the runs chosen for information per step trained.

A proposal may choose each run's length (steps) from ``run_lengths``: each run records
``checkpoints`` evenly spaced evaluations, and the batch spends the compute of q runs of the
target length, each run the (mixture, length) with the most variance of r* removed per step
(``cost_aware``). A run's cost is its length; a size fidelity (runs of several model sizes)
would make it length times parameters, each option a (length, size) pair.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bayesmix.acquisition.base import ProposalError
from bayesmix.acquisition.functions import optimum_variance_function
from bayesmix.acquisition.optim import Problem, optimize_on_simplex, raw_points
from bayesmix.separability import SeparabilityError, check_separability


def check_run_lengths(
    posterior: Any,
    acquisition: str,
    run_lengths: Sequence[float],
    step: float | None,
    pool: Any,
) -> tuple[float, list[float]]:
    """The target step and the sorted run lengths, or one clear error."""
    if acquisition != "optimum-variance":
        raise ProposalError(
            "run lengths can be proposed by the optimum-variance acquisition only "
            f"(information per step trained), not {acquisition!r}"
        )
    if pool is not None:
        raise ProposalError("run lengths cannot be proposed from a pool of finished runs")
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


def checkpoint_steps(length: float, checkpoints: int) -> tuple[float, ...]:
    return tuple(length * k / checkpoints for k in range(1, checkpoints + 1))


def cost_aware(
    problem: Problem, q: int, target: float, lengths: list[float], checkpoints: int
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    r"""Greedy runs until ``budget`` steps are spent: each the (mixture, length) pair with
    the largest variance of r* removed per step,

        argmax_{l, x} [alpha(B + (x, l)) - alpha(B)] / l,

    B the runs chosen so far, each observed at its checkpoints. Under the law a short run
    shows the mixture's effect as well as a long one (the step factor multiplies it), so
    this pays where that holds and misleads where a mixture's effect changes with training.
    """
    model, settings = problem.model, problem.settings
    acq = optimum_variance_function(problem)
    if problem.x_pend is not None:  # the study's pending runs have the target length
        acq.add_pending(problem.x_pend, checkpoint_steps(target, checkpoints))
    budget = q * target
    raw_t = raw_points(model, problem.lo, problem.hi, problem.x_obs, settings, problem.gen)
    chosen: list[Tensor] = []
    values: list[float] = []
    steps: list[float] = []
    spent = 0.0
    while True:
        options = [x for x in lengths if spent + x <= budget * (1 + 1e-9)]
        if not options:
            break
        # The length by the best rate among the candidate starts, then one optimisation of
        # the mixture at that length: optimising every length costs len(lengths) times more.
        removed = float(acq.removed(acq.pending_gram[None]))
        rates, shortlist = [], []
        for length in options:
            acq.checkpoints = checkpoint_steps(length, checkpoints)
            with torch.no_grad():
                scores = torch.cat([acq(c[:, None, :]) for c in raw_t.split(256)])
            rates.append((float(scores.max()) - removed) / length)
            shortlist.append(raw_t[torch.argsort(scores, descending=True)[: settings.shortlist]])
        if not chosen:  # later runs score the first scoring's shortlists only
            raw_t = torch.unique(torch.cat(shortlist), dim=0)
        length = options[int(np.argmax(rates))]
        acq.checkpoints = checkpoint_steps(length, checkpoints)
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
        acq.add_pending(X, acq.checkpoints)
        chosen.append(X[0])
        values.append(float(value))
        steps.append(length)
        spent += length
    return torch.stack(chosen), np.array(values), np.array(steps)
