"""Choosing a law by how well it predicts runs it did not see.

Each candidate law is fitted K times, each time without one fold of the runs (a run's every
target and step stay together), and scored on the held-out runs by its log predictive
density,

    lpd_i = log (1/D) sum_d p(y_i | theta_d),   theta_d drawn from the fit without i's fold,

summed over runs into elpd (expected log predictive density; higher is better). Pointwise
differences between two laws give the standard error of their difference,
se = sqrt(n var_i(lpd_i^a - lpd_i^b)).

The first candidate is the default (the simplest: the own-share law has one exponent per
target, the cross law one per target and domain). Another is chosen only when its elpd beats
the first's by more than ``threshold`` standard errors of the difference: with few runs a
richer law can interpolate them, and its held-out fit is then what exposes it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from bayesmix.laws import LAW_NAMES, LawError
from bayesmix.observations import Observations

DEFAULT_LAWS = ("bimix", "bimix-cross")
MIN_RUNS = 4
# How each fold is fitted: "nuts" scores the posterior predictive (2 short chains);
# "map" the plug-in predictive at the mode, seconds instead of minutes, but a rich law's
# mode fits its folds too closely, which its held-out runs then punish.
FOLD_FITS: dict[str, dict[str, Any]] = {
    "nuts": {"method": "nuts", "num_chains": 2, "num_warmup": 200, "num_samples": 200},
    "map": {"method": "map"},
}


class SelectionError(ValueError):
    """The laws cannot be compared on these observations (too few runs, unknown law...)."""


@dataclass(frozen=True)
class LawComparison:
    """Held-out predictive fit of each candidate law, and the one chosen.

    table: one row per law, in the order given: elpd and its standard error, elpd_diff and
        se_diff against the first law, and why a law could not be fitted (``error``).
    pointwise: (runs x laws) each run's held-out log predictive density.
    """

    table: pd.DataFrame
    pointwise: pd.DataFrame
    chosen: str
    folds: int
    threshold: float

    def __str__(self) -> str:
        runs = len(self.pointwise)
        lines = [f"held-out fit of {runs} runs ({self.folds}-fold cross-validation by run):"]
        reference = self.table.index[0]
        for law, row in self.table.iterrows():
            if pd.notna(row["error"]):
                lines.append(f"  {law:<12} not fitted: {row['error']}")
                continue
            diff = (
                ""
                if law == reference
                else f"   {row['elpd_diff']:+.1f} +/- {row['se_diff']:.1f} against {reference}"
            )
            lines.append(f"  {law:<12} elpd {row['elpd']:9.1f} +/- {row['se']:.1f}{diff}")
        lines.append(
            f"chosen: {self.chosen} (another law only when it predicts better by more than "
            f"{self.threshold:g} standard errors)"
        )
        return "\n".join(lines)


def compare_laws(
    obs: Observations,
    laws: Sequence[str] = DEFAULT_LAWS,
    *,
    method: Literal["nuts", "map"] = "nuts",
    folds: int = 5,
    threshold: float = 1.0,
    seed: int = 0,
) -> LawComparison:
    """Compare ``laws`` on ``obs`` by K-fold cross-validation over runs (module docstring).

    Args:
        obs: observations of one metric.
        laws: candidate law names, the default (simplest) first.
        method: how each fold is fitted (``FOLD_FITS``): "nuts" or "map".
        folds: K; at most the number of runs (then leave-one-run-out).
        threshold: standard errors by which another law must beat the first to be chosen.
    """
    if not isinstance(obs, Observations):
        raise TypeError(f"compare_laws expects Observations, got {type(obs).__name__}")
    laws = list(laws)
    unknown = [law for law in laws if law not in LAW_NAMES]
    if not laws or unknown:
        raise SelectionError(f"unknown laws {unknown or laws}; choose from {', '.join(LAW_NAMES)}")
    if len(set(laws)) != len(laws):
        raise SelectionError(f"laws are listed twice: {laws}")
    if method not in FOLD_FITS:
        raise SelectionError(f"unknown method {method!r}; choose one of {', '.join(FOLD_FITS)}")
    if not isinstance(folds, int) or folds < 2:
        raise SelectionError(f"folds must be an integer of at least 2, got {folds!r}")
    if not (np.isfinite(threshold) and threshold >= 0):
        raise SelectionError(f"threshold must be a non-negative number, got {threshold!r}")
    runs = pd.unique(obs.frame["run_id"])
    if len(runs) < MIN_RUNS:
        raise SelectionError(
            f"comparing laws needs at least {MIN_RUNS} runs to hold some out, got {len(runs)}"
        )
    k = min(folds, len(runs))
    shuffled = np.random.default_rng(seed).permutation(runs)
    held_out = [set(shuffled[i::k]) for i in range(k)]
    splits = [
        (obs.select(runs=[r for r in runs if r not in held]), obs.select(runs=sorted(held)))
        for held in held_out
    ]
    # The same reference step in every fold: held-out runs' steps must mean the same.
    options = {**FOLD_FITS[method], "progress": False, "reference_step": obs.max_step}

    pointwise: dict[str, pd.Series] = {}
    errors: dict[str, str] = {}
    for law in laws:
        try:
            pointwise[law] = _held_out_lpd(splits, law, seed, options)
        except LawError as err:
            errors[law] = str(err)
    if not pointwise:
        raise SelectionError(f"no law could be fitted: {errors}")
    lpd = pd.DataFrame(pointwise).reindex(runs)
    table = _table(lpd, laws, errors)
    return LawComparison(table, lpd, _choose(table, threshold), k, threshold)


def _held_out_lpd(
    splits: list[tuple[Observations, Observations]],
    law: str,
    seed: int,
    options: dict[str, Any],
) -> pd.Series:
    """Each held-out run's log predictive density under the fit of its fold's other runs."""
    from bayesmix.inference import fit

    parts = []
    for i, (train, held_out) in enumerate(splits):
        with warnings.catch_warnings():
            # Folds are small by design; the comparison itself reports what they show.
            warnings.simplefilter("ignore")
            post = fit(train, law=law, seed=seed + i, **options)
        ll = post.log_likelihood(held_out)  # (draws x runs)
        parts.append(pd.Series(logsumexp(ll.to_numpy(), axis=0) - np.log(len(ll)), ll.columns))
    return pd.concat(parts)


def _table(lpd: pd.DataFrame, laws: list[str], errors: dict[str, str]) -> pd.DataFrame:
    n = len(lpd)
    fitted = [law for law in laws if law in lpd.columns]
    reference = fitted[0]
    rows = {}
    for law in laws:
        if law not in lpd.columns:
            rows[law] = {"elpd": np.nan, "se": np.nan, "elpd_diff": np.nan, "se_diff": np.nan}
            continue
        diff = lpd[law] - lpd[reference]
        rows[law] = {
            "elpd": lpd[law].sum(),
            "se": float(np.sqrt(n * lpd[law].var(ddof=1))),
            "elpd_diff": diff.sum(),
            "se_diff": float(np.sqrt(n * diff.var(ddof=1))),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "law"
    table["error"] = pd.Series(errors, dtype=object).reindex(table.index)
    return table


def _choose(table: pd.DataFrame, threshold: float) -> str:
    fitted = table[table["error"].isna()]
    reference = fitted.index[0]
    better = fitted[fitted["elpd_diff"] > threshold * fitted["se_diff"]]
    better = better.drop(reference, errors="ignore")
    return str(better["elpd_diff"].idxmax()) if len(better) else str(reference)
