"""What every law shares: its data arrays, its settings, and the hierarchical building blocks.

A law is a plain NumPyro model function of a ``LawData`` (NumPyro style: the model is a
function of its data; inference lives in ``bayesmix.inference``). Each law also exposes
``log_loss(xp, params, r, s_rel)`` so predictions and acquisition reuse the same formula.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal, Protocol

import numpy as np

from bayesmix.errors import BayesMixError
from bayesmix.laws import NOISE_NAMES
from bayesmix.observations import Observations, ObservationsError

Prior = Mapping[str, tuple[np.ndarray, np.ndarray]]
"""Informative prior per site: name -> (loc, scale) on the site's unconstrained scale, one entry
per target (NaN loc where the population prior applies). Warm starts build these.

One more key, ``PRIOR_CORRELATION``, may couple the sites of each target: (R, names), R a
(T, k, k) array of correlation matrices between the k sites ``names`` (NaN where a target's
sites stay independent); see ``blocks.prior_correlation``."""

PRIOR_CORRELATION = "correlation"


CENTERED_FROM_RUNS = 30
# The floors a fit learns: one per domain (pooled) or one for all.
LEARNED_FLOORS = ("learned", "shared")

# The share of a run's last step before which its evaluations are left out: about where the
# warm-up of the project's proxies (studies/proxy_throughput) gives way to the power law.
EARLY_STEPS = 0.1

SiteTransform = tuple[str, Callable[[np.ndarray], np.ndarray]]
"""A per-target site's natural counterpart: (its site name, the map to it), as ``log_alpha``
-> ``("alpha", np.exp)``."""


class LawError(BayesMixError, ValueError):
    """The observations cannot be fitted with this law (e.g. a target has no own domain)."""


@dataclass(frozen=True)
class LawSettings:
    """Modelling choices a user can change; saved with the posterior.

    eps: floor added to the proportions in log(r + eps): a number shared by every domain,
        "learned" (one per domain, partially pooled, log-normal population around 3e-3; in
        the own-share law, one per target, its own domain's) or "shared" (one learned floor
        for every domain, on the same prior).
    noise: observation noise on the log-loss scale: "correlated" (normal, with a share rho of
        its variance common to every target of a run: losses of one run move together),
        "normal" (independent across targets) or "student" (independent, heavy tails).
    reference_step: the step at which K_t is parametrised (s_rel = step / reference_step).
    reference_size: the model size (parameters) at which K_t and the exponents are
        parametrised (n_rel = model_size / reference_size); None: the largest observed.
    rank: rank of the target-specific cross-domain exponents (0 = the full matrix, which fits
        Olmix's 64 domains x 52 tasks by Laplace in about 2 minutes). U V^T is unchanged by
        rotations of U and V, so a low-rank law has no isolated mode: its Laplace fit is
        degenerate (flagged as not converged); sample it with NUTS.
    centered: centred (True) or non-centred (False) hierarchies; None chooses from the data:
        centred once every target has CENTERED_FROM_RUNS observations, where the likelihood
        pins each parameter and the non-centred form would bend into an inverted funnel.
    early_steps: the law describes a run from this fraction of its last step on; earlier
        evaluations (the warm-up, loss near its initial value) are left out of the fit and of
        every score (``Observations.late_steps``). 0 keeps every step.
    """

    eps: float | Literal["learned", "shared"] = "learned"
    noise: str = "correlated"
    reference_step: float | None = None
    reference_size: float | None = None
    rank: int = 0
    centered: bool | None = None
    early_steps: float = EARLY_STEPS

    def __post_init__(self) -> None:
        if self.eps not in LEARNED_FLOORS and not (
            isinstance(self.eps, int | float) and np.isfinite(self.eps) and self.eps > 0
        ):
            raise LawError(
                f"eps must be a positive number, 'learned' or 'shared', got {self.eps!r}"
            )
        if self.noise not in NOISE_NAMES:
            raise LawError(f"noise must be one of {', '.join(NOISE_NAMES)}, got {self.noise!r}")
        if not isinstance(self.rank, int) or self.rank < 0:
            raise LawError(f"rank must be a non-negative integer, got {self.rank!r}")
        if not (isinstance(self.early_steps, int | float) and 0 <= self.early_steps < 1):
            raise LawError(f"early_steps must be in [0, 1), got {self.early_steps!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "noise": self.noise,
            "reference_step": self.reference_step,
            "reference_size": self.reference_size,
            "rank": self.rank,
            "centered": self.centered,
            "early_steps": self.early_steps,
        }


@dataclass(frozen=True)
class LawData:
    """Arrays a law is fitted to: unique (run, step) points x targets, and the observed rows.

    r: (P, M) proportions; s_rel: (P,) step / reference step, or None without a step axis;
    point, target: (R,) row -> point, row -> target; log_y: (R,) observed log losses;
    own_onehot: (T, M), 1 at each target's own training domain (all-zero rows where none);
    point_run: (P,) the run each point belongs to.
    n_rel: (P,) model size / reference size, or None without a size axis (one model size).
    """

    r: np.ndarray
    s_rel: np.ndarray | None
    point: np.ndarray
    target: np.ndarray
    log_y: np.ndarray
    own_onehot: np.ndarray
    domains: list[str]
    targets: list[str]
    target_mean: np.ndarray = field(repr=False)  # (T,) mean observed log loss per target
    target_min: np.ndarray = field(repr=False)  # (T,) smallest observed loss per target
    centered: bool = False
    point_run: np.ndarray = field(default_factory=lambda: np.array([], dtype=object), repr=False)
    n_rel: np.ndarray | None = None

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    @property
    def n_domains(self) -> int:
        return len(self.domains)

    @property
    def r_own(self) -> np.ndarray:
        """(P, T): each target's own training domain's share (0 where it has none)."""
        return self.r @ self.own_onehot.T

    @property
    def has_own(self) -> np.ndarray:
        return self.own_onehot.sum(axis=1) > 0

    @classmethod
    def from_observations(cls, obs: Observations, settings: LawSettings) -> LawData:
        obs = obs.late_steps(settings.early_steps)
        frame = obs.frame
        if frame["metric"].nunique() != 1:
            raise ObservationsError(
                f"observations hold several metrics {obs.metrics}: select one with "
                "obs.select(metric=...) before fitting"
            )
        targets = obs.targets
        domains = obs.domains
        has_steps = obs.has_steps
        keys = frame["run_id"] + "@" + frame["step"].fillna(0).astype(str)
        codes, _ = keys.factorize()  # codes follow first appearance, as drop_duplicates does
        first = frame.loc[~keys.duplicated()]
        r = first[obs.ratio_columns].to_numpy(dtype=float)
        s_rel = None
        if has_steps:
            ref = settings.reference_step or obs.max_step
            assert ref is not None  # observations with steps have a largest one
            s_rel = first["step"].to_numpy(dtype=float) / float(ref)
        # A fit sets reference_size where sizes are mixed; runs scored against that fit
        # (held out, perhaps of one size) are placed on its size axis the same way.
        n_rel = None
        if obs.has_sizes or settings.reference_size is not None:
            if "model_size" not in frame.columns:
                raise ObservationsError("a law with a size axis needs the runs' model_size")
            size_ref = settings.reference_size or obs.max_model_size
            if size_ref is None:
                raise ObservationsError("a law with a size axis needs the runs' model_size")
            n_rel = first["model_size"].to_numpy(dtype=float) / float(size_ref)
        tindex = {t: i for i, t in enumerate(targets)}
        target = frame["target"].map(tindex).to_numpy(dtype=np.int32)
        log_y = np.log(frame["value"].to_numpy(dtype=float))
        own = np.zeros((len(targets), len(domains)))
        for t, d in obs.target_domain.items():
            own[tindex[t], domains.index(d)] = 1.0
        # The laws centre their level on this mean at the reference size: where sizes are
        # mixed, the mean over the reference size's rows (the loss of the mixture-average
        # run at that size), else every row.
        at_reference = np.ones(len(log_y), dtype=bool)
        if n_rel is not None:
            at_reference = np.isclose(n_rel[codes], 1.0)
        mean = np.array(
            [
                log_y[(target == i) & at_reference].mean()
                if ((target == i) & at_reference).any()
                else log_y[target == i].mean()
                for i in range(len(targets))
            ]
        )
        lo = np.array([np.exp(log_y[target == i]).min() for i in range(len(targets))])
        per_target = np.bincount(target, minlength=len(targets)).min()
        centered = settings.centered
        if centered is None:
            centered = bool(per_target >= CENTERED_FROM_RUNS)
        return cls(
            centered=centered,
            r=r,
            s_rel=s_rel,
            point=np.asarray(codes, dtype=np.int32),
            target=target,
            log_y=log_y,
            own_onehot=own,
            domains=domains,
            targets=targets,
            target_mean=mean,
            target_min=lo,
            point_run=first["run_id"].to_numpy(dtype=object),
            n_rel=n_rel,
        )


class Law(Protocol):
    """A data-mixing law: a NumPyro model, the formula it fits, and what later stages need to
    know of its sites. A new law is one class (one file in ``bayesmix/laws``) and one line in
    the registry ``bayesmix.laws._LAWS`` (or ``laws.register_law`` from outside the package).

    name: its registry name. own_share: the loss of target t depends on its own domain's
    share only (closed-form optima, exact reuse of runs after a revision). size_axis: it fits
    runs of several model sizes (its log_loss then takes ``n_rel``). noise: its default
    observation noise (``NOISE_NAMES``). formula_sites: the natural sites its ``log_loss``
    reads from the draws. target_sites: its per-target sites on the unconstrained scale (one
    entry per target, pooled) that a domain update carries into the next fit's prior
    (``bayesmix.reuse``), in order, each with its natural counterpart where the formula
    reads one (``SiteTransform``), else None.
    """

    name: str
    own_share: bool
    size_axis: bool
    noise: str
    formula_sites: tuple[str, ...]
    target_sites: Mapping[str, SiteTransform | None]

    def model(self, data: LawData, settings: LawSettings, prior: Prior | None = None) -> None:
        """The NumPyro model (samples the law's parameters and observes data.log_y)."""

    def log_loss(
        self, xp: ModuleType, params: Mapping[str, Any], r: Any, s_rel: Any | None, **const: Any
    ) -> Any:
        """Noise-free log loss (..., P, T) from natural parameters with leading batch dims."""

    def check(self, data: LawData) -> None:
        """Raise LawError when the data cannot identify this law."""
