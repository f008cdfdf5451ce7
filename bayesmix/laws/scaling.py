"""The cross-domain law over mixture, training tokens and model size, as a hierarchical model.

    log L_t(r, D, N) = log K_t + log(1 + f_D,t (d^-beta_t - 1) + f_N,t (n^-gamma_t - 1))
                       - sum_j (alpha_tj + delta_tj log n) log(r_j + eps_j) + delta_level_t log n

d = D / D_ref (``step`` counts tokens once sizes are mixed), n = N / N_ref, N_ref the largest
observed model size (``LawSettings.reference_size``). The size and token factor is
Chinchilla's E + A N^-gamma + B D^-beta divided by its value at the reference (see
``formulas.log_scale_factor``); the mixture part is the cross law's (``BiMixCross``) at the
reference size, and a target's exponents scale linearly in log N (Shukor et al. 2025 find that the
mixture's effect depends on scale; RegMix's rankings at 1M and 1B differ). Under the drift's
shrinkage prior the law falls back to "the same mixture effect at every size", and its
uncertainty grows with |log n|: intervals widen as the extrapolation in size grows.

Priors carry what is known of the exponents: gamma around Chinchilla's 0.34 (Hoffmann et al.
2022 fit 0.34, Besiroglu et al.'s replication 0.35), beta as the step law's (around 0.5 in
relative steps, wide). With one model size in the data the law is ``bimix-cross``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro

from bayesmix.laws import formulas, get_noise
from bayesmix.laws.base import LawData, LawSettings, Prior
from bayesmix.laws.bimix import BiMixCross, check_distinct_mixtures, cross_exponents
from bayesmix.laws.blocks import domain_floor_eps, log_k_at_centre, pooled, step_law

SIZE_EXPONENT_CENTRE = 0.34  # Chinchilla's exponent of the parameter count
KAPPA_SCALE = 0.1  # prior scale of a target's relative change of its exponents per e-fold


def size_law(
    data: LawData, prior: Prior | None, frac: jnp.ndarray | None
) -> tuple[jnp.ndarray | None, jnp.ndarray | None]:
    """Per target: f_N, the share of the reference loss a bigger model removes, and gamma > 0.

    f_N = (1 - f_D) g with g in (0, 1), so that f_D + f_N < 1 (Chinchilla's E stays positive).
    """
    if data.n_rel is None:
        return None, None
    t = data.n_targets
    # Fixed spreads, as for the floors and noise scales (``blocks.pooled``): targets' size
    # exponents barely differ, a learned spread then ran to zero and formed a funnel with
    # them (studies/size_simulation: R-hat 1.136 and 1.078 on its worst seeds, 1.039 and 1.029
    # with the spreads fixed, no divergences).
    logit_g = pooled("logit_frac_size", t, 0.0, 1.5, 1.0, prior, data.centered, fixed_spread=True)
    g = 1.0 / (1.0 + jnp.exp(-logit_g))
    frac_size = numpyro.deterministic("frac_size", g if frac is None else (1.0 - frac) * g)
    log_gamma = pooled(
        "log_gamma",
        t,
        np.log(SIZE_EXPONENT_CENTRE),
        0.5,
        0.3,
        prior,
        data.centered,
        fixed_spread=True,
    )
    return frac_size, numpyro.deterministic("gamma", jnp.exp(log_gamma))


def scale_inputs(data: LawData, prior: Prior | None) -> dict[str, Any]:
    """The inputs of Chinchilla's token and size factor (``formulas.log_scale_factor``) by
    name: the data's relative steps and sizes, the step law's sites (frac, beta) and the size
    law's (frac_size, gamma); None for an axis the data lack."""
    frac, beta = step_law(data, prior, fixed_spread=True)
    frac_size, gamma = size_law(data, prior, frac)
    n_rel = None if data.n_rel is None else jnp.asarray(data.n_rel)
    return {
        "s_rel": data.s_rel,
        "n_rel": n_rel,
        "frac": frac,
        "beta": beta,
        "frac_size": frac_size,
        "gamma": gamma,
    }


def size_drift(
    data: LawData, alpha: jnp.ndarray, centre: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """delta (T, M): each exponent's change per e-fold of model size, and delta_level =
    delta @ centre (T,).

    delta_tj = kappa_t alpha_tj: a target's whole mixture effect grows or shrinks with size
    (kappa_t, pooled around 0). On RegMix (1M and 60M runs) the spread of a target's log
    losses over mixtures is 1.0-1.4x larger at 60M, with the ranking nearly unchanged
    (Spearman 0.98-1.0 between sizes); a free (T, M) drift on top of it, shrunk per domain,
    ranked held-out 60M runs worse (Pile-CC 0.964 against 0.978 by Laplace).
    """
    kappa = pooled("size_kappa", data.n_targets, 0.0, KAPPA_SCALE, KAPPA_SCALE, None, False)
    delta = numpyro.deterministic("delta", kappa[:, None] * alpha)
    return delta, numpyro.deterministic("delta_level", delta @ centre)


class CrossScaling(formulas.FormulaLaw):
    """The cross law with a model-size axis and tokens as steps (module docstring)."""

    name = "cross-scaling"
    own_share = False
    size_axis = True  # fits runs of several model sizes (Observations.has_sizes)
    formula_sites = (*BiMixCross.formula_sites, "frac_size", "gamma", "delta", "delta_level")
    formula = staticmethod(formulas.scaling_log_loss)
    target_sites = BiMixCross.target_sites

    def check(self, data: LawData) -> None:
        check_distinct_mixtures(data, self.name)

    def model(self, data: LawData, settings: LawSettings, prior: Prior | None = None) -> None:
        eps = domain_floor_eps(data, settings)
        r = jnp.asarray(data.r)
        centre = jnp.log(r + eps).mean(axis=0)
        alpha = cross_exponents(data, settings, prior)
        logk = numpyro.deterministic("logk", log_k_at_centre(data, prior) + alpha @ centre)
        axes = scale_inputs(data, prior)
        delta = delta_level = None
        if data.n_rel is not None:
            delta, delta_level = size_drift(data, alpha, centre)
        log_mean = formulas.scaling_log_loss(
            jnp, logk, alpha, eps, r, delta=delta, delta_level=delta_level, **axes
        )
        get_noise(settings.noise).observe(data, log_mean, prior)
