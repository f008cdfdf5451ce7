"""Shukor et al. 2025's additive law of mixture, tokens and model size, as a hierarchical model.

    L_t(r, D, N) = K_t (1 + f_D,t (d^-beta_t - 1) + f_N,t (n^-gamma_t - 1))
                   + 1 / sum_j C_tj r_j^e_tj

The first term is Chinchilla's E + A N^-gamma + B D^-beta, normalised at the reference size
and token count (``formulas.log_scale_factor``); the second is what the mixture adds, the
same at every size: a domain j contributes C_tj r_j^e_tj to what target t learns from, and
nothing at r_j = 0, so zero shares need no floor. On RegMix's 1M and 60M runs a point fit of
this form ranked held-out 60M Pile-CC losses at 0.991 (MRE 0.69 %) where the multiplicative
``cross-scaling`` reached 0.978 (1.43 %): the loss spread over mixtures stays about the
same in nats as the model grows (studies/scaling_laws).

Sampled in coordinates NUTS moves freely in, each pinned by the data at one point:

- the loss at the centre of the observed mixtures (reference size and step), as in the
  cross law (``log_k_at_centre``), and share_t, the part of it the size and token term holds;
- the mixture term's relative weights a_j + tau z_tj (shared per domain, shrunk per target)
  and exponents e_tj (log-normal, shared per domain, shrunk per target); the overall scale of
  C_t follows from the centre: sum_j C_tj rbar_j^e_tj = 1 / ((1 - share_t) L_t(rbar)).
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayesmix.laws import formulas, get_noise
from bayesmix.laws.base import LawData, LawSettings, Prior
from bayesmix.laws.bimix import check_distinct_mixtures
from bayesmix.laws.blocks import (
    STEP_SITES,
    GroupedEquicorrelatedNormal,
    grouped_effects,
    log_k_at_centre,
    pooled,
)
from bayesmix.laws.noise import SCALE_SITES
from bayesmix.laws.scaling import scale_inputs

EXPONENT_CENTRE = 0.5  # prior centre of e_tj: diminishing returns from more of a domain
EXPONENT_SCALE = 0.5  # prior sd of a domain's shared log exponent
WEIGHT_SCALE = 1.0  # prior sd of a domain's shared relative log weight
WEIGHT_LEVEL_SD = 0.03  # how far a target's mean relative log weight strays from 0
SHARE_SPREAD = 0.5  # of the targets' logit shares: RegMix's 0.57-0.83 is about 0.4


def mixture_term(data: LawData) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(log_weight (T, M) before its per-target scale, exponent (T, M), share (T,)).

    Both the relative log weights and the log exponents are a domain's shared effect plus a
    target's deviation (``blocks.grouped_effects``: the shared effects integrated out where
    the data pin each entry). The non-centred sum a_j + tau z_tj left NUTS on a ridge between
    a_j and the mean of its z_tj (the size simulation: R-hat 1.07, ESS 65 on exponent_shared).
    """
    t, m = data.n_targets, data.n_domains
    groups = np.tile(np.arange(m), t)  # entry (t, j) of the flat (T x M) effects: domain j
    weight_tau = numpyro.sample("weight_tau", dist.HalfNormal(1.0))
    relative, _ = grouped_effects(
        "weight_relative", "weight_shared", 0.0, WEIGHT_SCALE, weight_tau, groups, m, data.centered
    )
    relative = relative.reshape(t, m)
    numpyro.factor("weight_level", level_swap(relative, WEIGHT_SCALE, weight_tau))
    exponent_tau = numpyro.sample("exponent_tau", dist.HalfNormal(0.5))
    log_exponent, _ = grouped_effects(
        "log_exponent",
        "exponent_shared",
        float(np.log(EXPONENT_CENTRE)),
        EXPONENT_SCALE,
        exponent_tau,
        groups,
        m,
        data.centered,
    )
    exponent = numpyro.deterministic("exponent", jnp.exp(log_exponent.reshape(t, m)))
    # A fixed spread (``blocks.pooled``): the targets' shares agree closely on RegMix and
    # in the size simulation, and a learned one ran towards zero into a funnel with them
    # (the divergences of the size simulation followed logit_share_tau).
    logit_share = pooled("logit_share", t, 0.0, 1.5, SHARE_SPREAD, None, False, fixed_spread=True)
    share = numpyro.deterministic("share", 1.0 / (1.0 + jnp.exp(-logit_share)))
    return relative, exponent, share


def level_swap(relative: jnp.ndarray, shared_scale: float, tau: jnp.ndarray) -> jnp.ndarray:
    """log N(l; 0, WEIGHT_LEVEL_SD^2) - log p(l | tau), l_t = mean_j w_tj each target's mean
    relative log weight: the factor that swaps the levels' prior for a narrow one.

    Only a target's differences between weights reach the loss (its level is the centre's,
    ``Additive.model``), so the levels are the prior's alone, a ridge NUTS crawled along
    (R-hat 1.03, ESS 120 on the size simulation). Under the weights' prior (shared effects
    a_j ~ N(0, S^2), deviations tau z_tj) the levels are jointly normal, common variance
    S^2 / M plus tau^2 / M each, and independent of every within-target difference. Dividing
    their prior out and multiplying the narrow one in therefore leaves the differences' prior,
    and tau's, exactly as they were, and only the unidentified levels are pinned near 0.
    """
    t, m = relative.shape
    level = relative.mean(axis=1)
    common, total = shared_scale**2 / m, (shared_scale**2 + tau**2) / m
    prior = GroupedEquicorrelatedNormal(
        jnp.zeros(t), jnp.sqrt(total), common / total, np.zeros(t, dtype=int), 1
    )
    return dist.Normal(0.0, WEIGHT_LEVEL_SD).log_prob(level).sum() - prior.log_prob(level)


class Additive(formulas.FormulaLaw):
    """Shukor's additive law over mixture, tokens and size (module docstring)."""

    name = "additive"
    own_share = False
    size_axis = True  # fits runs of several model sizes (Observations.has_sizes)
    # Independent noise: with noise shared by a run's targets, the MAP on RegMix's 1M + 60M
    # runs took the 60M runs' lower level for run-level noise and predicted them 5-38 % too
    # high (Pile-CC MRE 4.5 %); independent noise fits them (0.69 %).
    noise = "normal"
    formula_sites = ("logk", "log_weight", "exponent", "frac", "beta", "frac_size", "gamma")
    formula = staticmethod(formulas.additive_log_loss)
    target_sites = {**SCALE_SITES, **STEP_SITES}

    def check(self, data: LawData) -> None:
        check_distinct_mixtures(data, self.name)

    def model(self, data: LawData, settings: LawSettings, prior: Prior | None = None) -> None:
        r = jnp.asarray(data.r)
        relative, exponent, share = mixture_term(data)
        centre_loss = log_k_at_centre(data, prior)  # log L_t at rbar, reference size and step
        rbar = jnp.log(r.mean(axis=0))  # the centre mixture has no zero share
        # C_t's scale so that the mixture term is (1 - share_t) L_t(rbar) at the centre.
        scale = -(centre_loss + jnp.log1p(-share)) - jsp.logsumexp(
            relative + exponent * rbar[None, :], axis=1
        )
        log_weight = numpyro.deterministic("log_weight", relative + scale[:, None])
        logk = numpyro.deterministic("logk", centre_loss + jnp.log(share))
        axes = scale_inputs(data, prior)
        log_mean = formulas.additive_log_loss(jnp, logk, log_weight, exponent, r, **axes)
        get_noise(settings.noise).observe(data, log_mean, prior)
