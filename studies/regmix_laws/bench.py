"""Held-out accuracy and calibration of the laws on RegMix's release (issue 2's benchmark).

Fit on the first n of RegMix's 512 training runs (by ``index``), evaluate on its 256 test runs,
for Pile-CC and for the mean of the 13 validation losses: Spearman rho, mean absolute error, and
the empirical coverage of the central 50 % and 90 % predictive intervals. Bayesian laws
(``bimix``, ``bimix-cross``, ``loglinear``, and variants of the cross law that justify its
defaults) run next to two point baselines in the same script: LightGBM with RegMix's settings
(no early stopping) and Olmix's Huber point fit of c + exp(A.r).

    python -m studies.regmix_laws.bench                      # every cell, appended to results.csv
    python -m studies.regmix_laws.bench --n 54 --laws bimix-cross --method nuts
    python -m studies.regmix_laws.bench --table              # rewrite results.md from results.csv

Cells already in results.csv are skipped (delete a row to redo it), so the script resumes.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

import bayesmix as bm
from bayesmix.laws import formulas
from studies import _common

HERE = Path(__file__).resolve().parent
DATA = _common.DATA / "regmix"
RESULTS = HERE / "results.csv"
TABLE = HERE / "results.md"
SIZES = (18, 54, 108, 512)
# Bayesian cells: name -> (law, fit options). The variants justify the defaults of issue 2:
# the learned per-domain floor eps against a fixed one, correlated noise against independent.
BAYES: dict[str, tuple[str, dict]] = {
    "bimix": ("bimix", {}),
    "bimix-cross": ("bimix-cross", {}),
    "loglinear": ("loglinear", {}),
    "bimix-cross[eps=1e-3]": ("bimix-cross", {"eps": 1e-3}),
    "bimix-cross[eps=1e-5]": ("bimix-cross", {"eps": 1e-5}),
    "bimix-cross[noise=normal]": ("bimix-cross", {"noise": "normal"}),
    "bimix-cross[eps=shared]": ("bimix-cross", {"eps": "shared"}),
    # The default law since 2026-12-07 (floors and noise scales on fixed spreads, NUTS on an
    # adapted diagonal metric), beside the rows of the learned spreads above.
    "bimix-cross[fixed spreads]": ("bimix-cross", {}),
}
POINT = ("lightgbm", "loglinear-point")
TARGETS = ("pile_cc", "mean13")


def load(data: Path) -> tuple[bm.Observations, bm.Observations]:
    train = bm.datasets.load_regmix(
        data / "train_mixture_1m.csv", data / "train_pile_loss_1m.csv", prefix="regmix-train"
    )
    test = bm.datasets.load_regmix(
        data / "test_mixture_1m.csv", data / "test_pile_loss_1m.csv", prefix="regmix-test"
    )
    return train, test


def wide(obs: bm.Observations) -> tuple[np.ndarray, pd.DataFrame]:
    """(N, M) mixtures and the (N, T) loss table, runs in order."""
    table = obs.frame.pivot(index="run_id", columns="target", values="value")
    table = table.loc[obs.run_ids, obs.targets]
    return obs.mixtures().loc[obs.run_ids].to_numpy(dtype=float), table


def scores(pred: np.ndarray, truth: np.ndarray, lo50=None, hi50=None, lo90=None, hi90=None):
    out = {
        "spearman": float(spearmanr(pred, truth).statistic),
        "mae": float(np.abs(pred - truth).mean()),
        "cover50": np.nan,
        "cover90": np.nan,
    }
    if lo50 is not None:
        out["cover50"] = float(((lo50 <= truth) & (truth <= hi50)).mean())
        out["cover90"] = float(((lo90 <= truth) & (truth <= hi90)).mean())
    return out


def bayes_cell(law: str, train: bm.Observations, test: bm.Observations, method: str, seed: int):
    name, options = BAYES[law]
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bm.fit(train, law=name, method=method, seed=seed, progress=False, **options)
    seconds = time.perf_counter() - started
    mix = test.mixtures().reset_index()
    weights = dict.fromkeys(post.targets, 1.0 / len(post.targets))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p50 = post.predict(mix, ci=0.5, weights=weights)
        p90 = post.predict(mix, ci=0.9, weights=weights)
    _, truth = wide(test)
    truth = truth.assign(objective=truth.mean(axis=1))
    rows = []
    for target, column in (("pile_cc", "pile_cc"), ("mean13", "objective")):
        a = p50[p50["target"] == column].set_index("run_id").loc[truth.index]
        b = p90[p90["target"] == column].set_index("run_id").loc[truth.index]
        rows.append(
            {
                "target": target,
                **scores(
                    a["median"].to_numpy(),
                    truth[column].to_numpy(),
                    a["lo"],
                    a["hi"],
                    b["lo"],
                    b["hi"],
                ),
            }
        )
    diag = post.diagnostics()
    fit = {
        "fit_seconds": seconds,
        "converged": post.converged,
        "max_r_hat": float(diag["r_hat"].max()),
        "min_ess_bulk": float(diag["ess_bulk"].min()),
        "divergences": post.divergences,
    }
    return [{**r, **fit} for r in rows]


def point_cell(model: str, train: bm.Observations, test: bm.Observations, seed: int):
    r, y = wide(train)
    r_test, truth = wide(test)
    started = time.perf_counter()
    if model == "lightgbm":
        import lightgbm as lgb

        from bayesmix.proposers.recommenders import RegMixRecommender

        params = {**RegMixRecommender().lgbm_params, "seed": 42, "n_jobs": 1}
        pred = {}
        for name, target in (("pile_cc", y["pile_cc"]), ("mean13", y.mean(axis=1))):
            pred[name] = lgb.LGBMRegressor(**params).fit(r, target.to_numpy()).predict(r_test)
    else:
        from bayesmix.proposers.recommenders import OlmixRecommender

        params = OlmixRecommender().fit(r, y.to_numpy())
        loss = np.exp(formulas.loglinear_log_loss(np, params["log_c"], params["A"], r_test))
        pred = {"pile_cc": loss[:, list(y.columns).index("pile_cc")], "mean13": loss.mean(axis=1)}
    seconds = time.perf_counter() - started
    truth_by = {"pile_cc": truth["pile_cc"].to_numpy(), "mean13": truth.mean(axis=1).to_numpy()}
    return [{"target": t, **scores(pred[t], truth_by[t]), "fit_seconds": seconds} for t in TARGETS]


def provenance() -> dict[str, str]:
    import jax
    import numpyro

    return {
        **_common.provenance(),
        "versions": f"jax {jax.__version__}, numpyro {numpyro.__version__}",
    }


def run(sizes, models, method: str, seed: int, data: Path) -> None:
    train, test = load(data)
    done = pd.read_csv(RESULTS) if RESULTS.exists() else pd.DataFrame()
    for n in sizes:
        for model in models:
            key = (n, model, method if model in BAYES else "point")
            if (
                len(done)
                and ((done["n"] == n) & (done["model"] == model) & (done["method"] == key[2])).any()
            ):
                print(f"n={n} {model}: in {RESULTS.name} already")
                continue
            subset = train.first_runs(n)
            print(f"n={n} {model} ({key[2]}) ...", flush=True)
            if model in BAYES:
                rows = bayes_cell(model, subset, test, method, seed)
            else:
                rows = point_cell(model, subset, test, seed)
            frame = pd.DataFrame(rows).assign(n=n, model=model, method=key[2], **provenance())
            if RESULTS.exists():  # appended rows must follow the file's column order
                frame = frame.reindex(columns=pd.read_csv(RESULTS, nrows=0).columns)
            print(
                frame[["target", "spearman", "mae", "cover50", "cover90", "fit_seconds"]].to_string(
                    index=False
                ),
                flush=True,
            )
            frame.to_csv(RESULTS, mode="a", header=not RESULTS.exists(), index=False)
            done = pd.read_csv(RESULTS)


def write_table() -> None:
    df = pd.read_csv(RESULTS)
    lines = ["# RegMix held-out accuracy and calibration (written by bench.py)", ""]
    lines.append(
        "Fit on the first n of 512 training runs (by index), evaluated on the 256 test runs. "
        "cover50/cover90: share of test losses inside the central 50 % / 90 % predictive "
        "interval (Bayesian laws only). fit s: wall seconds of the fit alone."
    )
    for target in TARGETS:
        lines += ["", f"## {target}", ""]
        sub = df[df["target"] == target].sort_values(["n", "model", "method"])
        cols = [
            "n",
            "model",
            "method",
            "spearman",
            "mae",
            "cover50",
            "cover90",
            "fit_seconds",
            "converged",
            "max_r_hat",
            "min_ess_bulk",
            "divergences",
            "when",
            "machine",
        ]
        cols = [c for c in cols if c in sub.columns]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for _, row in sub[cols].iterrows():
            cells = []
            for c in cols:
                v = row[c]
                if isinstance(v, float):
                    v = "" if np.isnan(v) else (f"{v:.3f}" if c != "fit_seconds" else f"{v:.0f}")
                cells.append(str(v))
            lines.append("| " + " | ".join(cells) + " |")
    TABLE.write_text("\n".join(lines) + "\n")
    print(f"wrote {TABLE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default=",".join(map(str, SIZES)))
    parser.add_argument("--laws", default=",".join((*BAYES, *POINT)))
    parser.add_argument("--method", default="nuts", choices=("nuts", "laplace", "svi"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--table", action="store_true", help="only rewrite results.md")
    args = parser.parse_args()
    if not args.table:
        sizes = [int(v) for v in args.n.split(",")]
        run(sizes, args.laws.split(","), args.method, args.seed, args.data)
    write_table()


if __name__ == "__main__":
    main()
