"""Mixtures as tables: the bottom of the package (numpy and pandas only).

A mixture is one share per training domain, summing to 1; in a table it is one
``r:<domain>`` column per domain. Every layer reads and writes mixtures the same way, so the
column names, the tolerance on their sum, the objective's weights over targets and the tidy
observations table are defined here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from bayesmix.errors import ArgumentError

RATIO_PREFIX = "r:"
# Shares may sum to 1 within this (public releases round them to 1e-3); they are rescaled.
SUM_TOLERANCE = 1e-3


def ratio_column(domain: str) -> str:
    return f"{RATIO_PREFIX}{domain}"


def mixture_matrix(
    frame: pd.DataFrame,
    domains: Sequence[str],
    what: str = "mixtures",
    error: type[Exception] = ValueError,
) -> np.ndarray:
    """(P, M) shares from a frame with one ``r:<domain>`` column per domain, validated and
    rescaled to sum to 1 exactly. ``what`` names the frame in messages; ``error`` is the
    caller's error class (the user's mistake in the caller's terms)."""
    if not isinstance(frame, pd.DataFrame):
        raise error(
            f"{what}: expected a DataFrame with r:<domain> columns, got {type(frame).__name__}"
        )
    cols = [ratio_column(d) for d in domains]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise error(
            f"{what}: missing column(s) {', '.join(missing)} (every domain needs an "
            "r:<domain> column)"
        )
    unknown = [c for c in frame.columns if str(c).startswith(RATIO_PREFIX) and c not in cols]
    if unknown:
        raise error(f"{what}: column(s) for unknown domain(s): {', '.join(unknown)}")
    r = frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(r) | (r < 0) | (r > 1)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise error(
            f"{what}: row {frame.index[i]!r}, column {cols[j]!r}: {frame[cols[j]].iloc[i]!r} "
            "is not a share in [0, 1]"
        )
    sums = r.sum(axis=1)
    off = np.abs(sums - 1) > SUM_TOLERANCE
    if off.any():
        i = int(np.argmax(off))
        raise error(f"{what}: row {frame.index[i]!r} sums to {sums[i]:.6g}, not 1")
    return r / sums[:, None]


def mixture_frame(
    r: np.ndarray, domains: Sequence[str], run_ids: Sequence[str] | None = None
) -> pd.DataFrame:
    """(P, M) shares -> a frame with ``r:<domain>`` columns (and ``run_id``), as
    ``Posterior.predict`` takes and proposers return."""
    frame = pd.DataFrame(np.atleast_2d(r), columns=[ratio_column(d) for d in domains])
    if run_ids is not None:
        frame.insert(0, "run_id", list(run_ids))
    return frame


def objective_weights(weights: Mapping[str, float] | None, targets: Sequence[str]) -> np.ndarray:
    """The objective sum_t w_t L_t's weights over ``targets`` (equal by default, 1/T each);
    unknown targets and bad values are errors (ValueError)."""
    if weights is None:
        return np.full(len(targets), 1.0 / len(targets))
    unknown = [t for t in weights if t not in targets]
    if unknown:
        raise ArgumentError(f"weights name unknown target(s): {', '.join(map(str, unknown))}")
    w = np.array([float(weights.get(t, 0.0)) for t in targets])
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ArgumentError("weights must be finite, non-negative and not all zero")
    return w


def tidy_frame(
    r: np.ndarray,
    values: np.ndarray,
    domains: Sequence[str],
    targets: Sequence[str],
    run_ids: Sequence[str],
    steps: np.ndarray | float | None = None,
    metric: str = "loss",
) -> pd.DataFrame:
    """(P, M) mixtures and (P, T) losses -> the tidy observations table: one row per
    (run, target), columns ``run_id``, ``step`` (when given: per run, or one for all),
    ``target``, ``value``, ``metric`` and ``r:<domain>``."""
    p, t = values.shape
    frame = pd.DataFrame(
        {
            "run_id": np.repeat(np.asarray(run_ids, dtype=object), t),
            "target": np.tile(np.asarray(targets, dtype=object), p),
            "value": values.reshape(-1),
            "metric": metric,
        }
    )
    if steps is not None:
        frame.insert(1, "step", np.repeat(np.broadcast_to(steps, (p,)), t))
    shares = np.repeat(np.atleast_2d(r), t, axis=0)
    for j, d in enumerate(domains):
        frame[ratio_column(d)] = shares[:, j]
    return frame
