"""Acquisition: which q proxy runs most improve the final mixture, chosen by name.

The user's objective is F(x) = sum_t w_t L_t(x) at the target step (lower is better). Over
the ensemble of posterior draws (``bayesmix.proposers.model.LawEnsembleModel``):

- ``thompson``: per posterior draw d, the mixture that is optimal under theta_d; a batch is
  q distinct draws' optima (closed form per draw for the own-share law). Cheap, diverse.
- ``qlognei``: BoTorch's qLogNoisyExpectedImprovement on -F, the observed runs as baseline.
- ``optimum-variance``: the expected reduction of the posterior variance of the optimal
  mixture r* after observing the batch (``qOptimumVarianceReduction``): information aimed
  at where the optimum is, not at the loss.

``propose`` optimises any of them over the bounded simplex (sum r = 1, lo <= r <= hi from
bounds, repetition caps and minimum shares) with BoTorch's ``optimize_acqf``, greedily one
run at a time with the earlier ones pending, or picks from a pool with
``optimize_acqf_discrete``. ``posterior`` may be a ``LawAverage`` (``bm.average_laws``):
the ensemble then holds each law's draws in proportion to its weight, so what is uncertain
about the law counts too (``LawAverageModel``). Each proposal carries ``expected_gain``:
the posterior expected improvement of F over the best observed run,
E_d[max(0, min_obs F_d - F_d(x))], in the objective's units.

    import bayesmix as bm
    batch = bm.propose(post, q=8, acquisition="qlognei")
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.objective import LinearMCObjective
from botorch.optim import optimize_acqf, optimize_acqf_discrete
from botorch.sampling.index_sampler import IndexSampler
from botorch.utils.transforms import t_batch_mode_transform
from torch import Tensor

from bayesmix.mixtures import mixture_matrix
from bayesmix.mixtures import objective_weights as posterior_objective_weights
from bayesmix.proposers.base import (
    ProposalError,
    check_posterior,
    check_q,
    proposal_frame,
)
from bayesmix.proposers.model import DTYPE, LawAverageModel, LawEnsembleModel, LogLossEnsemble
from bayesmix.selection import LawAverage

ACQUISITIONS = ("thompson", "qlognei", "optimum-variance")


# --------------------------------------------------------------------------- objective
def objective_weights(weights: Mapping[str, float] | None, targets: list[str]) -> np.ndarray:
    """``bayesmix.posterior.objective_weights`` (which checks them), scaled to sum to 1: the
    objective's units then do not depend on how the user wrote the weights."""
    try:
        w = posterior_objective_weights(weights, targets)
    except ValueError as exc:
        raise ProposalError(str(exc)) from None
    return w / w.sum()


def member_objective(model: LogLossEnsemble, X: Tensor, w: Tensor) -> Tensor:
    """F_d(x) = sum_t w_t L_t(x; theta_d): (D, P) for mixtures X (P, M)."""
    return model.log_loss(X).exp() @ w


# ------------------------------------------------------------------ information-based
class qOptimumVarianceReduction(AcquisitionFunction):
    r"""Expected reduction of the posterior variance of the optimal mixture by a batch X.

    Over the ensemble, the optimum r*_d (each member's optimal mixture) and the log losses a
    batch would show, Y_d = log L(X; theta_d) (q T values), are treated as jointly Gaussian;
    observing y = Y + e, e ~ N(0, S) with S = diag(sigma_t^2) per target, then shrinks the
    covariance of r* by the linear-Gaussian (ensemble Kalman) update, whose trace is

        alpha(X) = tr( C_rY (C_YY + S)^{-1} C_Yr )
                 = tr( R^T G (G + I)^{-1} R ),   G = Z Z^T,  Z = Y_c S^{-1/2},

    with R, Y_c the member-centred r* and Y scaled by 1/sqrt(D) (the second form is the
    first by the push-through identity: a D x D solve, whatever q T is). It is the variance
    of the optimum's location that the batch is expected to remove: largest where members
    that disagree about the optimum also disagree about the losses the batch will show.
    Deterministic and smooth in X, unlike reweighting members by fantasised likelihoods,
    which collapses onto single members when the noise is small. Pending points join the
    batch: they will be observed too.
    """

    def __init__(
        self,
        model: LogLossEnsemble,
        optima: Tensor,
        noise: Tensor,
        X_pending: Tensor | None = None,
    ) -> None:
        super().__init__(model=model)
        if optima.shape[0] != model.ensemble_size:
            raise ValueError("one optimal mixture per ensemble member is needed")
        centred = optima.to(DTYPE) - optima.to(DTYPE).mean(0)
        self.register_buffer("optima_c", centred / np.sqrt(model.ensemble_size))
        self.register_buffer("noise", noise.to(DTYPE).clamp_min(1e-4))
        self.variance_now = float((self.optima_c**2).sum())
        # Steps at which a scored run is observed (None: the target step); cost-aware
        # proposals set them per run length.
        self.checkpoints: tuple[float | None, ...] = (None,)
        d = model.ensemble_size
        self.extra_gram = torch.zeros(d, d, dtype=DTYPE)  # runs added with other checkpoints
        self.set_X_pending(X_pending)

    def features(self, X: Tensor, checkpoints: Sequence[float | None] | None = None) -> Tensor:
        """Z for a batch X (b x q x M): b x D x (q T c), the member-centred log losses the
        runs would show at each of their c checkpoints (None: the target step), over
        sigma_t sqrt(D)."""
        steps = self.checkpoints if checkpoints is None else tuple(checkpoints)
        b, q, m = X.shape
        flat = X.reshape(-1, m)
        log_f = torch.stack([self.model.log_loss(flat, step=s) for s in steps], -1)
        d = log_f.shape[0]  # log_f: D x bq x T x c
        z = (log_f - log_f.mean(0)) / (self.noise[:, None] * np.sqrt(d))
        return z.reshape(d, b, -1).transpose(0, 1)

    def set_X_pending(self, X_pending: Tensor | None = None) -> None:
        """Pending runs observed at this function's checkpoints (see ``add_pending``)."""
        self.X_pending = None if X_pending is None else X_pending.detach()
        self.pending_gram = self.extra_gram
        if X_pending is not None:
            self.pending_gram = self.extra_gram + self._gram(self.X_pending, self.checkpoints)

    def add_pending(self, X: Tensor, checkpoints: Sequence[float | None]) -> None:
        """Pending runs with checkpoints of their own (runs of another length)."""
        self.extra_gram = self.extra_gram + self._gram(X, checkpoints)
        self.set_X_pending(self.X_pending)

    def _gram(self, X: Tensor, checkpoints: Sequence[float | None]) -> Tensor:
        """Z Z^T (D x D) of runs X (n x M) observed at ``checkpoints``."""
        with torch.no_grad():
            z = self.features(X[None], checkpoints)[0]
        return z @ z.T

    def removed(self, gram: Tensor) -> Tensor:
        """tr(R^T G (G + I)^{-1} R) for Gram matrices G = Z Z^T (b x D x D): the variance
        of r* the runs behind Z remove (Gram matrices of runs observed together add up)."""
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        # G (G + I)^{-1} R = R - (G + I)^{-1} R
        solved = torch.linalg.solve(gram + eye, self.optima_c.expand(len(gram), -1, -1))
        return self.variance_now - (self.optima_c * solved).sum((-1, -2))

    @t_batch_mode_transform()
    def forward(self, X: Tensor) -> Tensor:
        z = self.features(X)
        return self.removed(self.pending_gram.to(z) + z @ z.transpose(-1, -2))


class EnsembleMean(AcquisitionFunction):
    r"""-E_d[F_d(x)]: the posterior expected objective at one mixture, negated (BoTorch
    maximises). Its maximiser is the recommended mixture; with the model's GP discrepancy
    paths it is the recommendation that also trusts the data where the law misses them."""

    def __init__(self, model: LogLossEnsemble, w: Tensor) -> None:
        super().__init__(model=model)
        self.register_buffer("w", w.to(DTYPE))
        self.set_X_pending(None)

    @t_batch_mode_transform(expected_q=1)
    def forward(self, X: Tensor) -> Tensor:
        values = self.model.posterior(X).values  # b x D x 1 x T
        return -(values @ self.w).mean(dim=-2).squeeze(-1)


def expected_optimum(
    posterior: Any,
    *,
    weights: Mapping[str, float] | None = None,
    step: float | None = None,
    constraints: Any = None,
    discrepancy: bool = False,
    max_draws: int = 256,
    seed: int = 0,
    settings: AcquisitionSettings | None = None,
) -> np.ndarray:
    """argmin_x E_d[F_d(x)] over the bounded simplex, through the BoTorch model (so with the
    GP discrepancy when asked); started from the law's own optimum, the members' optima and
    the observed runs. Over a ``LawAverage``, d runs over every law's members in proportion
    to the law's weight: the Bayesian-model-average recommendation."""
    lead, model = ensemble_model(
        posterior, step, max_draws=max_draws, discrepancy=discrepancy, seed=seed
    )
    w = objective_weights(weights, list(lead.targets))
    return ensemble_mean_optimum(lead, model, w, step, constraints, seed, settings)


def ensemble_mean_optimum(
    lead: Any,
    model: LogLossEnsemble,
    w: np.ndarray,
    step: float | None,
    constraints: Any,
    seed: int,
    settings: AcquisitionSettings | None = None,
) -> np.ndarray:
    """argmin_x E_d[F_d(x)] for a built ``model`` (``ensemble_model``) and objective weights."""
    from bayesmix.optimize import Constraints

    settings = settings or AcquisitionSettings()
    lo, hi = (constraints or Constraints()).bounds(list(lead.domains))
    member_optima(model, w, step, constraints)  # seeds the starts
    x_obs = torch.as_tensor(lead.observations.mixtures().to_numpy(dtype=float), dtype=DTYPE)
    acq = EnsembleMean(model, torch.as_tensor(w, dtype=DTYPE))
    gen = np.random.default_rng([seed, len(x_obs), 11])
    X, _ = _optimize_on_simplex(acq, model, 1, lo, hi, x_obs, settings, gen)
    return X[0].detach().numpy()


# ------------------------------------------------------------------------ proposing
@dataclass
class AcquisitionSettings:
    """How acquisition functions are evaluated and optimised.

    mc_samples: IndexSampler draws for qLogNEI; num_restarts / raw_samples: starts of
    ``optimize_acqf`` and the random points they are chosen from (the members' optima and
    the observed runs are always among the latter); shortlist: how many of the best of
    them the later runs of a batch choose their starts from; maxiter: optimiser iterations
    per start.
    """

    mc_samples: int = 256
    num_restarts: int = 6
    raw_samples: int = 256
    shortlist: int = 64
    maxiter: int = 100


def propose(
    posterior: Any,
    q: int,
    acquisition: str = "optimum-variance",
    *,
    weights: Mapping[str, float] | None = None,
    step: float | None = None,
    constraints: Any = None,
    pending: pd.DataFrame | None = None,
    candidates: pd.DataFrame | None = None,
    seed: int = 0,
    max_draws: int = 256,
    discrepancy: bool = False,
    settings: AcquisitionSettings | None = None,
    run_lengths: Sequence[float] | None = None,
    checkpoints: int = 4,
    check_steps: bool = True,
) -> pd.DataFrame:
    """The next q runs from a fitted posterior: one row per run (see the module docstring).

    Returns ``r:<domain>`` columns, ``expected_gain``, ``acquisition_value`` (the value
    when the run joins the batch: qlognei, the log expected improvement over the observed
    runs and the batch's earlier runs; optimum-variance, the variance of r* removed by the
    batch so far; thompson, NaN: it samples rather than maximises) and, with
    ``candidates``, ``candidate`` (the pool row's label).

    run_lengths (optimum-variance only; a law fitted with a step axis): the run lengths in
    steps a proposal may choose from, each run recording ``checkpoints`` evenly spaced
    evaluations. The batch then spends the compute of q runs of the target length, each
    run chosen for the most variance of r* removed per step trained (``_cost_aware``),
    so it may hold more, shorter runs; a ``steps`` column gives each run's length. With
    ``check_steps`` the runs that recorded early and final losses are first asked whether
    short runs show the mixture's effect that long ones do (``check_separability``); where
    they do not, the batch holds runs of the target length only, with a warning.
    """
    from bayesmix.optimize import Constraints

    q = check_q(q)
    if acquisition not in ACQUISITIONS:
        raise ProposalError(
            f"unknown acquisition {acquisition!r}; choose one of {', '.join(ACQUISITIONS)}"
        )
    settings = settings or AcquisitionSettings()
    posterior, model = ensemble_model(
        posterior, step, max_draws=max_draws, discrepancy=discrepancy, seed=seed
    )
    domains = list(posterior.domains)
    lo, hi = (constraints or Constraints()).bounds(domains)
    w_np = objective_weights(weights, list(posterior.targets))
    w = torch.as_tensor(w_np, dtype=DTYPE)
    x_obs = torch.as_tensor(posterior.observations.mixtures().to_numpy(dtype=float), dtype=DTYPE)
    x_pend = (
        torch.as_tensor(mixture_matrix(pending, domains, "pending", ProposalError), dtype=DTYPE)
        if pending is not None and len(pending)
        else None
    )
    pool = None
    if candidates is not None:
        pool_np = mixture_matrix(candidates, domains, "candidates", ProposalError)
        taken = x_obs if x_pend is None else torch.cat([x_obs, x_pend])
        dist = (torch.as_tensor(pool_np)[:, None, :] - taken[None]).abs().sum(-1).amin(1)
        free = torch.nonzero(dist > 1e-6).squeeze(-1)
        inside = torch.as_tensor(((pool_np >= lo - 1e-9) & (pool_np <= hi + 1e-9)).all(axis=1))[
            free
        ]
        free = free[inside]
        if len(free) < q:
            raise ProposalError(
                f"the pool has {len(free)} feasible mixture(s) not yet observed or pending, "
                f"fewer than q={q}"
            )
        pool = (free, torch.as_tensor(pool_np, dtype=DTYPE)[free])

    gen = np.random.default_rng([seed, len(x_obs), 7])
    if run_lengths is not None:
        target, lengths = _check_run_lengths(posterior, acquisition, run_lengths, step, pool)
        if check_steps and lengths != [target]:
            lengths = _separable_lengths(posterior.observations, lengths, target, seed)
        acq = _build(acquisition, model, w, x_obs, step, constraints, settings, seed)
        if x_pend is not None:  # the study's pending runs have the target length
            acq.add_pending(x_pend, _checkpoint_steps(target, checkpoints))
        X, acq_values, steps = _cost_aware(
            acq, model, q * target, lengths, checkpoints, lo, hi, x_obs, settings, gen
        )
        gain = expected_gain(model, X, x_obs, w)
        return proposal_frame(
            X.numpy(), domains, acquisition_value=acq_values, expected_gain=gain, steps=steps
        )
    if acquisition == "thompson":
        X, acq_values = _thompson(model, q, w_np, step, constraints, pool, gen)
    else:
        acq = _build(acquisition, model, w, x_obs, step, constraints, settings, seed)
        if x_pend is not None:
            acq.set_X_pending(x_pend)
        if pool is not None:
            X, acq_values = optimize_acqf_discrete(acq, q=q, choices=pool[1], unique=True)
        else:
            X, acq_values = _optimize_on_simplex(acq, model, q, lo, hi, x_obs, settings, gen)
    X = X.detach()
    gain = expected_gain(model, X, x_obs, w)
    extra: dict[str, Any] = {
        "acquisition_value": np.asarray(acq_values.detach(), dtype=float).reshape(-1),
        "expected_gain": gain,
    }
    if pool is not None:
        rows = _rows_in(pool[1], X)
        extra["candidate"] = list(candidates.index[pool[0][rows].numpy()])
    return proposal_frame(X.numpy(), domains, **extra)


def ensemble_model(
    posterior: Any,
    step: float | None,
    *,
    max_draws: int = 256,
    discrepancy: bool = False,
    seed: int = 0,
) -> tuple[Any, LogLossEnsemble]:
    """The BoTorch model of a posterior or of a ``LawAverage``, and the posterior whose runs,
    domains and steps a proposal reads (a law average's heaviest law: all see the same runs)."""
    if isinstance(posterior, LawAverage):
        parts = posterior.parts()
        for part, _ in parts:
            check_posterior(part)
        if len(parts) > 1:
            if discrepancy:
                raise ProposalError(
                    "the GP discrepancy term is fitted to one law's residuals: propose over "
                    "one law's posterior to use it, not over an average of laws"
                )
            return parts[0][0], LawAverageModel(parts, step, max_draws=max_draws)
        posterior = parts[0][0]
    check_posterior(posterior)
    model = LawEnsembleModel(
        posterior, step, max_draws=max_draws, discrepancy=discrepancy, seed=seed
    )
    return posterior, model


def _check_run_lengths(
    posterior: Any,
    acquisition: str,
    run_lengths: Sequence[float],
    step: float | None,
    pool: Any,
) -> tuple[float, list[float]]:
    """The target step and the sorted run lengths, or one clear error."""
    if acquisition != "optimum-variance":
        raise ProposalError(
            "run lengths can be proposed by the optimum-variance acquisition only "
            f"(information per step trained), not {acquisition!r}"
        )
    if pool is not None:
        raise ProposalError("run lengths cannot be proposed from a pool of finished runs")
    if not posterior.observations.has_steps:
        raise ProposalError(
            "run lengths need a law fitted with a step axis: the observations have no steps"
        )
    lengths = sorted({float(x) for x in run_lengths})
    if not lengths or not all(np.isfinite(x) and x > 0 for x in lengths):
        raise ProposalError(f"run lengths must be positive numbers of steps, got {run_lengths!r}")
    target = float(step) if step is not None else posterior.reference_step
    if lengths[0] > target:
        raise ProposalError(
            f"the shortest run length {lengths[0]:g} is longer than the target step {target:g}"
        )
    return target, lengths


def _separable_lengths(
    observations: Any, lengths: list[float], target: float, seed: int
) -> list[float]:
    """``lengths``, or the target length alone where short runs would mislead or the
    runs cannot tell yet.

    The test's level is 0.1, not the customary 0.05: a false alarm only forgoes the savings
    of short runs, a missed change in a domain's effect costs regret (6 times that of
    full-length runs where it was large, ``results/run_length.md``).
    """
    from bayesmix.separability import SeparabilityError, check_separability

    try:
        check = check_separability(observations, lengths[0], level=0.1, seed=seed)
    except SeparabilityError as err:
        warnings.warn(
            f"proposing runs of the target length {target:g} until short runs can be checked "
            f"against long ones: {err}",
            UserWarning,
            stacklevel=3,
        )
        return [target]
    if check.separable:
        return lengths
    warnings.warn(
        f"short runs would mislead here ({check}); proposing runs of the target length "
        f"{target:g} only",
        UserWarning,
        stacklevel=3,
    )
    return [target]


def _checkpoint_steps(length: float, checkpoints: int) -> tuple[float, ...]:
    return tuple(length * k / checkpoints for k in range(1, checkpoints + 1))


def _cost_aware(
    acq: qOptimumVarianceReduction,
    model: LogLossEnsemble,
    budget: float,
    lengths: list[float],
    checkpoints: int,
    lo: np.ndarray,
    hi: np.ndarray,
    x_obs: Tensor,
    settings: AcquisitionSettings,
    gen: np.random.Generator,
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    r"""Greedy runs until ``budget`` steps are spent: each the (mixture, length) pair with
    the largest variance of r* removed per step,

        argmax_{l, x} [alpha(B + (x, l)) - alpha(B)] / l,

    B the runs chosen so far, each observed at its checkpoints. Under the law a short run
    shows the mixture's effect as well as a long one (the step factor multiplies it), so
    this pays where that holds and misleads where a mixture's effect changes with training.
    """
    raw_t = _raw_points(model, lo, hi, x_obs, settings, gen)
    chosen: list[Tensor] = []
    values: list[float] = []
    steps: list[float] = []
    spent = 0.0
    while True:
        options = [x for x in lengths if spent + x <= budget * (1 + 1e-9)]
        if not options:
            break
        # The length by the best rate among the candidate starts, then one optimisation of
        # the mixture at that length: optimising every length costs len(lengths) times more.
        removed = float(acq.removed(acq.pending_gram[None]))
        rates, shortlist = [], []
        for length in options:
            acq.checkpoints = _checkpoint_steps(length, checkpoints)
            with torch.no_grad():
                scores = torch.cat([acq(c[:, None, :]) for c in raw_t.split(256)])
            rates.append((float(scores.max()) - removed) / length)
            shortlist.append(raw_t[torch.argsort(scores, descending=True)[: settings.shortlist]])
        if not chosen:  # later runs score the first scoring's shortlists only
            raw_t = torch.unique(torch.cat(shortlist), dim=0)
        length = options[int(np.argmax(rates))]
        acq.checkpoints = _checkpoint_steps(length, checkpoints)
        X, value = _optimize_on_simplex(
            acq, model, 1, lo, hi, x_obs, settings, gen, raw_points=raw_t
        )
        acq.add_pending(X, acq.checkpoints)
        chosen.append(X[0])
        values.append(float(value))
        steps.append(length)
        spent += length
    return torch.stack(chosen), np.array(values), np.array(steps)


def _build(
    name: str,
    model: LogLossEnsemble,
    w: Tensor,
    x_obs: Tensor,
    step: float | None,
    constraints: Any,
    settings: AcquisitionSettings,
    seed: int,
) -> AcquisitionFunction:
    if name == "qlognei":
        return qLogNoisyExpectedImprovement(
            model=model,
            X_baseline=x_obs,
            sampler=IndexSampler(torch.Size([settings.mc_samples]), seed=seed),
            objective=LinearMCObjective(-w),  # BoTorch maximises; lower loss is better
            prune_baseline=True,
            cache_root=False,
        )
    optima = member_optima(model, w.numpy(), step, constraints)
    return qOptimumVarianceReduction(
        model,
        torch.tensor(optima, dtype=DTYPE),  # a copy: the memoised optima are read-only
        torch.tensor(noise_scale(model), dtype=DTYPE),
    )


def optimal_mixture(
    posterior: Any,
    weights: Mapping[str, float] | None,
    step: float | None,
    constraints: Any,
    max_draws: int | None,
) -> Any:
    """``posterior.optimal_mixture(...)``, memoised on the posterior: a study asks for it
    twice per batch (the recommendation, then Thompson's per-draw optima)."""
    cache = posterior.__dict__.setdefault("_optimal_mixture_cache", {})
    key = (repr(sorted((weights or {}).items())), step, repr(constraints), max_draws)
    if key not in cache:
        cache[key] = posterior.optimal_mixture(
            weights=weights, step=step, constraints=constraints, max_draws=max_draws
        )
    return cache[key]


def member_optima(
    model: LogLossEnsemble, w: np.ndarray, step: float | None, constraints: Any
) -> np.ndarray:
    """(D, M) optimal mixture of each ensemble member (``Posterior.optimal_mixture``)."""
    if "member_optima" in model.__dict__:
        return model.__dict__["member_optima"]
    if isinstance(model, LawAverageModel):
        parts = [member_optima(part, w, step, constraints) for part in model.parts]
        model.__dict__["member_optima"] = np.concatenate(parts)
    else:
        posterior = model.law_posterior
        weights = dict(zip(posterior.targets, w, strict=True))
        per_draw = optimal_mixture(
            posterior, weights, step, constraints, model.max_draws
        ).draws.to_numpy(dtype=float)
        if len(per_draw) != model.ensemble_size:
            raise RuntimeError(
                f"optimal_mixture returned {len(per_draw)} per-draw optima for "
                f"{model.ensemble_size} ensemble members"
            )
        model.__dict__["member_optima"] = per_draw
    return model.__dict__["member_optima"]


def noise_scale(model: LogLossEnsemble) -> np.ndarray:
    """Per-target log-scale observation noise, read off the posterior predictive.

    ``predict(draws=True)`` gives the law's value and a predictive draw (noise included)
    per posterior draw; the robust spread (1.4826 MAD) of their log ratio is sigma_t. Over
    several laws, their sigma_t averaged by their number of members.
    """
    if isinstance(model, LawAverageModel):
        sigmas = [noise_scale(part) for part in model.parts]
        return np.average(sigmas, axis=0, weights=[part.ensemble_size for part in model.parts])
    posterior = model.law_posterior
    obs = posterior.observations
    mix = obs.mixtures().reset_index(drop=True).iloc[:64]
    pred = posterior.predict(mix, model.step, draws=True, max_draws=64)
    with np.errstate(all="ignore"):
        ratio = np.log(pred["predictive"].to_numpy() / pred["value"].to_numpy())
    frame = pd.DataFrame({"target": pred["target"].to_numpy(), "z": ratio})
    # A member far in the tails can overflow its prediction (a cross law on few runs): its
    # ratio is not a noise draw, so it is left out rather than turning sigma_t into NaN.
    frame = frame[np.isfinite(frame["z"])]
    mad = frame.groupby("target", sort=False)["z"].agg(
        lambda z: 1.4826 * np.median(np.abs(z - np.median(z)))
    )
    sigma = mad.reindex(model.targets).to_numpy(dtype=float)
    if not np.isfinite(sigma).any():
        raise ProposalError("the posterior predicts no finite losses at the observed runs")
    return np.where(np.isfinite(sigma), sigma, np.nanmedian(sigma))


def _thompson(
    model: LogLossEnsemble,
    q: int,
    w: np.ndarray,
    step: float | None,
    constraints: Any,
    pool: tuple[Tensor, Tensor] | None,
    gen: np.random.Generator,
) -> tuple[Tensor, Tensor]:
    """q distinct members; each proposes its own optimum (or its best pool row)."""
    members = gen.permutation(model.ensemble_size)
    wt = torch.as_tensor(w, dtype=DTYPE)
    chosen: list[Tensor] = []
    if pool is not None:
        with torch.no_grad():
            f = member_objective(model, pool[1], wt)  # D x C
        used: set[int] = set()
        for d in members:
            order = torch.argsort(f[d])
            pick = next(int(i) for i in order if int(i) not in used)
            used.add(pick)
            chosen.append(pool[1][pick])
            if len(chosen) == q:
                break
        return torch.stack(chosen), torch.full((len(chosen),), float("nan"))
    optima = torch.tensor(member_optima(model, w, step, constraints), dtype=DTYPE)
    for d in members:
        cand = optima[d]
        if any((cand - c).abs().sum() <= 1e-6 for c in chosen):
            continue
        chosen.append(cand)
        if len(chosen) == q:
            break
    if len(chosen) < q:
        raise ProposalError(
            f"thompson sampling found only {len(chosen)} distinct optima among the "
            f"{model.ensemble_size} draws; ask for fewer runs or use another acquisition"
        )
    return torch.stack(chosen), torch.full((q,), float("nan"))


class OnBoundedSimplex(AcquisitionFunction):
    r"""An acquisition function of z in R^M: acq(lo + (1 - sum lo) softmax(z)).

    Every z gives a mixture with sum r = 1 and r >= lo, so the optimiser needs no constraint:
    L-BFGS-B on all starts at once, where SLSQP solves one dense quadratic programme per
    iteration over every start's shares (at 64 domains, half of a proposal's time went into
    SLSQP itself). Usable only where no upper bound binds: hi_i >= lo_i + 1 - sum lo.
    """

    def __init__(self, acq: AcquisitionFunction, lo: Tensor) -> None:
        super().__init__(model=acq.model)
        self.acq = acq
        self.register_buffer("lo", lo)
        self.free = float(1.0 - lo.sum())

    def to_mixture(self, Z: Tensor) -> Tensor:
        return self.lo + self.free * torch.softmax(Z, dim=-1)

    def from_mixture(self, X: Tensor) -> Tensor:
        z = torch.log(((X - self.lo) / self.free).clamp_min(1e-9))
        return z - z.mean(dim=-1, keepdim=True)

    def forward(self, Z: Tensor) -> Tensor:
        return self.acq(self.to_mixture(Z))


SOFTMAX_BOUND = 25.0  # |z| bound for L-BFGS-B: e^-50 relative shares are zero in practice


def _optimize_on_simplex(
    acq: AcquisitionFunction,
    model: LogLossEnsemble,
    q: int,
    lo: np.ndarray,
    hi: np.ndarray,
    x_obs: Tensor,
    settings: AcquisitionSettings,
    gen: np.random.Generator,
    raw_points: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Greedy batch: q single-run optimisations, each with the earlier runs pending.

    Starts are the best (by acquisition value) of random points of the bounded simplex, the
    observed runs and the ensemble members' optima (when known), all projected inside the
    bounds; ``optimize_acqf`` refines them: where no cap binds, by L-BFGS-B through
    ``OnBoundedSimplex``; otherwise under sum r = 1 and the bounds by SLSQP, one start at a
    time (``batch_limit`` 1: its programme grows with the cube of the variables).
    """
    from bayesmix.optimize import project_to_box_simplex

    m = len(lo)
    no_cap = bool(np.all(hi >= lo + (1.0 - lo.sum()) - 1e-12))
    on_simplex = OnBoundedSimplex(acq, torch.as_tensor(lo, dtype=DTYPE)) if no_cap else None
    z_bounds = SOFTMAX_BOUND * torch.tensor([[-1.0], [1.0]], dtype=DTYPE).expand(2, m)
    base_pending = acq.X_pending
    raw_t = _raw_points(model, lo, hi, x_obs, settings, gen) if raw_points is None else raw_points
    chosen: list[Tensor] = []
    values: list[Tensor] = []
    for i in range(q):
        with torch.no_grad():
            scores = torch.cat([acq(c[:, None, :]) for c in raw_t.split(256)])
        order = torch.argsort(scores, descending=True)
        top = order[: settings.num_restarts]
        starts = raw_t[top][:, None, :]
        if i == 0:
            # Later runs of the batch start from the best of the first scoring, rescored with
            # the earlier runs pending: scoring every raw point again took a third of a
            # 64-domain proposal and rarely changed the starts.
            raw_t = raw_t[order[: settings.shortlist]]
        if on_simplex is not None:
            z, value = optimize_acqf(
                on_simplex,
                bounds=z_bounds,
                q=1,
                num_restarts=len(top),
                batch_initial_conditions=on_simplex.from_mixture(starts),
                options={"maxiter": settings.maxiter},
            )
            cand = on_simplex.to_mixture(z).detach()
        else:
            cand, value = optimize_acqf(
                acq,
                bounds=torch.as_tensor(np.stack([lo, hi]), dtype=DTYPE),
                q=1,
                num_restarts=len(top),
                batch_initial_conditions=starts,
                equality_constraints=[(torch.arange(m), torch.ones(m, dtype=DTYPE), 1.0)],
                options={"maxiter": settings.maxiter, "batch_limit": 1},
            )
        cand = torch.as_tensor(project_to_box_simplex(cand.detach().numpy(), lo, hi), dtype=DTYPE)
        chosen.append(cand[0])
        values.append(value.reshape(()))
        pending = torch.stack(chosen)
        acq.set_X_pending(pending if base_pending is None else torch.cat([base_pending, pending]))
    acq.set_X_pending(base_pending)
    return torch.stack(chosen), torch.stack(values)


def _raw_points(
    model: LogLossEnsemble,
    lo: np.ndarray,
    hi: np.ndarray,
    x_obs: Tensor,
    settings: AcquisitionSettings,
    gen: np.random.Generator,
) -> Tensor:
    """Candidate starts: random mixtures, the observed runs and the members' optima (when
    known), inside the bounds."""
    from bayesmix.optimize import project_to_box_simplex

    raw = [gen.dirichlet(np.ones(len(lo)), settings.raw_samples), x_obs.numpy()]
    if "member_optima" in model.__dict__:
        raw.append(model.__dict__["member_optima"])
    return torch.as_tensor(project_to_box_simplex(np.concatenate(raw), lo, hi), dtype=DTYPE)


def expected_gain(model: LogLossEnsemble, X: Tensor, x_obs: Tensor, w: Tensor) -> np.ndarray:
    """E_d[max(0, min_obs F_d - F_d(x))] per proposal: expected improvement over the best run."""
    with torch.no_grad():
        f_new = member_objective(model, X, w)  # D x q
        best = member_objective(model, x_obs, w).amin(-1, keepdim=True)  # D x 1
        return (best - f_new).clamp_min(0.0).mean(0).numpy()


def _rows_in(pool: Tensor, X: Tensor) -> np.ndarray:
    return (X[:, None, :] - pool[None]).abs().sum(-1).argmin(-1).numpy()


__all__ = [
    "ACQUISITIONS",
    "AcquisitionSettings",
    "EnsembleMean",
    "ensemble_model",
    "expected_optimum",
    "expected_gain",
    "objective_weights",
    "propose",
    "qOptimumVarianceReduction",
]
