"""Simulation check of the default size law (``additive``): data drawn from known parameters
at four model sizes are fitted by NUTS; do the intervals cover the truth, and the true optimum
and the true losses at a model 10x larger than the largest fitted one?

Per seed: natural parameters of ``additive`` drawn near what a fit to RegMix's 1M + 60M runs
gives (``true_parameters``), 5 domains (each also a target, its own domain), 12 Dirichlet
mixtures per size at 20M, 60M, 150M and 400M parameters, each run trained Chinchilla-style to
20 tokens per parameter and evaluated at 1/8, 1/4, 1/2 and all of its tokens; losses from the
law's own formula (``get_law("additive").log_loss``) times log-normal noise (sd 0.01-0.02 on the
log loss). ``bm.fit(obs)`` (the default law and method: additive, NUTS) is scored on

- the coverage of every natural site's entries by the central 50 % and 90 % intervals;
- the true optimal mixture at 4B parameters and 80B tokens (10x the largest size, 20 tokens per
  parameter): does each domain's true share lie in ``post.optimal_mixture(...).intervals``, and
  the regret of the recommended ``.mixture`` under the true law;
- the true noise-free losses of 8 held-out mixtures at that size: coverage by
  ``post.predict(..., ci=0.9)`` (observation noise included) and by the law's own 90 % band
  (``post.log_loss``, noise left out), and the mean relative error of the predicted median.

Resumable: each finished seed is one line of ``results/fits.jsonl``; a rerun skips it.

    nice -n 10 .venv/bin/python -m studies.size_simulation.run [--seeds 10] [--budget-min 40]
    .venv/bin/python -m studies.size_simulation.run --table-only     # rewrite results.md
"""

from __future__ import annotations

from studies import _common

_common.one_thread_per_library()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FITS = RESULTS / "fits.jsonl"
TABLE = HERE / "results.md"

M = 5  # domains, each also a target (its own domain)
DOMAINS = [f"d{j}" for j in range(M)]
SIZES = (20e6, 60e6, 150e6, 400e6)  # parameters
TOKENS_PER_PARAM = 20.0  # each run's length (Chinchilla)
CHECKPOINTS = (0.125, 0.25, 0.5, 1.0)  # evaluations, as fractions of the run's tokens
MIXTURES_PER_SIZE = 12
ZERO_SHARE = 0.15  # chance of a share set to zero (RegMix's swarms have many)
HELD_OUT = 8  # mixtures whose losses are predicted at the target size
N_REF = max(SIZES)  # the fit's reference size and tokens (the largest observed)
D_REF = TOKENS_PER_PARAM * N_REF
TARGET_SIZE = 10 * N_REF  # 4B parameters
TARGET_TOKENS = TOKENS_PER_PARAM * TARGET_SIZE  # 80B tokens, 10x the reference tokens too
SITES = ("logk", "log_weight", "exponent", "frac", "beta", "frac_size", "gamma", "sigma")
CIS = (0.5, 0.9)


# ----------------------------------------------------------------------------- the world
def true_parameters(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Natural sites of ``additive`` (T = M targets), near a Laplace fit to RegMix 1M + 60M.

    At the reference (400M, 8B tokens) the Chinchilla part K_t is 2-3 nats, and the mixture
    term at the uniform mixture holds 15-35 % of the loss (RegMix: 17-43 %). Each target draws
    most of what it learns from its own domain (relative weight e^1.5 against e^N(0, 0.5) for
    the others), exponents around 0.6 (the law's prior centre is 0.5, RegMix's median 0.9).
    frac (f_D) and frac_size (f_N) around Chinchilla's 0.24 and 0.17 at this reference, beta
    around its 0.28 and gamma around its 0.34; noise sd 0.01-0.02 on the log loss.
    """
    k = rng.uniform(2.0, 3.0, M)
    share = rng.uniform(0.65, 0.85, M)  # share of the loss at the uniform mixture that K holds
    relative = rng.normal(0.0, 0.5, (M, M)) + 1.5 * np.eye(M)
    exponent = np.exp(rng.normal(np.log(0.6), 0.3, (M, M)))
    # C_t's scale: 1 / sum_j C_tj u^e_tj = K_t (1 - share_t) / share_t at the uniform mixture u.
    target_term = k * (1.0 - share) / share
    at_uniform = np.log(np.exp(relative + exponent * np.log(1.0 / M)).sum(axis=1))
    log_weight = relative - (np.log(target_term) + at_uniform)[:, None]
    frac = rng.uniform(0.15, 0.35, M)
    return {
        "logk": np.log(k),
        "log_weight": log_weight,
        "exponent": exponent,
        "frac": frac,
        "beta": np.exp(rng.normal(np.log(0.3), 0.2, M)),
        "frac_size": (1.0 - frac) * rng.uniform(0.15, 0.35, M),
        "gamma": np.exp(rng.normal(np.log(0.34), 0.15, M)),
        "sigma": rng.uniform(0.01, 0.02, M),
    }


def swarm(n: int, rng: np.random.Generator, zeros: float = ZERO_SHARE) -> np.ndarray:
    """Dirichlet(1) mixtures with about ``zeros`` of the shares set to zero (2 or more left)."""
    r = rng.dirichlet(np.ones(M), size=n)
    zero = rng.random((n, M)) < zeros
    for p in range(n):
        if (~zero[p]).sum() < 2:
            zero[p, rng.choice(M, 2, replace=False)] = False
    r = np.where(zero, 0.0, r)
    return r / r.sum(axis=1, keepdims=True)


def true_log_loss(
    theta: dict[str, np.ndarray], r: np.ndarray, tokens: np.ndarray, size: np.ndarray
) -> np.ndarray:
    """(P, T) noise-free log loss by the law's own formula, at mixtures r (P, M), tokens (P,)
    and model sizes (P,)."""
    from bayesmix.laws import get_law

    law = get_law("additive")
    params = {k: v for k, v in theta.items() if k in law.formula_sites}
    return law.log_loss(np, params, r, tokens / D_REF, n_rel=size / N_REF)


def simulate(seed: int) -> tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray]:
    """(tidy frame of the fitted runs, the true parameters, held-out mixtures (HELD_OUT, M))."""
    rng = np.random.default_rng([seed, 2025])
    theta = true_parameters(rng)
    rows = []
    for size in SIZES:
        r = swarm(MIXTURES_PER_SIZE, rng)
        for p in range(MIXTURES_PER_SIZE):
            tokens = np.array(CHECKPOINTS) * TOKENS_PER_PARAM * size
            r_p = np.repeat(r[p][None], len(tokens), axis=0)
            log_mean = true_log_loss(theta, r_p, tokens, np.full(len(tokens), size))
            log_y = log_mean + theta["sigma"] * rng.standard_normal(log_mean.shape)
            for i, tok in enumerate(tokens):
                for t, d in enumerate(DOMAINS):
                    row = {
                        "run_id": f"n{size / 1e6:g}m-{p}",
                        "target": d,
                        "metric": "loss",
                        "value": float(np.exp(log_y[i, t])),
                        "step": float(tok),  # sizes are mixed: the step counts tokens
                        "tokens": float(tok),
                        "model_size": size,
                    }
                    row.update({f"r:{dd}": float(r[p, j]) for j, dd in enumerate(DOMAINS)})
                    rows.append(row)
    held = swarm(HELD_OUT, rng)
    return pd.DataFrame(rows), theta, held


def true_objective(theta: dict[str, np.ndarray], r: np.ndarray) -> np.ndarray:
    """(P,) the mean loss over targets at the target size and tokens, mixtures r (P, M)."""
    at = np.ones(len(r))
    log_l = true_log_loss(theta, r, TARGET_TOKENS * at, TARGET_SIZE * at)
    return np.exp(log_l).mean(axis=1)


def true_optimum(theta: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """argmin_r of the true objective on the simplex: scipy's SLSQP from 5 starts and
    ``bayesmix.optimize.projected_gradient`` (the package's per-draw solver, 3000 steps);
    the better of the two, and how far apart they landed."""
    import jax.numpy as jnp
    from scipy.optimize import minimize

    from bayesmix.laws import get_law
    from bayesmix.optimize import projected_gradient

    def f(r: np.ndarray) -> float:
        return float(true_objective(theta, np.clip(r, 0.0, None)[None])[0])

    best = None
    for start in [np.full(M, 1.0 / M), *rng.dirichlet(np.ones(M), 4)]:
        res = minimize(
            f,
            start,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * M,
            constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1.0}],
            options={"ftol": 1e-15, "maxiter": 2000},
        )
        x = np.clip(res.x, 0.0, None)
        x = x / x.sum()
        if best is None or f(x) < f(best):
            best = x
    law = get_law("additive")
    params = {k: jnp.asarray(v)[None] for k, v in theta.items() if k in law.formula_sites}
    s_rel, n_rel = jnp.array([TARGET_TOKENS / D_REF]), jnp.array([TARGET_SIZE / N_REF])

    def objective(p: dict, r: jnp.ndarray) -> jnp.ndarray:
        return jnp.exp(law.log_loss(jnp, p, r[None], s_rel, n_rel=n_rel)[0]).mean()

    pg = projected_gradient(
        objective, params, np.full((1, M), 1.0 / M), np.zeros(M), np.ones(M), iterations=3000
    )[0]
    check = {"slsqp_vs_pg_l1": float(np.abs(best - pg).sum()), "slsqp_minus_pg": f(best) - f(pg)}
    return (best if f(best) <= f(pg) else pg), check


# ----------------------------------------------------------------------------- one seed
def interval_cover(draws: np.ndarray, truth: np.ndarray, ci: float) -> np.ndarray:
    q = (1 - ci) / 2
    lo, hi = np.quantile(draws, [q, 1 - q], axis=0)
    return (lo <= truth) & (truth <= hi)


def natural_diagnostics(post: Any) -> pd.DataFrame:
    """R-hat and ESS of the natural sites alone (the scored ones), one row per entry."""
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = az.summary(post.idata, var_names=list(SITES), kind="diagnostics", round_to="none")
    return summary[["r_hat", "ess_bulk"]]


def fit(obs: Any, seed: int, args: argparse.Namespace) -> tuple[Any, str | None]:
    """``bm.fit(obs)`` with the defaults (law additive, NUTS), and the start-up error if any.

    NumPyro traces the model once at random points (its init_to_uniform strategy, even where
    bayesmix passes the chains' starts) to find the sites' transforms, with argument
    validation on; at 16 of 200 such points on seed 1's data the additive law's mean log loss
    is infinite (exponents e^(u + e^v z) in the thousands send the mixture term to 1/0), and
    the fit dies with "Normal distribution got invalid loc parameter" (seed 1 of 10 here).
    The same fit with validation off starts its chains where bayesmix puts them: that is what
    is scored, and the table counts the crashes.
    """
    import numpyro

    import bayesmix as bm

    kwargs = {
        "seed": seed,
        "num_chains": args.num_chains,
        "num_warmup": args.num_warmup,
        "num_samples": args.num_samples,
        "progress": False,
    }
    try:
        return bm.fit(obs, **kwargs), None
    except ValueError as exc:
        if "invalid loc" not in str(exc):
            raise
        with numpyro.validation_enabled(False):
            return bm.fit(obs, **kwargs), str(exc)


def run_one(seed: int, args: argparse.Namespace) -> dict:
    import bayesmix as bm

    frame, theta, held = simulate(seed)
    obs = bm.Observations.from_frame(frame)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post, fit_error = fit(obs, seed, args)
        fit_cpu, fit_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        # The fit's axes must be the world's: s_rel = tokens / D_REF, n_rel = size / N_REF.
        assert post.law == "additive", post.law
        assert post.settings.reference_step == D_REF, post.settings.reference_step
        assert post.settings.reference_size == N_REF, post.settings.reference_size
        at = {"step": TARGET_TOKENS, "model_size": TARGET_SIZE}
        opt = post.optimal_mixture(ci=0.9, **at)
        # The additive law's mixture term is the same at every size and token count, so its
        # optimum is too: the recommendation at the reference size should match.
        opt_ref = post.optimal_mixture(ci=0.9)
        held_frame = pd.DataFrame(held, columns=[f"r:{d}" for d in DOMAINS])
        held_frame["run_id"] = [f"held-{i}" for i in range(HELD_OUT)]
        pred = post.predict(held_frame, ci=0.9, **at)
        law_draws = np.exp(post.log_loss(held, TARGET_TOKENS, model_size=TARGET_SIZE))
        ref_draws = np.exp(post.log_loss(held, D_REF, model_size=N_REF))
    draws = post.draws()
    diag = post.diagnostics()
    natural = natural_diagnostics(post)
    row: dict = {
        "seed": seed,
        **_common.provenance(),
        "host": _common.host(),
        "law": post.law,
        "method": post.method,
        "num_chains": args.num_chains,
        "num_warmup": args.num_warmup,
        "num_samples": args.num_samples,
        "rows": len(frame),
        "fit_error": fit_error,
        "converged": bool(post.converged),
        "divergences": int(post.divergences),
        "max_r_hat": float(diag["r_hat"].max()),
        "worst_r_hat": str(diag["r_hat"].idxmax()),
        "min_ess_bulk": float(diag["ess_bulk"].min()),
        "worst_ess_bulk": str(diag["ess_bulk"].idxmin()),
        "max_r_hat_natural": float(natural["r_hat"].max()),
        "worst_r_hat_natural": str(natural["r_hat"].idxmax()),
        "min_ess_bulk_natural": float(natural["ess_bulk"].min()),
        "fit_cpu_s": fit_cpu,
        "fit_wall_s": fit_wall,
        "warnings": sorted({type(w.message).__name__ for w in caught}),
    }
    # (a) the parameters, site by site: cover flags, truth and the 90 % interval per entry.
    for name in SITES:
        truth = theta[name]
        for ci in CIS:
            cover = interval_cover(draws[name], truth, ci)
            row[f"cover{round(ci * 100)}_{name}"] = cover.astype(int).ravel().tolist()
        lo, med, hi = np.quantile(draws[name], [0.05, 0.5, 0.95], axis=0)
        row[f"truth_{name}"] = np.ravel(truth).tolist()
        row[f"median_{name}"] = np.ravel(med).tolist()
        row[f"width90_{name}"] = np.ravel(hi - lo).tolist()
    # (b) the optimum at 10x the largest size, 20 tokens per parameter.
    r_star, check = true_optimum(theta, np.random.default_rng([seed, 7]))
    iv = opt.intervals.loc[DOMAINS]
    per_draw = opt.draws[DOMAINS].to_numpy()
    recommended = opt.mixture.loc[DOMAINS].to_numpy()
    f_star = float(true_objective(theta, r_star[None])[0])
    f_rec = float(true_objective(theta, recommended[None])[0])
    uniform = np.full(M, 1.0 / M)
    row.update(
        {
            "true_optimum": r_star.tolist(),
            "optimum_check": check,
            "recommended": recommended.tolist(),
            "optimum_lo90": iv["lo"].tolist(),
            "optimum_hi90": iv["hi"].tolist(),
            "cover90_optimum": ((iv["lo"] <= r_star) & (r_star <= iv["hi"])).astype(int).tolist(),
            "cover50_optimum": interval_cover(per_draw, r_star, 0.5).astype(int).tolist(),
            "optimum_l1": float(np.abs(recommended - r_star).sum()),
            "optimum_l1_10x_vs_reference": float(
                np.abs(recommended - opt_ref.mixture.loc[DOMAINS].to_numpy()).sum()
            ),
            "true_objective_at_optimum": f_star,
            "regret": f_rec - f_star,
            "regret_uniform": float(true_objective(theta, uniform[None])[0]) - f_star,
        }
    )
    # (c) noise-free losses of held-out mixtures at 10x, and at the reference size.
    ones = np.ones(HELD_OUT)
    truth_10x = np.exp(true_log_loss(theta, held, TARGET_TOKENS * ones, TARGET_SIZE * ones))
    truth_ref = np.exp(true_log_loss(theta, held, D_REF * ones, N_REF * ones))
    pred = pred.set_index(["run_id", "target"])
    keys = [(f"held-{i}", d) for i in range(HELD_OUT) for d in DOMAINS]
    lo, hi = pred.loc[keys, "lo"].to_numpy(), pred.loc[keys, "hi"].to_numpy()
    median = pred.loc[keys, "median"].to_numpy()
    flat_truth = truth_10x.ravel()  # (P, T) in the order of keys
    row.update(
        {
            "pred_cover90_predictive": ((lo <= flat_truth) & (flat_truth <= hi)).mean(),
            "pred_cover90_law": interval_cover(law_draws, truth_10x, 0.9).mean(),
            "pred_cover50_law": interval_cover(law_draws, truth_10x, 0.5).mean(),
            "pred_mre": float(np.mean(np.abs(median / flat_truth - 1))),
            "pred_width90_rel": float(np.mean((hi - lo) / flat_truth)),
            "pred_log_error": np.log(median / flat_truth).tolist(),
            "ref_cover90_law": interval_cover(ref_draws, truth_ref, 0.9).mean(),
            "ref_mre": float(np.mean(np.abs(np.median(ref_draws, axis=0) / truth_ref - 1))),
            "cpu_s": time.process_time() - cpu0,
            "wall_s": time.perf_counter() - wall0,
        }
    )
    return row


# ----------------------------------------------------------------------------- the table
def done() -> list[dict]:
    if not FITS.exists():
        return []
    return [json.loads(line) for line in FITS.read_text().splitlines() if line.strip()]


def pooled(rows: list[dict], key: str) -> np.ndarray:
    return np.concatenate([np.asarray(r[key], dtype=float).ravel() for r in rows])


def write_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    f = pd.DataFrame(rows)
    first = rows[0]
    cov = {ci: np.concatenate([pooled(rows, f"cover{ci}_{s}") for s in SITES]) for ci in (50, 90)}
    lines = [
        "# Simulation check of the size law (`additive`): written by `run.py`",
        "",
        f"{len(f)} seeds, NUTS {first['num_chains']} chains x ({first['num_warmup']} warm-up + "
        f"{first['num_samples']}) draws; {_common.commits_and_hosts(rows)} Seeds ran "
        f"{min(f['when'])} to {max(f['when'])}.",
        "",
        "| seeds | converged | max R-hat median (worst) | min ESS bulk median (worst) | "
        "natural sites: max R-hat median (worst), min ESS median | "
        "fits with divergences | start-up crashes (refitted) | parameters cov 50 / 90 | "
        "optimum at 10x: shares cov 50 / 90 | regret (nats) mean (max) | uniform's regret | "
        "prediction at 10x: cov 90 "
        "(predict / law) | MRE at 10x | fit wall s / seed |",
        "|---" * 14 + "|",
        f"| {len(f)} | {int(f['converged'].sum())}/{len(f)} | {f['max_r_hat'].median():.3f} "
        f"({f['max_r_hat'].max():.3f}) | {f['min_ess_bulk'].median():.0f} "
        f"({f['min_ess_bulk'].min():.0f}) | {f['max_r_hat_natural'].median():.3f} "
        f"({f['max_r_hat_natural'].max():.3f}), {f['min_ess_bulk_natural'].median():.0f} | "
        f"{int((f['divergences'] > 0).sum())}/{len(f)} | "
        f"{int(f['fit_error'].notna().sum())}/{len(f)} | "
        f"{cov[50].mean():.2f} / {cov[90].mean():.2f} | "
        f"{pooled(rows, 'cover50_optimum').mean():.2f} / "
        f"{pooled(rows, 'cover90_optimum').mean():.2f} | {f['regret'].mean():.1e} "
        f"({f['regret'].max():.1e}) | {f['regret_uniform'].mean():.1e} | "
        f"{f['pred_cover90_predictive'].mean():.2f} / {f['pred_cover90_law'].mean():.2f} | "
        f"{f['pred_mre'].mean():.2%} | {f['fit_wall_s'].mean():.0f} |",
        "",
        "Per site (entries pooled over seeds; the 90 % width is the mean width of the interval):",
        "",
        "| site | entries | cov 50 | cov 90 | mean 90 % width | median error (median - truth) |",
        "|---|---|---|---|---|---|",
    ]
    for s in SITES:
        c50, c90 = pooled(rows, f"cover50_{s}"), pooled(rows, f"cover90_{s}")
        err = pooled(rows, f"median_{s}") - pooled(rows, f"truth_{s}")
        lines.append(
            f"| {s} | {len(c90)} | {c50.mean():.2f} | {c90.mean():.2f} | "
            f"{pooled(rows, f'width90_{s}').mean():.3f} | {np.median(err):+.3f} |"
        )
    lines += [
        "",
        "Per seed:",
        "",
        "| seed | converged | max R-hat (where) | min ESS bulk | natural: max R-hat (where), "
        "min ESS | divergences | cov 90 params | "
        "cov 90 optimum | L1 to true optimum | regret | pred cov 90 (predict / law) | "
        "MRE 10x | MRE at 400M | fit wall s |",
        "|---" * 14 + "|",
    ]
    for r in rows:
        c90 = np.concatenate([np.ravel(r[f"cover90_{s}"]) for s in SITES]).mean()
        lines.append(
            f"| {r['seed']} | {r['converged']} | {r['max_r_hat']:.3f} ({r['worst_r_hat']}) | "
            f"{r['min_ess_bulk']:.0f} | {r['max_r_hat_natural']:.3f} "
            f"({r['worst_r_hat_natural']}), {r['min_ess_bulk_natural']:.0f} | "
            f"{r['divergences']} | {c90:.2f} | "
            f"{np.mean(r['cover90_optimum']):.2f} | {r['optimum_l1']:.3f} | {r['regret']:.1e} | "
            f"{r['pred_cover90_predictive']:.2f} / {r['pred_cover90_law']:.2f} | "
            f"{r['pred_mre']:.2%} | {r['ref_mre']:.2%} | {r['fit_wall_s']:.0f} |"
        )
    lines += [
        "",
        f"Total: fits {f['fit_wall_s'].sum() / 60:.1f} min wall ({f['fit_cpu_s'].sum() / 60:.1f} "
        f"min CPU, all threads); with scoring {f['wall_s'].sum() / 60:.1f} min wall.",
        "",
    ]
    text = "\n".join(lines)
    TABLE.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--num-warmup", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--budget-min", type=float, default=40.0, help="no new seed after this")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = done()
    if args.table_only:
        print(write_table(rows))
        return
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    have = {r["seed"] for r in rows}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        if seed in have:
            continue
        if time.perf_counter() - t0 > args.budget_min * 60:
            print(f"budget of {args.budget_min} min spent; rerun to resume", flush=True)
            break
        row = run_one(seed, args)
        rows.append(row)
        with FITS.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        c90 = np.concatenate([np.ravel(row[f"cover90_{s}"]) for s in SITES]).mean()
        print(
            f"seed {seed}: fit {row['fit_wall_s']:.0f} s, converged {row['converged']} "
            f"(R-hat {row['max_r_hat']:.3f}, {row['divergences']} div), params cov90 {c90:.2f}, "
            f"optimum cov90 {np.mean(row['cover90_optimum']):.2f}, regret {row['regret']:.1e}, "
            f"MRE 10x {row['pred_mre']:.2%}",
            flush=True,
        )
        write_table(rows)
    write_table(rows)


if __name__ == "__main__":
    main()
