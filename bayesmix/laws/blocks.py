"""NumPyro building blocks the laws share: partially pooled vectors, the step law, the noise.

Every per-target (or per-domain) parameter is drawn non-centred from a population
distribution with its own mean and scale, so targets borrow strength from each other when
data are few. Where an informative prior (a warm start) gives a location and scale for an
entry, that entry is drawn from it instead of the population.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayesmix.laws.base import LawData, LawSettings, Prior

DEFAULT_EPS = 1e-3


def pooled(
    name: str,
    n: int,
    loc: float | np.ndarray,
    loc_scale: float,
    pop_scale: float,
    prior: Prior | None = None,
    centered: bool = False,
) -> jnp.ndarray:
    """theta_i ~ N(mu + loc_i, tau), mu ~ N(0, loc_scale), tau ~ HalfNormal(pop_scale).

    Non-centred (theta = mu + loc + tau z, z ~ N(0, 1)) where the data say little about each
    theta_i, centred where they pin it down: each is the parametrisation without a funnel in
    its regime. With ``prior[name] = (m, s)``, entries whose m is finite are drawn from
    N(m_i, s_i) instead of the population (warm starts).
    """
    mu = numpyro.sample(f"{name}_mu", dist.Normal(0.0, loc_scale))
    tau = numpyro.sample(f"{name}_tau", dist.HalfNormal(pop_scale))
    centre = mu + jnp.asarray(loc) * jnp.ones(n)
    scale = tau * jnp.ones(n)
    if prior is not None and name in prior:
        m, s = (np.asarray(v, dtype=float) for v in prior[name])
        informed = np.isfinite(m)
        centre = jnp.where(informed, np.nan_to_num(m), centre)
        scale = jnp.where(informed, np.nan_to_num(s, nan=1.0), scale)
    if centered:
        return numpyro.sample(name, dist.Normal(centre, scale).to_event(1))
    z = numpyro.sample(f"{name}_z", dist.Normal(0.0, 1.0).expand([n]).to_event(1))
    return numpyro.deterministic(name, centre + scale * z)


def step_law(data: LawData, prior: Prior | None) -> tuple[jnp.ndarray | None, jnp.ndarray | None]:
    """Per target: f in (0, 1), the share of K still removable by training, and beta > 0."""
    if data.s_rel is None:
        return None, None
    t = data.n_targets
    frac = numpyro.deterministic(
        "frac", _sigmoid(pooled("logit_frac", t, 0.0, 1.5, 1.0, prior, data.centered))
    )
    beta = numpyro.deterministic(
        "beta", jnp.exp(pooled("log_beta", t, np.log(0.5), 1.0, 0.5, prior, data.centered))
    )
    return frac, beta


def floor_eps(settings: LawSettings) -> jnp.ndarray | float:
    if settings.eps == "learned":
        log_eps = numpyro.sample("log_eps", dist.Normal(np.log(DEFAULT_EPS), 1.5))
        return numpyro.deterministic("eps", jnp.exp(log_eps))
    return float(settings.eps)


def observe(
    data: LawData, settings: LawSettings, log_mean: jnp.ndarray, prior: Prior | None
) -> None:
    """log y_row ~ StudentT(nu, log L, sigma_t) (or Normal): noise on the log-loss scale.

    log_mean: (P, T) noise-free log loss at every point and target.
    """
    t = data.n_targets
    sigma = numpyro.deterministic(
        "sigma", jnp.exp(pooled("log_sigma", t, np.log(0.02), 1.0, 0.5, prior, data.centered))
    )
    loc = log_mean[data.point, data.target]
    scale = sigma[data.target]
    if settings.noise == "student":
        nu = numpyro.sample("nu", dist.Gamma(2.0, 0.1))
        likelihood = dist.StudentT(nu, loc, scale)
    else:
        likelihood = dist.Normal(loc, scale)
    numpyro.sample("log_y", likelihood.to_event(1), obs=data.log_y)


def _sigmoid(x: jnp.ndarray) -> jnp.ndarray:
    return 1.0 / (1.0 + jnp.exp(-x))
