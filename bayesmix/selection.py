"""Choosing a law by how well it predicts runs it did not see.

Each candidate law is fitted K times, each time without one fold of the runs (a run's every
target and step stay together), and scored on the held-out runs by its log predictive
density,

    lpd_i = log (1/D) sum_d p(y_i | theta_d),   theta_d drawn from the fit without i's fold,

summed over runs into elpd (expected log predictive density; higher is better). Pointwise
differences between two laws give the standard error of their difference,
se = sqrt(n var_i(lpd_i^a - lpd_i^b)).

Leave-one-run-out without n refits (``method="loo"``, Pareto-smoothed importance sampling,
Vehtari, Gelman & Gabry 2017): one NUTS fit per law on every run, and each run's held-out
density estimated from that fit's draws reweighted by w_d ∝ 1 / p(y_i | theta_d),

    lpd_i = log sum_d w~_d p(y_i | theta_d) / sum_d w~_d,

with the largest weights replaced by a fitted generalised Pareto tail (w~). Its shape k_i says
whether the estimate holds: above ``arviz``'s threshold (0.7 for a few hundred draws) the run
was too influential to be left out by reweighting (a law interpolating few runs), and that run
is refitted without it: exactly when there are at most K such runs,
else they are held out in K groups (each group's fit sees fewer runs: pessimistic for them,
and K refits at most). Only refits that can change the choice are made: reweighting scores
an influential run too well, so a refit can only lower its law, and the law not chosen need
not be lowered (``refits="decisive"``; on 48 RegMix runs, 7 fits instead of 12: 2.5 min
where every law's refits took 4 to 10 on this 2-core machine). The full
fits are kept: the chosen law's is the posterior to use (``LawComparison.posterior``), so
choosing costs 1 + K fits per law at most, where K folds cost K + 1 with the final fit.

The first candidate is the default (the simplest: the own-share law has one exponent per
target, the cross law one per target and domain). Another is chosen only when its elpd beats
the first's by more than ``threshold`` standard errors of the difference: with few runs a
richer law can interpolate them, and its held-out fit is then what exposes it. Below
2 (M + 1) distinct mixtures a law with an exponent per domain is not compared at all
(``inference.interpolation_risk``): it can pass through every run.

Averaging instead of choosing (``average_laws``): the laws' fits weighted by stacking
(Yao, Vehtari, Simpson & Gelman 2018), the weights that predict the held-out runs best as a
mixture,

    w = argmax_{w in simplex} sum_i log sum_k w_k exp(lpd_ik),

so a proposal can count what is uncertain about the law: runs that tell the laws apart are
worth proposing before the data have chosen one.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

import bayesmix.laws
from bayesmix.errors import BayesMixError
from bayesmix.inference import fit, interpolation_risk
from bayesmix.law_average import LawAverage
from bayesmix.laws import LawError, get_law
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
# "loo" fits each law once on every run as a "nuts" fold, and refits influential runs alike.
# Not by Laplace, though faster (48 RegMix runs: 4.6 min instead of 16): its refits of the
# cross law scored 39 held-out runs so badly (elpd 782 against 1121) that the choice flipped.
METHODS = ("loo", *FOLD_FITS)


class SelectionError(BayesMixError, ValueError):
    """The laws cannot be compared on these observations (too few runs, unknown law...)."""


@dataclass(frozen=True)
class LawComparison:
    """Held-out predictive fit of each candidate law, and the one chosen.

    table: one row per law, in the order given: elpd and its standard error, elpd_diff and
        se_diff against the first law, and why a law was not compared (``error``).
    posteriors: each law's fit to every run (``method="loo"``).
    refitted: each law's runs whose importance-sampled estimate did not hold and that were
        refitted without them (``method="loo"``; only where a refit could change the choice,
        and none when only one law could be compared).
    influential: each law's runs whose importance-sampled estimate did not hold, refitted or
        not (``method="loo"``).
    pointwise: (runs x laws) each run's held-out log predictive density.
    """

    table: pd.DataFrame
    pointwise: pd.DataFrame
    chosen: str
    folds: int
    threshold: float
    method: str
    posteriors: Mapping[str, Any]
    refitted: Mapping[str, list[str]]
    influential: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def posterior(self) -> Any:
        """The chosen law's posterior fitted to every run (``method="loo"`` only)."""
        if self.chosen not in self.posteriors:
            raise SelectionError(
                f"a {self.method!r} comparison keeps no fit to every run; "
                "use method='loo' or fit the chosen law"
            )
        return self.posteriors[self.chosen]

    def __str__(self) -> str:
        runs = len(self.pointwise)
        if self.method == "loo":
            refits = ", ".join(
                f"{law} {len(self.refitted[law])} of {len(runs)}"
                for law, runs in self.influential.items()
                if runs
            )
            how = "leave-one-run-out, Pareto-smoothed; influential runs refitted without them: "
            how += refits or "none"
        else:
            how = f"{self.folds}-fold cross-validation by run"
        lines = [f"held-out fit of {runs} runs ({how}):"]
        reference = self.table.index[0]
        for law, row in self.table.iterrows():
            if pd.notna(row["error"]):
                lines.append(f"  {law:<12} {row['error']}")
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
    method: Literal["loo", "nuts", "map"] = "loo",
    folds: int = 5,
    threshold: float = 1.0,
    seed: int = 0,
    refits: Literal["decisive", "all"] = "decisive",
    progress: Callable[[str], None] | None = None,
) -> LawComparison:
    """Compare ``laws`` on ``obs`` by K-fold cross-validation over runs (module docstring).

    Args:
        obs: observations of one metric.
        laws: candidate law names, the default (simplest) first.
        method: "loo" (one NUTS fit per law, Pareto-smoothed leave-one-run-out; its fits
            are kept), or how each of K folds is fitted (``FOLD_FITS``): "nuts" or "map".
        folds: K for "nuts" and "map"; at most the number of runs (then leave-one-run-out).
            For "loo", the most refits per law (influential runs held out in K groups).
        threshold: standard errors by which another law must beat the first to be chosen.
        refits: "loo": which laws' influential runs are refitted: "decisive" (those whose
            refit can change the choice, ``_next_refit``) or "all" (stacking needs every
            law's held-out scores right).
        progress: called with a line after each fit (which, how many left, time left).

    "loo" is the default: one NUTS fit per law, plus refits of influential runs (K at most),
    where K folds always cost K NUTS fits per law; its fits are kept for use. On 16 RegMix
    runs (one law comparable): 27 s against 188 s for 5 NUTS folds (issue 21, a loaded
    2-core machine); on 48 runs, with 5 refits per law, it costs about what K folds do.
    """
    if not isinstance(obs, Observations):
        raise TypeError(f"compare_laws expects Observations, got {type(obs).__name__}")
    laws = list(laws)
    names = bayesmix.laws.LAW_NAMES  # read now: a registered law counts
    unknown = [law for law in laws if law not in names]
    if not laws or unknown:
        raise SelectionError(f"unknown laws {unknown or laws}; choose from {', '.join(names)}")
    if len(set(laws)) != len(laws):
        raise SelectionError(f"laws are listed twice: {laws}")
    if method not in METHODS:
        raise SelectionError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if refits not in ("decisive", "all"):
        raise SelectionError(f"refits must be 'decisive' or 'all', got {refits!r}")
    if not isinstance(folds, int) or folds < 2:
        raise SelectionError(f"folds must be an integer of at least 2, got {folds!r}")
    if not (np.isfinite(threshold) and threshold >= 0):
        raise SelectionError(f"threshold must be a non-negative number, got {threshold!r}")
    runs = pd.unique(obs.frame["run_id"])
    if len(runs) < MIN_RUNS:
        raise SelectionError(
            f"comparing laws needs at least {MIN_RUNS} runs to hold some out, got {len(runs)}"
        )
    k = len(runs) if method == "loo" else min(folds, len(runs))
    splits = [] if method == "loo" else _splits(obs, runs, k, seed)
    options = _fit_options(obs, "nuts" if method == "loo" else method)

    pointwise: dict[str, pd.Series] = {}
    errors: dict[str, str] = {}
    posteriors: dict[str, Any] = {}
    influential: dict[str, list[str]] = {}
    mixtures = obs.mixtures().to_numpy(float)
    risks = {law: interpolation_risk(get_law(law), mixtures) for law in laws}
    compared = [law for law in laws if not risks[law]]
    clock = FitClock({law: 1 if method == "loo" else k for law in compared}, progress)
    for law in laws:
        if risks[law]:
            # Its held-out fit is hopeless (law_selection.md: never chosen at 8 runs of 7
            # domains), and computing it costs the most fits.
            errors[law] = f"not compared: {risks[law]}"
            clock.say(f"{law}: not compared ({risks[law]})")
            continue
        try:
            if method == "loo":
                pointwise[law], posteriors[law], influential[law] = _psis_loo(
                    obs, law, seed, options, clock
                )
            else:
                pointwise[law] = _held_out_lpd(splits, law, seed, options, clock)
        except LawError as err:
            errors[law] = f"not fitted: {err}"
    if not pointwise:
        raise SelectionError(f"no law could be compared: {errors}")
    refitted: dict[str, list[str]] = {law: [] for law in influential}
    if len(pointwise) > 1:  # with one law there is nothing to choose between: no refits
        while law := _next_refit(pointwise, laws, errors, threshold, influential, refitted, refits):
            groups = [influential[law][i::folds] for i in range(min(folds, len(influential[law])))]
            clock.add({law: len(groups)})
            for i, group in enumerate(groups):
                rest = obs.select(runs=[r for r in runs if r not in group])
                post = _fit_quietly(rest, law, seed + 1 + i, {**options, "init": posteriors[law]})
                clock.fitted(law, f"refit {i + 1} of {len(groups)} without influential runs")
                pointwise[law][group] = _lpd(post, obs.select(runs=group))[group]
            refitted[law] = influential[law]
    lpd = pd.DataFrame(pointwise).reindex(runs)
    table = _table(lpd, laws, errors)
    chosen = _choose(table, threshold)
    return LawComparison(
        table, lpd, chosen, k, threshold, method, posteriors, refitted, influential
    )


def average_laws(
    obs: Observations,
    laws: Sequence[str] = DEFAULT_LAWS,
    *,
    folds: int = 3,
    threshold: float = 1.0,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> LawAverage:
    """The laws' fits to every run, weighted for proposals (module docstring).

    The laws are compared by ``compare_laws(method="loo")``. Each law that can be fitted has
    prior weight 1/K; those compared share theirs by stacking weights, and a law not yet
    comparable (too few distinct runs for its exponents) is fitted and keeps its prior
    weight: nothing held out speaks for or against it, and the runs proposed next are what
    will.
    """
    comparison = compare_laws(
        obs,
        laws,
        method="loo",
        folds=folds,
        threshold=threshold,
        seed=seed,
        refits="all",
        progress=progress,
    )
    posteriors = dict(comparison.posteriors)
    mixtures = obs.mixtures().to_numpy(float)
    not_comparable = [law for law in laws if interpolation_risk(get_law(law), mixtures)]
    options = _fit_options(obs, "nuts")
    for law in not_comparable:
        posteriors[law] = _fit_quietly(obs, law, seed, options)
    prior = 1.0 / len(posteriors)
    compared = list(comparison.posteriors)
    stacked = stacking_weights(comparison.pointwise[compared]) * prior * len(compared)
    weights = {
        law: float(stacked[law]) if law in stacked else prior for law in laws if law in posteriors
    }
    return LawAverage(posteriors, weights, comparison)


def stacking_weights(lpd: pd.DataFrame) -> pd.Series:
    """Stacking weights of the columns of ``lpd`` (runs x laws, held-out log densities):
    argmax over the simplex of sum_i log sum_k w_k exp(lpd_ik)."""
    if lpd.shape[1] == 1:
        return pd.Series(1.0, lpd.columns)
    # A per-run shift leaves the argmax unchanged and keeps exp() in range.
    values = lpd.to_numpy(float)
    dens = np.exp(values - values.max(axis=1, keepdims=True))

    def negative_score(z: np.ndarray) -> float:
        return -float(np.log(dens @ softmax(z) + 1e-300).sum())

    k = lpd.shape[1]
    best = minimize(negative_score, np.zeros(k), method="L-BFGS-B", bounds=[(-30, 30)] * k)
    return pd.Series(softmax(best.x), lpd.columns)


def _splits(
    obs: Observations, runs: np.ndarray, k: int, seed: int
) -> list[tuple[Observations, Observations]]:
    """K folds of whole runs: (fitted on, held out) for each."""
    shuffled = np.random.default_rng(seed).permutation(runs)
    held_out = [set(shuffled[i::k]) for i in range(k)]
    return [
        (obs.select(runs=[r for r in runs if r not in held]), obs.select(runs=sorted(held)))
        for held in held_out
    ]


def _fit_options(obs: Observations, method: str) -> dict[str, Any]:
    # The same reference step in every fit: held-out runs' steps must mean the same.
    return {**FOLD_FITS[method], "progress": False, "reference_step": obs.max_step}


def _fit_quietly(obs: Observations, law: str, seed: int, options: dict[str, Any]) -> Any:
    with warnings.catch_warnings():
        # Folds are small by design; the comparison itself reports what they show.
        warnings.simplefilter("ignore")
        return fit(obs, law=law, seed=seed, **options)


def _lpd(post: Any, held_out: Observations) -> pd.Series:
    """log (1/D) sum_d p(y_i | theta_d) of each held-out run i."""
    ll = post.log_likelihood(held_out)  # (draws x runs)
    return pd.Series(logsumexp(ll.to_numpy(), axis=0) - np.log(len(ll)), ll.columns)


def _psis_loo(
    obs: Observations, law: str, seed: int, options: dict[str, Any], clock: FitClock
) -> tuple[pd.Series, Any, list[str]]:
    """One fit to every run; each run's Pareto-smoothed leave-one-out lpd from its draws
    (module docstring); the runs whose Pareto k says the estimate does not hold."""
    import arviz as az
    import xarray as xr

    post = _fit_quietly(obs, law, seed, options)
    clock.fitted(law, "fit to every run")
    ll = post.log_likelihood(obs)
    draws = post.idata.posterior
    per_chain = ll.to_numpy().reshape(draws.sizes["chain"], draws.sizes["draw"], -1)
    log_lik = xr.Dataset(
        {"y": (("chain", "draw", "run_id"), per_chain)},
        coords={"chain": draws["chain"], "draw": draws["draw"], "run_id": ll.columns},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a high k is for the caller to refit
        loo = az.loo(az.InferenceData(posterior=draws, log_likelihood=log_lik), pointwise=True)
    too_heavy = np.asarray(loo.pareto_k) > loo.good_k
    return pd.Series(np.asarray(loo.loo_i), ll.columns), post, list(ll.columns[too_heavy])


def _held_out_lpd(
    splits: list[tuple[Observations, Observations]],
    law: str,
    seed: int,
    options: dict[str, Any],
    clock: FitClock,
) -> pd.Series:
    """Each held-out run's log predictive density under the fit of its fold's other runs."""
    parts = []
    for i, (train, held_out) in enumerate(splits):
        post = _fit_quietly(train, law, seed + i, options)
        clock.fitted(law, f"fold {i + 1} of {len(splits)}")
        parts.append(_lpd(post, held_out))
    return pd.concat(parts)


class FitClock:
    """Counts a comparison's fits and, after each, says how long the rest should take: each
    law's fits left times that law's mean time per fit so far (a cross law's fit takes
    several times an own-share law's). Minutes of fitting with no sign of life read as a
    hang (issue 21: 9 minutes of silence on 48 RegMix runs)."""

    def __init__(self, planned: dict[str, int], progress: Callable[[str], None] | None) -> None:
        self.planned = dict(planned)
        self.seconds: dict[str, list[float]] = {law: [] for law in planned}
        self.progress = progress
        self.started = self.last = time.perf_counter()
        self.say(f"{self.total} fit(s) to run")

    @property
    def total(self) -> int:
        return sum(self.planned.values())

    def say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)

    def add(self, fits: dict[str, int]) -> None:
        for law, n in fits.items():
            self.planned[law] = self.planned.get(law, 0) + n
            self.seconds.setdefault(law, [])
        if sum(fits.values()):
            added = sum(fits.values())
            self.say(f"{added} refit(s) of influential runs added: {self.total} fit(s) in all")

    def fitted(self, law: str, what: str) -> None:
        now = time.perf_counter()
        self.seconds[law].append(now - self.last)
        self.last = now
        done = sum(len(v) for v in self.seconds.values())
        overall = (now - self.started) / done
        left = sum(
            (self.planned[name] - len(times)) * (np.mean(times) if times else overall)
            for name, times in self.seconds.items()
        )
        self.say(
            f"{law}, {what}: done, fit {done} of {self.total} "
            f"({_duration(now - self.started)} so far, about {_duration(left)} left)"
        )


def _duration(seconds: float) -> str:
    """3 s, 2 min 05 s, 1 h 02 min."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _next_refit(
    pointwise: dict[str, pd.Series],
    laws: list[str],
    errors: dict[str, str],
    threshold: float,
    influential: Mapping[str, list[str]],
    refitted: Mapping[str, list[str]],
    refits: str,
) -> str | None:
    """The law whose influential runs to refit next, or None when done.

    "all": every law with influential runs, in turn. "decisive": only the law chosen on the
    scores so far, until the chosen law has been refitted. Held out by reweighting, an
    influential run scores too well (its k says the draws under-represent the fit without
    it), so a refit lowers its law's score; lowering a law that is not chosen cannot make it
    chosen, and the choice is settled once the law it names has been refitted.
    """
    pending = [law for law in laws if influential.get(law) and not refitted[law]]
    if refits == "all":
        return pending[0] if pending else None
    chosen = _choose(_table(pd.DataFrame(pointwise), laws, errors), threshold)
    return chosen if chosen in pending else None


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
