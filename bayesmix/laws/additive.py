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
import numpyro
import numpyro.distributions as dist

from bayesmix.laws import formulas, get_noise
from bayesmix.laws.base import LawData, LawSettings, Prior
from bayesmix.laws.bimix import check_distinct_mixtures
from bayesmix.laws.blocks import STEP_SITES, log_k_at_centre, pooled
from bayesmix.laws.noise import SCALE_SITES
from bayesmix.laws.scaling import scale_inputs

EXPONENT_CENTRE = 0.5  # prior centre of e_tj: diminishing returns from more of a domain


def mixture_term(data: LawData) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(log_weight (T, M) before its per-target scale, exponent (T, M), share (T,))."""
    t, m = data.n_targets, data.n_domains
    weight_shared = numpyro.sample("weight_shared", dist.Normal(0.0, 1.0).expand([m]).to_event(1))
    weight_tau = numpyro.sample("weight_tau", dist.HalfNormal(1.0))
    weight_z = numpyro.sample("weight_z", dist.Normal(0.0, 1.0).expand([t, m]).to_event(2))
    exponent_shared = numpyro.sample(
        "exponent_shared", dist.Normal(jnp.log(EXPONENT_CENTRE), 0.5).expand([m]).to_event(1)
    )
    exponent_tau = numpyro.sample("exponent_tau", dist.HalfNormal(0.5))
    exponent_z = numpyro.sample("exponent_z", dist.Normal(0.0, 1.0).expand([t, m]).to_event(2))
    exponent = numpyro.deterministic(
        "exponent", jnp.exp(exponent_shared[None, :] + exponent_tau * exponent_z)
    )
    logit_share = pooled("logit_share", t, 0.0, 1.5, 1.0, None, False)
    share = numpyro.deterministic("share", 1.0 / (1.0 + jnp.exp(-logit_share)))
    return weight_shared[None, :] + weight_tau * weight_z, exponent, share


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
