"""The optimal mixture of what was fitted: one law's posterior or an average of laws.

``optimal_mixture`` answers for either, computed once per fitted object and settings
(``cache.OPTIMA``). Over a ``LawAverage`` the recommendation minimises the law-weighted
expected objective through the ensemble of every law's draws (``LawAverageModel``), the
Bayesian-model-average recommendation; ``expected_optimum`` does the same for one law, with
the GP discrepancy when asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from bayesmix.acquisition.base import objective_weights
from bayesmix.acquisition.cache import OPTIMA, posterior_optimum, settings_key
from bayesmix.acquisition.functions import EnsembleMean
from bayesmix.acquisition.model import DTYPE, LogLossEnsemble, ensemble_model
from bayesmix.acquisition.optim import AcquisitionSettings, optimize_on_simplex
from bayesmix.law_average import LawAverage
from bayesmix.optimize import Constraints, OptimalMixture, check_ci, summarise_optima


def optimal_mixture(
    fitted: Any,
    weights: Mapping[str, float] | None = None,
    step: float | None = None,
    constraints: Constraints | None = None,
    max_draws: int | None = 256,
    *,
    ci: float = 0.9,
    seed: int = 0,
    strict: bool = False,
) -> OptimalMixture:
    r"""The optimal mixture of a ``Posterior`` (``Posterior.optimal_mixture``) or of a
    ``LawAverage``, with its intervals, computed once per fitted object and settings.

    Over an average of laws the recommendation is argmin_x \sum_k w_k E_{d ~ p_k}[F_d(x)]
    through the ensemble of every law's draws (in proportion to the weights, ``max_draws``
    members in all); the distribution of optima pools every law's per-draw optima the same
    way, so the intervals widen where the laws disagree. strict: refuse it when a fit did
    not converge.
    """
    if not isinstance(fitted, LawAverage):
        return posterior_optimum(
            fitted, weights, step, constraints, max_draws, ci=ci, strict=strict
        )
    key = settings_key(weights, step, constraints, max_draws, ci, seed, strict)
    return OPTIMA.get(
        fitted,
        key,
        lambda: _average_optimum(fitted, weights, step, constraints, max_draws, ci, seed, strict),
    )


def _average_optimum(
    average: LawAverage,
    weights: Mapping[str, float] | None,
    step: float | None,
    constraints: Constraints | None,
    max_draws: int | None,
    ci: float,
    seed: int,
    strict: bool,
) -> OptimalMixture:
    check_ci(ci)
    for post, _ in average.parts():
        post.check_usable(strict)
    lead, model = ensemble_model(average, step, max_draws=max_draws or 256, seed=seed)
    w = objective_weights(weights, average.targets)
    best = ensemble_mean_optimum(lead, model, w, step, constraints, seed)
    with torch.no_grad():
        values = model.log_loss(torch.as_tensor(best[None], dtype=DTYPE)).exp()
    return summarise_optima(
        average.domains,
        best,
        model.member_optima(w, step, constraints),
        values[:, 0, :].numpy() @ w,
        ci,
        step,
        "law average (BoTorch)",
        converged=all(post.converged for post, _ in average.parts()),
    )


def expected_optimum(
    posterior: Any,
    *,
    weights: Mapping[str, float] | None = None,
    step: float | None = None,
    constraints: Any = None,
    discrepancy: bool = False,
    max_draws: int = 256,
    seed: int = 0,
    settings: AcquisitionSettings | None = None,
) -> np.ndarray:
    """argmin_x E_d[F_d(x)] over the bounded simplex, through the BoTorch model (so with the
    GP discrepancy when asked); started from the law's own optimum, the members' optima and
    the observed runs. Over a ``LawAverage``, d runs over every law's members in proportion
    to the law's weight: the Bayesian-model-average recommendation."""
    lead, model = ensemble_model(
        posterior, step, max_draws=max_draws, discrepancy=discrepancy, seed=seed
    )
    w = objective_weights(weights, list(lead.targets))
    return ensemble_mean_optimum(lead, model, w, step, constraints, seed, settings)


def ensemble_mean_optimum(
    lead: Any,
    model: LogLossEnsemble,
    w: np.ndarray,
    step: float | None,
    constraints: Any,
    seed: int,
    settings: AcquisitionSettings | None = None,
) -> np.ndarray:
    """argmin_x E_d[F_d(x)] for a built ``model`` (``ensemble_model``) and objective weights."""
    settings = settings or AcquisitionSettings()
    lo, hi = (constraints or Constraints()).bounds(list(lead.domains))
    model.member_optima(w, step, constraints)  # seeds the starts
    x_obs = torch.as_tensor(lead.observations.mixtures().to_numpy(dtype=float), dtype=DTYPE)
    acq = EnsembleMean(model, torch.as_tensor(w, dtype=DTYPE))
    gen = np.random.default_rng([seed, len(x_obs), 11])
    X, _ = optimize_on_simplex(acq, model, 1, lo, hi, x_obs, settings, gen)
    return X[0].detach().numpy()
