"""Recommenders: the mixture to train on, from the runs observed so far.

- ``posterior-optimum`` (ours): the mixture minimising the posterior expected objective
  (``Posterior.optimal_mixture``), under the user's bounds and repetition caps; over an
  average of laws, the chosen law's, or with ``model_average=True`` the average's
  (``bayesmix.acquisition.optimal_mixture``).
- ``olmix`` (Olmix's recipe): a point log-linear law per target, f_t(p) = c_t + exp(A_t . p)
  (``formulas.loglinear_log_loss``), fitted with a Huber loss (delta 0.02) by L-BFGS from
  Olmix's 300 starts per target, then
  min_p sum_t w_t f_t(p) + 0.05 KL(p || p0) under the bounds and caps (SLSQP).
- ``regmix`` (RegMix's recipe): one LightGBM regressor per target (gbdt, objective
  regression, 1000 iterations, learning rate 0.01, seed 42, no early stopping), 100,000
  simulated mixtures from RegMix's swarm, and the mean of the 100 with the lowest predicted
  objective. Below 20 runs LightGBM's default leaf size allows no split, so the prediction
  is constant: that is RegMix's recipe at small budgets, kept as is.

With a pool (``context.candidates``) each recommender returns the pool row its model
predicts best, since only pool rows have a known truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize

from bayesmix.acquisition.base import ProposalError, objective_weights, run_table
from bayesmix.acquisition.model import LawEnsembleModel
from bayesmix.acquisition.optimum import expected_optimum, optimal_mixture
from bayesmix.law_average import LawAverage, chosen_posterior
from bayesmix.laws import formulas
from bayesmix.optimize import project_to_box_simplex
from bayesmix.proposers.base import ProposalContext, mixture_series
from bayesmix.proposers.bayesian import fit_posterior
from bayesmix.proposers.swarms import regmix_swarm


def _wide(context: ProposalContext) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, M) mixtures and (N, T) losses of the observed runs at the target step."""
    obs = context.observations
    if obs is None or len(obs.run_ids) == 0:
        raise ProposalError("a recommendation needs observed runs (the context has none)")
    r, y, targets = run_table(obs, context.step)
    if len(r) == 0:
        raise ProposalError("no observed run reached the target step")
    return r, y, targets


def _weights(context: ProposalContext, targets: list[str]) -> np.ndarray:
    return objective_weights(context.weights, targets)


def _best_in_pool(context: ProposalContext, predict: Any) -> pd.Series:
    pool = context.candidate_array()
    lo, hi = context.bounds()
    ok = ((pool >= lo - 1e-9) & (pool <= hi + 1e-9)).all(axis=1)
    if not ok.any():
        raise ProposalError("no pool mixture satisfies the constraints")
    values = np.where(ok, predict(pool), np.inf)
    return mixture_series(pool[int(np.argmin(values))], context.domains)


@dataclass
class PosteriorOptimum:
    """The posterior-expected optimum of a law fitted to the observations (ours). With
    ``law="average"`` (or a ``LawAverage`` in the context), the chosen law's.

    discrepancy: also trust a GP on the law's residuals (``LawEnsembleModel``), and take the
    optimum of the ensemble mean with it (``bayesmix.acquisition.expected_optimum``).
    model_average: over a ``LawAverage``, the optimum of the expected objective over every
    law's draws, each law weighted as the proposals weight it (Bayesian model averaging),
    instead of the chosen law's optimum.
    """

    law: str | None = None
    fit_options: dict[str, Any] = field(default_factory=dict)
    max_draws: int = 256
    discrepancy: bool = False
    model_average: bool = False
    name: str = "posterior-optimum"

    def __post_init__(self) -> None:
        if self.discrepancy and self.model_average:
            raise ProposalError(
                "the GP discrepancy term is fitted to one law's residuals: recommend from one "
                "law (model_average=False) to use it, not from an average of laws"
            )

    def recommend(self, context: ProposalContext) -> pd.Series:
        post = fit_posterior(context, self.law, self.fit_options)
        if post is None:
            raise ProposalError("a recommendation needs observed runs (the context has none)")
        averaged = self.model_average and isinstance(post, LawAverage)
        if not averaged:
            post = chosen_posterior(post)
        if context.candidates is not None:
            return _best_in_pool(context, lambda r: self._expected(post, context, r))
        if self.discrepancy:
            r = expected_optimum(
                post,
                weights=context.weights,
                step=context.step,
                constraints=context.constraints,
                discrepancy=True,
                max_draws=self.max_draws,
                seed=context.seed,
            )
            return mixture_series(r, context.domains)
        if averaged:
            weights = context.weights
        else:
            # Normalised weights: the memo is shared with Thompson sampling's per-draw optima.
            w = objective_weights(context.weights, list(post.targets))
            weights = dict(zip(post.targets, w, strict=True))
        opt = optimal_mixture(
            post, weights, context.step, context.constraints, self.max_draws, seed=context.seed
        )
        return mixture_series(opt.mixture.reindex(context.domains).to_numpy(), context.domains)

    def _expected(self, post: Any, context: ProposalContext, r: np.ndarray) -> np.ndarray:
        if isinstance(post, LawAverage):
            return sum(weight * self._expected(part, context, r) for part, weight in post.parts())
        w = _weights(context, list(post.targets))
        if self.discrepancy:
            model = LawEnsembleModel(
                post, context.step, max_draws=self.max_draws, discrepancy=True, seed=context.seed
            )
            with torch.no_grad():
                values = model.log_loss(torch.as_tensor(r, dtype=torch.float64)).exp().numpy()
            return (values @ w).mean(axis=0)
        log_loss = post.log_loss(r, context.step, max_draws=self.max_draws)
        return (np.exp(log_loss) @ w).mean(axis=0)


# ---------------------------------------------------------------------------------- Olmix
@dataclass
class OlmixRecommender:
    """Olmix: point log-linear law (Huber) + KL(p || p0) regulariser, under caps.

    As Olmix's code (allenai/olmix, ``olmix/fit``) fits it: per target, the Huber loss
    (delta 0.02) of c_t + exp(A_t . r) against the raw loss, from a grid of 10 values of
    log c_t in [-2, 1.5] times ``random_starts`` random A_t (A_tj ~ U(0, 0.1), and
    -U(0, 1) for the target's own domain), keeping the start with the lowest loss. The KL
    weight is in the loss's units: Olmix tuned 0.05 on bits per byte.
    """

    kl_weight: float = 0.05
    huber_delta: float = 0.02
    random_starts: int = 30
    max_iter: int = 500
    seed: int = 0
    name: str = "olmix"

    def fit(
        self, r: np.ndarray, y: np.ndarray, own: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Per target, (log c_t, A_t) minimising sum_n Huber(c_t + exp(A_t . r_n) - y_nt).

        own: (T,) index of each target's own domain (-1: none). Every start of every target
        is one independent problem; they are solved together by L-BFGS on the sum of their
        losses (the gradient of each block is its own problem's gradient).
        """
        n_targets, m = y.shape[1], r.shape[1]
        log_c_grid = np.linspace(-2.0, 1.5, 10)
        starts = len(log_c_grid) * self.random_starts
        gen = torch.Generator().manual_seed(self.seed)
        A0 = torch.rand(starts, n_targets, m, generator=gen, dtype=torch.float64) * 0.1
        own = np.full(n_targets, -1) if own is None else np.asarray(own)
        for t in np.flatnonzero(own >= 0):
            A0[:, t, own[t]] = -torch.rand(starts, generator=gen, dtype=torch.float64)
        log_c0 = torch.as_tensor(np.repeat(log_c_grid, self.random_starts), dtype=torch.float64)
        log_c = log_c0[:, None].repeat(1, n_targets).requires_grad_(True)
        A = A0.requires_grad_(True)
        x = torch.tensor(r, dtype=torch.float64)  # copies: the inputs may be read-only views
        yt = torch.tensor(y, dtype=torch.float64)

        def losses() -> torch.Tensor:  # (S, T)
            pred = formulas.loglinear_log_loss(torch, log_c, A, x).exp()  # (S, N, T)
            huber = torch.nn.functional.huber_loss(
                pred, yt.expand_as(pred), delta=self.huber_delta, reduction="none"
            )
            return huber.sum(-2)

        opt = torch.optim.LBFGS(
            [log_c, A], max_iter=self.max_iter, history_size=10, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = losses().sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            final = losses().nan_to_num(nan=np.inf)
            best = final.argmin(0)  # (T,) the best start of each target
            pick = torch.arange(n_targets)
            return {"log_c": log_c[best, pick].numpy(), "A": A[best, pick].numpy()}

    def recommend(self, context: ProposalContext) -> pd.Series:
        return self.solve(context, self.fit_context(context))

    def fit_context(self, context: ProposalContext) -> dict[str, np.ndarray]:
        """``fit`` on the context's observed runs (targets that are domains get their own
        domain's start)."""
        r, y, targets = _wide(context)
        own = [context.domains.index(t) if t in context.domains else -1 for t in targets]
        return self.fit(r, y, np.array(own))

    def solve(self, context: ProposalContext, params: dict[str, np.ndarray]) -> pd.Series:
        """The recommended mixture for fitted ``params`` (several KL weights can share a fit)."""
        r, _, targets = _wide(context)
        w = _weights(context, targets)
        p0 = context.natural_vector()

        def predict(x: np.ndarray) -> np.ndarray:
            ll = formulas.loglinear_log_loss(np, params["log_c"], params["A"], x)
            return np.exp(ll) @ w

        if context.candidates is not None:
            return _best_in_pool(context, predict)
        return mixture_series(self._solve(params, w, p0, context, r), context.domains)

    def _solve(
        self,
        params: dict[str, np.ndarray],
        w: np.ndarray,
        p0: np.ndarray,
        context: ProposalContext,
        r_obs: np.ndarray,
    ) -> np.ndarray:
        """min_p sum_t w_t f_t(p) + kl_weight KL(p || p0) over the bounded simplex."""
        lo, hi = context.bounds()
        log_p0 = np.log(np.maximum(p0, 1e-12))
        A, c = params["A"], np.exp(params["log_c"])

        def fun(p: np.ndarray) -> tuple[float, np.ndarray]:
            p = np.maximum(p, 1e-12)
            e = np.exp(A @ p)  # (T,)
            value = float(w @ (c + e) + self.kl_weight * (p * (np.log(p) - log_p0)).sum())
            grad = (w * e) @ A + self.kl_weight * (np.log(p) - log_p0 + 1.0)
            return value, grad

        starts = np.concatenate([p0[None], np.full((1, len(p0)), 1 / len(p0)), r_obs[:8]])
        starts = project_to_box_simplex(starts, lo, hi)
        best, best_v = starts[0], np.inf
        for x0 in starts:
            res = minimize(
                fun,
                x0,
                jac=True,
                method="SLSQP",
                bounds=list(zip(np.maximum(lo, 1e-12), hi, strict=True)),
                constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0}],
                options={"maxiter": 300, "ftol": 1e-12},
            )
            if np.isfinite(res.fun) and res.fun < best_v:
                best, best_v = res.x, res.fun
        return project_to_box_simplex(np.clip(best, 0, None)[None], lo, hi)[0]


# --------------------------------------------------------------------------------- RegMix
@dataclass
class RegMixRecommender:
    """RegMix: LightGBM per target, simulate mixtures, average the best predicted ones."""

    num_simulated: int = 100_000
    top_k: int = 100
    lgbm_params: dict[str, Any] = field(
        default_factory=lambda: {
            "boosting_type": "gbdt",
            "objective": "regression",
            "n_estimators": 1000,
            "learning_rate": 0.01,
            "seed": 42,
            "verbose": -1,
        }
    )
    name: str = "regmix"

    def recommend(self, context: ProposalContext) -> pd.Series:
        r, y, targets = _wide(context)
        w = _weights(context, targets)
        models = []
        for t in range(len(targets)):
            if w[t] == 0:
                continue
            model = lgb.LGBMRegressor(**self.lgbm_params, n_jobs=1)
            model.fit(r, y[:, t])
            models.append((w[t], model))

        def predict(x: np.ndarray) -> np.ndarray:
            return sum(wt * m.predict(x) for wt, m in models)

        if context.candidates is not None:
            return _best_in_pool(context, predict)
        swarm = regmix_swarm()
        sim_ctx = ProposalContext(
            context.domains,
            constraints=context.constraints,
            natural=context.natural,
            seed=context.seed,
            min_distance=0.0,  # simulated mixtures to average, not runs
        )
        sims = swarm.sample(sim_ctx, self.num_simulated, np.random.default_rng([context.seed, 42]))
        pred = predict(sims)
        top = np.argsort(pred)[: self.top_k]
        mixture = sims[top].mean(axis=0)
        return mixture_series(mixture, context.domains)
