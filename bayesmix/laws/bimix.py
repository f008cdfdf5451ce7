"""BiMix (arXiv 2405.14908) and its cross-domain extension, as hierarchical NumPyro models.

Own-share law, the paper's A folded into K (only four of its five parameters are identifiable):

    L_t(r, s) = (r_own(t) + eps)^(-alpha_t) * K_t(s),   K_t(s) = B_t s^(-beta_t) + C_t

Cross-domain law (contains BiMix as alpha_tj = 0 for j != own(t)):

    log L_t(r, s) = log K_t(s) - sum_j alpha_tj log(r_j + eps)

Both are sampled with the covariates x_j = log(r_j + eps) centred on their mean over the
observed mixtures: log K at the centre is then nearly uncorrelated with the exponents, which
is what lets NUTS move freely. The natural log K (at r_j + eps = 1) is recorded as a
deterministic site, since the formula and every later stage use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayesmix.laws import formulas
from bayesmix.laws.base import LawData, LawError, LawSettings, Prior
from bayesmix.laws.blocks import floor_eps, observe, pooled, step_law


def _centred_log_r(data: LawData, eps: Any) -> tuple[jnp.ndarray, jnp.ndarray]:
    x = jnp.log(jnp.asarray(data.r) + eps)
    centre = x.mean(axis=0)
    return x - centre, centre


def _log_k(data: LawData, prior: Prior | None) -> jnp.ndarray:
    """Log loss at the centre of the observed mixtures and the reference step, per target.

    Centred on each target's mean observed log loss, so the offsets are small and not pooled:
    pooling offsets that the centring already made alike puts a funnel at a zero scale.
    """
    loc, scale = np.zeros(data.n_targets), np.full(data.n_targets, 0.5)
    if prior is not None and "logk_offset" in prior:
        m, s = (np.asarray(v, dtype=float) for v in prior["logk_offset"])
        loc, scale = np.where(np.isfinite(m), m, loc), np.where(np.isfinite(m), s, scale)
    offset = numpyro.sample("logk_offset", dist.Normal(loc, scale).to_event(1))
    return jnp.asarray(data.target_mean) + offset


def _deviations(
    name: str, scale: jnp.ndarray, shape: tuple[int, ...], centered: bool
) -> jnp.ndarray:
    """Zero-mean normal effects with a learned scale, centred or not (see ``pooled``)."""
    if centered:
        return numpyro.sample(name, dist.Normal(0.0, scale).expand(shape).to_event(len(shape)))
    z = numpyro.sample(f"{name}_z", dist.Normal(0.0, 1.0).expand(shape).to_event(len(shape)))
    return numpyro.deterministic(name, scale * z)


class BiMix:
    """Own-share BiMix: each target's loss depends on its own training domain's share only."""

    name = "bimix"
    own_share = True

    def check(self, data: LawData) -> None:
        missing = [t for t, has in zip(data.targets, data.has_own, strict=True) if not has]
        if missing:
            raise LawError(
                f"law 'bimix' needs each target's own training domain; none for "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                "(pass target_domain to Observations.from_frame, or use law='bimix-cross')"
            )
        distinct = np.unique(np.round(data.r, 6), axis=0)
        if len(distinct) < 2:
            raise LawError("law 'bimix' needs at least two distinct mixtures to identify alpha")

    def model(self, data: LawData, settings: LawSettings, prior: Prior | None = None) -> None:
        eps = floor_eps(settings)
        x, centre = _centred_log_r(data, eps)
        own = jnp.asarray(data.own_onehot)
        alpha = jnp.exp(
            pooled("log_alpha", data.n_targets, np.log(0.05), 1.5, 1.0, prior, data.centered)
        )
        alpha = numpyro.deterministic("alpha_own", alpha)
        logk_c = _log_k(data, prior)
        frac, beta = step_law(data, prior)
        alpha_m = formulas.own_alpha(alpha, own)
        # log K at r + eps = 1: move the centring into the intercept.
        numpyro.deterministic("logk", logk_c + (alpha_m * centre).sum(-1))
        log_mean = formulas.cross_log_loss(jnp, logk_c, alpha_m, x, data.s_rel, frac, beta)
        observe(data, settings, log_mean, prior)

    def log_loss(
        self,
        xp: ModuleType,
        params: Mapping[str, Any],
        r: Any,
        s_rel: Any | None,
        *,
        own_onehot: Any,
        eps: Any,
    ) -> Any:
        alpha = formulas.own_alpha(params["alpha_own"], own_onehot)
        log_r = xp.log(r + eps)
        return formulas.cross_log_loss(
            xp, params["logk"], alpha, log_r, s_rel, params.get("frac"), params.get("beta")
        )


class BiMixCross:
    """Cross-domain BiMix: every training domain's share may move every target's loss.

    alpha_tj = a_j + d_tj (+ g_t where j = own(t)): a_j is domain j's effect shared by all
    targets, d_tj a target-specific deviation, both under zero-centred normal shrinkage with
    learned scales; g_t >= 0 the extra own-domain exponent, partially pooled. With
    ``settings.rank = k > 0`` the deviations are low rank, d = U V^T (for 64 domains x 52 tasks).
    """

    name = "bimix-cross"
    own_share = False

    def check(self, data: LawData) -> None:
        distinct = np.unique(np.round(data.r, 6), axis=0)
        if len(distinct) < 2:
            raise LawError("law 'bimix-cross' needs at least two distinct mixtures")

    def model(self, data: LawData, settings: LawSettings, prior: Prior | None = None) -> None:
        t, m = data.n_targets, data.n_domains
        eps = floor_eps(settings)
        x, centre = _centred_log_r(data, eps)
        shared_scale = numpyro.sample("alpha_shared_tau", dist.HalfNormal(0.05))
        shared = _deviations("alpha_shared", shared_scale, (m,), data.centered)
        dev_scale = numpyro.sample("alpha_dev_tau", dist.HalfNormal(0.05))
        if settings.rank > 0:
            k = settings.rank
            u = numpyro.sample("alpha_u", dist.Normal(0, 1).expand([t, k]).to_event(2))
            v = numpyro.sample("alpha_v", dist.Normal(0, 1).expand([m, k]).to_event(2))
            dev = dev_scale * (u @ v.T) / np.sqrt(k)
        else:
            dev = _deviations("alpha_dev", dev_scale, (t, m), data.centered)
        own = jnp.asarray(data.own_onehot)
        own_extra = jnp.exp(
            pooled("log_alpha_own", t, np.log(0.03), 1.5, 1.0, prior, data.centered)
        )
        alpha = numpyro.deterministic(
            "alpha", shared[None, :] + dev + formulas.own_alpha(own_extra, own)
        )
        logk_c = _log_k(data, prior)
        frac, beta = step_law(data, prior)
        numpyro.deterministic("logk", logk_c + (alpha * centre).sum(-1))
        log_mean = formulas.cross_log_loss(jnp, logk_c, alpha, x, data.s_rel, frac, beta)
        observe(data, settings, log_mean, prior)

    def log_loss(
        self,
        xp: ModuleType,
        params: Mapping[str, Any],
        r: Any,
        s_rel: Any | None,
        *,
        own_onehot: Any = None,
        eps: Any,
    ) -> Any:
        log_r = xp.log(r + eps)
        return formulas.cross_log_loss(
            xp,
            params["logk"],
            params["alpha"],
            log_r,
            s_rel,
            params.get("frac"),
            params.get("beta"),
        )
