"""RegMix's 768 runs (1M parameters) as benchmark oracles: a smooth landscape, and the pool.

- ``RegMixLandscape``: the cross-domain law fitted by least squares plus a GP on its
  residuals, queried anywhere on the simplex.
- ``PoolOracle``: the measured runs themselves; proposals must come from the pool.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesmix.acquisition.base import run_table
from bayesmix.benchmarks.oracles import WeightedObjective, global_minimum
from bayesmix.laws import formulas
from bayesmix.mixtures import tidy_frame
from bayesmix.observations import Observations, ratio_column

log = logging.getLogger(__name__)

REGMIX_FILES = {
    "train": ("train_mixture_1m.csv", "train_pile_loss_1m.csv"),
    "test": ("test_mixture_1m.csv", "test_pile_loss_1m.csv"),
}


def load_regmix_runs(data_dir: str | Path) -> Observations:
    """All 768 RegMix 1M runs (512 train + 256 test) as one Observations table."""
    from bayesmix.datasets import load_regmix

    data_dir = Path(data_dir)
    parts = [
        load_regmix(data_dir / mix, data_dir / loss, prefix=f"regmix-{split}")
        for split, (mix, loss) in REGMIX_FILES.items()
    ]
    return parts[0].concat(parts[1])


def regmix_natural(data_dir: str | Path, domains: list[str]) -> dict[str, float]:
    """The Pile's natural proportions (DoReMi's 50k-vocab weights) over RegMix's domains."""
    from bayesmix.datasets import pile_natural_proportions

    path = Path(data_dir).parent / "doremi" / "pile_baseline_50kvocab.json"
    p = pile_natural_proportions(path, domains)["natural_proportion"]
    return {d: float(p[d]) for d in domains}


@dataclass
class RegMixLandscape(WeightedObjective):
    """A smooth landscape of RegMix's loss: L_t(r) = exp(law_t(r) + g(r)).

    law_t: the cross-domain law (``formulas.cross_log_loss``) fitted by least squares on the
    log losses of all 768 runs (L-BFGS, a small ridge on the exponents, eps_j learned);
    g: the posterior mean of a GP (BoTorch ``SingleTaskGP``, Matern-5/2 ARD) on the law's
    residual of the log objective (the mean of the 13 losses, or ``target``'s loss alone),
    added to every target so that the objective follows the data where the law misses it.
    Observations add log-normal noise with each target's unexplained residual spread. The
    fitted state is cached as a torch file (``cache``, one per objective), rebuilt from
    ``data_dir`` when absent.
    """

    data_dir: str | Path
    cache: str | Path | None = None
    target: str | None = None
    state: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.name = "regmix-landscape" + (f"-{self.target}" if self.target else "")
        self.state = self._load_or_fit()
        self.domains = list(self.state["domains"])
        self.targets = list(self.state["targets"])
        if self.target is not None and self.target not in self.targets:
            raise ValueError(f"unknown target {self.target!r}; have {self.targets}")
        self.weights = np.array(
            [1.0 if self.target in (None, t) else 0.0 for t in self.targets], dtype=float
        )
        self.weights /= self.weights.sum()
        self.natural = regmix_natural(self.data_dir, self.domains)
        self._gp = self._build_gp()
        key = "best" if self.target is None else f"best_{self.target}"
        if key not in self.state:
            started = time.process_time()
            x, v = global_minimum(
                self.torch_objective,
                len(self.domains),
                natural=np.array([self.natural[d] for d in self.domains]),
                extra_starts=self.state["train_x"].numpy(),
            )
            self.state[key] = {"mixture": x, "value": v, "cpu_s": time.process_time() - started}
            self._save()
        self.best_mixture = np.asarray(self.state[key]["mixture"])
        self.best_value = float(self.state[key]["value"])

    # ------------------------------------------------------------------ fitting
    def _load_or_fit(self) -> dict[str, Any]:
        import torch

        if self.cache is not None:
            path = Path(self.cache)
            if self.target is not None:
                path = path.with_name(f"{path.stem}_{self.target}{path.suffix}")
            self.cache = path
            if path.exists():
                state = torch.load(path, weights_only=False)
                if len(state["law"]["eps"]) == len(state["domains"]):
                    return state
                # Written before the cross law's floors became per domain: refit.
        obs = load_regmix_runs(self.data_dir)
        r, y, targets = run_table(obs)
        if self.target is not None and self.target not in targets:
            raise ValueError(f"unknown target {self.target!r}; have {targets}")
        w = np.array([1.0 if self.target in (None, t) else 0.0 for t in targets])
        state = fit_landscape(r, np.log(y), obs.domains, targets, w / w.sum())
        self.state = state
        self._save()
        return state

    def _save(self) -> None:
        import torch

        if self.cache is None:
            return
        path = Path(self.cache)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state, tmp)
        tmp.replace(path)

    def _build_gp(self) -> Any:
        from botorch.models import SingleTaskGP

        gp = SingleTaskGP(self.state["train_x"], self.state["train_res"])
        gp.load_state_dict(self.state["gp_state"])
        gp.eval()
        return gp

    # ------------------------------------------------------------------ queries
    def log_loss(self, r: Any) -> Any:
        """Noise-free log loss (P, T); torch in, torch out (numpy in, numpy out)."""
        import torch

        as_numpy = not isinstance(r, torch.Tensor)
        rt = torch.as_tensor(np.asarray(r) if as_numpy else r, dtype=torch.float64)
        p = self.state["law"]
        law = formulas.cross_log_loss(torch, p["logk"], p["alpha"], p["eps"], rt)
        with torch.no_grad() if as_numpy else _nullcontext():
            shift = self._gp.posterior(rt).mean  # (P, 1): the same for every target
        out = law + shift
        return out.detach().numpy() if as_numpy else out

    def observe(
        self, r: np.ndarray, rng: np.random.Generator, run_ids: list[str], **_: Any
    ) -> pd.DataFrame:
        r = np.atleast_2d(r)
        clean = self.log_loss(r)
        noise = self.state["noise"][None, :] * rng.standard_normal(clean.shape)
        return tidy_frame(r, np.exp(clean + noise), self.domains, self.targets, run_ids)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def fit_landscape(
    r: np.ndarray,
    log_y: np.ndarray,
    domains: list[str],
    targets: list[str],
    weights: np.ndarray,
    ridge: float = 1e-3,
) -> dict[str, Any]:
    """Least-squares cross-domain law + GP on its objective residual (``RegMixLandscape``)."""
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    started = time.process_time()
    x = torch.as_tensor(r, dtype=torch.float64)
    y = torch.as_tensor(log_y, dtype=torch.float64)
    t, m = y.shape[1], x.shape[1]
    logk = y.mean(0).clone().requires_grad_(True)
    alpha = torch.zeros(t, m, dtype=torch.float64, requires_grad=True)
    log_eps = torch.full((m,), np.log(1e-2), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [logk, alpha, log_eps], max_iter=3000, line_search_fn="strong_wolfe", tolerance_grad=1e-9
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        pred = formulas.cross_log_loss(torch, logk, alpha, log_eps.exp(), x)
        loss = ((pred - y) ** 2).mean() + ridge * (alpha**2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    law = {"logk": logk.detach(), "alpha": alpha.detach(), "eps": log_eps.exp().detach()}
    w = torch.as_tensor(weights, dtype=torch.float64)
    with torch.no_grad():
        law_log = formulas.cross_log_loss(torch, law["logk"], law["alpha"], law["eps"], x)
        res_obj = (y.exp() @ w).log() - (law_log.exp() @ w).log()
    gp = SingleTaskGP(x, res_obj[:, None])
    fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
    gp.eval()
    with torch.no_grad():
        shift = gp.posterior(x).mean
    unexplained = (y - law_log - shift).numpy()
    noise = unexplained.std(axis=0)
    obj_left = (res_obj[:, None] - shift).std().item()
    info = {
        "law_rmse_per_target": dict(
            zip(targets, (y - law_log).pow(2).mean(0).sqrt().numpy().round(5).tolist(), strict=True)
        ),
        "noise_per_target": dict(zip(targets, noise.round(5).tolist(), strict=True)),
        "median_noise": float(np.median(noise)),
        "objective_residual_std": {"law": float(res_obj.std()), "law+gp": obj_left},
        "fit_cpu_s": time.process_time() - started,
    }
    log.info("RegMix landscape fitted: %s", json.dumps(info))
    return {
        "domains": list(domains),
        "targets": list(targets),
        "law": law,
        "train_x": x,
        "train_res": res_obj[:, None],
        "gp_state": gp.state_dict(),
        "noise": noise,
        "info": info,
    }


# --------------------------------------------------------------------------------- pool
@dataclass
class PoolOracle:
    """The measured RegMix runs: proposals are pool rows, the truth is their measured loss."""

    data_dir: str | Path
    target: str | None = None

    def __post_init__(self) -> None:
        self.name = "regmix-pool" + (f"-{self.target}" if self.target else "")
        obs = load_regmix_runs(self.data_dir)
        self.pool_x, self.pool_y, self.targets = run_table(obs)
        self.domains = obs.domains
        if self.target is not None and self.target not in self.targets:
            raise ValueError(f"unknown target {self.target!r}; have {self.targets}")
        w = np.array([1.0 if self.target in (None, t) else 0.0 for t in self.targets])
        self.weights = w / w.sum()
        self.natural = regmix_natural(self.data_dir, self.domains)
        self.candidates = pd.DataFrame(self.pool_x, columns=[ratio_column(d) for d in self.domains])
        values = self.pool_y @ self.weights
        self.best_index = int(np.argmin(values))
        self.best_value = float(values[self.best_index])
        self.best_mixture = self.pool_x[self.best_index]

    def _rows(self, r: np.ndarray) -> np.ndarray:
        d = np.abs(self.pool_x[None, :, :] - np.atleast_2d(r)[:, None, :]).sum(-1)
        rows = d.argmin(axis=1)
        if (d[np.arange(len(rows)), rows] > 1e-6).any():
            raise ValueError("the pool oracle answers only for mixtures of its pool")
        return rows

    def objective(self, r: np.ndarray) -> np.ndarray:
        return self.pool_y[self._rows(r)] @ self.weights

    def observe(
        self, r: np.ndarray, rng: np.random.Generator, run_ids: list[str], **_: Any
    ) -> pd.DataFrame:
        rows = self._rows(r)
        return tidy_frame(self.pool_x[rows], self.pool_y[rows], self.domains, self.targets, run_ids)
