"""From a posterior to the optimal mixture, with credible intervals, under users' constraints.

Per posterior draw d the optimal mixture is

    r*_d = argmin_r  sum_t w_t L_t(r; theta_d)   s.t.  sum_j r_j = 1,  lo_j <= r_j <= hi_j

(hi_j includes repetition caps k N_j / R). The draws of r*_d give the intervals; the
recommended mixture minimises the posterior expected objective E_d[sum_t w_t L_t(r; theta_d)].
The own-share law has a closed form per draw; every other law uses projected gradient descent.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayesmix.errors import ArgumentError, BayesMixError
from bayesmix.laws.formulas import log_step_factor
from bayesmix.mixtures import objective_weights

if TYPE_CHECKING:
    from bayesmix.inference import Posterior


class InfeasibleError(BayesMixError, ValueError):
    """The constraints admit no mixture."""


@dataclass(frozen=True)
class Constraints:
    """Bounds on each domain's share, and repetition caps from token counts.

    lower, upper: domain -> share bounds (missing domains: 0 and 1).
    token_counts, target_tokens, max_epochs: with all three, r_j <= max_epochs * N_j / R, so
        that no domain is repeated more than ``max_epochs`` times in a run of R tokens.
    """

    lower: Mapping[str, float] = field(default_factory=dict)
    upper: Mapping[str, float] = field(default_factory=dict)
    token_counts: Mapping[str, float] | None = None
    target_tokens: float | None = None
    max_epochs: float | None = None

    def caps(self, domains: list[str]) -> np.ndarray:
        """Repetition caps k N_j / R per domain (1 where no cap applies)."""
        given = [
            self.token_counts is not None,
            self.target_tokens is not None,
            self.max_epochs is not None,
        ]
        if not any(given):
            return np.ones(len(domains))
        if not all(given):
            raise InfeasibleError(
                "repetition caps need token_counts, target_tokens and max_epochs together"
            )
        assert self.token_counts is not None and self.target_tokens is not None
        assert self.max_epochs is not None
        _check_known(self.token_counts, domains, "token_counts")
        missing = [d for d in domains if d not in self.token_counts]
        if missing:
            raise InfeasibleError(f"token_counts has no count for domain(s) {', '.join(missing)}")
        if not (np.isfinite(self.target_tokens) and self.target_tokens > 0):
            raise InfeasibleError(f"target_tokens must be positive, got {self.target_tokens}")
        if not (np.isfinite(self.max_epochs) and self.max_epochs > 0):
            raise InfeasibleError(f"max_epochs must be positive, got {self.max_epochs}")
        n = np.array([float(self.token_counts[d]) for d in domains])
        if not np.all(np.isfinite(n)) or (n < 0).any():
            bad = domains[int(np.argmax(~np.isfinite(n) | (n < 0)))]
            raise InfeasibleError(f"token_counts[{bad!r}] is not a non-negative number")
        return np.minimum(1.0, self.max_epochs * n / self.target_tokens)

    def bounds(self, domains: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) per domain; raises InfeasibleError naming the binding constraints."""
        _check_known(self.lower, domains, "lower")
        _check_known(self.upper, domains, "upper")
        lo = np.array([float(self.lower.get(d, 0.0)) for d in domains])
        hi_user = np.array([float(self.upper.get(d, 1.0)) for d in domains])
        for name, arr in (("lower", lo), ("upper", hi_user)):
            bad = ~np.isfinite(arr) | (arr < 0) | (arr > 1)
            if bad.any():
                d = domains[int(np.argmax(bad))]
                raise InfeasibleError(f"{name}[{d!r}] = {arr[bad][0]} is not a share in [0, 1]")
        caps = self.caps(domains)
        hi = np.minimum(hi_user, caps)
        crossed = lo > hi + 1e-12
        if crossed.any():
            d = domains[int(np.argmax(crossed))]
            j = domains.index(d)
            why = "its repetition cap" if caps[j] < hi_user[j] else "its upper bound"
            raise InfeasibleError(
                f"domain {d!r}: lower bound {lo[j]:.4g} exceeds {why} {hi[j]:.4g}"
            )
        if lo.sum() > 1 + 1e-9:
            binding = ", ".join(f"{d}>={v:.3g}" for d, v in zip(domains, lo, strict=True) if v > 0)
            raise InfeasibleError(f"lower bounds sum to {lo.sum():.4g} > 1: {binding}")
        if hi.sum() < 1 - 1e-9:
            parts = []
            for j, d in enumerate(domains):
                src = f"cap {self.max_epochs:g} epochs" if caps[j] <= hi_user[j] else "upper"
                parts.append(f"{d}<={hi[j]:.3g} ({src})")
            raise InfeasibleError(
                f"upper bounds and repetition caps sum to {hi.sum():.4g} < 1, so no mixture "
                f"fits: {', '.join(parts)}"
            )
        return lo, hi


def _check_known(mapping: Mapping[str, float], domains: list[str], what: str) -> None:
    unknown = [d for d in mapping if d not in domains]
    if unknown:
        raise InfeasibleError(f"{what} names unknown domain(s): {', '.join(unknown)}")


@dataclass
class OptimalMixture:
    """The recommended mixture and the posterior distribution of optimal mixtures.

    mixture: shares minimising the posterior expected objective (Series, sums to 1).
    intervals: per domain, mean and central-``ci`` interval of the per-draw optima.
    draws: one optimal mixture per posterior draw (rows), domains as columns.
    expected_objective: E[sum_t w_t L_t] at ``mixture``; objective_interval: its (lo, hi).
    """

    mixture: pd.Series
    intervals: pd.DataFrame
    draws: pd.DataFrame
    expected_objective: float
    objective_interval: tuple[float, float]
    ci: float
    step: float | None
    solver: str
    converged: bool

    def as_frame(self) -> pd.DataFrame:
        """One row per domain: recommended share next to the interval of optima."""
        return pd.concat([self.mixture.rename("recommended"), self.intervals], axis=1)


# ----------------------------------------------------------------------------- solvers
def project_to_box_simplex(v: Any, lo: Any, hi: Any, xp: Any = np) -> Any:
    """Euclidean projection of rows of v onto {lo <= r <= hi, sum r = 1} (bisection on a shift).

    v, lo, hi: arrays of the namespace ``xp`` (numpy, or jax.numpy inside a traced solver)."""
    a = xp.min(v - hi, axis=-1, keepdims=True)
    b = xp.max(v - lo, axis=-1, keepdims=True)
    for _ in range(60):
        mid = 0.5 * (a + b)
        total = xp.sum(xp.clip(v - mid, lo, hi), axis=-1, keepdims=True)
        a = xp.where(total > 1, mid, a)
        b = xp.where(total > 1, b, mid)
    return xp.clip(v - 0.5 * (a + b), lo, hi)


def own_share_optimum(
    log_scale: np.ndarray,
    alpha: np.ndarray,
    eps: np.ndarray,
    own: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> np.ndarray:
    """Closed-form optimum of sum_t c_t (r_own(t) + eps)^(-alpha_t) over the box-simplex.

    log_scale: (D, T) log(w_t K_t); alpha, eps: (D, T); own: (T,) each target's domain
    index (distinct). KKT: c_t alpha_t (r + eps)^(-alpha_t - 1) = lambda, so
    r_own(t)(lambda) = clip((c_t alpha_t / lambda)^(1 / (1 + alpha_t)) - eps, lo, hi), which
    decreases in lambda: one bisection on log lambda per draw. Domains no target measures
    stay at their lower bound, and take up what the others leave only if they must.
    """
    d, m = log_scale.shape[0], len(lo)
    lo_t, hi_t = lo[own], hi[own]
    others = np.setdiff1d(np.arange(m), own)
    base = lo[others].sum()
    log_ca = log_scale + np.log(alpha)
    e = eps

    def shares(log_lam: np.ndarray) -> np.ndarray:
        r = np.exp((log_ca - log_lam) / (1 + alpha)) - e
        return np.clip(r, lo_t, hi_t)

    # log lambda where each target sits at its bounds brackets the root.
    at = lambda r: log_ca - (1 + alpha) * np.log(r + e)  # noqa: E731
    a = at(hi_t).min(axis=1, keepdims=True) - 1.0
    b = at(np.maximum(lo_t, 0.0)).max(axis=1, keepdims=True) + 1.0
    for _ in range(100):
        mid = 0.5 * (a + b)
        too_much = shares(mid).sum(axis=1, keepdims=True) + base > 1
        a = np.where(too_much, mid, a)
        b = np.where(too_much, b, mid)
    r_t = shares(0.5 * (a + b))
    out = np.tile(lo, (d, 1))
    out[:, own] = r_t
    slack = 1 - out.sum(axis=1)
    if others.size and (slack > 1e-9).any():
        room = hi[others] - lo[others]
        fill = slack[:, None] * room / max(room.sum(), 1e-12)
        out[:, others] += np.minimum(fill, room)
    return out / out.sum(axis=1, keepdims=True)


def projected_gradient(
    objective: Any,
    params: Mapping[str, Any],
    r0: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    iterations: int = 400,
) -> np.ndarray:
    """Minimise objective(params_b, r) for every batch item b by projected gradient descent.

    objective(params, r) -> scalar for one item (JAX-traceable); params carry a leading batch
    axis B; r0 is (B, M). Each item keeps its own step, grown on success and halved on failure,
    so badly scaled items (shares near zero with a small eps) still converge.
    """
    import jax
    import jax.numpy as jnp

    lo_j, hi_j = jnp.asarray(lo), jnp.asarray(hi)
    value = jax.vmap(objective)
    grad = jax.vmap(jax.grad(objective, argnums=1))

    def body(_: int, state: tuple) -> tuple:
        r, f, step = state
        g = grad(params, r)
        g = g - g.mean(axis=-1, keepdims=True)  # the simplex's tangent direction
        norm = jnp.maximum(jnp.abs(g).max(axis=-1, keepdims=True), 1e-30)
        cand = project_to_box_simplex(r - step * g / norm, lo_j, hi_j, xp=jnp)
        fc = value(params, cand)
        ok = jnp.isfinite(fc) & (fc <= f)
        r = jnp.where(ok[:, None], cand, r)
        f = jnp.where(ok, fc, f)
        step = jnp.where(ok[:, None], jnp.minimum(step * 1.5, 1.0), step * 0.5)
        return r, f, step

    r = project_to_box_simplex(jnp.asarray(r0), lo_j, hi_j, xp=jnp)
    state = (r, value(params, r), jnp.full((r.shape[0], 1), 0.05))
    r, _, _ = jax.jit(lambda s: jax.lax.fori_loop(0, iterations, body, s))(state)
    return np.asarray(r)


# ----------------------------------------------------------------------------- entry point
def _warn_if_vertex(law: str, rewarded: list[str]) -> None:
    """An own-share law rewards only the weighted targets' own domains: with one, its
    optimum is as much of that domain as the bounds allow, whatever the data say."""
    if len(rewarded) == 1:
        warnings.warn(
            f"the objective weighs targets of one domain only ({rewarded[0]!r}), and the "
            f"own-share law {law!r} rewards only that domain's share, so its optimum is as "
            f"much {rewarded[0]!r} as the bounds allow; fit law='bimix-cross' to learn "
            "what the other domains do for it",
            UserWarning,
            stacklevel=3,
        )


def optimal_mixture(
    posterior: Posterior,
    weights: Mapping[str, float] | None = None,
    step: float | None = None,
    constraints: Constraints | None = None,
    ci: float = 0.9,
    *,
    max_draws: int | None = 1000,
    model_size: float | None = None,
) -> OptimalMixture:
    """Per-draw optima (intervals) and the posterior-expected optimum (recommendation), at
    ``step`` and ``model_size`` (None: the reference size of a law with a size axis)."""
    import jax.numpy as jnp

    check_ci(ci)
    domains, targets = posterior.domains, posterior.targets
    lo, hi = (constraints or Constraints()).bounds(domains)
    w = objective_weights(weights, targets)
    law = posterior.law_obj
    params = {k: v for k, v in posterior.draws(max_draws).items() if k in law.formula_sites}
    s_rel = posterior.s_rel(step)
    n_rel = posterior.n_rel(model_size)
    own_onehot = posterior.own_onehot()
    own = own_onehot.argmax(axis=1)
    if law.own_share:
        _warn_if_vertex(posterior.law, [domains[j] for j in set(own[w > 0])])
    closed = (
        law.own_share
        and own_onehot.sum(axis=1).min() == 1
        and len(set(own)) == len(own)
        and (w > 0).all()
    )
    if closed:
        logk = params["logk"] + (0.0 if s_rel is None else _log_step(params, s_rel))
        per_draw = own_share_optimum(np.log(w) + logk, params["alpha"], params["eps"], own, lo, hi)
        solver = "closed-form"
    else:
        per_draw = None
        solver = "projected-gradient"

    jparams = {k: jnp.asarray(v) for k, v in params.items()}
    s_rel_j = None if s_rel is None else jnp.asarray(s_rel)
    inputs = posterior.law_inputs(jnp, jnp.zeros(()), n_rel)
    w_j = jnp.asarray(w)

    def objective_one(p: Mapping[str, Any], r: Any) -> Any:
        logl = law.log_loss(jnp, p, r[None], s_rel_j, **inputs)
        return (jnp.exp(logl[0]) * w_j).sum()

    start = _natural_start(posterior, lo, hi)
    if per_draw is None:
        d = len(next(iter(params.values())))
        per_draw = projected_gradient(objective_one, jparams, np.tile(start, (d, 1)), lo, hi)

    def expected(p: Mapping[str, Any], r: Any) -> Any:
        return jnp.mean(jax_vmap_objective(objective_one, p, r))

    mean_start = per_draw.mean(axis=0)
    batch = {k: v[None] for k, v in jparams.items()}
    best = projected_gradient(expected, batch, mean_start[None], lo, hi, iterations=600)[0]
    best = best / best.sum()

    values = posterior.log_loss(best[None], step, model_size=model_size, params=params)
    values = np.exp(values)[:, 0, :] @ w
    return summarise_optima(
        domains, best, per_draw, values, ci, step, solver, converged=posterior.converged
    )


def check_ci(ci: float) -> None:
    if not 0 < ci < 1:
        raise ArgumentError(f"ci must be in (0, 1), got {ci}")


def summarise_optima(
    domains: Sequence[str],
    best: np.ndarray,
    per_draw: np.ndarray,
    values: np.ndarray,
    ci: float,
    step: float | None,
    solver: str,
    *,
    converged: bool,
) -> OptimalMixture:
    """The ``OptimalMixture`` of a recommendation ``best`` (M,), the per-draw optima (D, M)
    and the objective of each draw at ``best`` (D,): central ``ci`` intervals of both."""
    q = (1 - ci) / 2
    frame = pd.DataFrame(per_draw, columns=list(domains))
    intervals = pd.DataFrame(
        {
            "mean": frame.mean(axis=0),
            "lo": frame.quantile(q, axis=0),
            "hi": frame.quantile(1 - q, axis=0),
        }
    )
    intervals.index.name = "domain"
    mixture = pd.Series(best, index=list(domains), name="share")
    mixture.index.name = "domain"
    return OptimalMixture(
        mixture=mixture,
        intervals=intervals,
        draws=frame,
        expected_objective=float(values.mean()),
        objective_interval=(float(np.quantile(values, q)), float(np.quantile(values, 1 - q))),
        ci=ci,
        step=step,
        solver=solver,
        converged=converged,
    )


def jax_vmap_objective(objective_one: Any, params: Mapping[str, Any], r: Any) -> Any:
    import jax

    return jax.vmap(objective_one, in_axes=(0, None))(params, r)


def _log_step(params: Mapping[str, np.ndarray], s_rel: np.ndarray) -> np.ndarray:
    if "frac" not in params:
        return np.zeros_like(params["logk"])
    return log_step_factor(np, params["frac"], params["beta"], s_rel)[:, 0, :]


def _natural_start(posterior: Posterior, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Start from the mean observed mixture (always inside the data), projected to the box."""
    mix = posterior.observations.mixtures().to_numpy(dtype=float).mean(axis=0)
    return project_to_box_simplex(mix[None], lo, hi)[0]
