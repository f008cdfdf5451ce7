"""A first batch designed for the law: D-optimal for the cross law's exponents.

Before any observation a swarm of Dirichlet draws leaves the cross law (``bimix-cross``, one
exponent per target and domain) poorly identified at m + 1 runs: its draws put several
domains near zero together and move the others with them. The cross law is, per target t,

    log L_t(r) = log K_t - sum_j alpha_tj x_j(r),   x_j(r) = log(r_j + eps),

linear in its parameters (log K_t, alpha_t1..alpha_tm) with the same design row
x(r) = (1, x_1(r), ..., x_m(r)) for every target. Its Jacobian over n runs is the n x (m+1)
matrix X of those rows, and the design that identifies every target's exponents best is
D-optimal: it maximises log det(X^T X + delta I) (delta: a weak prior, so that fewer than
m + 1 runs still have a criterion). The rows are found by gradient ascent from several
Dirichlet starts (the best one kept), each share kept in [floor, 1] so that no run leaves a
domain out (a share below eps says nothing about its exponent). Runs already observed or
pending enter X as fixed rows: a second batch asked before the first is told completes the
design instead of repeating it.

Past m + 1 runs a D-optimal design repeats its support points (a repeat halves the noise
there); a study wants distinct runs, so the criterion adds a weak repulsion,
``REPULSION * sum log(|x_i - x_k|^2 + 1e-6)`` over pairs of runs (log-shares), which is
-inf at a repeat and nearly flat between distinct runs. Runs closer than
``context.min_distance`` (L1) to a taken run or to each other are then replaced by the next
best starts' runs (``distinct_rows``, as every proposer keeps its batch distinct).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from bayesmix.acquisition.base import (
    ProposalError,
    check_q,
    distinct_rows,
    proposal_frame,
    too_few_distinct,
)
from bayesmix.optimize import project_to_box_simplex
from bayesmix.proposers.base import ProposalContext
from bayesmix.proposers.swarms import pick_from_pool

EPS = 3e-3  # the cross law's prior floor centre (laws.blocks.EPS_PRIOR_CENTRE)
RIDGE = 1e-3  # delta: the weak prior that makes the criterion finite for q < m + 1
REPULSION = 0.05  # weight of the pairwise log-distance term (no repeats)


@dataclass
class DOptimalDesign:
    """D-optimal mixtures for the cross law's exponents (see the module docstring).

    floor: the smallest share of any domain, as a fraction of 1/m (0.25: a quarter of the
    uniform share); starts: random starts of the ascent (the best design is kept).
    """

    name: str = "d-optimal"
    floor: float = 0.25
    starts: int = 8
    eps: float = EPS

    def __post_init__(self) -> None:
        if not 0 <= self.floor < 1:
            raise ProposalError(f"floor must be in [0, 1) (a fraction of 1/m), got {self.floor}")
        if self.starts < 1:
            raise ProposalError(f"starts must be at least 1, got {self.starts}")

    def propose(self, context: ProposalContext, q: int) -> pd.DataFrame:
        q = check_q(q)
        lo, hi = context.bounds()
        m = context.m
        floor = np.maximum(lo, self.floor / m)
        if floor.sum() > 1:  # bounds tighter than the floor: the user's bounds win
            floor = lo
        fixed = context.taken_array()
        rng = context.rng(salt=0)
        designs = []
        for _ in range(self.starts):
            r = design(rng.dirichlet(np.ones(m), q), fixed, floor, self.eps)
            designs.append((criterion(rows(r, fixed, self.eps), len(fixed))[0], r))
        designs.sort(key=lambda d: -d[0])  # the best first (the first start among equals)
        # Upper bounds, if the user set any.
        every = project_to_box_simplex(np.concatenate([r for _, r in designs]), lo, hi)
        if context.candidates is not None:
            return pick_from_pool(context, every[:q], q)
        # The best design's runs, each kept if it lies min_distance from the taken runs and
        # the runs kept before it (the repulsion alone allows near repeats); the other
        # starts' runs, best design first, fill the batch.
        keep = distinct_rows(every, fixed, context.min_distance, q)
        if len(keep) < q:
            raise too_few_distinct(len(keep), q, context.min_distance, self.name)
        return proposal_frame(every[keep], context.domains)


def rows(r: np.ndarray, fixed: np.ndarray, eps: float) -> np.ndarray:
    """The design matrix X: (1, log(r + eps)) for the fixed runs, then for r."""
    every = np.concatenate([fixed, r]) if len(fixed) else r
    return np.column_stack([np.ones(len(every)), np.log(every + eps)])


def log_det(x: np.ndarray) -> float:
    sign, value = np.linalg.slogdet(x.T @ x + RIDGE * np.eye(x.shape[1]))
    return float(value) if sign > 0 else -np.inf


def criterion(x: np.ndarray, n_fixed: int) -> tuple[float, np.ndarray]:
    """log det(X^T X + delta I) + the repulsion between the new rows and every other row,
    and its gradient with respect to the new rows' log-shares X[n_fixed:, 1:]."""
    a = x.T @ x + RIDGE * np.eye(x.shape[1])
    sign, value = np.linalg.slogdet(a)
    if sign <= 0:
        return -np.inf, np.zeros((len(x) - n_fixed, x.shape[1] - 1))
    # d log det / dX = 2 X A^-1
    grad = (2.0 * x @ np.linalg.inv(a))[n_fixed:, 1:]
    u = x[:, 1:]
    diff = u[n_fixed:, None, :] - u[None, :, :]  # (new, all, m)
    sq = (diff**2).sum(axis=2) + 1e-6
    pair = np.ones_like(sq)
    pair[np.arange(len(sq)), n_fixed + np.arange(len(sq))] = 0.0  # no row with itself
    # A pair of new rows appears twice in (new, all): half each keeps every pair once.
    pair[:, n_fixed:] *= 0.5
    value += REPULSION * float((pair * np.log(sq)).sum())
    # d/du_i of log sq_ik is 2 diff / sq; a new-new pair moves both rows (hence 2 x 0.5).
    weight = pair.copy()
    weight[:, n_fixed:] *= 2.0
    grad += REPULSION * (2.0 * weight[:, :, None] * diff / sq[:, :, None]).sum(axis=1)
    return float(value), grad


def design(start: np.ndarray, fixed: np.ndarray, floor: np.ndarray, eps: float) -> np.ndarray:
    """Local ascent of log det from ``start`` (q, m), shares floor + (1 - sum floor) softmax."""
    q, m = start.shape
    free = 1.0 - floor.sum()
    n_fixed = len(fixed)

    def shares(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = z.reshape(q, m)
        s = np.exp(z - z.max(axis=1, keepdims=True))
        s /= s.sum(axis=1, keepdims=True)
        return floor + free * s, s

    def loss(z: np.ndarray) -> tuple[float, np.ndarray]:
        r, s = shares(z)
        value, g_u = criterion(rows(r, fixed, eps), n_fixed)
        if not np.isfinite(value):
            return 1e10, np.zeros(q * m)
        g_r = g_u / (r + eps)  # u = log(r + eps)
        # r = floor + free softmax(z): dr_j/dz_k = free s_j (delta_jk - s_k).
        g_z = free * s * (g_r - (g_r * s).sum(axis=1, keepdims=True))
        return -float(value), -g_z.ravel()

    z0 = np.log(np.maximum(start, 1e-6))
    res = minimize(loss, z0.ravel(), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return shares(res.x)[0]
