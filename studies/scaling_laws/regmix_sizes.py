"""Predicting a bigger model from small ones: RegMix's 1M and 60M runs (issue 18's benchmark).

Fit on RegMix's 512 training runs at 1M parameters plus the 60M runs of the first 64 test
mixtures (by ``index``), predict the other 192 test mixtures at 60M. Per target and for the
mean of the 13 losses: mean relative error (MRE), Spearman rho, and the share of the 192 true
losses inside the central 50 % and 90 % predictive intervals. Next to the default law
(``bm.fit`` of Observations with a ``model_size`` column: ``additive``) and the other law
with a size axis (``cross-scaling``), in the same run, two references:

- rank transfer: ``bimix-cross`` fitted on the 512 1M runs alone, its 1M predictions ranked
  against the 60M truth (its MRE is that of a 1M prediction of a 60M loss);
- Shukor et al. 2025's additive law, point-fitted per target by least squares:
  L = E(N) + 1 / sum_j C_j r_j^gamma_j, with E(N) = E + A N^-a one free level per size (two
  sizes and one token count pin no more).

    python -m studies.scaling_laws.regmix_sizes                  # Laplace, writes results.md
    python -m studies.scaling_laws.regmix_sizes --method nuts
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.stats import spearmanr

import bayesmix as bm
from bayesmix.benchmarks.sizes import FIT_MIXTURES_60M, load_regmix_sizes
from studies import _common

HERE = Path(__file__).resolve().parent
DATA = _common.DATA / "regmix"


def load(data: Path) -> tuple[bm.Observations, bm.Observations, bm.Observations]:
    """(1M training runs, 60M runs to fit, 60M runs held out)."""
    return load_regmix_sizes(data, FIT_MIXTURES_60M)


def truth_table(obs: bm.Observations) -> pd.DataFrame:
    table = obs.frame.pivot(index="run_id", columns="target", values="value")
    return table.loc[obs.run_ids, obs.targets]


def score(pred: pd.DataFrame, truth: pd.DataFrame, bands: dict[float, pd.DataFrame]) -> list:
    """One row per target and for the mean of the targets: MRE, Spearman, coverage."""
    rows = []
    columns = {**{t: truth[t] for t in truth.columns}, "mean13": truth.mean(axis=1)}
    for target, y in columns.items():
        p = pred[target].loc[y.index]
        row = {
            "target": target,
            "mre": float(np.mean(np.abs(p / y - 1))),
            "spearman": float(spearmanr(p, y).statistic),
        }
        for ci, (lo, hi) in bands.items():
            inside = (lo[target].loc[y.index] <= y) & (y <= hi[target].loc[y.index])
            row[f"cover{round(ci * 100)}"] = float(inside.mean())
        rows.append(row)
    return rows


def bayes_predictions(post: bm.Posterior, held: bm.Observations, **at: float):
    """Median and the 50 % / 90 % bands per (run, target), the mean of 13 as 'mean13'."""
    mix = held.mixtures().reset_index()
    weights = dict.fromkeys(post.targets, 1.0 / len(post.targets))
    out = {}
    for ci in (0.5, 0.9):
        p = post.predict(mix, ci=ci, weights=weights, **at)
        p["target"] = p["target"].replace({"objective": "mean13"})
        out[ci] = {c: p.pivot(index="run_id", columns="target", values=c) for c in p.columns[2:6]}
    bands = {ci: (out[ci]["lo"], out[ci]["hi"]) for ci in out}
    return out[0.9]["median"], bands


def size_law_cell(
    small, fit_big, held, method: str, seed: int, law: str | None = None
) -> tuple[list, dict]:
    """A law with a size axis fitted to both sizes (law None: the default)."""
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bm.fit(small.concat(fit_big), law=law, method=method, seed=seed, progress=False)
        seconds = time.perf_counter() - started
        median, bands = bayes_predictions(post, held, model_size=60e6)
    rows = score(median, truth_table(held), bands)
    diag = post.diagnostics()
    fit = {
        "model": post.law + (" (default)" if law is None else ""),
        "method": method,
        "fit_seconds": seconds,
        "converged": post.converged,
        "max_r_hat": float(diag["r_hat"].max()),
        "min_ess_bulk": float(diag["ess_bulk"].min()),
        "divergences": post.divergences,
    }
    return rows, fit


def rank_transfer_cell(small, held, method: str, seed: int) -> tuple[list, dict]:
    one_size = bm.Observations.from_frame(small.frame.drop(columns="model_size"))
    held_frame = held.frame.drop(columns="model_size")
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bm.fit(one_size, law="bimix-cross", method=method, seed=seed, progress=False)
        seconds = time.perf_counter() - started
        median, bands = bayes_predictions(post, bm.Observations.from_frame(held_frame))
    rows = score(median, truth_table(held), bands)
    return rows, {"model": "bimix-cross, 1M only", "method": method, "fit_seconds": seconds}


def shukor_additive_cell(small, fit_big, held) -> tuple[list, dict]:
    """Point fit per target of L = E_size + 1 / sum_j C_j r_j^gamma_j (relative residuals)."""
    train = small.concat(fit_big)
    r = train.mixtures().loc[train.run_ids].to_numpy()
    big = (
        train.frame.drop_duplicates("run_id").set_index("run_id").loc[train.run_ids, "model_size"]
        > 1e6
    ).to_numpy()
    y = truth_table(train)
    r_held = held.mixtures().loc[held.run_ids].to_numpy()
    m = r.shape[1]
    started = time.perf_counter()

    def law(theta: np.ndarray, r: np.ndarray, big: np.ndarray) -> np.ndarray:
        e_small, e_big = np.exp(theta[:2])
        c, gamma = np.exp(theta[2 : 2 + m]), np.exp(theta[2 + m :])
        return np.where(big, e_big, e_small) + 1.0 / (c * r**gamma).sum(axis=1)

    pred = {}
    for target in y.columns:
        values = y[target].to_numpy()
        best = None
        for start in range(3):
            rng = np.random.default_rng(start)
            level = np.log(0.8 * values.min())
            theta0 = np.concatenate(
                [[level, level - 0.3], rng.normal(0.0, 0.5, m), np.log(rng.uniform(0.2, 1, m))]
            )
            fit = least_squares(lambda th, v=values: law(th, r, big) / v - 1, theta0, method="trf")
            if best is None or fit.cost < best.cost:
                best = fit
        pred[target] = law(best.x, r_held, np.ones(len(r_held), dtype=bool))
    frame = pd.DataFrame(pred, index=held.run_ids)
    frame["mean13"] = frame.mean(axis=1)
    rows = score(frame, truth_table(held), {})
    return rows, {
        "model": "Shukor additive (point)",
        "method": "least squares",
        "fit_seconds": time.perf_counter() - started,
    }


def write_table(results: pd.DataFrame, path: Path) -> None:
    meta = results.iloc[0]
    lines = [
        "# RegMix, 1M -> 60M: held-out 60M losses (written by regmix_sizes.py)",
        "",
        f"Fit: 512 runs at 1M + {FIT_MIXTURES_60M} test mixtures at 60M; scored on the other "
        f"{256 - FIT_MIXTURES_60M} test mixtures at 60M. Ran {meta['when']} on "
        f"{meta['machine']}, commit {meta['commit']}.",
        "",
        "## Pile-CC and the mean of 13",
        "",
        "| model | method | target | MRE | Spearman | cover 50 % | cover 90 % | fit s |"
        " converged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, d=3: "" if pd.isna(v) else f"{v:.{d}f}"  # noqa: E731
    for _, row in results[results["target"].isin(["pile_cc", "mean13"])].iterrows():
        lines.append(
            f"| {row['model']} | {row['method']} | {row['target']} | {fmt(row['mre'] * 100, 2)} % "
            f"| {fmt(row['spearman'])} | {fmt(row.get('cover50'), 2)} | "
            f"{fmt(row.get('cover90'), 2)} | {row['fit_seconds']:.0f} | "
            f"{row.get('converged', '')} |"
        )
    lines += ["", "## Every target (Spearman / MRE %)", ""]
    wide = results.pivot_table(
        index="target", columns=["model", "method"], values=["spearman", "mre"], aggfunc="first"
    )
    models = list(dict.fromkeys(zip(results["model"], results["method"], strict=True)))
    lines.append("| target | " + " | ".join(f"{m} ({k})" for m, k in models) + " |")
    lines.append("|---|" + "---|" * len(models))
    for target in wide.index:
        cells = [
            f"{wide.loc[target, ('spearman', m, k)]:.3f} / "
            f"{wide.loc[target, ('mre', m, k)] * 100:.2f}"
            for m, k in models
        ]
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="laplace", choices=("laplace", "nuts"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    small, fit_big, held = load(args.data)
    rows = []
    cells = (
        lambda: size_law_cell(small, fit_big, held, args.method, args.seed),
        lambda: size_law_cell(small, fit_big, held, args.method, args.seed, "cross-scaling"),
        lambda: rank_transfer_cell(small, held, args.method, args.seed),
        lambda: shukor_additive_cell(small, fit_big, held),
    )
    for cell in cells:
        scored, fit = cell()
        shown = pd.DataFrame(scored).set_index("target").loc[["pile_cc", "mean13"]]
        print(fit, shown.to_string(), flush=True)
        rows += [{**row, **fit, **_common.provenance()} for row in scored]
    results = pd.DataFrame(rows)
    results.to_csv(HERE / f"regmix_sizes_{args.method}.csv", index=False)
    write_table(results, HERE / f"regmix_sizes_{args.method}.md")


if __name__ == "__main__":
    main()
