"""The log-linear law of Olmix and Data Mixing Laws, as a Bayesian baseline.

    L_t(r, s) = (c_t + exp(A_t . r)) * (1 - f_t + f_t s^(-beta_t))

c_t in (0, min observed loss of t) is the irreducible part; A_tj = b_t + a_j + d_tj, with
b_t a per-target level, a_j a domain effect shared by all targets and d_tj a deviation, both
under learned normal shrinkage.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayesmix.laws import formulas, get_noise
from bayesmix.laws.base import LawData, LawSettings, Prior
from bayesmix.laws.bimix import check_distinct_mixtures
from bayesmix.laws.blocks import STEP_SITES, normal_effects, pooled, step_law
from bayesmix.laws.noise import SCALE_SITES


class LogLinear(formulas.FormulaLaw):
    name = "loglinear"
    own_share = False
    formula_sites = ("log_c", "A", "frac", "beta")
    formula = staticmethod(formulas.loglinear_log_loss)
    target_sites = {**SCALE_SITES, **STEP_SITES}

    def check(self, data: LawData) -> None:
        check_distinct_mixtures(data, self.name)

    def model(self, data: LawData, settings: LawSettings, prior: Prior | None = None) -> None:
        t, m = data.n_targets, data.n_domains
        # c_t = min_loss_t * sigmoid(u_t): below every observed loss of the target.
        u = pooled("logit_c", t, 0.0, 1.5, 1.0, prior, data.centered)
        log_c = numpyro.deterministic("log_c", np.log(data.target_min) - jnp.logaddexp(0.0, -u))
        level = np.log(np.exp(data.target_mean) - 0.5 * data.target_min)
        b = pooled("A_level", t, level, 1.0, 0.5, prior, data.centered)
        shared_tau = numpyro.sample("A_shared_tau", dist.HalfNormal(1.0))
        shared = normal_effects("A_shared", 0.0, shared_tau, (m,), data.centered)
        dev_tau = numpyro.sample("A_dev_tau", dist.HalfNormal(1.0))
        if settings.rank > 0:
            k = settings.rank
            u_ = numpyro.sample("A_u", dist.Normal(0, 1).expand([t, k]).to_event(2))
            v_ = numpyro.sample("A_v", dist.Normal(0, 1).expand([m, k]).to_event(2))
            dev = dev_tau * (u_ @ v_.T) / np.sqrt(k)
        else:
            dev = normal_effects("A_dev", 0.0, dev_tau, (t, m), data.centered)
        A = numpyro.deterministic("A", b[:, None] + shared[None, :] + dev)
        frac, beta = step_law(data, prior)
        r = jnp.asarray(data.r)
        log_mean = formulas.loglinear_log_loss(jnp, log_c, A, r, data.s_rel, frac, beta)
        get_noise(settings.noise).observe(data, log_mean, prior)
