"""The multi-fidelity GP baseline (BoTorch): each step cost-aware multi-fidelity max-value
entropy search chooses the proxy size, Thompson sampling at the target size the mixtures.

Model. One ``SingleTaskMultiFidelityGP`` (Wu et al. 2019's linear truncated fidelity kernel,
Matern-5/2 ARD, BoTorch's priors, hyperparameters by maximum marginal likelihood, started
from the previous step's) on x = (r, s): the mixture and the fidelity

    s(N) = log(N / N_min) / log(N_target / N_min)  in [0, 1],

0 at the smallest proxy, 1 at the target size (never run). The output is y = -log F_obs, F_obs
a run's observed objective (the weighted mean of its target losses), standardized
(``Standardize``): the log keeps the sizes' level shift (4.4 nats at 1M, 3.2 at 60M) from
dwarfing the mixture effects and has F's argmin at every size; the sign makes better a
maximum, as BoTorch's acquisitions expect.

Inputs. The GP's input transform (``mixture_features``) maps the first m inputs z to the
mixture r = z / sum(z), then to log(r_j + c) rescaled to [0, 1], c = ``PSEUDO_COUNT``: the
log-ratio view of compositional data (Aitchison), c the share below which a domain counts as
absent. On raw shares the GP's optimum after 300 uniform 1M runs was worse than the uniform
mixture (regret 0.19 at 600M against 0.094; 0.04 after 600 runs); on log shares 0.024.
Because of the normalization the posterior mean is optimized over the box [0, 1]^m (no
equality constraint), every mixture is reachable (z = r), and the stored training mixtures
are unchanged.

One step (after the first batch):

1. Size: for every proxy size the budget can still pay for, the most information one run
   there gives about the maximum at the target fidelity per unit cost, over the step's
   candidate mixtures: ``qMultiFidelityMaxValueEntropy`` (Takeno et al. 2020; max values
   sampled over the candidates at s = 1, ``project_to_target_fidelity``) weighted by
   ``InverseCostWeightedUtility``, cost = the run's FLOPs 6 N(s) D in runs at N_min,
   (N_target / N_min)^s (exact at every s, where ``AffineFidelityCostModel`` is linear in s).
   The step runs at the size with the most information per FLOP (the smallest where every
   estimate is below zero, Monte Carlo noise around no information).
2. Mixtures: Thompson sampling at the target fidelity (``MaxPosteriorSampling`` without
   replacement over ``candidates`` mixtures: half uniform on the simplex, half perturbations
   of the runs with the best posterior mean at s = 1): each run is the argmax of one joint
   posterior draw of f(., s = 1), trained at the chosen size.
3. Batch size: the FLOPs of q runs at the largest proxy size, in runs of the chosen size,
   at most ``max_batch`` (q at the largest proxy; min(q C_large / C_small, max_batch) at a
   smaller one), so that cheap steps are not 60 times more numerous than dear ones.

Why not the knowledge gradient. ``qMultiFidelityKnowledgeGradient`` (BoTorch's tutorial
choice) was tried first, sequential greedy over the sizes as the tutorial does: 5-8 s per run
and size at 40 runs (17 domains, 2 CPU cores, 16-64 fantasies), 35 s per size at 160 runs,
and its fantasy models refactor the whole kernel matrix for every fantasy, so it grows as
n^3 per evaluation. A budget of 18 runs at 60M buys ~1000 runs at 1M, which the cost-aware
choice prefers (MES per FLOP favoured 1M by 40-180x in every step measured), so that the KG would
have taken hours per trajectory. MES is analytic per point and scored on the candidates.

Recommendation after every batch: argmax_r of the posterior mean at s = 1 (the lowest
predicted objective at the target size), optimized from ``current_restarts`` starts.

First batch: ``init_small`` mixtures uniform on the simplex (Dirichlet(1), space-filling) at
the smallest size (default 2(m+1)) plus ``init_large`` at each larger proxy size (default
2), so that the fidelity kernel sees how the sizes differ before the size choice weighs them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_SIZES = (1e6, 60e6)
PSEUDO_COUNT = 0.01  # shares below 1 % weigh in the GP's features as 1 % (log(0) otherwise)


@dataclass(frozen=True)
class GPSettings:
    """The baseline's knobs.

    num_mv_samples: max values sampled for MES (BoTorch's default). current_restarts,
    current_raw_samples: the maximum of the posterior mean at the target (BoTorch's
    multi-fidelity tutorials: 10, 1024), the recommendation. candidates: mixtures per step
    for Thompson sampling and the size choice. max_batch: most runs per step.
    init_small (None: 2(m+1)), init_large: the first batch.
    """

    num_mv_samples: int = 10
    current_restarts: int = 10
    current_raw_samples: int = 1024
    candidates: int = 4096
    max_batch: int = 64
    init_small: int | None = None
    init_large: int = 2


def fidelity(sizes: Any, smallest: float, target: float) -> np.ndarray:
    """s(N) = log(N / N_min) / log(N_target / N_min): 0 at the smallest proxy, 1 at the
    target size."""
    return np.log(np.asarray(sizes, dtype=float) / smallest) / np.log(target / smallest)


def mixture_features(m: int) -> Any:
    """The GP's input transform (module docstring): z -> r = z / sum(z) -> log(r + c) in
    [0, 1] on the first m columns; the fidelity column passes through."""
    import torch
    from botorch.models.transforms.input import InputTransform

    low, high = np.log(PSEUDO_COUNT), np.log(1.0 + PSEUDO_COUNT)

    class MixtureFeatures(InputTransform):
        def __init__(self) -> None:
            super().__init__()
            self.transform_on_train = True
            self.transform_on_eval = True
            self.transform_on_fantasize = True

        def transform(self, X: torch.Tensor) -> torch.Tensor:
            z = X[..., :m].clamp_min(0.0)
            r = z / z.sum(dim=-1, keepdim=True).clamp_min(1e-12)
            return torch.cat([(torch.log(r + PSEUDO_COUNT) - low) / (high - low), X[..., m:]], -1)

    return MixtureFeatures()


def fit_model(x: np.ndarray, y: np.ndarray, m: int, previous: Any = None) -> Any:
    """The multi-fidelity GP on inputs x (n, m + 1) = (mixture, fidelity) and outputs y (n,);
    the search for its hyperparameters starts from ``previous``'s (the last step's model),
    which a batch of new runs moves little: at 1000 runs a cold fit took ~20 s."""
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models.gp_regression_fidelity import SingleTaskMultiFidelityGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    model = SingleTaskMultiFidelityGP(
        torch.as_tensor(x, dtype=torch.float64),
        torch.as_tensor(y, dtype=torch.float64)[:, None],
        data_fidelities=[m],
        outcome_transform=Standardize(m=1),
        input_transform=mixture_features(m),
    )
    if previous is not None:
        # Hyperparameters only: the outcome transform's mean and scale are the new data's.
        hyper = {k: v for k, v in previous.state_dict().items() if "outcome_transform" not in k}
        model.load_state_dict(hyper, strict=False)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    return model


def _on_simplex(z: np.ndarray) -> np.ndarray:
    z = np.clip(z, 0.0, None)
    return z / z.sum(axis=-1, keepdims=True)


def _box(d: int) -> Any:
    import torch

    return torch.stack([torch.zeros(d), torch.ones(d)]).to(torch.float64)


def recommend(model: Any, m: int, settings: GPSettings, seed: int) -> tuple[np.ndarray, float]:
    """argmax_r of the posterior mean at the target fidelity (s = 1): the recommended mixture
    and the maximum."""
    from botorch.acquisition import PosteriorMean
    from botorch.acquisition.fixed_feature import FixedFeatureAcquisitionFunction
    from botorch.optim import optimize_acqf

    mean_at_target = FixedFeatureAcquisitionFunction(
        PosteriorMean(model), d=m + 1, columns=[m], values=[1.0]
    )
    z, value = optimize_acqf(
        mean_at_target,
        bounds=_box(m),
        q=1,
        num_restarts=settings.current_restarts,
        raw_samples=settings.current_raw_samples,
        options={"batch_limit": 10, "maxiter": 200, "seed": seed},
    )
    return _on_simplex(z.detach().numpy()[0]), float(value)


def mes_per_cost(
    model: Any,
    m: int,
    fidelities: Sequence[float],
    cost_ratio: float,
    pool: np.ndarray,
    settings: GPSettings,
) -> np.ndarray:
    """For each fidelity: the most information about the maximum at the target fidelity that
    one run there gives per unit cost, over the mixtures of ``pool``.

    BoTorch's ``qMultiFidelityMaxValueEntropy`` (max-value entropy search, Takeno et al.
    2020's multi-fidelity form: the mutual information between the run's observation at
    (r, s) and max_r f(r, 1), from max values sampled over ``pool`` at s = 1) weighted by
    ``InverseCostWeightedUtility``; cost_ratio = N_target / N_min, a run at fidelity s costs
    cost_ratio^s runs at N_min."""
    import torch
    from botorch.acquisition.cost_aware import InverseCostWeightedUtility
    from botorch.acquisition.max_value_entropy_search import qMultiFidelityMaxValueEntropy
    from botorch.acquisition.utils import project_to_target_fidelity
    from botorch.models.deterministic import GenericDeterministicModel

    log_ratio = float(np.log(cost_ratio))
    # A run's FLOPs in runs at the smallest size: exp(s log(N_target / N_min)).
    cost_model = GenericDeterministicModel(lambda X: torch.exp(log_ratio * X[..., m : m + 1]))

    def project(X: torch.Tensor) -> torch.Tensor:
        return project_to_target_fidelity(X=X, target_fidelities={m: 1.0}, d=m + 1)

    at_target = torch.as_tensor(np.column_stack([pool, np.ones(len(pool))]))
    with torch.no_grad():
        acq = qMultiFidelityMaxValueEntropy(
            model,
            candidate_set=at_target,
            num_mv_samples=settings.num_mv_samples,
            cost_aware_utility=InverseCostWeightedUtility(cost_model=cost_model),
            project=project,
        )
        values = []
        for s in fidelities:
            x = torch.as_tensor(np.column_stack([pool, np.full(len(pool), s)]))[:, None, :]
            values.append(max(float(acq(chunk).max()) for chunk in x.split(512)))
    return np.array(values)


def candidate_mixtures(
    model: Any, x: np.ndarray, m: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """n mixtures for Thompson sampling: half uniform on the simplex, half perturbations
    (Dirichlet around each, strength 50 to 500) of the 32 runs whose posterior mean at the
    target fidelity is highest: global coverage plus resolution where the optimum may be."""
    import torch

    with torch.no_grad():
        at_target = np.column_stack([x[:, :m], np.ones(len(x))])
        mean = model.posterior(torch.as_tensor(at_target)).mean.numpy().ravel()
    top = x[np.argsort(-mean)[:32], :m]
    n_local = n // 2
    centres = top[rng.integers(len(top), size=n_local)]
    strength = np.exp(rng.uniform(np.log(50.0), np.log(500.0), size=(n_local, 1)))
    local = rng.gamma(np.maximum(centres * strength, 1e-3))
    local = local / local.sum(axis=1, keepdims=True)
    return np.concatenate([rng.dirichlet(np.ones(m), n - n_local), local])


def thompson_mixtures(model: Any, candidates: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k distinct candidates, each the argmax of one joint posterior draw at s = 1."""
    import torch
    from botorch.generation.sampling import MaxPosteriorSampling

    torch.manual_seed(seed)
    x = torch.as_tensor(np.column_stack([candidates, np.ones(len(candidates))]))
    with torch.no_grad():
        chosen = MaxPosteriorSampling(model=model, replacement=False)(x, num_samples=k)
    return _on_simplex(chosen.numpy()[:, :-1])


def run_objective(frame: pd.DataFrame, oracle: Any, run_ids: Sequence[str]) -> np.ndarray:
    """Each run's observed objective: the weighted mean of its observed target losses."""
    wide = frame.pivot(index="run_id", columns="target", values="value")
    return wide.loc[list(run_ids), list(oracle.targets)].to_numpy() @ oracle.weights


def run_gp_baseline(
    oracle: Any,
    budget_flops: float,
    q: int,
    seed: int,
    sizes: Sequence[float] = DEFAULT_SIZES,
    target_size: float | None = None,
    settings: GPSettings | None = None,
) -> list[dict[str, Any]]:
    """Run the baseline on ``oracle`` (a ``SizeOracle``) until ``budget_flops`` training
    FLOPs are spent; one record per batch (the first batch included): cumulative FLOPs, runs
    per size, the recommended mixture and its regret at the target size, seconds.

    A step offers only the sizes the remaining budget can pay for, and trims its batch to
    what the budget still buys."""
    import torch

    settings = settings or GPSettings()
    target = float(target_size or oracle.target_size)
    sizes = sorted(float(s) for s in sizes)
    if any(s >= target for s in sizes):
        raise ValueError(f"proxy sizes {sizes} must be below the target size {target:g}")
    smallest, largest = sizes[0], sizes[-1]
    fids = fidelity(sizes, smallest, target)
    m = len(oracle.domains)
    noise_rng = np.random.default_rng([seed, 1])  # the oracle's observation noise
    rng = np.random.default_rng([seed, 2])  # the baseline's own draws
    torch.manual_seed(seed)

    model = None
    xs: list[np.ndarray] = []  # (mixture, fidelity) rows
    ys: list[float] = []
    run_sizes: list[float] = []
    spent = 0.0
    records: list[dict[str, Any]] = []

    def observe(r: np.ndarray, size: np.ndarray) -> None:
        nonlocal spent
        ids = [f"gp-{seed}-{len(ys) + i}" for i in range(len(r))]
        frame = oracle.observe(r, noise_rng, ids, model_sizes=size)
        xs.extend(np.column_stack([r, fidelity(size, smallest, target)]))
        ys.extend((-np.log(run_objective(frame, oracle, ids))).tolist())
        run_sizes.extend(size.tolist())
        spent += float(np.sum(oracle.flops(size)))

    started = time.perf_counter()
    n_small = settings.init_small if settings.init_small is not None else 2 * (m + 1)
    init_sizes = np.array([smallest] * n_small + list(sizes[1:]) * settings.init_large)
    keep = _within_budget(oracle.flops(init_sizes), budget_flops)
    if not keep.any():
        raise ValueError(f"budget {budget_flops:.3g} FLOPs buys no run of the first batch")
    observe(rng.dirichlet(np.ones(m), len(init_sizes))[keep], init_sizes[keep])
    step = {"size": "first batch", "mes_per_cost": None, "propose_s": time.perf_counter() - started}

    while True:
        fit_started = time.perf_counter()
        x, y = np.array(xs), np.array(ys)
        model = fit_model(x, y, m, model)
        fit_s = time.perf_counter() - fit_started
        rec_started = time.perf_counter()
        mixture, _ = recommend(model, m, settings, seed + len(records))
        rec_s = time.perf_counter() - rec_started
        sizes_run = np.array(run_sizes)
        records.append(
            {
                "batch": len(records),
                "flops": spent,
                "runs": {f"{s:g}": int(np.sum(sizes_run == s)) for s in sizes},
                "batch_size": step["size"],
                "mes_per_cost": step["mes_per_cost"],
                "mixture": mixture.round(6).tolist(),
                "regret": float(oracle.regret(mixture[None], target)[0]),
                "seconds": {"propose": step["propose_s"], "fit": fit_s, "recommend": rec_s},
            }
        )
        log.info(
            "gp-mf seed %d batch %d: %.3g FLOPs, runs %s, regret %.5f, MES/cost %s, %s",
            seed,
            len(records) - 1,
            spent,
            records[-1]["runs"],
            records[-1]["regret"],
            step["mes_per_cost"],
            {k: round(v, 1) for k, v in records[-1]["seconds"].items()},
        )
        remaining = budget_flops - spent
        affordable = [i for i, s in enumerate(sizes) if oracle.flops(s) <= remaining]
        if not affordable:
            return records
        prop_started = time.perf_counter()
        pool = candidate_mixtures(model, x, m, settings.candidates, rng)
        if len(affordable) > 1:
            gains = mes_per_cost(model, m, fids[affordable], target / smallest, pool, settings)
            # MES's Monte Carlo over noisy outcomes turns slightly negative once little is
            # left to learn (seen from ~2900 runs on): then no size informs, the cheapest runs.
            chosen = affordable[int(np.argmax(gains))] if (gains > 0).any() else affordable[0]
        else:
            gains, chosen = None, affordable[0]
        size = sizes[chosen]
        n_runs = min(settings.max_batch, max(q, int(q * largest / size)))
        n_runs = min(n_runs, int(remaining // oracle.flops(size)))
        r = thompson_mixtures(model, pool, n_runs, seed * 100_003 + len(records))
        observe(r, np.full(len(r), size))
        step = {
            "size": size,
            "mes_per_cost": None
            if gains is None
            else {f"{sizes[i]:g}": float(v) for i, v in zip(affordable, gains, strict=True)},
            "propose_s": time.perf_counter() - prop_started,
        }


def _within_budget(costs: np.ndarray, budget: float) -> np.ndarray:
    """Runs kept, in order, while their cumulative cost fits the budget (a later cheaper run
    may still fit after a dearer one is dropped)."""
    keep = np.zeros(len(costs), dtype=bool)
    total = 0.0
    for i, c in enumerate(costs):
        if total + c <= budget * (1 + 1e-12):
            keep[i] = True
            total += c
    return keep
