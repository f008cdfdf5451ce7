"""The law's posterior as a BoTorch model: one ensemble member per posterior draw.

For draws theta_1..theta_D of a fitted law, the model's output at a mixture x is the ensemble

    f_d(x) = (L_1(x; theta_d), ..., L_T(x; theta_d))      d = 1..D

(noise-free losses per target at the target step), so BoTorch's ``EnsemblePosterior`` and
``IndexSampler`` make every Monte-Carlo acquisition function apply to it, and gradients flow
to x through the law, which ``Posterior.log_loss`` evaluates in torch from the one formula
in ``bayesmix.laws.formulas``.

With ``discrepancy=True`` each member also carries a sample path of a GP fitted to the
law's log-scale residuals at the observed runs (one independent GP per target, drawn by
Matheron's rule so each path is a fixed smooth function of x):

    log f_dt(x) = log L_t(x; theta_d) + g_dt(x),   g_t ~ GP posterior on the residuals

which widens the ensemble where the parametric form misses the data.

Several laws' posteriors make one ensemble (``LawAverageModel``): law k contributes a share
w_k of the D members (its draws thinned as above), so the ensemble is the model average
sum_k w_k p(f | law k, data), and an acquisition over it counts what is uncertain about the
law as well as its parameters.

``ensemble_model`` builds the one or the other from what was fitted (a ``Posterior`` or a
``LawAverage``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.ensemble import EnsembleModel
from botorch.sampling.pathwise import draw_matheron_paths
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from bayesmix.acquisition.base import ProposalError, check_posterior, run_table
from bayesmix.acquisition.cache import posterior_optimum
from bayesmix.law_average import LawAverage

LOG_LOSS_CAP = 30.0
DTYPE = torch.float64


class LogLossEnsemble(EnsembleModel):
    """An ensemble whose members' losses are exp(log_loss): the outputs both models share.

    ``optima`` holds each member's optimal mixture once ``member_optima`` has computed it
    (the starts of the acquisition optimiser read it).
    """

    ensemble_size: int
    domains: list[str]
    targets: list[str]
    optima: np.ndarray | None = None

    def log_loss(
        self, r: Tensor, step: float | None = None, model_size: float | None = None
    ) -> Tensor:  # (D, P, T)
        raise NotImplementedError

    def member_optima(self, w: np.ndarray, step: float | None, constraints: Any) -> np.ndarray:
        """(D, M) optimal mixture of each member for objective weights ``w`` at the model's
        target size, computed once per model (``Posterior.optimal_mixture``'s per-draw
        optima)."""
        raise NotImplementedError

    def noise_scale(self) -> np.ndarray:
        """Per-target log-scale observation noise sigma_t (T,)."""
        raise NotImplementedError

    def forward(self, X: Tensor) -> Tensor:
        batch, (n, m) = X.shape[:-2], X.shape[-2:]
        if m != len(self.domains):
            raise ValueError(f"X has {m} columns; the law has {len(self.domains)} domains")
        flat = X.reshape(-1, m)
        values = self.log_loss(flat).exp()  # (D, B*n, T)
        values = values.reshape(self.ensemble_size, *batch, n, len(self.targets))
        return values.movedim(0, -3)  # batch x D x n x T


class LawEnsembleModel(LogLossEnsemble):
    """Posterior draws of a data-mixing law as a BoTorch ensemble over the simplex.

    Inputs X: ``batch x n x M`` mixtures (columns in ``posterior.domains`` order).
    Outputs: ``batch x D x n x T`` losses (targets in ``posterior.targets`` order).

    Args:
        posterior: a fitted ``bayesmix`` Posterior.
        step: the step the outputs are taken at (None: the posterior's reference step).
        model_size: the model size (parameters) the outputs and the members' optima are
            taken at, for a law with a size axis (None: its reference size).
        max_draws: ensemble size D: the posterior's draws thinned evenly, as
            ``posterior.draws(max_draws)`` and ``optimal_mixture(max_draws=...)`` thin them,
            so member d and the d-th per-draw optimum belong to the same draw.
        discrepancy: add a GP residual path per member (see the module docstring).
    """

    def __init__(
        self,
        posterior: Any,
        step: float | None = None,
        *,
        model_size: float | None = None,
        max_draws: int | None = 256,
        discrepancy: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.law_posterior = posterior
        self.step = step
        self.model_size = model_size
        self.max_draws = max_draws
        self.params = posterior.draws(max_draws)
        self.ensemble_size = next(iter(self.params.values())).shape[0]
        self.domains = list(posterior.domains)
        self.targets = list(posterior.targets)
        self._torch_params: dict[str, Tensor] | None = None
        self._axis_cache: dict[tuple[str, float | None], float | None] = {}
        self.paths: Any = None
        if discrepancy:
            self.paths = self._residual_paths(seed)

    # ------------------------------------------------------------------ the law in torch
    def log_loss(
        self, r: Tensor, step: float | None = None, model_size: float | None = None
    ) -> Tensor:
        """(D, P, T) log loss per member at mixtures r (P, M); differentiable in r. ``step``
        and ``model_size`` default to the model's own (its target).

        The law's formula is evaluated through the posterior's law object (the ``Law``
        protocol's ``log_loss``, the same call ``Posterior.log_loss`` makes) with the draws,
        the own-domain map and the step converted to torch once: acquisition optimisers
        call this thousands of times.
        """
        if self._torch_params is None:
            post = self.law_posterior
            self._torch_params = {
                k: torch.as_tensor(np.asarray(v), dtype=r.dtype, device=r.device)
                for k, v in self.params.items()
                if np.issubdtype(np.asarray(v).dtype, np.number)
            }
            self._own = torch.as_tensor(post.own_onehot(), dtype=r.dtype, device=r.device)
            self._law = post.law_obj
        s_rel = self._relative("s_rel", self.step if step is None else step, r)
        n_rel = self._relative("n_rel", self.model_size if model_size is None else model_size, r)
        sizes = {} if n_rel is None else {"n_rel": n_rel}
        out = self._law.log_loss(torch, self._torch_params, r, s_rel, own_onehot=self._own, **sizes)
        if self.paths is not None:
            res = self.paths(r.to(DTYPE))  # (D, T, P)
            out = out + res.transpose(-1, -2).to(out)
        # A member far out in the tails (a domain no run has shown leaves its exponent to
        # the prior) can predict losses that over- or underflow exp(): inf - inf is NaN in
        # the acquisition's gradients. Losses beyond e^+-LOG_LOSS_CAP nats are cut there.
        return out.clamp(-LOG_LOSS_CAP, LOG_LOSS_CAP)

    def _relative(self, axis: str, value: float | None, r: Tensor) -> Tensor | None:
        """The posterior's relative step (``axis`` "s_rel") or model size ("n_rel") at
        ``value``, one per row of r, or None where the law has no such axis."""
        key = (axis, value)
        if key not in self._axis_cache:
            s = getattr(self.law_posterior, axis)(value)
            self._axis_cache[key] = None if s is None else float(np.asarray(s).reshape(-1)[0])
        s = self._axis_cache[key]
        return None if s is None else torch.full(r.shape[:-1], s, dtype=r.dtype, device=r.device)

    # ------------------------------------------------------------------ discrepancy
    def _residual_paths(self, seed: int) -> Any:
        """Matheron sample paths of per-target GPs on the law's log residuals."""
        obs = self.law_posterior.observations
        r, log_y = observed_log_losses(obs, self.targets, self.step, self.law_posterior)
        x = torch.as_tensor(r, dtype=DTYPE)
        with torch.no_grad():
            law = self.log_loss_no_paths(x).mean(0)  # (P, T)
        res = torch.as_tensor(log_y, dtype=DTYPE) - law
        with torch.random.fork_rng():
            # The fit's restarts draw from torch's generator too: seeded, as the paths are.
            torch.manual_seed(seed)
            gp = SingleTaskGP(x, res)
            fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
            return draw_matheron_paths(gp, sample_shape=torch.Size([self.ensemble_size]))

    def log_loss_no_paths(self, r: Tensor) -> Tensor:
        paths, self.paths = self.paths, None
        try:
            return self.log_loss(r)
        finally:
            self.paths = paths

    # ------------------------------------------------------------------ what acquisition reads
    def member_optima(self, w: np.ndarray, step: float | None, constraints: Any) -> np.ndarray:
        if self.optima is None:
            posterior = self.law_posterior
            weights = dict(zip(posterior.targets, w, strict=True))
            per_draw = posterior_optimum(
                posterior, weights, step, constraints, self.max_draws, model_size=self.model_size
            ).draws.to_numpy(dtype=float)
            if len(per_draw) != self.ensemble_size:
                raise RuntimeError(
                    f"optimal_mixture returned {len(per_draw)} per-draw optima for "
                    f"{self.ensemble_size} ensemble members"
                )
            self.optima = per_draw
        return self.optima

    def noise_scale(self) -> np.ndarray:
        """Per-target log-scale observation noise, read off the posterior predictive.

        ``predict(draws=True)`` gives the law's value and a predictive draw (noise included)
        per posterior draw; the robust spread (1.4826 MAD) of their log ratio is sigma_t.
        """
        posterior = self.law_posterior
        mix = posterior.observations.mixtures().reset_index(drop=True).iloc[:64]
        pred = posterior.predict(mix, self.step, draws=True, max_draws=64)
        with np.errstate(all="ignore"):
            ratio = np.log(pred["predictive"].to_numpy() / pred["value"].to_numpy())
        frame = pd.DataFrame({"target": pred["target"].to_numpy(), "z": ratio})
        # A member far in the tails can overflow its prediction (a cross law on few runs):
        # its ratio is not a noise draw, so it is left out rather than turning sigma_t NaN.
        frame = frame[np.isfinite(frame["z"])]
        mad = frame.groupby("target", sort=False)["z"].agg(
            lambda z: 1.4826 * np.median(np.abs(z - np.median(z)))
        )
        sigma = mad.reindex(self.targets).to_numpy(dtype=float)
        if not np.isfinite(sigma).any():
            raise ProposalError("the posterior predicts no finite losses at the observed runs")
        return np.where(np.isfinite(sigma), sigma, np.nanmedian(sigma))


class LawAverageModel(LogLossEnsemble):
    """Several laws' posteriors over the same runs as one ensemble (module docstring).

    Args:
        parts: (posterior, weight) per law; weights are normalised, and a law whose share
            of ``max_draws`` rounds to no member is left out.
        step, max_draws: as ``LawEnsembleModel``; D = ``max_draws`` members in all.
    """

    def __init__(
        self,
        parts: Sequence[tuple[Any, float]],
        step: float | None = None,
        *,
        model_size: float | None = None,
        max_draws: int = 256,
    ) -> None:
        super().__init__()
        weights = np.array([float(w) for _, w in parts])
        if not np.all(np.isfinite(weights)) or (weights < 0).any() or not weights.sum() > 0:
            raise ValueError(f"law weights must be finite and non-negative, got {weights}")
        members = np.round(weights / weights.sum() * max_draws).astype(int)
        self.parts = [
            LawEnsembleModel(post, step, model_size=model_size, max_draws=int(n))
            for (post, _), n in zip(parts, members, strict=True)
            if n > 0
        ]
        first = self.parts[0]
        for part in self.parts[1:]:
            if part.domains != first.domains or part.targets != first.targets:
                raise ValueError("the laws' posteriors are over different domains or targets")
        self.step = step
        self.domains, self.targets = first.domains, first.targets
        self.ensemble_size = sum(part.ensemble_size for part in self.parts)

    def log_loss(
        self, r: Tensor, step: float | None = None, model_size: float | None = None
    ) -> Tensor:
        """(D, P, T): each law's members in turn."""
        return torch.cat([part.log_loss(r, step, model_size) for part in self.parts])

    def member_optima(self, w: np.ndarray, step: float | None, constraints: Any) -> np.ndarray:
        if self.optima is None:
            parts = [part.member_optima(w, step, constraints) for part in self.parts]
            self.optima = np.concatenate(parts)
        return self.optima

    def noise_scale(self) -> np.ndarray:
        """The laws' sigma_t averaged by their number of members."""
        sigmas = [part.noise_scale() for part in self.parts]
        return np.average(sigmas, axis=0, weights=[part.ensemble_size for part in self.parts])


def observed_log_losses(
    obs: Any, targets: list[str], step: float | None, posterior: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(P, M) mixtures and (P, T) observed log losses of the runs at the target step
    (runs with a step axis: their row at the target, else the reference step)."""
    if obs.has_steps and step is None:
        step = posterior.reference_step
    r, y, names = run_table(obs, step)
    order = [names.index(t) for t in targets]
    return r, np.log(y[:, order])


def ensemble_model(
    fitted: Any,
    step: float | None,
    *,
    model_size: float | None = None,
    max_draws: int = 256,
    discrepancy: bool = False,
    seed: int = 0,
) -> tuple[Any, LogLossEnsemble]:
    """The BoTorch model of a posterior or of a ``LawAverage``, and the posterior whose runs,
    domains and steps a proposal reads (a law average's heaviest law: all see the same runs)."""
    posterior = fitted
    at = {"model_size": model_size, "max_draws": max_draws}
    if isinstance(fitted, LawAverage):
        parts = fitted.parts()
        for part, _ in parts:
            check_posterior(part)
        if len(parts) > 1:
            if discrepancy:
                raise ProposalError(
                    "the GP discrepancy term is fitted to one law's residuals: propose over "
                    "one law's posterior to use it, not over an average of laws"
                )
            return parts[0][0], LawAverageModel(parts, step, **at)
        posterior = parts[0][0]
    check_posterior(posterior)
    return posterior, LawEnsembleModel(posterior, step, discrepancy=discrepancy, seed=seed, **at)
