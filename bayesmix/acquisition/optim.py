"""The simplex optimiser: acquisition functions maximised over the bounded simplex.

Mixtures satisfy sum r = 1 and lo <= r <= hi (bounds, repetition caps and minimum shares).
A batch is chosen greedily, one run at a time with the earlier ones pending (BoTorch's
sequential greedy batch), over the simplex or a pool (``optimize_acqf_discrete``). Each run
lies at least ``min_distance`` (L1) from the observed and pending runs and from the batch's
earlier runs: of the optimiser's restarts and their starts, the best one that far is taken.
``Problem`` is what every acquisition chooses a batch from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.optim import optimize_acqf, optimize_acqf_discrete
from torch import Tensor

from bayesmix.acquisition.base import far_from, too_few_distinct
from bayesmix.acquisition.model import DTYPE, LogLossEnsemble
from bayesmix.optimize import project_to_box_simplex

SOFTMAX_BOUND = 25.0  # |z| bound for L-BFGS-B: e^-50 relative shares are zero in practice


@dataclass
class AcquisitionSettings:
    """How acquisition functions are evaluated and optimised.

    mc_samples: IndexSampler draws for qLogNEI; num_restarts / raw_samples: starts of
    ``optimize_acqf`` and the random points they are chosen from (the members' optima and
    the observed runs are always among the latter); shortlist: how many of the best of
    them the later runs of a batch choose their starts from; maxiter: optimiser iterations
    per start.
    """

    mc_samples: int = 256
    num_restarts: int = 6
    raw_samples: int = 256
    shortlist: int = 64
    maxiter: int = 100


@dataclass
class Problem:
    """What an acquisition chooses a batch of runs from.

    model: the ensemble of posterior draws; w: the objective's weights over targets (sum 1);
    x_obs / x_pend: observed and pending runs (M columns; x_pend None when none); pool: the
    pool rows not yet observed or pending, as (positions in the pool, their mixtures), or
    None to search the simplex; lo, hi: bounds per domain; step, constraints: the objective's
    step and the user's constraints; gen: the proposal's random generator; min_distance:
    the smallest L1 distance between a proposal and any other run (0: repeats allowed).
    """

    model: LogLossEnsemble
    w: Tensor
    x_obs: Tensor
    x_pend: Tensor | None
    pool: tuple[Tensor, Tensor] | None
    lo: np.ndarray
    hi: np.ndarray
    step: float | None
    constraints: Any
    settings: AcquisitionSettings
    seed: int
    gen: np.random.Generator
    min_distance: float = 0.0

    def member_optima(self) -> np.ndarray:
        """(D, M) each member's optimal mixture for this objective (computed once)."""
        return self.model.member_optima(self.w.numpy(), self.step, self.constraints)

    def taken(self) -> Tensor:
        """(K, M) the observed and pending runs: proposals keep ``min_distance`` from them."""
        return self.x_obs if self.x_pend is None else torch.cat([self.x_obs, self.x_pend])


def maximise(acq: AcquisitionFunction, problem: Problem, q: int) -> tuple[Tensor, Tensor]:
    """q runs maximising ``acq`` with the problem's pending runs: from the pool, or over the
    bounded simplex. Returns the (q, M) mixtures and their acquisition values."""
    if problem.x_pend is not None:
        acq.set_X_pending(problem.x_pend)
    if problem.pool is not None:
        return optimize_on_pool(acq, q, problem.pool[1], problem.min_distance)
    return optimize_on_simplex(
        acq,
        problem.model,
        q,
        problem.lo,
        problem.hi,
        problem.x_obs,
        problem.settings,
        problem.gen,
        taken=problem.taken(),
        min_distance=problem.min_distance,
    )


def optimize_on_pool(
    acq: AcquisitionFunction, q: int, choices: Tensor, min_distance: float
) -> tuple[Tensor, Tensor]:
    """Greedy batch from a pool (rows already clear of the observed and pending runs): each
    run the best row at least ``min_distance`` from the batch's earlier runs."""
    base_pending = acq.X_pending
    chosen: list[Tensor] = []
    values: list[Tensor] = []
    free = choices
    for _ in range(q):
        if chosen:
            free = free[torch.as_tensor(far_from(free.numpy(), chosen[-1].numpy(), min_distance))]
            # A pool row is proposed once, whatever the distance.
            free = free[(free - chosen[-1]).abs().sum(-1) > 0]
        if len(free) == 0:
            raise too_few_distinct(len(chosen), q, min_distance, "the pool")
        x, value = optimize_acqf_discrete(acq, q=1, choices=free)
        chosen.append(x[0])
        values.append(value.reshape(()))
        pending = torch.stack(chosen)
        acq.set_X_pending(pending if base_pending is None else torch.cat([base_pending, pending]))
    acq.set_X_pending(base_pending)
    return torch.stack(chosen), torch.stack(values)


class OnBoundedSimplex(AcquisitionFunction):
    r"""An acquisition function of z in R^M: acq(lo + (1 - sum lo) softmax(z)).

    Every z gives a mixture with sum r = 1 and r >= lo, so the optimiser needs no constraint:
    L-BFGS-B on all starts at once, where SLSQP solves one dense quadratic programme per
    iteration over every start's shares (at 64 domains, half of a proposal's time went into
    SLSQP itself). Usable only where no upper bound binds: hi_i >= lo_i + 1 - sum lo.
    """

    def __init__(self, acq: AcquisitionFunction, lo: Tensor) -> None:
        super().__init__(model=acq.model)
        self.acq = acq
        self.register_buffer("lo", lo)
        self.free = float(1.0 - lo.sum())

    def to_mixture(self, Z: Tensor) -> Tensor:
        return self.lo + self.free * torch.softmax(Z, dim=-1)

    def from_mixture(self, X: Tensor) -> Tensor:
        z = torch.log(((X - self.lo) / self.free).clamp_min(1e-9))
        return z - z.mean(dim=-1, keepdim=True)

    def forward(self, Z: Tensor) -> Tensor:
        return self.acq(self.to_mixture(Z))


def optimize_on_simplex(
    acq: AcquisitionFunction,
    model: LogLossEnsemble,
    q: int,
    lo: np.ndarray,
    hi: np.ndarray,
    x_obs: Tensor,
    settings: AcquisitionSettings,
    gen: np.random.Generator,
    candidates: Tensor | None = None,
    *,
    taken: Tensor | None = None,
    min_distance: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Greedy batch: q single-run optimisations, each with the earlier runs pending.

    Starts are the best (by acquisition value) of ``candidates``, by default random points
    of the bounded simplex, the observed runs and the ensemble members' optima (when known),
    all projected inside the bounds; ``optimize_acqf`` refines them: where no cap binds, by
    L-BFGS-B through ``OnBoundedSimplex``; otherwise under sum r = 1 and the bounds by
    SLSQP, one start at a time (``batch_limit`` 1: its programme grows with the cube of the
    variables).

    Every run lies at least ``min_distance`` (L1) from ``taken`` and from the batch's earlier
    runs: starts are drawn among the candidates that far, and the run is the best of the
    refined restarts and their starts that is that far (a start always is). Where too few
    candidates are left, fresh random ones join them; a ``ProposalError`` says when none is.
    """
    m = len(lo)
    no_cap = bool(np.all(hi >= lo + (1.0 - lo.sum()) - 1e-12))
    on_simplex = OnBoundedSimplex(acq, torch.as_tensor(lo, dtype=DTYPE)) if no_cap else None
    z_bounds = SOFTMAX_BOUND * torch.tensor([[-1.0], [1.0]], dtype=DTYPE).expand(2, m)
    base_pending = acq.X_pending
    raw_t = raw_points(model, lo, hi, x_obs, settings, gen) if candidates is None else candidates
    busy = np.zeros((0, m)) if taken is None else taken.detach().numpy().reshape(-1, m)
    chosen: list[Tensor] = []
    values: list[Tensor] = []
    for i in range(q):
        far = _clear_of(raw_t, busy, min_distance)
        if min_distance > 0 and len(far) < settings.num_restarts:
            # The candidates crowd around the runs taken so far: fresh random starts.
            fresh = raw_points(model, lo, hi, x_obs, settings, gen)
            far = torch.cat([far, _clear_of(fresh, busy, min_distance)])
        if len(far) == 0:
            raise too_few_distinct(len(chosen), q, min_distance, "the acquisition optimiser")
        with torch.no_grad():
            scores = torch.cat([acq(c[:, None, :]) for c in far.split(256)])
        order = torch.argsort(scores, descending=True)
        top = order[: settings.num_restarts]
        starts = far[top][:, None, :]
        if i == 0:
            # Later runs of the batch start from the best of the first scoring, rescored with
            # the earlier runs pending: scoring every raw point again took a third of a
            # 64-domain proposal and rarely changed the starts.
            raw_t = far[order[: settings.shortlist]]
        if on_simplex is not None:
            z, value = optimize_acqf(
                on_simplex,
                bounds=z_bounds,
                q=1,
                num_restarts=len(top),
                batch_initial_conditions=on_simplex.from_mixture(starts),
                options={"maxiter": settings.maxiter},
                return_best_only=False,
            )
            cand = on_simplex.to_mixture(z).detach()
        else:
            cand, value = optimize_acqf(
                acq,
                bounds=torch.as_tensor(np.stack([lo, hi]), dtype=DTYPE),
                q=1,
                num_restarts=len(top),
                batch_initial_conditions=starts,
                equality_constraints=[(torch.arange(m), torch.ones(m, dtype=DTYPE), 1.0)],
                options={"maxiter": settings.maxiter, "batch_limit": 1},
                return_best_only=False,
            )
        cand = project_to_box_simplex(cand.detach().numpy().reshape(-1, m), lo, hi)
        # The refined restarts, then their starts: the best one far enough is the run.
        options = np.concatenate([cand, starts[:, 0, :].numpy()])
        option_values = torch.cat([value.detach().reshape(-1), scores[top]])
        ok = torch.as_tensor(far_from(options, busy, min_distance))
        best = int(torch.argmax(torch.where(ok, option_values, -torch.inf)))
        chosen.append(torch.as_tensor(options[best], dtype=DTYPE))
        values.append(option_values[best].reshape(()))
        busy = np.concatenate([busy, options[best][None]])
        pending = torch.stack(chosen)
        acq.set_X_pending(pending if base_pending is None else torch.cat([base_pending, pending]))
    acq.set_X_pending(base_pending)
    return torch.stack(chosen), torch.stack(values)


def _clear_of(points: Tensor, busy: np.ndarray, min_distance: float) -> Tensor:
    """The rows of ``points`` at least ``min_distance`` (L1) from every row of ``busy``."""
    return points[torch.as_tensor(far_from(points.numpy(), busy, min_distance))]


def raw_points(
    model: LogLossEnsemble,
    lo: np.ndarray,
    hi: np.ndarray,
    x_obs: Tensor,
    settings: AcquisitionSettings,
    gen: np.random.Generator,
) -> Tensor:
    """Candidate starts: random mixtures, the observed runs and the members' optima (when
    known), inside the bounds."""
    raw = [gen.dirichlet(np.ones(len(lo)), settings.raw_samples), x_obs.numpy()]
    if model.optima is not None:
        raw.append(model.optima)
    return torch.as_tensor(project_to_box_simplex(np.concatenate(raw), lo, hi), dtype=DTYPE)
