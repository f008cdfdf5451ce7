"""Oracles: what a proxy run would have measured, for benchmarking proposers without a GPU.

An oracle answers ``observe(mixtures)`` with a tidy observation table (as proxy training
would), knows the true noise-free objective of any mixture, and the best achievable value,
so the simple regret of a recommended mixture is ``objective(r) - best_value``.

- ``SyntheticOracle``: the own-share or the cross-domain BiMix law with known parameters
  (``bayesmix.laws.formulas``, the one definition of each law), multiplicative log-normal
  noise at the level measured on RegMix's runs, and a step axis.
- ``RegMixLandscape``: a smooth model of all 768 RegMix runs (1M parameters): the
  cross-domain law fitted by least squares plus a GP on its residuals, queried anywhere.
- ``PoolOracle``: the 768 measured RegMix runs themselves; proposals must come from the pool.

The objective is the weighted mean of target losses (equal weights by default); lower is
better. Every oracle's optimum is found once by ``global_minimum`` (documented there).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from bayesmix.laws import formulas
from bayesmix.mixtures import tidy_frame
from bayesmix.observations import Observations, ratio_column
from bayesmix.posterior import _as  # one conversion of law parameters to xp arrays
from bayesmix.proposers.base import run_table

log = logging.getLogger(__name__)

# Log-scale observation noise of RegMix's 1M-parameter runs: the per-target residual standard
# deviation left by RegMix's landscape model (cross-domain law + GP, fitted to all 768 runs),
# median over the 13 targets (0.0265; `RegMixLandscape(...).state["info"]` has each). Law
# misfit is in it too, so it bounds the seed noise from above.
REGMIX_LOG_NOISE = 0.026
REFERENCE_STEP = 10_000.0  # the synthetic target run length (steps)


class Oracle(Protocol):
    """Ground truth for a benchmark: observations on demand, true objective, optimum."""

    name: str
    domains: list[str]
    targets: list[str]
    natural: dict[str, float]
    weights: np.ndarray  # over targets, summing to 1
    best_value: float
    best_mixture: np.ndarray

    def objective(self, r: np.ndarray) -> np.ndarray:
        """True noise-free objective at mixtures r (P, M) -> (P,)."""
        ...

    def observe(
        self, r: np.ndarray, rng: np.random.Generator, run_ids: list[str], **kw: Any
    ) -> pd.DataFrame:
        """The tidy table proxy runs at mixtures r would produce."""
        ...


# ------------------------------------------------------------------------- global search
def global_minimum(
    objective: Callable[[Any], Any],
    m: int,
    *,
    seed: int = 0,
    natural: np.ndarray | None = None,
    extra_starts: np.ndarray | None = None,
    n_random: int = 4096,
    n_refine: int = 16,
) -> tuple[np.ndarray, float]:
    """Global minimum of a smooth objective over the simplex, found once per oracle.

    objective: torch (P, M) -> (P,), differentiable. The search: ``n_random`` points (the
    vertices, the centre, ``natural`` and ``extra_starts``, then Dirichlet draws at strengths
    0.1 to 10 m around the centre and around ``natural``) are evaluated; the best
    ``n_refine`` distinct ones are refined by SLSQP (scipy; exact gradients from torch,
    constraint sum r = 1, bounds 0 <= r <= 1); the best refined point is the optimum.
    """
    import torch
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    centre = np.full(m, 1.0 / m)
    starts = [np.eye(m), centre[None]]
    if natural is not None:
        starts.append(natural[None])
    if extra_starts is not None:
        starts.append(np.atleast_2d(extra_starts))
    grid = np.logspace(-1, np.log10(10 * m), 12)
    n_each = max(1, (n_random - sum(len(s) for s in starts)) // 2)
    for base in (centre, natural if natural is not None else centre):
        conc = np.maximum(rng.choice(grid, size=n_each)[:, None] * base[None] * m, 1e-3)
        g = rng.gamma(conc)
        starts.append(g / g.sum(axis=1, keepdims=True))
    pts = np.concatenate(starts)
    pts = pts[np.isfinite(pts).all(axis=1)]
    with torch.no_grad():
        vals = np.concatenate(
            [
                objective(torch.as_tensor(c, dtype=torch.float64)).numpy()
                for c in np.array_split(pts, max(1, len(pts) // 512))
            ]
        )
    order = np.argsort(vals)
    chosen: list[np.ndarray] = []
    for i in order:
        if all(np.abs(pts[i] - c).sum() > 1e-3 for c in chosen):
            chosen.append(pts[i])
        if len(chosen) == n_refine:
            break

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        xt = torch.as_tensor(x, dtype=torch.float64).clamp_min(0.0).requires_grad_(True)
        v = objective(xt[None])[0]
        (g,) = torch.autograd.grad(v, xt)
        return float(v.detach()), g.numpy()

    best_x, best_v = pts[order[0]], float(vals[order[0]])
    for x0 in chosen:
        res = minimize(
            fun,
            x0,
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * m,
            constraints=[
                {"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones(m)}
            ],
            options={"maxiter": 500, "ftol": 1e-12},
        )
        x = np.clip(res.x, 0.0, None)
        x = x / x.sum()
        with torch.no_grad():
            v = float(objective(torch.as_tensor(x[None], dtype=torch.float64))[0])
        if v < best_v:
            best_x, best_v = x, v
    return best_x, best_v


def cached_optimum(
    cache: str | Path | None, key: str, search: Callable[[], tuple[np.ndarray, float]]
) -> tuple[np.ndarray, float]:
    """``search()`` once per key; results kept in a JSON file (global searches are slow)."""
    if cache is None:
        return search()
    path = Path(cache)
    table = json.loads(path.read_text()) if path.exists() else {}
    if key not in table:
        x, v = search()
        table = json.loads(path.read_text()) if path.exists() else {}
        table[key] = {"mixture": np.asarray(x).tolist(), "value": float(v)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(table))
        tmp.replace(path)
    return np.asarray(table[key]["mixture"]), float(table[key]["value"])


# ---------------------------------------------------------------------------- synthetic
class _WeightedObjective:
    """The objective of an oracle with a ``log_loss`` (numpy or torch) and target ``weights``:
    F(r) = sum_t w_t exp(log L_t(r)), the noise-free weighted loss (lower is better)."""

    weights: np.ndarray

    def log_loss(self, r: Any) -> Any:
        raise NotImplementedError

    def torch_objective(self, r: Any) -> Any:
        import torch

        w = torch.as_tensor(self.weights, dtype=r.dtype)
        return torch.exp(self.log_loss(r)) @ w

    def objective(self, r: np.ndarray) -> np.ndarray:
        return np.exp(self.log_loss(np.atleast_2d(r))) @ self.weights


@dataclass
class SyntheticOracle(_WeightedObjective):
    """A known law with known parameters: the own-share or the cross-domain BiMix law.

    Parameters are drawn once from ``world_seed`` (one target per domain):
    log K_t ~ log U(1.5, 3) nats, own exponent alpha_t ~ LogNormal(log 0.05, 0.5),
    eps_t = 0.005; for the cross law also alpha_tj = a_j + d_tj (j != own(t)) with a domain
    effect a_j ~ N(c, c) shared by all targets and d_tj ~ N(0, c), c = 0.05 / m, so that the
    cross terms together weigh about as much as the own term at any m (negative: domain j
    hurts target t); the step law f_t ~ U(0.3, 0.6), beta_t ~ U(0.3, 0.7) at steps relative
    to ``REFERENCE_STEP``; natural proportions ~ normalised LogNormal(0, 1). Observations get
    log-normal noise of scale ``noise`` (RegMix's level by default), independent per row.

    step_drift > 0 breaks the law's separation of mixture and training progress: target t's
    mixture term is scaled by s_rel^gamma_t, gamma_t ~ N(0, step_drift), so a short run
    shows a domain's effect weaker or stronger than the target run does (the target step,
    hence the optimum, is unchanged). A world for asking whether short runs mislead.
    """

    m: int
    law: str = "bimix"
    world_seed: int = 0
    noise: float = REGMIX_LOG_NOISE
    reference_step: float = REFERENCE_STEP
    step_drift: float = 0.0
    domains: list[str] = field(default_factory=list)
    optimum_cache: str | Path | None = None
    params: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.law not in ("bimix", "bimix-cross"):
            raise ValueError(f"law must be 'bimix' or 'bimix-cross', got {self.law!r}")
        if self.m < 2:
            raise ValueError(f"a synthetic world needs at least 2 domains, got {self.m}")
        self.name = f"synthetic-{self.law}-{self.m}"
        if not self.domains:
            self.domains = [f"d{j:02d}" for j in range(self.m)]
        rng = np.random.default_rng([self.world_seed, self.m, self.law == "bimix-cross"])
        m = self.m
        nat = rng.lognormal(0.0, 1.0, m)
        self.natural = dict(zip(self.domains, nat / nat.sum(), strict=True))
        own = np.eye(m)
        alpha = np.diag(rng.lognormal(np.log(0.05), 0.5, m))
        if self.law == "bimix-cross":
            c = 0.05 / m
            shared = rng.normal(c, c, m)
            dev = rng.normal(0.0, c, (m, m))
            alpha = alpha + (1 - own) * (shared[None, :] + dev)
        self.params = {
            "logk": np.log(rng.uniform(1.5, 3.0, m)),
            "alpha": alpha,
            "eps": np.full(m, 0.005),
            "frac": rng.uniform(0.3, 0.6, m),
            "beta": rng.uniform(0.3, 0.7, m),
        }
        drift_rng = np.random.default_rng([self.world_seed, m, self.law == "bimix-cross", 7])
        self.params["gamma"] = drift_rng.normal(0.0, 1.0, m) * self.step_drift
        self.targets = list(self.domains)
        self.weights = np.full(m, 1.0 / m)
        self.best_mixture, self.best_value = cached_optimum(
            self.optimum_cache,
            f"{self.name}/world{self.world_seed}",
            lambda: global_minimum(
                self.torch_objective, m, seed=self.world_seed, natural=self._natural_array()
            ),
        )

    def _natural_array(self) -> np.ndarray:
        return np.array([self.natural[d] for d in self.domains])

    def log_loss(self, r: Any, steps: Any = None) -> Any:
        """Noise-free log loss (P, T) at mixtures r (P, M) and steps (P,) (None: reference)."""
        xp = formulas.namespace(r)
        p = {k: _as(xp, v, r) for k, v in self.params.items()}
        s_rel = None if steps is None else _as(xp, np.asarray(steps) / self.reference_step, r)
        if s_rel is None or self.step_drift == 0:
            return formulas.cross_log_loss(
                xp, p["logk"], p["alpha"], p["eps"], r, s_rel, p["frac"], p["beta"]
            )
        mixture_term = p["logk"] - formulas.cross_log_loss(xp, p["logk"], p["alpha"], p["eps"], r)
        scale = s_rel[:, None] ** p["gamma"][None, :]
        step_term = formulas.log_step_factor(xp, p["frac"], p["beta"], s_rel)
        return p["logk"] - scale * mixture_term + step_term

    def observe(
        self,
        r: np.ndarray,
        rng: np.random.Generator,
        run_ids: list[str],
        steps: np.ndarray | None = None,
        checkpoints: int = 1,
    ) -> pd.DataFrame:
        """Losses of runs at mixtures r; with ``steps`` (run lengths), ``checkpoints`` evenly
        spaced evaluations per run up to its length (a run's curve is free to record)."""
        r = np.atleast_2d(r)
        if steps is None:
            vals = np.exp(self.log_loss(r) + self.noise * rng.standard_normal((len(r), self.m)))
            return tidy_frame(r, vals, self.domains, self.targets, run_ids)
        steps = np.broadcast_to(np.asarray(steps, dtype=float), (len(r),))
        frac = np.arange(1, checkpoints + 1) / checkpoints
        at = (steps[:, None] * frac[None, :]).reshape(-1)
        rr = np.repeat(r, checkpoints, axis=0)
        ids = list(np.repeat(np.asarray(run_ids, dtype=object), checkpoints))
        clean = self.log_loss(rr, at)
        vals = np.exp(clean + self.noise * rng.standard_normal(clean.shape))
        return tidy_frame(rr, vals, self.domains, self.targets, ids, steps=at)


# ------------------------------------------------------------------------------ RegMix
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
class RegMixLandscape(_WeightedObjective):
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


def weights_mapping(oracle: Any) -> Mapping[str, float]:
    """The oracle's objective weights as the target -> weight mapping posteriors take."""
    return {t: float(w) for t, w in zip(oracle.targets, oracle.weights, strict=True) if w > 0}
