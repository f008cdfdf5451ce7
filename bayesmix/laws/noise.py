"""Observation noise on the log-loss scale, one class per noise model, each written once.

Every law's loss model is ``log y = log L(r, s) + noise``. A noise model answers three
questions about that noise, from the same density:

- ``observe``: the NumPyro likelihood of the observed log losses (inside a law's model);
- ``log_prob``: the log density of each point's observed losses under posterior draws
  (model comparison, ``Posterior.log_likelihood``);
- ``sample``: posterior predictive draws of log losses (``Posterior.predict``'s intervals).

Each target t has its own scale s_t, partially pooled on the log scale (the site
``log_sigma``, natural ``sigma``). A new noise model is one class here and one line in
``bayesmix.laws._NOISES``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayesmix.laws.base import LawData, Prior
from bayesmix.laws.blocks import GroupedEquicorrelatedNormal, pooled

NOISE_SPREAD = 0.5  # spread of the per-target log noise scales around their mean

# The per-target site every noise model samples, and its natural counterpart (see
# ``Law.target_sites``).
SCALE_SITES: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]] | None] = {
    "log_sigma": ("sigma", np.exp)
}


def observed_scale(data: LawData, prior: Prior | None) -> jnp.ndarray:
    """(T,) per-target scales s_t, log-normal around 0.02 exp(mu), pooled through mu on a
    fixed spread of 0.5: each target's rows pin its scale, a few targets cannot pin their
    spread (a learned one gave 339 divergences on the 7-domain simulation, where every
    target has the same noise; ``studies/law_simulation``)."""
    log_sigma = pooled(
        "log_sigma", data.n_targets, np.log(0.02), 1.0, NOISE_SPREAD, prior, data.centered,
        fixed_spread=True,
    )  # fmt: skip
    return numpyro.deterministic("sigma", jnp.exp(log_sigma))


class Noise(Protocol):
    """An observation-noise model (module docstring)."""

    name: str
    sites: tuple[str, ...]  # the noise's own sites besides sigma, as posterior draws hold them

    def observe(self, data: LawData, log_mean: jnp.ndarray, prior: Prior | None) -> None:
        """NumPyro: sample the noise's parameters and observe data.log_y around log_mean (P, T)."""

    def log_prob(
        self, params: Mapping[str, np.ndarray], log_mean: np.ndarray, data: LawData
    ) -> np.ndarray:
        """(D, P) log density of each point's observed losses (a run at one step, every
        target measured there) under D draws; log_mean (D, P, T) at data's points."""

    def sample(
        self, params: Mapping[str, np.ndarray], log_mean: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """(D, P, T) posterior predictive log losses around the law's log_mean (D, P, T)."""


class Independent(ABC):
    """Noise independent across targets: one density per observed row (``likelihood``)."""

    name: ClassVar[str]
    sites: ClassVar[tuple[str, ...]]

    def parameters(self) -> dict[str, jnp.ndarray]:
        """Sample the noise's own parameters (NumPyro), by site name."""
        return {}

    @abstractmethod
    def likelihood(
        self, loc: jnp.ndarray, scale: jnp.ndarray, own: Mapping[str, jnp.ndarray]
    ) -> dist.Distribution:
        """The density of each row's log loss around loc (batch shape of loc), given the
        noise's own parameters ``own`` (broadcastable to loc)."""

    def observe(self, data: LawData, log_mean: jnp.ndarray, prior: Prior | None) -> None:
        sigma = observed_scale(data, prior)
        own = self.parameters()
        loc, scale = log_mean[data.point, data.target], sigma[data.target]
        likelihood = self.likelihood(loc, scale, own).to_event(1)
        numpyro.sample("log_y", likelihood, obs=data.log_y)

    def log_prob(
        self, params: Mapping[str, np.ndarray], log_mean: np.ndarray, data: LawData
    ) -> np.ndarray:
        loc = jnp.asarray(log_mean)[:, data.point, data.target]  # (D, R)
        scale = jnp.asarray(params["sigma"])[:, data.target]
        own = {k: jnp.asarray(params[k])[:, None] for k in self.sites}
        rows = self.likelihood(loc, scale, own).log_prob(data.log_y)
        return np.asarray(jax.ops.segment_sum(rows.T, data.point, len(data.r)).T)


class Normal(Independent):
    """Independent N(log L_pt, s_t)."""

    name = "normal"
    sites = ()

    def likelihood(
        self, loc: jnp.ndarray, scale: jnp.ndarray, own: Mapping[str, jnp.ndarray]
    ) -> dist.Distribution:
        return dist.Normal(loc, scale)

    def sample(
        self, params: Mapping[str, np.ndarray], log_mean: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        return log_mean + params["sigma"][:, None, :] * rng.standard_normal(log_mean.shape)


class Student(Independent):
    """Independent StudentT(nu, log L_pt, s_t), nu = 2 + Gamma(2, 0.2) (mean 12): heavy tails."""

    name = "student"
    sites = ("nu",)

    def parameters(self) -> dict[str, jnp.ndarray]:
        # nu > 2: with fewer degrees of freedom the likelihood grows without bound as sigma
        # shrinks onto the points the law interpolates (seen on RegMix at n = 54: nu -> 0.3).
        nu = numpyro.deterministic("nu", 2.0 + numpyro.sample("nu_excess", dist.Gamma(2.0, 0.2)))
        return {"nu": nu}

    def likelihood(
        self, loc: jnp.ndarray, scale: jnp.ndarray, own: Mapping[str, jnp.ndarray]
    ) -> dist.Distribution:
        return dist.StudentT(own["nu"], loc, scale)

    def sample(
        self, params: Mapping[str, np.ndarray], log_mean: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        nu = params["nu"][:, None, None]
        return log_mean + params["sigma"][:, None, :] * rng.standard_t(
            np.broadcast_to(nu, log_mean.shape)
        )


class Correlated:
    """log y_p ~ MVN(log L_p, S (rho 11^T + (1 - rho) I) S), S = diag(s), rho ~ Beta(2, 2).

    One run's losses move together (its seed, its data order, and the law's misfit at its
    mixture are shared by every target); without it an objective averaging T targets gets
    intervals sqrt(T) too narrow. Only the measured targets of a point enter (an unmeasured
    one is marginalised out: old runs after a domain update).
    """

    name = "correlated"
    sites = ("noise_corr",)

    def likelihood(
        self, loc: jnp.ndarray, scale: jnp.ndarray, rho: jnp.ndarray, data: LawData
    ) -> GroupedEquicorrelatedNormal:
        """The flat rows' joint density, grouped by point."""
        return GroupedEquicorrelatedNormal(loc, scale, rho, data.point, len(data.r))

    def observe(self, data: LawData, log_mean: jnp.ndarray, prior: Prior | None) -> None:
        sigma = observed_scale(data, prior)
        rho = numpyro.sample("noise_corr", dist.Beta(2.0, 2.0))
        loc, scale = log_mean[data.point, data.target], sigma[data.target]
        numpyro.sample("log_y", self.likelihood(loc, scale, rho, data), obs=data.log_y)

    def log_prob(
        self, params: Mapping[str, np.ndarray], log_mean: np.ndarray, data: LawData
    ) -> np.ndarray:
        loc = jnp.asarray(log_mean)[:, data.point, data.target]  # (D, R)
        scale = jnp.asarray(params["sigma"])[:, data.target]

        def per_draw(loc: jnp.ndarray, scale: jnp.ndarray, rho: jnp.ndarray) -> jnp.ndarray:
            return self.likelihood(loc, scale, rho, data).group_log_prob(jnp.asarray(data.log_y))

        return np.asarray(jax.vmap(per_draw)(loc, scale, jnp.asarray(params["noise_corr"])))

    def sample(
        self, params: Mapping[str, np.ndarray], log_mean: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        shape = log_mean.shape
        z = rng.standard_normal(shape)
        rho = params["noise_corr"][:, None, None]
        shared = rng.standard_normal((*shape[:2], 1))
        z = np.sqrt(rho) * shared + np.sqrt(1.0 - rho) * z
        return log_mean + params["sigma"][:, None, :] * z
