"""Simulation check of issue 2: are the own-share law's parameters and optimum recovered?

Data are drawn from known parameters of ``bimix`` with a step axis (7 and 24 domains, each
domain its own target, Dirichlet swarms with some zero shares, four steps, independent normal
noise of 0.02 on the log loss, RegMix's level), fitted with ``bm.fit`` (Laplace for both sizes,
NUTS for the 7-domain case), and repeated over seeds. Reported per parameter: the empirical
coverage of the central 90 % intervals of the true values (over seeds x targets); and per domain
whether the 90 % interval of the optimal mixture (``post.optimal_mixture().intervals``) covers
the true optimum, computed from the true parameters with ``bayesmix.optimize`` on the same
formula (``bayesmix.laws.formulas.bimix_log_loss``) and checked against scipy's SLSQP.

Resumable: every finished fit is one line of ``results/fits.jsonl``; a rerun skips those.
Run (about 30 minutes of one core when the machine is quiet):

    nice -n 10 .venv/bin/python -m studies.law_simulation.run            # all seeds, then table
    .venv/bin/python -m studies.law_simulation.run --table-only           # rewrite results.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from studies import _common

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FITS = RESULTS / "fits.jsonl"
TABLE = HERE / "results.md"

PARAMS = ("alpha", "eps", "logk", "frac", "beta", "sigma")
STEPS = (1000.0, 2000.0, 4000.0, 8000.0)
SIGMA = 0.02  # noise sd on the log loss (RegMix's level)
CI = 0.9


@dataclass(frozen=True)
class Config:
    name: str
    domains: int
    runs: int
    method: str
    num_chains: int = 1
    num_warmup: int = 0
    num_samples: int = 1000


CONFIGS = {
    "m7-laplace": Config("m7-laplace", 7, 16, "laplace"),
    "m24-laplace": Config("m24-laplace", 24, 48, "laplace"),
    "m7-nuts": Config("m7-nuts", 7, 16, "nuts", num_chains=4, num_warmup=500, num_samples=1000),
    "m24-nuts": Config("m24-nuts", 24, 48, "nuts", num_chains=4, num_warmup=500, num_samples=1000),
}


# ----------------------------------------------------------------------------- the truth
def true_parameters(m: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One value per domain (= target) of every parameter of ``bimix`` with steps."""
    return {
        "alpha": np.exp(rng.normal(np.log(0.08), 0.4, m)),
        "eps": np.exp(rng.normal(np.log(3e-3), 0.5, m)),
        "logk": np.log(rng.uniform(2.0, 3.5, m)),
        "frac": rng.uniform(0.3, 0.7, m),
        "beta": np.exp(rng.normal(np.log(0.5), 0.3, m)),
        "sigma": np.full(m, SIGMA),
    }


def swarm(m: int, runs: int, rng: np.random.Generator) -> np.ndarray:
    """Dirichlet(0.8) mixtures with about 20 % of the shares set to zero (at least 2 left)."""
    r = rng.dirichlet(np.full(m, 0.8), size=runs)
    zero = rng.random((runs, m)) < 0.2
    for p in range(runs):
        if (~zero[p]).sum() < 2:
            zero[p, rng.choice(m, 2, replace=False)] = False
    r = np.where(zero, 0.0, r)
    return r / r.sum(axis=1, keepdims=True)


def true_log_loss(theta: dict[str, np.ndarray], r: np.ndarray, s_rel: np.ndarray) -> np.ndarray:
    """(P, T) noise-free log loss; each target's own domain is the domain of the same index."""
    from bayesmix.laws.formulas import bimix_log_loss

    return bimix_log_loss(
        np, theta["logk"], theta["alpha"], theta["eps"], r, s_rel, theta["frac"], theta["beta"]
    )


def simulate(cfg: Config, seed: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng([seed, cfg.domains])
    m = cfg.domains
    domains = [f"d{j:02d}" for j in range(m)]
    theta = true_parameters(m, rng)
    r = swarm(m, cfg.runs, rng)
    rows = []
    for p in range(cfg.runs):
        s_rel = np.array(STEPS) / max(STEPS)
        r_p = np.repeat(r[p][None], len(STEPS), axis=0)
        log_y = true_log_loss(theta, r_p, s_rel) + SIGMA * rng.standard_normal((len(STEPS), m))
        for i, step in enumerate(STEPS):
            for t, d in enumerate(domains):
                value = float(np.exp(log_y[i, t]))
                row = {"run_id": f"sim-{p}", "step": step, "target": d, "value": value}
                row.update({f"r:{dd}": r[p, j] for j, dd in enumerate(domains)})
                rows.append(row)
    return pd.DataFrame(rows), theta


def true_optimum(theta: dict[str, np.ndarray]) -> np.ndarray:
    """argmin_r mean_t L_t(r) at the reference step (the largest), by the closed form of
    ``bayesmix.optimize``, cross-checked with SLSQP on ``formulas.bimix_log_loss``."""
    from scipy.optimize import minimize

    from bayesmix.optimize import own_share_optimum

    m = len(theta["alpha"])
    w = np.full(m, 1.0 / m)
    lo, hi = np.zeros(m), np.ones(m)
    closed = own_share_optimum(
        (np.log(w) + theta["logk"])[None],
        theta["alpha"][None],
        theta["eps"][None],
        np.arange(m),
        lo,
        hi,
    )[0]

    def objective(r: np.ndarray) -> float:
        return float(np.exp(true_log_loss(theta, r[None], np.ones(1)))[0] @ w)

    res = minimize(
        objective,
        np.full(m, 1.0 / m),
        method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1.0}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    if objective(res.x) < objective(closed) - 1e-9:
        raise AssertionError(f"closed form {objective(closed)} worse than SLSQP {res.fun}")
    return closed


# ----------------------------------------------------------------------------- one fit
def run_one(cfg: Config, seed: int) -> dict:
    import bayesmix as bm

    frame, theta = simulate(cfg, seed)
    obs = bm.Observations.from_frame(frame)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = bm.fit(
            obs,
            law="bimix",
            seed=seed,
            method=cfg.method,
            noise="normal",
            num_chains=cfg.num_chains,
            num_warmup=max(cfg.num_warmup, 1),
            num_samples=cfg.num_samples,
            progress=False,
        )
        fit_cpu, fit_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        opt = post.optimal_mixture(ci=CI)
    draws = post.draws()
    missing = [p for p in PARAMS if p not in draws]
    if missing:
        raise KeyError(f"draws lack {missing}; have {sorted(draws)}")
    q = (1 - CI) / 2
    row: dict = {
        "config": cfg.name,
        "seed": seed,
        "method": cfg.method,
        "domains": cfg.domains,
        "converged": bool(post.converged),
        "divergences": int(post.divergences),
        "fit_cpu_s": fit_cpu,
        "fit_wall_s": fit_wall,
        "cpu_s": time.process_time() - cpu0,
        "wall_s": time.perf_counter() - wall0,
        "warnings": sorted({type(w.message).__name__ for w in caught}),
    }
    if cfg.method == "nuts":
        diag = post.diagnostics()
        row["max_r_hat"] = float(diag["r_hat"].max())
        row["min_ess_bulk"] = float(diag["ess_bulk"].min())
    for name in PARAMS:
        lo, hi = np.quantile(draws[name], [q, 1 - q], axis=0)
        truth = theta[name]
        row[f"cover_{name}"] = ((lo <= truth) & (truth <= hi)).astype(int).tolist()
        row[f"width_{name}"] = (hi - lo).tolist()
    r_star = true_optimum(theta)
    iv = opt.intervals.loc[post.domains]
    row["cover_optimum"] = (
        ((iv["lo"].to_numpy() <= r_star) & (r_star <= iv["hi"].to_numpy())).astype(int).tolist()
    )
    recommended = opt.mixture.loc[post.domains].to_numpy()
    row["optimum_abs_error"] = float(np.abs(recommended - r_star).sum())
    row["optimum_width"] = float((iv["hi"] - iv["lo"]).mean())
    row["true_optimum"] = r_star.tolist()
    # The true objective at the recommended mixture, relative to the best possible.
    w = np.full(cfg.domains, 1.0 / cfg.domains)
    f = lambda r: float(np.exp(true_log_loss(theta, r[None], np.ones(1)))[0] @ w)  # noqa: E731
    row["regret"] = f(recommended) - f(r_star)
    return row


# ----------------------------------------------------------------------------- table
def done() -> list[dict]:
    if not FITS.exists():
        return []
    return [json.loads(line) for line in FITS.read_text().splitlines() if line.strip()]


def write_table(rows: list[dict], started: str | None = None) -> None:
    if not rows:
        return
    frame = pd.DataFrame(rows)
    lines = [
        "# Simulation check of the own-share law (`bimix` with steps)",
        "",
        "Written by `studies/law_simulation/run.py` (see its docstring for the design). "
        f"Table written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({os.cpu_count()} CPUs, shared with other jobs; load average "
        f"{os.getloadavg()[0]:.1f} at writing); code {_common.commit()}.",
        "",
        f"Data: M domains = M targets (each target's own domain), Dirichlet(0.8) swarms with "
        f"~20 % zero shares, steps {', '.join(f'{s:g}' for s in STEPS)}, independent normal "
        f"noise sd {SIGMA} on the log loss; fitted with `bm.fit(obs, law='bimix', "
        "noise='normal', method=...)`, eps learned. Coverage = share of (seed, target) pairs "
        f"whose true value lies in the central {CI:.0%} interval of the posterior draws "
        f"(nominal {CI:.0%}); optimum = share of (seed, domain) pairs whose true optimal share "
        f"lies in `post.optimal_mixture(ci={CI}).intervals` (lo, hi).",
        "",
        "| config | fits | converged | "
        + " | ".join(f"cov {p}" for p in PARAMS)
        + " | cov optimum | mean width optimum | L1 error of opt.mixture | regret | "
        "CPU s / fit | wall s / fit |",
        "|---" * (len(PARAMS) + 9) + "|",
    ]
    for name, g in frame.groupby("config", sort=False):
        covs = [np.mean(np.concatenate(g[f"cover_{p}"].to_list())) for p in PARAMS]
        opt = np.mean(np.concatenate(g["cover_optimum"].to_list()))
        lines.append(
            f"| {name} | {len(g)} | {g['converged'].mean():.0%} | "
            + " | ".join(f"{c:.2f}" for c in covs)
            + f" | {opt:.2f} | {g['optimum_width'].mean():.3f} | "
            f"{g['optimum_abs_error'].mean():.3f} | {g['regret'].mean():.2e} | "
            f"{g['cpu_s'].mean():.0f} | {g['wall_s'].mean():.0f} |"
        )
    lines += [""]
    for name, nuts in frame[frame["method"] == "nuts"].groupby("config", sort=False):
        cfg = CONFIGS[str(name)]
        lines.append(
            f"{name} (NUTS, {cfg.num_chains} chains x {cfg.num_warmup} warm-up + "
            f"{cfg.num_samples} draws): converged in {int(nuts['converged'].sum())} of "
            f"{len(nuts)} fits; max r_hat median {nuts['max_r_hat'].median():.3f} (worst "
            f"{nuts['max_r_hat'].max():.3f}), min ess_bulk median "
            f"{nuts['min_ess_bulk'].median():.0f}, divergences in "
            f"{(nuts['divergences'] > 0).sum()} of {len(nuts)} fits."
        )
    per = {name: g["seed"].nunique() for name, g in frame.groupby("config", sort=False)}
    lines += [
        "",
        f"Seeds per config: {per}. Total CPU time of the fits and optima: "
        f"{frame['cpu_s'].sum() / 60:.1f} min (process time, all threads; wall "
        f"{frame['wall_s'].sum() / 60:.1f} min on a loaded machine).",
        "",
        "Per-seed rows (coverage per target, widths, timings): `results/fits.jsonl`.",
        "",
    ]
    if started:
        lines.insert(3, f"Run started {started} UTC.")
    TABLE.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--nuts-seeds", type=int, default=8, help="seeds of the NUTS config")
    parser.add_argument("--budget-min", type=float, default=35.0, help="stop after this wall time")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = done()
    if args.table_only:
        write_table(rows)
        return
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    started = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    have = {(r["config"], r["seed"]) for r in rows}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        for name in args.configs:
            cfg = CONFIGS[name]
            if (name, seed) in have or (cfg.method == "nuts" and seed >= args.nuts_seeds):
                continue
            if time.perf_counter() - t0 > args.budget_min * 60:
                print(f"budget of {args.budget_min} min spent; rerun to resume", flush=True)
                write_table(rows, started)
                return
            row = run_one(cfg, seed)
            rows.append(row)
            with FITS.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(
                f"{name} seed {seed}: cpu {row['cpu_s']:.0f} s, optimum covered "
                f"{np.mean(row['cover_optimum']):.2f}, alpha {np.mean(row['cover_alpha']):.2f}",
                flush=True,
            )
            write_table(rows, started)
    write_table(rows, started)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"done; process CPU {usage.ru_utime + usage.ru_stime:.0f} s", flush=True)


if __name__ == "__main__":
    main()
