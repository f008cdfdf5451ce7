"""Each law's formula, written once for any array namespace (numpy, jax.numpy, torch).

The NumPyro models (JAX), the posterior predictions (NumPy) and the BoTorch acquisition
(torch) all call these functions; ``xp`` is the array module of the inputs.

Shapes: parameters carry any leading batch shape ``...`` (posterior draws), then their own
axes (``T`` targets, ``M`` training domains); ``r`` is ``(P, M)`` (mixtures), ``s_rel`` is
``(P,)`` (training progress over the reference step, or None when the data have no step axis).
Every function returns the log loss with shape ``(..., P, T)``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

Array = Any


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
    xp: ModuleType,
    logk: Array,
    alpha: Array,
    eps: Array,
    r_own: Array,
    s_rel: Array | None = None,
    frac: Array | None = None,
    beta: Array | None = None,
) -> Array:
    """BiMix, own share: log L_t = log K_t(s) - alpha_t log(r_own(t) + eps_t).

    logk, alpha, eps: (..., T); r_own: (P, T), each target's own domain's share (``r @ own.T``
    for the (T, M) one-hot map ``own``). The paper's A_t is folded into K_t: only four of its
    five parameters are identifiable.
    """
    mix = alpha[..., None, :] * xp.log(r_own + eps[..., None, :])
    return logk[..., None, :] - mix + log_step_factor(xp, frac, beta, s_rel)


def cross_log_loss(
    xp: ModuleType,
    logk: Array,
    alpha: Array,
    eps: Array,
    r: Array,
    s_rel: Array | None = None,
    frac: Array | None = None,
    beta: Array | None = None,
) -> Array:
    """Cross-domain BiMix: log L_t = log K_t(s) - sum_j alpha_tj log(r_j + eps_j).

    logk: (..., T); alpha: (..., T, M); eps: (..., M), each domain's floor; r: (P, M).
    BiMix's own-share law is the case alpha_tj = 0 for every j but the target's own domain.
    """
    log_r = xp.log(r + eps[..., None, :])  # (..., P, M)
    mix = xp.matmul(log_r, xp.swapaxes(alpha, -1, -2))  # (..., P, T)
    return logk[..., None, :] - mix + log_step_factor(xp, frac, beta, s_rel)


def loglinear_log_loss(
    xp: ModuleType,
    log_c: Array,
    A: Array,
    r: Array,
    s_rel: Array | None = None,
    frac: Array | None = None,
    beta: Array | None = None,
) -> Array:
    """Log-linear law (Olmix, Data Mixing Laws): L_t = (c_t + exp(A_t . r)) x step factor.

    log_c: (..., T) log of the irreducible part; A: (..., T, M). With sum_j r_j = 1 a common
    shift of A_t is the law's scale, so no separate intercept is needed.
    """
    lin = xp.matmul(r, xp.swapaxes(A, -1, -2))  # (..., P, T)
    return xp.logaddexp(log_c[..., None, :], lin) + log_step_factor(xp, frac, beta, s_rel)
