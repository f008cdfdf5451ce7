"""Acquisition functions over the ensemble of posterior draws (``model.py``).

The user's objective is F(x) = sum_t w_t L_t(x) at the target step (lower is better); member d
of the ensemble gives F_d(x).

- ``qlognei``: BoTorch's qLogNoisyExpectedImprovement on -F, the observed runs as baseline.
- ``optimum-variance``: the expected reduction of the posterior variance of the optimal
  mixture r* after observing the batch (``qOptimumVarianceReduction``): information aimed
  at where the optimum is, not at the loss.
- ``EnsembleMean``: -E_d[F_d(x)], whose maximiser is the recommended mixture.

``qlognei`` and ``optimum_variance`` are entries of the registry (``bayesmix.acquisition``):
each chooses a batch for a ``Problem``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.objective import LinearMCObjective
from botorch.sampling.index_sampler import IndexSampler
from botorch.utils.transforms import t_batch_mode_transform
from torch import Tensor

from bayesmix.acquisition.model import DTYPE, LogLossEnsemble
from bayesmix.acquisition.optim import Problem, maximise


def member_objective(model: LogLossEnsemble, X: Tensor, w: Tensor) -> Tensor:
    """F_d(x) = sum_t w_t L_t(x; theta_d): (D, P) for mixtures X (P, M)."""
    return model.log_loss(X).exp() @ w


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
        # Steps at which a scored run is observed (None: the target step) and its model size
        # (None: the target size); cost-aware proposals set them per run length and size.
        self.checkpoints: tuple[float | None, ...] = (None,)
        self.run_size: float | None = None
        d = model.ensemble_size
        self.extra_gram = torch.zeros(d, d, dtype=DTYPE)  # runs added with other checkpoints
        self.set_X_pending(X_pending)

    def features(
        self,
        X: Tensor,
        checkpoints: Sequence[float | None] | None = None,
        model_size: float | None = None,
    ) -> Tensor:
        """Z for a batch X (b x q x M): b x D x (q T c), the member-centred log losses the
        runs would show at each of their c checkpoints (None: the target step), over
        sigma_t sqrt(D). Without arguments: this function's own checkpoints and run size."""
        if checkpoints is None:
            checkpoints, model_size = self.checkpoints, self.run_size
        b, q, m = X.shape
        flat = X.reshape(-1, m)
        log_f = torch.stack(
            [self.model.log_loss(flat, step=s, model_size=model_size) for s in checkpoints], -1
        )
        d = log_f.shape[0]  # log_f: D x bq x T x c
        z = (log_f - log_f.mean(0)) / (self.noise[:, None] * np.sqrt(d))
        return z.reshape(d, b, -1).transpose(0, 1)

    def set_X_pending(self, X_pending: Tensor | None = None) -> None:
        """Pending runs observed at this function's checkpoints (see ``add_pending``)."""
        self.X_pending = None if X_pending is None else X_pending.detach()
        self.pending_gram = self.extra_gram
        if X_pending is not None:
            gram = self._gram(self.X_pending, self.checkpoints, self.run_size)
            self.pending_gram = self.extra_gram + gram

    def add_pending(
        self, X: Tensor, checkpoints: Sequence[float | None], model_size: float | None = None
    ) -> None:
        """Pending runs with checkpoints and a model size of their own (runs of another
        length or size; None: the target step or size)."""
        self.extra_gram = self.extra_gram + self._gram(X, checkpoints, model_size)
        self.set_X_pending(self.X_pending)

    def _gram(
        self, X: Tensor, checkpoints: Sequence[float | None], model_size: float | None
    ) -> Tensor:
        """Z Z^T (D x D) of runs X (n x M) of ``model_size`` observed at ``checkpoints``."""
        with torch.no_grad():
            z = self.features(X[None], checkpoints, model_size)[0]
        return z @ z.T

    def removed(self, gram: Tensor) -> Tensor:
        """tr(R^T G (G + I)^{-1} R) for Gram matrices G = Z Z^T (b x D x D): the variance
        of r* the runs behind Z remove (Gram matrices of runs observed together add up)."""
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        # G (G + I)^{-1} R = R - (G + I)^{-1} R. G + I is positive definite: a Cholesky
        # solve, which also avoids batched LU (torch.linalg.solve), wrong on MKL with
        # several threads (pytorch/pytorch#142815: "Pivots given to lu_solve...").
        factor = torch.linalg.cholesky(gram + eye)
        solved = torch.cholesky_solve(self.optima_c.expand(len(gram), -1, -1), factor)
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


def expected_gain(model: LogLossEnsemble, X: Tensor, x_obs: Tensor, w: Tensor) -> np.ndarray:
    """E_d[max(0, min_obs F_d - F_d(x))] per proposal: expected improvement over the best run."""
    with torch.no_grad():
        f_new = member_objective(model, X, w)  # D x q
        best = member_objective(model, x_obs, w).amin(-1, keepdim=True)  # D x 1
        return (best - f_new).clamp_min(0.0).mean(0).numpy()


# ------------------------------------------------------------------------ registry entries
def qlognei(problem: Problem, q: int) -> tuple[Tensor, Tensor]:
    """q runs by qLogNEI: the observed runs are the baseline, lower loss is better."""
    settings = problem.settings
    acq = qLogNoisyExpectedImprovement(
        model=problem.model,
        X_baseline=problem.x_obs,
        sampler=IndexSampler(torch.Size([settings.mc_samples]), seed=problem.seed),
        objective=LinearMCObjective(-problem.w),  # BoTorch maximises; lower loss is better
        prune_baseline=True,
        cache_root=False,
    )
    return maximise(acq, problem, q)


def optimum_variance(problem: Problem, q: int) -> tuple[Tensor, Tensor]:
    """q runs that remove the most variance of the optimal mixture r*."""
    return maximise(optimum_variance_function(problem), problem, q)


def optimum_variance_function(problem: Problem) -> qOptimumVarianceReduction:
    """``qOptimumVarianceReduction`` for the problem: the members' optima and the noise
    sigma_t read off the posterior predictive."""
    return qOptimumVarianceReduction(
        problem.model,
        torch.tensor(problem.member_optima(), dtype=DTYPE),  # a copy: the model keeps its own
        torch.tensor(problem.model.noise_scale(), dtype=DTYPE),
    )
