"""Each law's formula, written once for any array namespace (numpy, jax.numpy, torch).

The NumPyro models (JAX), the posterior predictions (NumPy) and the BoTorch acquisition
(torch) all call these functions; ``xp`` is the array module of the inputs.

Shapes: parameters carry any leading batch shape ``...`` (posterior draws), then their own
axes (``T`` targets, ``M`` training domains); ``r`` is ``(P, M)`` (mixtures), ``s_rel`` is
``(P,)`` (training progress over the reference step, or None when the data have no step axis).
Every function returns the log loss with shape ``(..., P, T)``. The laws' array parameters
are not annotated: each is an ``Array`` (Any), with the shape its docstring gives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

Array = Any

# The sites a fit has only where its data have the axis (steps, model sizes): a fit without
# it has no such site, and the formula takes None and leaves that factor out.
AXIS_SITES = frozenset({"frac", "beta", "frac_size", "gamma", "delta", "delta_level"})


def namespace(*arrays: Array) -> ModuleType:
    """The array module of the inputs: torch, jax.numpy or numpy."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("torch"):
            import torch

            return torch
        if mod.startswith("jax"):
            import jax.numpy as jnp

            return jnp
    import numpy as np

    return np


def log_step_factor(xp: ModuleType, frac: Array, beta: Array, s_rel: Array | None) -> Array:
    """log (1 - f + f s^-beta): the step law B s^-beta + C divided by its value at s = 1.

    With K(s) = B s^-beta + C and s measured relative to a reference step (s_rel = 1 there),
    K(s) = K_ref (1 - f + f s^-beta) where K_ref = B + C and f = B / (B + C) in (0, 1) is the
    share of the loss that more training still removes. Parametrising by (K_ref, f, beta)
    instead of (B, C, beta) removes most of the B-C correlation (DESIGN.md). Without a step
    axis the factor is 1 (log 0) and the law reduces to its mixture part.
    """
    if s_rel is None or frac is None:
        return 0.0
    s = s_rel[:, None]  # (P, 1) against (..., 1, T)
    return xp.log1p(frac[..., None, :] * (s ** (-beta[..., None, :]) - 1.0))


def bimix_log_loss(
    xp: ModuleType, logk, alpha, eps, r_own, s_rel=None, frac=None, beta=None
) -> Array:
    """BiMix, own share: log L_t = log K_t(s) - alpha_t log(r_own(t) + eps_t).

    logk, alpha, eps: (..., T); r_own: (P, T), each target's own domain's share (``r @ own.T``
    for the (T, M) one-hot map ``own``). The paper's A_t is folded into K_t: only four of its
    five parameters are identifiable.
    """
    mix = alpha[..., None, :] * xp.log(r_own + eps[..., None, :])
    return logk[..., None, :] - mix + log_step_factor(xp, frac, beta, s_rel)


def cross_log_loss(xp: ModuleType, logk, alpha, eps, r, s_rel=None, frac=None, beta=None) -> Array:
    """Cross-domain BiMix: log L_t = log K_t(s) - sum_j alpha_tj log(r_j + eps_j).

    logk: (..., T); alpha: (..., T, M); eps: (..., M), each domain's floor; r: (P, M).
    BiMix's own-share law is the case alpha_tj = 0 for every j but the target's own domain.
    """
    log_r = xp.log(r + eps[..., None, :])  # (..., P, M)
    mix = xp.matmul(log_r, xp.swapaxes(alpha, -1, -2))  # (..., P, T)
    return logk[..., None, :] - mix + log_step_factor(xp, frac, beta, s_rel)


def loglinear_log_loss(xp: ModuleType, log_c, A, r, s_rel=None, frac=None, beta=None) -> Array:
    """Log-linear law (Olmix, Data Mixing Laws): L_t = (c_t + exp(A_t . r)) x step factor.

    log_c: (..., T) log of the irreducible part; A: (..., T, M). With sum_j r_j = 1 a common
    shift of A_t is the law's scale, so no separate intercept is needed.
    """
    lin = xp.matmul(r, xp.swapaxes(A, -1, -2))  # (..., P, T)
    return xp.logaddexp(log_c[..., None, :], lin) + log_step_factor(xp, frac, beta, s_rel)


def log_scale_factor(
    xp: ModuleType, *, s_rel=None, frac=None, beta=None, n_rel=None, frac_size=None, gamma=None
) -> Array:
    """log K(D, N) / K_ref for Chinchilla's K = E + A N^-gamma + B D^-beta, over tokens and size.

    With d = D / D_ref, n = N / N_ref, f_D = B D_ref^-beta / K_ref and f_N = A N_ref^-gamma /
    K_ref (the shares of the reference loss that more tokens, and a bigger model, remove):

        K(D, N) / K_ref = 1 + f_D (d^-beta - 1) + f_N (n^-gamma - 1),   f_D + f_N < 1.

    Without a size axis this is ``log_step_factor``; without either it is 0. The inputs are
    the relative steps and sizes, s_rel and n_rel (P,), and the sites of the step law (frac,
    beta) and of the size law (frac_size, gamma), (..., T); None for an axis the data lack.
    """
    if n_rel is None or frac_size is None or gamma is None:
        return log_step_factor(xp, frac, beta, s_rel)
    n = n_rel[:, None]  # (P, 1) against (..., 1, T)
    inner = frac_size[..., None, :] * (n ** (-gamma[..., None, :]) - 1.0)
    if s_rel is not None and frac is not None and beta is not None:
        s = s_rel[:, None]
        inner = inner + frac[..., None, :] * (s ** (-beta[..., None, :]) - 1.0)
    return xp.log1p(inner)


def scaling_log_loss(
    xp: ModuleType, logk, alpha, eps, r, *, delta=None, delta_level=None, **scale
) -> Array:
    """Cross-domain law over mixture, tokens and model size:

        log L_t = log K_t + log K_t(D, N) / K_t,ref
                  - sum_j (alpha_tj + delta_tj log n) log(r_j + eps_j) + delta_level_t log n

    alpha_tj is domain j's exponent at the reference size; delta_tj how it drifts per e-fold
    of model size (a domain's effect may grow or shrink with scale, as Shukor et al.'s joint
    law and RegMix's 1M -> 1B transfer show). delta_level_t = sum_j delta_tj c_j with c the
    centre of the observed log(r + eps): at the centre mixture, size acts through the
    Chinchilla factor alone. logk, delta_level: (..., T); alpha, delta: (..., T, M);
    eps: (..., M); r: (P, M); ``scale``: the inputs of ``log_scale_factor`` by name. Without
    a size axis this is ``cross_log_loss``.
    """
    log_r = xp.log(r + eps[..., None, :])  # (..., P, M)
    mix = xp.matmul(log_r, xp.swapaxes(alpha, -1, -2))  # (..., P, T)
    out = logk[..., None, :] - mix
    n_rel = scale.get("n_rel")
    if n_rel is not None and delta is not None and delta_level is not None:
        log_n = xp.log(n_rel)[:, None]  # (P, 1)
        drift = xp.matmul(log_r, xp.swapaxes(delta, -1, -2)) - delta_level[..., None, :]
        out = out - log_n * drift
    return out + log_scale_factor(xp, **scale)


def additive_log_loss(xp: ModuleType, logk, log_weight, exponent, r, **scale) -> Array:
    """Shukor et al. 2025's additive law, over mixture, tokens and model size:

        L_t = K_t (1 + f_D (d^-beta - 1) + f_N (n^-gamma - 1)) + 1 / sum_j C_tj r_j^e_tj

    Chinchilla's E + A N^-a + B D^-b at the reference (K_t, see ``log_scale_factor``) plus a
    mixture term that falls as the mixture holds more of what target t learns from: domain j
    contributes C_tj r_j^e_tj, nothing at r_j = 0 (no floor needed). logk: (..., T);
    log_weight = log C, exponent = e: (..., T, M); r: (P, M); ``scale``: the inputs of
    ``log_scale_factor`` by name. Returns log L_t.
    """
    present = r > 0
    safe_r = xp.where(present, r, xp.ones_like(r))
    log_r = xp.log(safe_r)[..., None, :, :]  # (..., 1, P, M)
    powers = xp.exp(exponent[..., :, None, :] * log_r + log_weight[..., :, None, :])
    powers = xp.where(present, powers, xp.zeros_like(powers))
    mixture = 1.0 / xp.swapaxes(powers.sum(-1), -1, -2)  # (..., P, T)
    log_k = logk[..., None, :] + log_scale_factor(xp, **scale)
    return xp.log(xp.exp(log_k) + mixture)


def at_sites(
    formula: Callable[..., Array],
    xp: ModuleType,
    params: Mapping[str, Array],
    sites: Sequence[str],
    **inputs: Array | None,
) -> Array:
    """``formula`` (one of the functions above) at the draws ``params``: each of ``sites``
    passed under its own name (None for an axis site the fit lacks), with the ``inputs``
    (mixtures, steps, model sizes) by name."""
    args = {name: params.get(name) if name in AXIS_SITES else params[name] for name in sites}
    return formula(xp, **inputs, **args)


class FormulaLaw:
    """A law's ``log_loss`` where its ``formula`` names its parameters after the law's
    ``formula_sites`` (every law of this package): the formula at the draws' sites."""

    formula_sites: tuple[str, ...]
    formula: Callable[..., Array]  # set as staticmethod(one of the functions above)
    size_axis = False  # True: fits runs of several model sizes (Observations.has_sizes)
    noise = "correlated"  # the observation noise it is fitted with unless one is named

    def mixtures(self, xp: ModuleType, r: Array, own_onehot: Array) -> dict[str, Array]:
        """The formula's mixture input: every share (``r``)."""
        return {"r": r}

    def log_loss(
        self,
        xp: ModuleType,
        params: Mapping[str, Array],
        r: Array,
        s_rel: Array | None,
        *,
        n_rel: Array | None = None,
        own_onehot: Array = None,
    ) -> Array:
        """Noise-free log loss (..., P, T) from natural parameters with leading batch dims."""
        # Model sizes only where given: a law without a size axis has no such input.
        sizes = {} if n_rel is None else {"n_rel": n_rel}
        inputs = {**self.mixtures(xp, r, own_onehot), "s_rel": s_rel, **sizes}
        return at_sites(self.formula, xp, params, self.formula_sites, **inputs)
