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
