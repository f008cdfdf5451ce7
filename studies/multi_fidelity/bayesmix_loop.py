"""bayesmix's loop on a world with a size axis: fit, propose (mixture, model size) runs by the
variance of the target-size optimum removed per FLOP, observe, until the budget is spent.

Two ways, at equal FLOPs with the multi-fidelity GP baseline (``gp_baseline.py``):

- ``multi-size``: the law with a size axis (``bm.fit`` of runs with a ``model_size`` column:
  the default law, ``additive``, or one named) and ``bm.propose(post, q, model_size=target,
  model_sizes=sizes, tokens=D, flops=...)``: each batch spends the FLOPs of q runs at the
  largest proxy size, on whichever sizes remove the most variance of the optimum at the
  target size per FLOP. The recommendation is ``post.optimal_mixture(model_size=target)``.
- ``single-size``: every run at the largest proxy size, q per batch, the default law of one
  size (no size axis): the loop a study runs today. Its recommendation is the optimum at the
  proxy size, all such a loop can answer for.

First batch: D-optimal for the cross law's exponents (``DOptimalDesign``, the study's first
batch). The multi-size loop's first batch is that of the GP baseline in count: 2(m+1) runs
at the smallest size and ``init_large`` at each larger one; the single-size loop's is q runs.
Refits are Laplace fits (NUTS in every batch of 10 seeds x 3 budgets is out of reach on two
cores), as in ``studies/active_learning``.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from studies.multi_fidelity.gp_baseline import DEFAULT_SIZES, _within_budget

log = logging.getLogger(__name__)

INIT_LARGE = 2  # first-batch runs at each larger proxy size (the GP baseline's default)


def design(oracle: Any, n: int, seed: int, taken: pd.DataFrame | None = None) -> np.ndarray:
    """n mixtures of the D-optimal first batch, completing ``taken`` runs' design."""
    from bayesmix.proposers import ProposalContext, get_proposer

    context = ProposalContext(
        list(oracle.domains), natural=oracle.natural, seed=seed, pending=taken
    )
    frame = get_proposer("d-optimal").propose(context, n)
    return frame[[f"r:{d}" for d in oracle.domains]].to_numpy()


def run_bayesmix(
    oracle: Any,
    budget_flops: float,
    q: int,
    seed: int,
    sizes: Sequence[float] = DEFAULT_SIZES,
    target_size: float | None = None,
    *,
    law: str | None = None,
    max_draws: int = 128,
    max_runs: int | None = None,
    max_batches: int | None = None,
    settings: Any = None,
) -> list[dict[str, Any]]:
    """The multi-size loop (``len(sizes) > 1``) or the single-size one (one size) on
    ``oracle`` until ``budget_flops`` are spent or ``max_batches`` recommendations are made;
    one record per batch, as the GP baseline's. max_runs: the most runs per batch (cheap
    runs may fill a batch by more than q; default ``bm.propose``'s 4q)."""
    import bayesmix as bm
    from bayesmix.mixtures import mixture_frame

    target = float(target_size or oracle.target_size)
    sizes = sorted(float(s) for s in sizes)
    multi = len(sizes) > 1
    m = len(oracle.domains)
    rng = np.random.default_rng([seed, 1])  # observation noise, as the GP baseline's
    frames: list[pd.DataFrame] = []
    run_sizes: list[float] = []
    spent = 0.0
    records: list[dict[str, Any]] = []

    def observe(r: np.ndarray, batch_sizes: np.ndarray) -> None:
        nonlocal spent
        ids = [f"bm-{seed}-{len(run_sizes) + i}" for i in range(len(r))]
        frames.append(oracle.observe(r, rng, ids, model_sizes=batch_sizes))
        run_sizes.extend(batch_sizes.tolist())
        spent += float(np.sum(oracle.flops(batch_sizes)))

    started = time.perf_counter()
    if multi:
        small = design(oracle, 2 * (m + 1), seed)
        large = design(
            oracle, INIT_LARGE * (len(sizes) - 1), seed, taken=mixture_frame(small, oracle.domains)
        )
        first = np.concatenate([small, large])
        first_sizes = np.array([sizes[0]] * len(small) + list(sizes[1:]) * INIT_LARGE)
    else:
        first = design(oracle, q, seed)
        first_sizes = np.full(q, sizes[0])
    keep = _within_budget(oracle.flops(first_sizes), budget_flops)
    if not keep.any():
        raise ValueError(f"budget {budget_flops:.3g} FLOPs buys no run of the first batch")
    observe(first[keep], first_sizes[keep])
    propose_s = time.perf_counter() - started
    batch_flops = q * float(oracle.flops(sizes[-1]))

    while True:
        frame = pd.concat(frames, ignore_index=True)
        if not multi:
            frame = frame.drop(columns="model_size")
        obs = bm.Observations.from_frame(frame)
        fit_started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence is recorded, not printed
            post = bm.fit(obs, law=law, method="laplace", seed=seed, progress=False)
            fit_s = time.perf_counter() - fit_started
            rec_started = time.perf_counter()
            answer = {"model_size": target} if multi else {}
            mixture = post.optimal_mixture(max_draws=max_draws, **answer).mixture
        rec_s = time.perf_counter() - rec_started
        mixture = mixture.reindex(oracle.domains).to_numpy(dtype=float)
        records.append(
            {
                "batch": len(records),
                "flops": spent,
                "runs": {f"{s:g}": int(np.sum(np.array(run_sizes) == s)) for s in sizes},
                "law": post.law,
                "converged": bool(post.converged),
                "mixture": mixture.round(6).tolist(),
                "regret": float(oracle.regret(mixture[None], target)[0]),
                "seconds": {"propose": propose_s, "fit": fit_s, "recommend": rec_s},
            }
        )
        log.info("bayesmix seed %d batch: %s", seed, json.dumps(records[-1]))
        remaining = budget_flops - spent
        affordable = [s for s in sizes if oracle.flops(s) <= remaining * (1 + 1e-12)]
        if not affordable or len(records) == max_batches:
            return records
        prop_started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if multi:
                props = bm.propose(
                    post,
                    q,
                    model_size=target,
                    model_sizes=affordable,
                    tokens=oracle.tokens,
                    flops=min(batch_flops, remaining),
                    seed=seed + len(records),
                    max_draws=max_draws,
                    max_runs=max_runs,
                    settings=settings,
                )
                batch_sizes = props["model_size"].to_numpy(dtype=float)
            else:
                n = min(q, int(remaining // float(oracle.flops(sizes[0]))))
                props = bm.propose(
                    post, n, seed=seed + len(records), max_draws=max_draws, settings=settings
                )
                batch_sizes = np.full(len(props), sizes[0])
        r = props[[f"r:{d}" for d in oracle.domains]].to_numpy(dtype=float)
        keep = _within_budget(oracle.flops(batch_sizes), remaining)
        observe(r[keep], batch_sizes[keep])
        propose_s = time.perf_counter() - prop_started
