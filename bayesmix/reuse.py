"""Carrying what a study learned across a change of its domain set.

Three tools, each usable alone (``studies/domain_updates`` benchmarks them together):

1. **Observation mapping** (``map_observations``): old runs rewritten over the new domain set
   wherever that is exact. An added domain had share 0 in every old run; a merged domain's
   share is the sum of its sources'; a removed domain's runs map only where its share was 0
   (the column is dropped); a split parent's runs only where its share was 0 (every part 0);
   a revised domain keeps its column. Rows of targets that measure a domain that is gone or
   changed (removed, split, merged, revised) are dropped. With ``own_share=True`` (laws in
   which a target's loss depends on its own domain's share only, as ``bimix``), the other
   targets' rows of runs with a revised domain stay exact too.

2. **Prior transfer** (``prior_from_posterior``):
   the old posterior becomes the prior of the new fit, per target and per site on the
   site's unconstrained scale (``bayesmix.laws.Prior``):

   - unchanged domains keep their posterior, its scale times ``widen`` (1.2: a tempering
     of the old likelihood by 1 / 1.2^2 = 0.69, so that the new runs can overrule it);
   - parts of a split domain start from the parent's posterior, times ``split_widen`` with an
     added spread ``split_drift`` (unconstrained units);
   - revised domains from a copy of their posterior, times ``revise_widen`` plus
     ``revise_drift``;
   - merged domains from the pooled draws of their sources, plus ``merge_drift``;
   - new domains from the population: the spread of the existing targets' values in the old
     posterior (mean and variance across targets, averaged over draws), i.e. the
     hierarchical predictive for an unseen target;
   - removed domains are marginalised out (their entries are simply not carried);
   - a carried target's sites stay coupled: their correlation in the old posterior goes
     with the prior (``PRIOR_CORRELATION``, own-share law), so the prior is one normal per
     target, not one per site. The floor, the exponent and the level of a domain trade off
     in the posterior: independent normals forgot which combinations the old runs ruled
     out, and a warm fit after five updates was worse than the transferred draws it started
     from (``studies/domain_updates``, split: regret 0.0026 after 18 runs vs 0.0018 at 0).

   A target whose old rows all map exactly keeps them in the likelihood and gets no
   informative prior (the population prior applies; its data carry what it learned): counting
   both would use the same runs twice. A target that lost some rows loses all of them and
   carries the (widened) posterior instead: every run still counts, once.

3. **Mixture reuse** (Olmix's, ``ReusePlan``): freeze the unaffected domains' ratios as one
   virtual domain, and optimise only its weight and the affected domains ("full" reuse), or
   re-open some frozen domains too ("partial"). Olmix leaves the choice of domains to re-open
   to hand; ``choose_reopen`` makes it from the posterior: a frozen domain is re-opened when,
   under the transferred posterior, its optimal ratio within the frozen group moves away from
   the frozen ratio by more than ``tolerance`` (relative) with the frozen ratio outside the
   90 % interval of the per-draw ratios. The user can override (``reopen=``, ``freeze=``).

``transfer_posterior`` gives, without any new run, a posterior over the new domain set (old
draws carried as above, new domains drawn from the population), so that the optimal mixture,
its intervals and the first proposals of the updated study are available at once.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesmix.domains import DomainSet, DomainUpdate, DomainUpdateError
from bayesmix.errors import ArgumentError
from bayesmix.inference import fit
from bayesmix.laws import LawData, LawSettings
from bayesmix.laws.base import PRIOR_CORRELATION, LawError
from bayesmix.mixtures import tidy_frame
from bayesmix.observations import Observations, ObservationsError, ratio_column
from bayesmix.posterior import Posterior

ZERO_SHARE = 1e-9  # a share at most this is zero (runs map exactly only there)


def _widen_field(default: float) -> Any:
    """A factor on an old posterior scale: at least 1 (1 = full trust)."""
    return field(default=default, metadata={"least": 1.0})


def _drift_field(default: float) -> Any:
    """A standard deviation added in quadrature: at least 0."""
    return field(default=default, metadata={"least": 0.0})


@dataclass(frozen=True)
class TransferSettings:
    """How far the old posterior is trusted after an update (see the module docstring).

    widen: unchanged domains' posterior scale x widen (1 = full trust; 1.2 tempers the old
        likelihood to 1/1.44 of its weight). split_widen / split_drift, revise_widen /
        revise_drift, merge_drift: the same for split parts, revised and merged domains; a
        drift is a standard deviation added in quadrature, in the site's unconstrained units
        (0.3 on log alpha: about +-35 % at one sd).
    """

    widen: float = _widen_field(1.2)
    split_widen: float = _widen_field(1.5)
    split_drift: float = _drift_field(0.2)
    revise_widen: float = _widen_field(2.0)
    revise_drift: float = _drift_field(0.3)
    merge_drift: float = _drift_field(0.2)

    def __post_init__(self) -> None:
        for f in fields(self):
            value, least = getattr(self, f.name), f.metadata["least"]
            if not value >= least:
                raise ArgumentError(f"{f.name} must be >= {least:g}, got {value}")


# ------------------------------------------------------------------------------ lineage
def old_domain_set(post: Posterior, domain_set: DomainSet | None) -> DomainSet:
    if domain_set is not None:
        if list(domain_set.domains) != list(post.domains):
            raise DomainUpdateError(
                f"the domain set ({', '.join(domain_set.domains)}) is not the posterior's "
                f"({', '.join(post.domains)})"
            )
        return domain_set
    return DomainSet.create(list(post.domains))


@dataclass(frozen=True)
class TargetSource:
    """Where a target of the new set gets its prior: ``kind`` and the old targets behind it."""

    kind: str  # unchanged | revised | split | merged | added | task
    sources: tuple[str, ...]


def target_sources(
    post: Posterior, update: DomainUpdate, new_targets: Sequence[str], domain_set: DomainSet | None
) -> dict[str, TargetSource]:
    """Per target of the new fit: which old targets its prior comes from.

    A target named like a domain measures that domain (``Observations`` default); targets
    with no domain (tasks) carry over unchanged when the old posterior has them.
    """
    ds = old_domain_set(post, domain_set)
    fates = update.fates(ds)
    old_t = list(post.targets)
    own = {d: t for t, d in post.observations.target_domain.items()}  # domain -> old target
    out: dict[str, TargetSource] = {}
    for t in new_targets:
        if t in fates:
            fate, olds = fates[t]
            srcs = tuple(own[o] for o in olds if o in own)
            if fate == "added" or not srcs:
                out[t] = TargetSource("added", ())
            else:
                out[t] = TargetSource(fate, srcs)
        elif t in old_t:
            out[t] = TargetSource("task", (t,))
        else:
            out[t] = TargetSource("added", ())
    return out


# ------------------------------------------------------------------------------ observations
@dataclass
class MappedObservations:
    """Old observations over the new domain set: what was kept, and why the rest was not."""

    observations: Observations | None
    kept_targets: list[str]  # targets whose old rows all map exactly (kept in the likelihood)
    prior_targets: list[str]  # targets that lost rows: carried by the prior instead
    runs_kept: int
    runs_dropped: int
    report: dict[str, Any] = field(default_factory=dict)


def map_observations(
    obs: Observations,
    update: DomainUpdate,
    *,
    domain_set: DomainSet | None = None,
    own_share: bool = False,
    drop_partial: bool = True,
    carried: Sequence[str] = (),
) -> MappedObservations:
    """Old observations rewritten over the domain set after ``update``, where exact.

    See the module docstring for the rules. ``drop_partial``: a target that loses some of
    its rows loses them all (its information then travels in the prior, counted once).
    ``carried``: targets whose old posterior came partly from an informative prior (an
    earlier update): their rows alone do not hold what is known, so they too travel in the
    prior and their rows are dropped.
    """
    old = domain_set or DomainSet.create(obs.domains)
    if list(old.domains) != list(obs.domains):
        raise DomainUpdateError(
            f"the observations are over {', '.join(obs.domains)}, the domain set over "
            f"{', '.join(old.domains)}"
        )
    fates = update.fates(old)
    frame = obs.frame
    runs = obs.mixtures()  # run_id -> old shares
    share = {d: runs[ratio_column(d)] for d in old.domains}
    ok = pd.Series(True, index=runs.index)
    new_cols: dict[str, pd.Series] = {}
    for d, (fate, olds) in fates.items():
        if fate == "added":
            new_cols[d] = pd.Series(0.0, index=runs.index)
        elif fate in ("unchanged", "revised"):
            new_cols[d] = share[d]
        elif fate == "merged":
            new_cols[d] = sum(share[s] for s in olds)
        else:  # split part: exact only where the parent had nothing
            parent = share[olds[0]]
            ok &= parent <= ZERO_SHARE
            new_cols[d] = pd.Series(0.0, index=runs.index)
    for d in update.removed(old):
        ok &= share[d] <= ZERO_SHARE
    gone = {
        d
        for op in update.ops
        for d in ((op.name,) if op.kind in ("remove", "split", "revise") else op.sources)
    }
    revised = [op.name for op in update.ops if op.kind == "revise"]
    target_domain = dict(obs.target_domain)
    row_run = frame["run_id"]
    keep_row = row_run.map(ok).astype(bool).to_numpy().copy()
    tgt = frame["target"].to_numpy()
    dropped_targets = {t for t, d in target_domain.items() if d in gone}
    keep_row &= ~np.isin(tgt, list(dropped_targets))
    if revised and not own_share:
        clean = pd.Series(True, index=runs.index)
        for d in revised:
            clean &= share[d] <= ZERO_SHARE
        keep_row &= row_run.map(clean).astype(bool).to_numpy()
    targets = [t for t in obs.targets if t not in dropped_targets]
    lost = {
        t
        for t in targets
        if (keep_row[tgt == t]).sum() < (tgt == t).sum()  # some rows of t dropped
    } | (set(carried) & set(targets))
    if drop_partial and lost:
        keep_row &= ~np.isin(tgt, list(lost))
    kept = [t for t in targets if t not in lost or not drop_partial]
    prior_targets = [t for t in targets if t in lost]
    sub = frame.loc[keep_row].copy()
    runs_kept = int(sub["run_id"].nunique())
    report = {
        "targets_dropped": sorted(dropped_targets),
        "targets_carried_by_prior": sorted(prior_targets),
        "runs_mappable": int(ok.sum()),
        "runs_total": len(runs),
    }
    if sub.empty:
        return MappedObservations(None, [], prior_targets, 0, len(runs), report)
    base = [c for c in sub.columns if not str(c).startswith("r:")]
    out = sub[base].reset_index(drop=True)
    rid = sub["run_id"].to_numpy()
    for d in fates:
        out[ratio_column(d)] = new_cols[d].reindex(rid).to_numpy(dtype=float)
    mapping = {t: d for t, d in target_domain.items() if t in set(out["target"]) and d in fates}
    mapped = Observations.from_frame(out, mapping)
    return MappedObservations(mapped, kept, prior_targets, runs_kept, len(runs) - runs_kept, report)


# ------------------------------------------------------------------------------ prior
def _site_draws(post: Posterior, max_draws: int | None = 2000) -> dict[str, np.ndarray]:
    return post.draws(max_draws)


def _population(values: np.ndarray) -> tuple[float, float]:
    """Across-target predictive of an unseen target: (D, T) draws -> (loc, scale)."""
    mean_t = values.mean(axis=1)
    var_t = values.var(axis=1, ddof=1) if values.shape[1] > 1 else np.full(len(values), 1.0)
    return float(mean_t.mean()), float(np.sqrt(var_t.mean() + mean_t.var()))


def prior_from_posterior(
    post: Posterior,
    update: DomainUpdate,
    *,
    observations: Observations | None = None,
    targets: Sequence[str] | None = None,
    domain_set: DomainSet | None = None,
    settings: TransferSettings | None = None,
    keep: Sequence[str] = (),
    max_draws: int | None = 2000,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The prior for a fit over the domain set after ``update`` (module docstring, item 2).

    observations: the table the new fit will use (mapped old rows + new runs); its targets,
        in its order, are the prior's entries, and ``logk_offset`` (each target's log-loss
        level, centred on that data) is transferred through it. Without it, ``targets`` gives
        the entries and ``logk_offset`` keeps its default prior.
    keep: targets whose old rows are in ``observations`` (``MappedObservations.kept_targets``):
        they get the population prior (NaN), so that their runs are not counted twice.
    """
    settings = settings or TransferSettings()
    if post.num_draws < 2:
        raise ArgumentError(
            f"a posterior of {post.num_draws} draw ({post.method}) has no spread to carry over "
            "as a prior: fit the old study with method='nuts' or 'laplace'"
        )
    if observations is not None:
        new_targets = list(observations.targets)
    elif targets is not None:
        new_targets = list(targets)
    else:
        raise ArgumentError("prior_from_posterior needs the new fit's observations or targets")
    src = target_sources(post, update, new_targets, domain_set)
    draws = _site_draws(post, max_draws)
    old_t = list(post.targets)
    idx = {t: i for i, t in enumerate(old_t)}
    n_draws = len(next(iter(draws.values())))
    rng = np.random.default_rng(0)
    keep_set = set(keep)
    # Per carried target, the old target each draw comes from (a merge: a random source per
    # draw), one choice for every site so that the target's draws stay joint.
    carried = {
        t: _source_pick(n_draws, [idx[o] for o in src[t].sources], rng)
        for t in new_targets
        if t not in keep_set and src[t].kind != "added"
    }
    added = [i for i, t in enumerate(new_targets) if src[t].kind == "added" and t not in keep_set]
    rows = np.arange(n_draws)
    prior: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    joint: dict[str, np.ndarray] = {}  # site -> (D, T_new) draws of the carried targets
    for site in post.law_obj.target_sites:
        if site not in draws or draws[site].ndim != 2 or draws[site].shape[1] != len(old_t):
            continue
        v = draws[site]
        x = np.full((n_draws, len(new_targets)), np.nan)
        for i, t in enumerate(new_targets):
            if t in carried:
                x[:, i] = v[rows, carried[t]]
        joint[site] = x
        loc, scale = _carried_loc_scale(x, new_targets, src, carried, settings)
        loc[added], scale[added] = _population(v)  # new domains: the population
        prior[site] = (loc, scale)
    if observations is not None and {"logk", "alpha", "eps"} <= set(draws):
        off = _logk_offset_draws(draws, observations, carried)
        if off is not None:
            joint["logk_offset"] = off
            prior["logk_offset"] = _carried_loc_scale(off, new_targets, src, carried, settings)
    prior = {k: v for k, v in prior.items() if np.isfinite(v[0]).any()}
    if carried and len(joint) > 1:
        prior[PRIOR_CORRELATION] = _correlations(joint, new_targets, src, carried, settings)
    return prior


def _source_pick(n: int, cols: list[int], rng: np.random.Generator) -> np.ndarray:
    """(n,) old target index per draw: the source's, or for a merge a random source per draw."""
    if len(cols) == 1:
        return np.full(n, cols[0])
    return np.asarray(cols)[rng.integers(0, len(cols), size=n)]


def _widening(kind: str, s: TransferSettings) -> tuple[float, float]:
    """(factor, drift) of a carried target: new covariance = factor^2 old + drift^2 I."""
    if kind in ("unchanged", "task"):
        return s.widen, 0.0
    if kind == "split":
        return s.split_widen, s.split_drift
    if kind == "revised":
        return s.revise_widen, s.revise_drift
    if kind == "merged":
        return s.widen, s.merge_drift
    return 1.0, 0.0


def _carried_loc_scale(
    x: np.ndarray,
    targets: Sequence[str],
    src: Mapping[str, TargetSource],
    carried: Mapping[str, np.ndarray],
    settings: TransferSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """Per target, the mean and widened sd of its carried draws (NaN where not carried)."""
    loc = np.full(len(targets), np.nan)
    scale = np.full(len(targets), np.nan)
    for i, t in enumerate(targets):
        if t in carried:
            factor, drift = _widening(src[t].kind, settings)
            loc[i], scale[i] = float(x[:, i].mean()), float(np.hypot(x[:, i].std() * factor, drift))
    return loc, scale


def _correlations(
    joint: Mapping[str, np.ndarray],
    targets: Sequence[str],
    src: Mapping[str, TargetSource],
    carried: Mapping[str, np.ndarray],
    settings: TransferSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """(R, names): per carried target, the correlation of its sites' draws after widening
    (factor^2 C + drift^2 I, as the marginal scales), eigenvalues floored at 1e-3 so that the
    model's R^-1 stays tame; NaN for targets that are not carried or have a constant site."""
    names = list(joint)
    k = len(names)
    out = np.full((len(targets), k, k), np.nan)
    for i, t in enumerate(targets):
        if t not in carried:
            continue
        x = np.stack([joint[n][:, i] for n in names], axis=1)
        factor, drift = _widening(src[t].kind, settings)
        cov = factor**2 * np.cov(x, rowvar=False, ddof=0) + drift**2 * np.eye(k)
        sd = np.sqrt(np.diag(cov))
        if not (sd > 1e-12).all():
            continue
        vals, vecs = np.linalg.eigh(cov / np.outer(sd, sd))
        r = (vecs * np.maximum(vals, 1e-3)) @ vecs.T
        d = np.sqrt(np.diag(r))
        out[i] = r / np.outer(d, d)
    return out, np.array(names)


def _logk_offset_draws(
    draws: Mapping[str, np.ndarray], obs: Observations, carried: Mapping[str, np.ndarray]
) -> np.ndarray | None:
    """(D, T_new) draws of each carried target's log-loss level relative to the new data's
    centre (own-share law only; NaN for the others).

    The model samples logk_offset = logk - alpha * mean_p log(r_own + eps) - mean log y over
    the fitted data; the same transform of the old draws, on the new data, is its prior.
    """
    if draws["alpha"].ndim != 2:  # the cross law's alpha is (D, T, M): keep the default
        return None
    data = LawData.from_observations(obs, LawSettings())
    r_own = data.r_own  # (P, T_new)
    n = len(draws["logk"])
    rows = np.arange(n)
    out = np.full((n, len(data.targets)), np.nan)
    for i, t in enumerate(data.targets):
        if t not in carried:
            continue
        logk, alpha, eps = (draws[k][rows, carried[t]] for k in ("logk", "alpha", "eps"))
        centre = np.log(r_own[:, i][None, :] + eps[:, None]).mean(axis=1)
        out[:, i] = logk - alpha * centre - data.target_mean[i]
    return out if np.isfinite(out).any() else None


def warm_fit(
    old: Any,
    update: DomainUpdate,
    new_observations: Observations | None,
    *,
    old_observations: Observations | None = None,
    domain_set: DomainSet | None = None,
    settings: TransferSettings | None = None,
    prior_only: bool = False,
    **fit_options: Any,
) -> Posterior:
    """Fit the law over the domain set after ``update``: the old posterior as prior, the old
    runs that map exactly in the likelihood, plus ``new_observations`` (runs over the new set).
    ``update`` may be empty (``DomainUpdate.between`` two equal sets): every domain is then
    unchanged.

    old_observations: the old posterior's real observations (default: ``old.observations``).
    Not used when ``old`` comes from ``transfer_posterior``: every one of its targets travels
    in its prior (its observations are placeholders), so no old row may enter the likelihood.
    Without ``new_observations`` (no run over the new set yet) and with an own-share law, the
    result is ``transfer_posterior``: the old posterior carried over, each touched domain
    widened, nothing refitted.
    The result's ``info['prior_targets']`` lists the targets that took an informative prior,
    so that the next update does not count their runs twice.

    prior_only: the old runs are another study's (a warm start, ``bayesmix.study``): with
    ``new_observations``, no old row enters the likelihood and every old target travels in
    the prior, widened by ``settings``, so that a setting that differs a little from the old
    one (proxy, data) is not overruled by the old runs, and a later update carries them
    through ``prior_targets``. Without new observations it changes nothing: the carried
    posterior is the same.
    """
    if new_observations is None and not update.ops:
        return old  # nothing changes and nothing new: the old posterior is the answer
    if new_observations is None:
        # No run over the new set yet. A refit on the old runs alone would drop every target
        # the update touched (a revised or added domain has no row that maps exactly), and the
        # optimum would then give it a share of 0 with a zero-width interval: what the study
        # knew about it is the old posterior, carried with the update's widening.
        seed = int(fit_options.get("seed", 0))
        if old.law_obj.own_share:
            return transfer_posterior(
                old, update, domain_set=domain_set, settings=settings, seed=seed
            )
        if all(op.kind == "revise" for op in update.ops):
            return revise_posterior(old, update, settings=settings, seed=seed)
    if old.info.get("transferred") or (prior_only and new_observations is not None):
        old_observations = None
    elif old_observations is None:
        old_observations = old.observations
    carried = list(old.info.get("prior_targets", []))
    if old_observations is not None:
        mapped = map_observations(
            old_observations,
            update,
            domain_set=domain_set,
            own_share=bool(old.law_obj.own_share),
            carried=carried,
        )
    else:
        mapped = MappedObservations(None, [], [], 0, 0)
    parts = [o for o in (mapped.observations, new_observations) if o is not None]
    if not parts:
        raise ObservationsError(
            "no observation to fit: no old run maps exactly and no new run is given"
        )
    data = parts[0] if len(parts) == 1 else parts[0].concat(parts[1])
    prior = prior_from_posterior(
        old,
        update,
        observations=data,
        domain_set=domain_set,
        settings=settings,
        keep=mapped.kept_targets,
    )
    fit_options.setdefault("law", old.law)
    post = fit(data, prior=prior, **fit_options)
    keep = set(mapped.kept_targets)
    post.info["prior_targets"] = [t for t in data.targets if t not in keep]
    post.info["update"] = update.to_dict()
    post.info["mapping"] = mapped.report
    return post


# ------------------------------------------------------------------------------ transfer
REVISED_SITES = ("logk", "alpha", "eps")  # the sites through which a domain's content acts


def revise_posterior(
    post: Posterior,
    update: DomainUpdate,
    *,
    settings: TransferSettings | None = None,
    max_draws: int | None = 1000,
    seed: int = 0,
) -> Posterior:
    """After an update that only revises domains, before any new run (any law).

    The domain set keeps its names, so the old draws stay meaningful; each revised domain's
    entries of ``REVISED_SITES`` (its target's level and exponents, its effect on the other
    targets, its floor) are widened about their mean by ``revise_widen`` and moved by
    ``revise_drift``, on the log scale where a site is positive: the recommendation keeps
    what the study knew, with the wider interval that the changed content calls for. Never
    refit it (``info['transferred']``).
    """
    settings = settings or TransferSettings()
    revised = [op.name for op in update.ops if op.kind == "revise"]
    if len(revised) != len(update.ops):
        raise DomainUpdateError("revise_posterior takes an update that only revises domains")
    domains, targets = list(post.domains), list(post.targets)
    own = {d: t for t, d in post.observations.target_domain.items()}
    rng = np.random.default_rng(seed)
    draws = post.draws(max_draws)
    n = len(next(iter(draws.values())))
    out = {k: np.array(v, dtype=float, copy=True) for k, v in draws.items()}
    for d in revised:
        j = domains.index(d)
        t = targets.index(own[d]) if d in own else None
        for site in REVISED_SITES:
            if site not in out or out[site].ndim < 2:
                continue
            v = out[site]
            if v.ndim == 3:  # (D, T, M): the target's row and the domain's column
                index: list[Any] = [np.s_[:, :, j]]
                if t is not None:
                    index.append(np.s_[:, t, :])
            elif t is not None and v.shape[1] == len(targets):
                index = [np.s_[:, t]]
            elif v.shape[1] == len(domains):
                index = [np.s_[:, j]]
            else:
                continue
            for ix in index:
                v[ix] = _widened(v[ix], site, settings, rng)
    samples = {k: v[None] for k, v in out.items()}
    info = {
        "prior_targets": list(targets),
        "transferred": True,
        "_converged": True,
        "update": update.to_dict(),
        "from_domains": domains,
        "settings": settings.__dict__,
    }
    return type(post).from_samples(
        post.law,
        post.settings,
        post.method,
        samples,
        {"diverging": np.zeros((1, n), bool)},
        post.observations,
        info,
    )


def _widened(
    x: np.ndarray, site: str, settings: TransferSettings, rng: np.random.Generator
) -> np.ndarray:
    """Draws (D, ...) widened about their mean by revise_widen, plus revise_drift of noise,
    on an unconstrained scale: ``logk`` as it is, a positive site on the log scale; cross
    exponents (of either sign) are only widened, as a drift in their own units would swamp
    them."""
    kind = "log" if site == "logk" else "positive" if bool((x > 0).all()) else "signed"
    u = np.log(x) if kind == "positive" else x
    mean = u.mean(axis=0, keepdims=True)
    u = mean + settings.revise_widen * (u - mean)
    if kind != "signed":
        u = u + settings.revise_drift * rng.standard_normal(u.shape)
    return np.exp(u) if kind == "positive" else u


def transfer_posterior(
    post: Posterior,
    update: DomainUpdate,
    *,
    domain_set: DomainSet | None = None,
    settings: TransferSettings | None = None,
    max_draws: int | None = 1000,
    seed: int = 0,
) -> Posterior:
    """A posterior over the new domain set before any new run (own-share law).

    Per draw: unchanged targets keep their values; split parts take the parent's, revised
    domains their own, merged domains a random source's, each moved by the drift of
    ``settings`` (in unconstrained units, per draw: the same spread the prior transfer adds);
    new domains draw from the population (per draw, the across-target normal of each site).
    Its ``observations`` are placeholders (one pseudo-run per old mixture that maps exactly,
    or the uniform mixture, at the predicted mean loss): enough to predict, optimise and
    propose; never refit it (``info['transferred']`` is True).
    """
    import arviz as az

    if not post.law_obj.own_share:
        raise LawError(
            f"transfer_posterior supports own-share laws (bimix); got {post.law!r}: fit the "
            "new study with prior_from_posterior instead"
        )
    settings = settings or TransferSettings()
    ds = old_domain_set(post, domain_set)
    new_set = ds.apply(update)
    fates = update.fates(ds)
    new_domains = list(new_set.domains)
    targets = new_domains  # own-share: one target per domain
    src = target_sources(post, update, targets, ds)
    draws = post.draws(max_draws)
    n = len(draws["logk"])
    old_t = list(post.targets)
    idx = {t: i for i, t in enumerate(old_t)}
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    # Per-target natural sites follow from their unconstrained sites (log_alpha -> alpha).
    target_sites = post.law_obj.target_sites
    sites = {k: draws[k] for k in target_sites if k in draws}
    sites["logk"] = draws["logk"]
    rows = np.arange(n)
    # One source per draw and target (merges: a random one), the same for every site.
    picks = {
        t: _source_pick(n, [idx[o] for o in src[t].sources], rng)
        for t in targets
        if src[t].kind != "added"
    }
    for k, v in sites.items():
        new = np.empty((n, len(targets)))
        mean_t, sd_t = v.mean(axis=1), v.std(axis=1, ddof=1) if v.shape[1] > 1 else 1.0
        for i, t in enumerate(targets):
            s = src[t]
            if s.kind == "added":
                new[:, i] = mean_t + sd_t * rng.standard_normal(n)
                continue
            drift = _widening(s.kind, settings)[1]
            new[:, i] = v[rows, picks[t]] + drift * rng.standard_normal(n)
        out[k] = new
    for k, natural in target_sites.items():
        if natural is not None and k in out:
            name, to_natural = natural
            out[name] = to_natural(out[k])
    for k in post.noise.sites:  # the noise's own parameters, shared by every target
        out[k] = draws[k]
    samples = {k: v[None] for k, v in out.items()}
    idata = az.from_dict(posterior=samples, sample_stats={"diverging": np.zeros((1, n), bool)})
    placeholder = _placeholder_observations(post, update, ds, new_domains, out, fates)
    info = {
        "prior_targets": list(targets),
        "transferred": True,
        "laplace_pd": True,
        "_converged": True,
        "update": update.to_dict(),
        "from_domains": list(post.domains),
        "settings": settings.__dict__,
    }
    return Posterior(
        idata=idata,
        observations=placeholder,
        law=post.law,
        settings=post.settings,
        method=post.method,
        info=info,
    )


def _placeholder_observations(
    post: Posterior,
    update: DomainUpdate,
    ds: DomainSet,
    domains: list[str],
    params: Mapping[str, np.ndarray],
    fates: Mapping[str, Any],
) -> Observations:
    mapped = map_observations(post.observations, update, domain_set=ds, own_share=True)
    if mapped.observations is not None:
        r = mapped.observations.mixtures().drop_duplicates().to_numpy(dtype=float)
    else:
        r = np.full((1, len(domains)), 1.0 / len(domains))
    if len(r) < 2:
        r = np.concatenate([r, np.full((1, len(domains)), 1.0 / len(domains))])
    s_rel = None
    if post.observations.has_steps:
        s_rel = np.ones(len(r))
    # The placeholder's targets are its domains, each its own domain's target.
    own = np.eye(len(domains))
    log_l = post.law_obj.log_loss(np, params, r, s_rel, own_onehot=own).mean(axis=0)  # (P, T)
    frame = tidy_frame(
        r,
        np.exp(log_l),
        domains,
        domains,
        [f"placeholder-{i}" for i in range(len(r))],
        steps=None if s_rel is None else post.reference_step,
        metric=post.observations.metrics[0],
    )
    return Observations.from_frame(frame)


# ------------------------------------------------------------------------------ mixture reuse
VIRTUAL = "existing"


@dataclass(frozen=True)
class ReusePlan:
    """Olmix's mixture reuse: frozen domains at fixed ratios form one virtual domain.

    domains: the new domain set; frozen: domains kept at ``ratios`` (summing to 1) inside the
    virtual domain; free: every other domain (affected ones, and re-opened frozen ones).
    Reduced coordinates: [virtual weight, free shares...] summing to 1.
    """

    domains: tuple[str, ...]
    frozen: tuple[str, ...]
    ratios: tuple[float, ...]
    free: tuple[str, ...]
    reopened: tuple[str, ...] = ()

    @property
    def reduced_domains(self) -> list[str]:
        return ([VIRTUAL] if self.frozen else []) + list(self.free)

    def to_full(self, reduced: np.ndarray) -> np.ndarray:
        """(P, 1 + F) reduced mixtures -> (P, M) over ``domains``."""
        reduced = np.atleast_2d(reduced)
        out = np.zeros((len(reduced), len(self.domains)))
        pos = {d: j for j, d in enumerate(self.domains)}
        k = 0
        if self.frozen:
            for d, q in zip(self.frozen, self.ratios, strict=True):
                out[:, pos[d]] = reduced[:, 0] * q
            k = 1
        for i, d in enumerate(self.free):
            out[:, pos[d]] = reduced[:, k + i]
        return out / out.sum(axis=1, keepdims=True)

    def to_reduced(self, full: np.ndarray) -> np.ndarray:
        """(P, M) -> (P, 1 + F): the frozen domains' total and the free shares."""
        full = np.atleast_2d(full)
        pos = {d: j for j, d in enumerate(self.domains)}
        cols = []
        if self.frozen:
            cols.append(full[:, [pos[d] for d in self.frozen]].sum(axis=1))
        cols += [full[:, pos[d]] for d in self.free]
        return np.stack(cols, axis=1)

    def restrict(self, full: np.ndarray) -> np.ndarray:
        """Project full mixtures onto the plan: frozen domains back to their ratios."""
        return self.to_full(self.to_reduced(full))


def reuse_plan(
    old_mixture: Mapping[str, float],
    update: DomainUpdate,
    *,
    domain_set: DomainSet | None = None,
    reopen: Sequence[str] = (),
) -> ReusePlan:
    """Freeze every domain the update leaves unchanged at its ratio in ``old_mixture``,
    except those in ``reopen`` (partial reuse)."""
    ds = domain_set or DomainSet.create(list(old_mixture))
    fates = update.fates(ds)
    new_domains = list(ds.apply(update).domains)
    unchanged = [d for d, (f, _) in fates.items() if f == "unchanged"]
    bad = [d for d in reopen if d not in unchanged]
    if bad:
        raise DomainUpdateError(
            f"reopen names {', '.join(bad)}, which are not unchanged domains of the update"
        )
    frozen = [d for d in unchanged if d not in set(reopen)]
    w = np.array([float(old_mixture.get(d, 0.0)) for d in frozen])
    if frozen and w.sum() <= 0:
        frozen, w = [], np.zeros(0)
    ratios = tuple((w / w.sum()).tolist()) if frozen else ()
    free = tuple(d for d in new_domains if d not in set(frozen))
    return ReusePlan(tuple(new_domains), tuple(frozen), ratios, free, tuple(reopen))


def choose_reopen(
    post: Posterior,
    plan: ReusePlan,
    *,
    tolerance: float = 0.15,
    ci: float = 0.9,
    reopen: Sequence[str] = (),
    freeze: Sequence[str] = (),
    weights: Mapping[str, float] | None = None,
    constraints: Any = None,
    max_draws: int | None = 500,
    optimum: Any = None,
) -> list[str]:
    """Frozen domains the posterior says should be re-opened (module docstring, item 3).

    post: a posterior over the new domain set (``transfer_posterior``, or a fit). Per draw,
    the optimal mixture gives each frozen domain's ratio within the frozen group; a domain is
    re-opened when its frozen ratio lies outside the central ``ci`` interval of those ratios
    and differs from their mean by more than ``tolerance`` (relative), i.e. when the coupling
    through the update moves its optimum and the posterior is sure of it. ``reopen`` adds
    domains, ``freeze`` keeps domains frozen (user overrides). ``optimum``: the posterior's
    ``optimal_mixture`` when already computed.
    """
    if not plan.frozen:
        return list(reopen)
    opt = optimum or post.optimal_mixture(
        weights=weights, constraints=constraints, max_draws=max_draws
    )
    per_draw = opt.draws[list(plan.frozen)].to_numpy(dtype=float)
    ratio = per_draw / np.maximum(per_draw.sum(axis=1, keepdims=True), 1e-12)
    q = (1 - ci) / 2
    lo, hi = np.quantile(ratio, q, axis=0), np.quantile(ratio, 1 - q, axis=0)
    mean = ratio.mean(axis=0)
    frozen = np.asarray(plan.ratios)
    rel = np.abs(mean - frozen) / np.maximum(frozen, 1e-6)
    outside = (frozen < lo) | (frozen > hi)
    chosen = [d for d, o, r in zip(plan.frozen, outside, rel, strict=True) if o and r > tolerance]
    chosen = [d for d in chosen if d not in set(freeze)]
    return list(dict.fromkeys([*chosen, *reopen]))


def with_reopened(plan: ReusePlan, reopen: Sequence[str]) -> ReusePlan:
    """The plan with ``reopen`` moved from frozen to free (ratios of the rest renormalised)."""
    keep = [(d, q) for d, q in zip(plan.frozen, plan.ratios, strict=True) if d not in set(reopen)]
    frozen = tuple(d for d, _ in keep)
    w = np.array([q for _, q in keep])
    ratios = tuple((w / w.sum()).tolist()) if len(w) and w.sum() > 0 else ()
    if not ratios:
        frozen = ()
    free = tuple(d for d in plan.domains if d not in set(frozen))
    return ReusePlan(plan.domains, frozen, ratios, free, tuple(plan.reopened) + tuple(reopen))


# ------------------------------------------------------------------------------ models/
MODEL_FILE = "posterior.nc"
CARD_FILE = "MODEL_CARD.md"


def save_model(
    post: Posterior,
    folder: str | Path,
    *,
    data: str = "",
    token_counts: Mapping[str, float] | None = None,
    optimum: bool = True,
) -> Path:
    """Save a posterior as ``folder/posterior.nc`` with a short model card
    (``MODEL_CARD.md`` and ``card.json``: data, law, domains, diagnostics), so that it can be
    the prior of a new study (``bayesmix study update NAME ... --prior folder``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    post.save(folder / MODEL_FILE)
    obs = post.observations
    diag = post.diagnostics()
    card: dict[str, Any] = {
        "name": folder.name,
        "saved_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "data": data,
        "runs": len(obs.run_ids),
        "rows": len(obs),
        "metric": obs.metrics[0] if obs.metrics else None,
        "has_steps": bool(obs.has_steps),
        "law": post.law,
        "method": post.method,
        "settings": post.settings.to_dict(),
        "domains": list(post.domains),
        "token_counts": {
            d: float(token_counts[d]) for d in post.domains if token_counts and d in token_counts
        },
        "targets": list(post.targets),
        "diagnostics": {
            "converged": bool(post.converged),
            "message": post.convergence_message(),
            "divergences": int(post.divergences),
            "max_r_hat": _finite(diag["r_hat"].max()),
            "min_ess_bulk": _finite(diag["ess_bulk"].min()),
            "draws": int(post.num_draws),
            "fit_seconds": post.info.get("fit_seconds"),
        },
        "update": post.info.get("update"),
    }
    if optimum:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = post.optimal_mixture(max_draws=500)
        card["optimal_mixture"] = {
            d: {
                "share": float(opt.mixture[d]),
                **{k: float(v) for k, v in opt.intervals.loc[d].items()},
            }
            for d in post.domains
        }
    (folder / "card.json").write_text(json.dumps(card, indent=1, default=str))
    (folder / CARD_FILE).write_text(_card_markdown(card))
    return folder


def _finite(v: Any) -> float | None:
    f = float(v)
    return f if np.isfinite(f) else None


def _card_markdown(card: Mapping[str, Any]) -> str:
    d = card["diagnostics"]
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"Saved {card['saved_utc']} UTC by bayesmix. Use as a prior: "
        f"`bayesmix study update NAME ... --prior models/{card['name']}`.",
        "",
        "## Data",
        "",
        card["data"] or "(no description given)",
        "",
        f"{card['runs']} runs, {card['rows']} rows, metric `{card['metric']}`"
        + (", with a step axis" if card["has_steps"] else ", final values only"),
        "",
        "## Law",
        "",
        f"`{card['law']}` fitted by `{card['method']}`; settings: "
        + ", ".join(f"{k}={v}" for k, v in card["settings"].items()),
        "",
        f"## Domains ({len(card['domains'])})",
        "",
        "| domain | tokens | optimal share | 90 % interval |",
        "|---|---:|---:|---|",
    ]
    opt = card.get("optimal_mixture", {})
    for dom in card["domains"]:
        tok = card["token_counts"].get(dom)
        o = opt.get(dom)
        lines.append(
            f"| {dom} | {f'{tok:.3g}' if tok else '-'} | "
            + (f"{o['share']:.3f} | {o['lo']:.3f} to {o['hi']:.3f} |" if o else "- | - |")
        )
    lines += [
        "",
        "## Diagnostics",
        "",
        f"- {d['message']}",
        f"- draws: {d['draws']}; divergences: {d['divergences']}; max r_hat: {d['max_r_hat']}; "
        f"min ess_bulk: {d['min_ess_bulk']}",
    ]
    if card.get("update"):
        lines.append(f"- warm-started across a domain update: {card['update']}")
    return "\n".join(lines) + "\n"


def load_model(path: str | Path) -> Posterior:
    """A saved posterior: a ``models/NAME`` folder (its posterior.nc) or a .nc file."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"{path}: no saved posterior (expected {file})")
    post = Posterior.load(file)
    post.info["_loaded_from"] = str(file)
    return post
