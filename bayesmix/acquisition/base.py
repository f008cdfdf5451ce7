"""What every acquisition and proposer shares: the error, the input checks and the frames.

No torch here: the posterior-free proposers (``bayesmix.proposers.swarms``) use it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from bayesmix.errors import BayesMixError
from bayesmix.mixtures import mixture_frame
from bayesmix.mixtures import objective_weights as checked_weights
from bayesmix.observations import Observations

# Two mixtures closer than this (L1) are the same run: a pool row is proposed at most once.
SAME_MIXTURE_L1 = 1e-6
# The default smallest L1 distance between a proposal and any other run of its study (its
# batch, pending and observed runs): 1% of share moved from one domain to another, 20 times
# the 1e-3 below which two runs measure the same mixture, yet far below the spacing of a
# swarm's mixtures (the RegMix pool's closest two runs are 0.022 apart). 0 allows repeats.
MIN_DISTANCE = 0.02


class ProposalError(BayesMixError, ValueError):
    """A proposer or recommender was given input it cannot work with."""


def check_q(q: Any) -> int:
    if isinstance(q, bool) or not isinstance(q, int | np.integer) or q < 1:
        raise ProposalError(f"q must be a positive integer (runs per batch), got {q!r}")
    return int(q)


def check_posterior(posterior: Any) -> Any:
    """A posterior a proposal can use: fitted, with draws and observed runs."""
    if posterior is None:
        raise ProposalError("no posterior: fit the law to observed runs first (bayesmix fit)")
    draws = int(getattr(posterior, "num_draws", 0))
    if draws < 1:
        raise ProposalError(
            "the posterior is empty (0 draws): refit it with num_samples >= 1 before proposing"
        )
    obs = posterior.observations
    if obs is None or len(obs.run_ids) == 0:
        raise ProposalError("the posterior holds no observed runs: fit it on runs first")
    return posterior


def check_min_distance(value: Any) -> float:
    """A minimum L1 distance between runs: a finite number >= 0 (0 allows repeats)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ProposalError(f"min_distance must be a number >= 0 (L1), got {value!r}")
    if not (np.isfinite(value) and 0 <= value < 2):
        raise ProposalError(f"min_distance must be in [0, 2) (L1 between mixtures), got {value!r}")
    return float(value)


def far_from(points: np.ndarray, taken: np.ndarray, min_distance: float) -> np.ndarray:
    """Which rows of ``points`` lie at least ``min_distance`` (L1) from every row of
    ``taken``: a (P,) boolean mask."""
    points = np.atleast_2d(np.asarray(points, dtype=float))
    taken = np.asarray(taken, dtype=float).reshape(-1, points.shape[1])
    far = np.ones(len(points), dtype=bool)
    if min_distance <= 0:
        return far
    for start in range(0, len(taken), 256):  # blocks keep the (P, K, M) array small
        block = taken[start : start + 256]
        far &= (np.abs(points[:, None, :] - block[None]).sum(-1) >= min_distance).all(axis=1)
    return far


def distinct_rows(
    points: np.ndarray, taken: np.ndarray, min_distance: float, limit: int | None = None
) -> np.ndarray:
    """Positions of the rows of ``points``, in their order, that lie at least
    ``min_distance`` (L1) from every row of ``taken`` and from every row kept before them
    (at most ``limit``). The one rule every proposer keeps its batch distinct by: a batch
    ordered best first keeps its best runs."""
    points = np.atleast_2d(np.asarray(points, dtype=float))
    limit = len(points) if limit is None else limit
    if min_distance <= 0:
        return np.arange(min(limit, len(points)))
    kept: list[int] = []
    for i in np.flatnonzero(far_from(points, taken, min_distance)):
        if len(kept) == limit:
            break
        if not kept or np.abs(points[kept] - points[i]).sum(-1).min() >= min_distance:
            kept.append(int(i))
    return np.array(kept, dtype=int)


def too_few_distinct(found: int, q: int, min_distance: float, where: str) -> ProposalError:
    """The error when fewer than q runs lie ``min_distance`` apart."""
    return ProposalError(
        f"{where}: only {found} mixture(s) lie at least min_distance={min_distance:g} (L1) "
        f"from each other and from the observed and pending runs, fewer than q={q}; ask for "
        "fewer runs, loosen the bounds, or lower min_distance (0 allows re-measuring a mixture)"
    )


def objective_weights(weights: Mapping[str, float] | None, targets: list[str]) -> np.ndarray:
    """``bayesmix.mixtures.objective_weights`` (which checks them), scaled to sum to 1: the
    objective's units then do not depend on how the user wrote the weights."""
    try:
        w = checked_weights(weights, targets)
    except ValueError as exc:
        raise ProposalError(str(exc)) from None
    return w / w.sum()


def run_table(
    obs: Observations, step: float | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(P, M) mixtures and (P, T) losses of the observed runs, targets in ``obs.targets``
    order: with a step axis, the rows at ``step`` (None: each run's last row); runs that
    miss a target there are left out."""
    frame = obs.frame
    if obs.has_steps:
        if step is None:
            last = frame.groupby("run_id")["step"].transform("max")
            frame = frame[frame["step"] == last]
        else:
            frame = frame[np.isclose(frame["step"].to_numpy(dtype=float), float(step))]
    table = frame.pivot_table(index="run_id", columns="target", values="value", sort=False)
    targets = list(obs.targets)
    table = table.reindex(columns=targets).dropna()
    mix = obs.mixtures().loc[table.index]
    return mix.to_numpy(dtype=float), table.to_numpy(dtype=float), targets


def proposal_frame(
    r: np.ndarray, domains: list[str], **columns: np.ndarray | list[Any] | None
) -> pd.DataFrame:
    """(q, M) mixtures -> the frame proposers return (extra columns appended when given)."""
    r = np.clip(np.atleast_2d(np.asarray(r, dtype=float)), 0.0, None)
    frame = mixture_frame(r / r.sum(axis=1, keepdims=True), domains)
    for name, values in columns.items():
        if values is not None:
            frame[name] = list(values)
    return frame
