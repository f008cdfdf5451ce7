"""Do the credible intervals of the optimal mixture shrink, and hold the true optimum?

Reads the benchmark's result lines (``results/full.jsonl``): every ``posterior-optimum``
line of a non-pool cell carries ``ci90``, the central 90 % interval of each domain's share
in the optimal mixture (the per-draw optima of the posterior that recommended it), and the
oracle's true optimum. Per cell, proposer and budget: the mean interval width (shares), the
share of (seed, domain) intervals that hold the true optimum's share (nominal: 0.90, each
domain's interval on its own), and the seeds where every domain's interval holds it.

    python -m studies.active_learning.coverage     # writes results/coverage.md
    python -m studies.active_learning.coverage results/held-out-law.jsonl   # another file:
                                                   # writes results/held-out-law-coverage.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from studies import _common

HERE = Path(__file__).resolve().parent


def rows(path: Path) -> pd.DataFrame:
    out = []
    for line in path.read_text().splitlines():
        r = json.loads(line) if line.strip() else {}
        ci = r.get("ci90")
        if not ci:
            continue
        m = len(ci["lo"])
        out.append(
            {
                "cell": r["cell"],
                "method": r["method"],
                "budget": r["budget"],
                "seed": r["seed"],
                "m": m,
                "covered": ci["covered"],
                "width": ci["width"],
                "law": r.get("law") or "bimix",
                "commit": r.get("commit", "unrecorded"),
                "host": r.get("host", "vm (2 CPU cores, no GPU)"),
            }
        )
    return pd.DataFrame(out)


def table(df: pd.DataFrame, src: Path) -> str:
    laws = ", ".join(f"{law} {n}" for law, n in df["law"].value_counts().items())
    lines = [
        "# Coverage of the optimal mixture's 90 % credible intervals",
        "",
        "Per domain, the central 90 % interval of its share in the optimal mixture (one "
        "optimum per draw of the posterior that recommended it: 256 Laplace draws in "
        "`full.jsonl`, the chosen law's NUTS draws with `--law held-out` or `averaged`), "
        "against the oracle's true optimum. "
        "`coverage`: share of (seed, domain) intervals holding the truth (nominal 0.90); "
        "`all inside`: seeds where every domain's interval holds it; `width`: mean interval "
        f"width in shares. Made by `coverage.py` from `{src.name}`; the law that recommended "
        f"(lines): {laws}. " + _common.commits_and_hosts(df.to_dict("records")),
    ]
    for cell, cdf in df.groupby("cell", sort=False):
        lines += [
            "",
            f"## {cell}",
            "",
            "| proposer | runs | seeds | width | coverage | all inside |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for (method, budget), g in cdf.groupby(["method", "budget"]):
            cov = g["covered"].sum() / g["m"].sum()
            lines.append(
                f"| {method} | {budget} | {len(g)} | {g['width'].mean():.4f} | {cov:.2f} "
                f"| {int((g['covered'] == g['m']).sum())}/{len(g)} |"
            )
    pooled = df.groupby("cell", sort=False).apply(
        lambda g: g["covered"].sum() / g["m"].sum(), include_groups=False
    )
    lines += ["", "Pooled over proposers and budgets: "]
    lines.append(", ".join(f"{c}: {v:.2f}" for c, v in pooled.items()) + ".")
    if df["law"].nunique() > 1:
        by_law = df.groupby(["cell", "law"], sort=False).agg(
            covered=("covered", "sum"), m=("m", "sum"), lines=("m", "size")
        )
        lines += ["", "By the law that recommended (seeds x budgets): "]
        lines.append(
            ", ".join(
                f"{c} with {law}: {v['covered'] / v['m']:.2f} ({v['lines']})"
                for (c, law), v in by_law.iterrows()
            )
            + "."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    src = Path(argv[0]) if argv else HERE / "results" / "full.jsonl"
    df = rows(src)
    text = table(df, src) if len(df) else "no ci90 lines yet\n"
    name = "coverage.md" if src.name == "full.jsonl" else f"{src.stem}-coverage.md"
    (src.parent / name).write_text(text)
    print(text)
    if len(df):
        widths = df.groupby(["cell", "method", "budget"])["width"].mean()
        shrink = widths.groupby(["cell", "method"]).apply(
            lambda s: bool(np.all(np.diff(s.to_numpy()) <= 0))
        )
        print("width falls at every added batch:", shrink.to_dict())


if __name__ == "__main__":
    main(sys.argv[1:])
