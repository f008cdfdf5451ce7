"""BiMix (arXiv 2405.14908) and its cross-domain extension, as hierarchical NumPyro models.

Own-share law, the paper's A folded into K (only four of its five parameters are identifiable):

    L_t(r, s) = (r_own(t) + eps_t)^(-alpha_t) * K_t(s),   K_t(s) = B_t s^(-beta_t) + C_t

Cross-domain law (contains BiMix as alpha_tj = 0 for j != own(t)):

    log L_t(r, s) = log K_t(s) - sum_j alpha_tj log(r_j + eps_j)

The floor is the target's in the own-share law and the domain's in the cross law, the same
thing where a target has its own domain: below a share eps_j, domain j's share stops
mattering. Per domain, x_j = log(r_j + eps_j) is a feature of the mixture alone, so the
cross law costs a (P, M) x (M, T) product per evaluation instead of a (P, T, M) array of
logs (3-4x faster gradients on RegMix, 50x less work on Olmix's 64 x 52).

Both are sampled with the covariates x centred on their mean over the observed mixtures:
log K at the centre is then nearly uncorrelated with the exponents, which is what lets NUTS
move freely. The natural log K (at r + eps = 1) is recorded as the deterministic site
``logk``, which the formula and every later stage use.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayesmix.laws import distinct_mixtures, formulas, get_noise
from bayesmix.laws.base import LawData, LawError, LawSettings, Prior
from bayesmix.laws.blocks import (
    STEP_SITES,
    domain_floor_eps,
    floor_eps,
    grouped_effects,
    log_k_at_centre,
    pooled,
    prior_correlation,
    step_law,
)
from bayesmix.laws.noise import SCALE_SITES

SHARED_SCALE = 0.1  # prior scale of a domain's exponent shared by all targets
CROSS_TAU_SCALE = 0.1  # prior scale of the targets' deviations from the shared exponents


def check_distinct_mixtures(data: LawData, law: str) -> None:
    if distinct_mixtures(data.r) < 2:
        raise LawError(f"law {law!r} needs at least two distinct mixtures to identify exponents")


def cross_exponents(data: LawData, settings: LawSettings, prior: Prior | None) -> jnp.ndarray:
    """(T, M) exponents alpha_tj of the cross law, recorded as the site ``alpha`` (see
    ``BiMixCross``): shared effects plus shrunk deviations off the own domain, a pooled
    positive exponent on it."""
    t, m = data.n_targets, data.n_domains
    rows, cols = np.nonzero(data.own_onehot == 0)  # the cross entries
    # A fixed scale for the shared effects: a learned one would form a funnel with them
    # whichever way they were parametrised, as the data pin them in some regimes only.
    cross_tau = numpyro.sample("alpha_cross_tau", dist.HalfNormal(CROSS_TAU_SCALE))
    if settings.rank > 0:
        k = settings.rank
        shared = numpyro.sample(
            "alpha_shared", dist.Normal(0.0, SHARED_SCALE).expand([m]).to_event(1)
        )
        u = numpyro.sample("alpha_u", dist.Normal(0, 1).expand([t, k]).to_event(2))
        v = numpyro.sample("alpha_v", dist.Normal(0, 1).expand([m, k]).to_event(2))
        cross = shared[cols] + cross_tau * (u @ v.T)[rows, cols] / np.sqrt(k)
    else:
        cross, _ = grouped_effects(
            "alpha_cross", "alpha_shared", 0.0, SHARED_SCALE, cross_tau, cols, m, data.centered
        )
    alpha = jnp.zeros((t, m)).at[rows, cols].set(cross)
    has_own = np.flatnonzero(data.has_own)
    if has_own.size:
        log_own = pooled("log_alpha_own", t, np.log(0.05), 1.5, 1.0, prior, data.centered)
        own_cols = data.own_onehot[has_own].argmax(axis=1)
        alpha = alpha.at[has_own, own_cols].set(jnp.exp(log_own[has_own]))
    return numpyro.deterministic("alpha", alpha)


class BiMix(formulas.FormulaLaw):
    """Own-share BiMix: each target's loss depends on its own training domain's share only."""

    name = "bimix"
    own_share = True
    formula_sites = ("logk", "alpha", "eps", "frac", "beta")
    formula = staticmethod(formulas.bimix_log_loss)
    target_sites = {
        "log_alpha": ("alpha", np.exp),
        "log_eps": ("eps", np.exp),
        **SCALE_SITES,
        **STEP_SITES,
    }

    def check(self, data: LawData) -> None:
        missing = [t for t, has in zip(data.targets, data.has_own, strict=True) if not has]
        if missing:
            raise LawError(
                f"law 'bimix' needs each target's own training domain; none for "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                "(pass target_domain to Observations.from_frame, or use law='bimix-cross')"
            )
        check_distinct_mixtures(data, self.name)

    def model(self, data: LawData, settings: LawSettings, prior: Prior | None = None) -> None:
        eps = floor_eps(data, settings, prior)
        r_own = jnp.asarray(data.r_own)
        centre = jnp.log(r_own + eps).mean(axis=0)
        log_alpha = pooled(
            "log_alpha", data.n_targets, np.log(0.05), 1.5, 1.0, prior, data.centered
        )
        alpha = numpyro.deterministic("alpha", jnp.exp(log_alpha))
        level = log_k_at_centre(data, prior)
        logk = numpyro.deterministic("logk", level + alpha * centre)
        frac, beta = step_law(data, prior)
        sites = {"log_alpha": log_alpha, "logk_offset": level - jnp.asarray(data.target_mean)}
        if settings.eps == "learned":
            sites["log_eps"] = jnp.log(eps)
        if frac is not None and beta is not None:
            sites.update(logit_frac=jnp.log(frac) - jnp.log1p(-frac), log_beta=jnp.log(beta))
        prior_correlation(prior, sites)
        log_mean = formulas.bimix_log_loss(jnp, logk, alpha, eps, r_own, data.s_rel, frac, beta)
        get_noise(settings.noise).observe(data, log_mean, prior)

    def mixtures(self, xp: ModuleType, r: Any, own_onehot: Any) -> dict[str, Any]:
        """Each target's own domain's share (``r_own``, (P, T))."""
        return {"r_own": xp.matmul(r, own_onehot.T)}


class BiMixCross(formulas.FormulaLaw):
    """Cross-domain BiMix: every training domain's share may move every target's loss.

    Off the target's own domain, alpha_tj ~ N(a_j, tau): domain j's effect a_j is shared by
    all targets (a_j ~ N(0, 0.1)), each target deviates from it under a learned scale tau,
    so the law falls back to BiMix where the data show no cross effect. On the own domain,
    alpha_t,own(t) = g_t > 0, partially pooled on the log scale. With ``settings.rank = k > 0``
    the deviations are low rank, U V^T (for 64 domains x 52 tasks).

    Where the data pin the exponents (centred), the shared effects are integrated out of
    the exponents' prior and drawn from their exact conditional given the exponents
    (``blocks.grouped_effects``): NUTS then sees no funnel between a_j and tau, whose
    coupling otherwise made every trajectory hit the tree-depth limit.
    """

    name = "bimix-cross"
    own_share = False
    formula_sites = ("logk", "alpha", "eps", "frac", "beta")
    formula = staticmethod(formulas.cross_log_loss)
    # The floors are per domain (not per target) and every target's rows inform them:
    # carrying them next to a target's kept rows would count those rows twice.
    target_sites = {"log_alpha_own": None, **SCALE_SITES, **STEP_SITES}

    def check(self, data: LawData) -> None:
        check_distinct_mixtures(data, self.name)

    def model(self, data: LawData, settings: LawSettings, prior: Prior | None = None) -> None:
        eps = domain_floor_eps(data, settings)
        r = jnp.asarray(data.r)
        centre = jnp.log(r + eps).mean(axis=0)  # (M,)
        alpha = cross_exponents(data, settings, prior)
        logk = log_k_at_centre(data, prior) + alpha @ centre
        logk = numpyro.deterministic("logk", logk)
        frac, beta = step_law(data, prior)
        log_mean = formulas.cross_log_loss(jnp, logk, alpha, eps, r, data.s_rel, frac, beta)
        get_noise(settings.noise).observe(data, log_mean, prior)
