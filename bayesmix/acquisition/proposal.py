"""``propose``: the next q proxy runs from a fitted posterior, by the acquisition named.

The acquisition is looked up in the registry (``bayesmix.acquisition._ACQUISITIONS``) and
given a ``Problem``: the ensemble of posterior draws (over a ``LawAverage``, every law's
draws in proportion to its weight), the objective's weights, the observed and pending runs,
the bounds, and the pool when there is one.

    import bayesmix as bm
    batch = bm.propose(post, q=8, acquisition="qlognei")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bayesmix.acquisition import _ACQUISITIONS
from bayesmix.acquisition.base import (
    MIN_DISTANCE,
    SAME_MIXTURE_L1,
    ProposalError,
    check_min_distance,
    check_q,
    objective_weights,
    proposal_frame,
)
from bayesmix.acquisition.cost import (
    check_model_sizes,
    check_run_lengths,
    cost_aware,
    pending_sizes,
    run_plan,
    separable_lengths,
)
from bayesmix.acquisition.functions import expected_gain
from bayesmix.acquisition.model import DTYPE, ensemble_model
from bayesmix.acquisition.optim import AcquisitionSettings, Problem
from bayesmix.mixtures import mixture_matrix
from bayesmix.optimize import Constraints


def get_acquisition(name: str) -> Callable[[Problem, int], tuple[Tensor, Tensor]]:
    """The acquisition registered under ``name`` (one of ``ACQUISITIONS``): a function that
    chooses q runs for a ``Problem`` and returns their (q, M) mixtures and values."""
    if name not in _ACQUISITIONS:
        raise ProposalError(
            f"unknown acquisition {name!r}; choose one of {', '.join(_ACQUISITIONS)}"
        )
    module, function = _ACQUISITIONS[name]
    return getattr(importlib.import_module(module), function)


def propose(
    posterior: Any,
    q: int,
    acquisition: str = "optimum-variance",
    *,
    weights: Mapping[str, float] | None = None,
    step: float | None = None,
    constraints: Constraints | None = None,
    pending: pd.DataFrame | None = None,
    candidates: pd.DataFrame | None = None,
    seed: int = 0,
    max_draws: int = 256,
    discrepancy: bool = False,
    settings: AcquisitionSettings | None = None,
    run_lengths: Sequence[float] | None = None,
    checkpoints: int = 4,
    check_steps: bool = True,
    min_distance: float = MIN_DISTANCE,
    model_size: float | None = None,
    model_sizes: Sequence[float] | None = None,
    tokens: float | None = None,
    flops: float | None = None,
    max_runs: int | None = None,
) -> pd.DataFrame:
    """The next q runs from a fitted posterior (or ``LawAverage``): one row per run.

    Returns ``r:<domain>`` columns, ``expected_gain`` (the posterior expected improvement
    of the objective over the best observed run, E_d[max(0, min_obs F_d - F_d(x))], in the
    objective's units), ``acquisition_value`` (the value when the run joins the batch:
    qlognei, the log expected improvement over the observed runs and the batch's earlier
    runs; optimum-variance, the variance of r* removed by the batch so far; thompson, NaN:
    it samples rather than maximises) and, with ``candidates``, ``candidate`` (the pool
    row's label).

    min_distance: every proposed run lies at least this far (L1) from the observed and
    pending runs and from the batch's other runs (default 0.02; 0 allows re-measuring a
    mixture). A ``ProposalError`` says when q such runs cannot be found.

    run_lengths (optimum-variance only; a law fitted with a step axis): the run lengths in
    steps a proposal may choose from, each run recording ``checkpoints`` evenly spaced
    evaluations. The batch then spends the compute of q runs of the target length, each
    run chosen for the most variance of r* removed per step trained (``cost.cost_aware``),
    so it may hold more, shorter runs; a ``steps`` column gives each run's length. With
    ``check_steps`` the runs that recorded early and final losses are first asked whether
    short runs show the mixture's effect that long ones do (``check_separability``); where
    they do not, the batch holds runs of the target length only, with a warning.

    model_size: the model size (parameters) whose optimum the runs should inform, for a law
    with a size axis: the user's big model (None: the largest fitted size). Every acquisition
    then scores mixtures at that size.

    model_sizes (optimum-variance only; a law with a size axis): the sizes a run may take.
    Each run then costs 6 N D FLOPs (N parameters, D tokens: its length in tokens, or
    ``tokens`` where the law has no step axis) and the batch spends ``flops`` (default: q
    runs of the target length at the largest size offered), each run the (mixture, length,
    size) with the most variance of the optimum at ``model_size`` removed per FLOP; the
    frame gains ``model_size`` and ``flops`` columns (``steps`` too with ``run_lengths``).
    Pending runs count at their ``model_size`` column, else at the largest size offered.
    With ``run_lengths`` or ``model_sizes`` a batch holds at most ``max_runs`` runs (default
    4q): cheap runs may fill it by more than q.
    """
    q = check_q(q)
    min_distance = check_min_distance(min_distance)
    choose = get_acquisition(acquisition)
    settings = settings or AcquisitionSettings()
    # BoTorch draws from torch's global generator (qLogNEI's baseline pruning, the GP fit of
    # the discrepancy term): seeded by the proposal, a proposal does not depend on what ran
    # before it in the process.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        posterior, model = ensemble_model(
            posterior,
            step,
            model_size=model_size,
            max_draws=max_draws,
            discrepancy=discrepancy,
            seed=seed,
        )
        domains = list(posterior.domains)
        lo, hi = (constraints or Constraints()).bounds(domains)
        w = torch.as_tensor(objective_weights(weights, list(posterior.targets)), dtype=DTYPE)
        x_obs = torch.as_tensor(
            posterior.observations.mixtures().to_numpy(dtype=float), dtype=DTYPE
        )
        x_pend = (
            torch.as_tensor(mixture_matrix(pending, domains, "pending", ProposalError), dtype=DTYPE)
            if pending is not None and len(pending)
            else None
        )
        pool = (
            None
            if candidates is None
            else _free_pool(candidates, domains, x_obs, x_pend, lo, hi, q, min_distance)
        )
        problem = Problem(
            model=model,
            w=w,
            x_obs=x_obs,
            x_pend=x_pend,
            pool=pool,
            lo=lo,
            hi=hi,
            step=step,
            constraints=constraints,
            settings=settings,
            seed=seed,
            gen=np.random.default_rng([seed, len(x_obs), 7]),
            min_distance=min_distance,
        )
        if run_lengths is not None or model_sizes is not None:
            lengths = sizes = None
            if run_lengths is not None:
                target, lengths = check_run_lengths(posterior, acquisition, run_lengths, step, pool)
                if check_steps and lengths != [target]:
                    lengths = separable_lengths(posterior.observations, lengths, target, seed)
            if model_sizes is not None:
                sizes = check_model_sizes(posterior, acquisition, model_sizes, pool)
            plan = run_plan(
                posterior,
                q,
                step=step,
                model_size=model_size,
                lengths=lengths,
                model_sizes=sizes,
                tokens=tokens,
                flops=flops,
                max_runs=max_runs,
            )
            n_pend = 0 if x_pend is None else len(x_pend)
            X, runs, values = cost_aware(
                problem, q, plan, checkpoints, pending_sizes(pending, n_pend, plan)
            )
            extra = {"steps": [o.length for o in runs]} if lengths is not None else {}
            if sizes is not None:
                extra |= {"model_size": [o.model_size for o in runs]}
                extra |= {"flops": [o.flops for o in runs]}
            gain = expected_gain(model, X, x_obs, w)
            return proposal_frame(
                X.numpy(), domains, acquisition_value=values, expected_gain=gain, **extra
            )
        X, values = choose(problem, q)
        X = X.detach()
        extra: dict[str, Any] = {
            "acquisition_value": np.asarray(values.detach(), dtype=float).reshape(-1),
            "expected_gain": expected_gain(model, X, x_obs, w),
        }
        if pool is not None and candidates is not None:
            rows = (X[:, None, :] - pool[1][None]).abs().sum(-1).argmin(-1).numpy()
            extra["candidate"] = list(candidates.index[pool[0][rows].numpy()])
        return proposal_frame(X.numpy(), domains, **extra)


def _free_pool(
    candidates: pd.DataFrame,
    domains: list[str],
    x_obs: Tensor,
    x_pend: Tensor | None,
    lo: np.ndarray,
    hi: np.ndarray,
    q: int,
    min_distance: float,
) -> tuple[Tensor, Tensor]:
    """The pool rows inside the bounds, neither observed nor pending and at least
    ``min_distance`` from those: (their positions in ``candidates``, their mixtures); at
    least q of them, or one clear error."""
    pool_np = mixture_matrix(candidates, domains, "candidates", ProposalError)
    taken = x_obs if x_pend is None else torch.cat([x_obs, x_pend])
    dist = (torch.as_tensor(pool_np)[:, None, :] - taken[None]).abs().sum(-1).amin(1)
    free = torch.nonzero((dist > SAME_MIXTURE_L1) & (dist >= min_distance)).squeeze(-1)
    inside = torch.as_tensor(((pool_np >= lo - 1e-9) & (pool_np <= hi + 1e-9)).all(axis=1))[free]
    free = free[inside]
    if len(free) < q:
        raise ProposalError(
            f"the pool has {len(free)} feasible mixture(s) at least min_distance="
            f"{min_distance:g} (L1) from the observed and pending runs, fewer than q={q}"
        )
    return free, torch.as_tensor(pool_np, dtype=DTYPE)[free]
