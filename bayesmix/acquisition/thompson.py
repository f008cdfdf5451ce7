"""Thompson sampling: per posterior draw d, the mixture that is optimal under theta_d.

A batch is q distinct draws' optima (closed form per draw for the own-share law): cheap and
diverse. A draw whose optimum lies within ``min_distance`` (L1) of an observed or pending
run or of the batch's earlier runs proposes instead its best candidate that far: its best
pool row from a pool, else its best of random mixtures, the observed runs and the draws'
optima (``raw_points``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from bayesmix.acquisition.base import SAME_MIXTURE_L1, far_from, too_few_distinct
from bayesmix.acquisition.functions import member_objective
from bayesmix.acquisition.optim import Problem, raw_points


def thompson(problem: Problem, q: int) -> tuple[Tensor, Tensor]:
    """q distinct members, in random order; each proposes its own optimum, or its best
    candidate far enough from the runs taken (module docstring). Acquisition values are NaN:
    Thompson sampling samples rather than maximises."""
    # Two draws never propose the same run, whatever min_distance allows.
    spacing = max(problem.min_distance, SAME_MIXTURE_L1)
    members = problem.gen.permutation(problem.model.ensemble_size)
    optima = None if problem.pool is not None else problem.member_optima()
    busy = problem.taken().numpy()
    fallback: tuple[np.ndarray, np.ndarray] | None = None
    chosen: list[np.ndarray] = []
    for d in members:
        if len(chosen) == q:
            break
        if optima is not None and far_from(optima[d], busy, spacing)[0]:
            pick = optima[d]
        else:
            fallback = fallback or _candidates(problem)
            points, objective = fallback
            ok = far_from(points, busy, spacing)
            if not ok.any():
                break
            pick = points[np.flatnonzero(ok)[np.argmin(objective[d][ok])]]
        chosen.append(pick)
        busy = np.concatenate([busy, pick[None]])
    if len(chosen) < q:
        raise too_few_distinct(len(chosen), q, problem.min_distance, "thompson sampling")
    return torch.as_tensor(np.stack(chosen)), torch.full((q,), float("nan"))


def _candidates(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """(C, M) the pool's rows, else random points, the observed runs and the draws' optima;
    and (D, C) every draw's objective at them."""
    if problem.pool is not None:
        points = problem.pool[1]
    else:
        p = problem
        points = raw_points(p.model, p.lo, p.hi, p.x_obs, p.settings, p.gen)
    with torch.no_grad():
        objective = member_objective(problem.model, points, problem.w)
    return points.numpy(), objective.numpy()
