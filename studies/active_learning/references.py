"""Regret of the mixtures that need no runs at all: the natural proportions and uniform.

A floor for every method of the benchmark: a recommender worse than these has learnt
nothing usable from its runs. Per cell of ``run.py``'s full configuration (17 domains and
below), per seed (synthetic cells: one world per seed; RegMix cells: one world).

    python -m studies.active_learning.references      # writes results/references.md
"""

from __future__ import annotations

import time
from pathlib import Path

from studies.active_learning import run as bench  # before numpy: one thread per library

HERE = Path(__file__).resolve().parent

# isort: split
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def main() -> None:
    cache = HERE / "cache"
    rows = []
    run = {r["cell"] for r in bench.load(HERE / "results" / "full.jsonl")}
    for cell in bench.configs()["full"].cells:
        if cell.name not in run:
            continue  # the global optimum of a world no method has run is not worth finding
        seeds = bench.configs()["full"].seeds if cell.kind.startswith("synthetic") else [0]
        for seed in seeds:
            oracle = bench.make_oracle(cell, seed, cache)
            nat = np.array([oracle.natural[d] for d in oracle.domains])
            uni = np.full(len(nat), 1.0 / len(nat))
            for name, r in (("natural", nat), ("uniform", uni)):
                if getattr(oracle, "candidates", None) is not None:
                    continue  # a pool's truth exists only at its rows
                value = float(oracle.objective(r[None])[0])
                rows.append(
                    {
                        "cell": cell.name,
                        "seed": seed,
                        "mixture": name,
                        "regret": value - oracle.best_value,
                    }
                )
    df = pd.DataFrame(rows)
    table = df.pivot_table(
        index="cell", columns="mixture", values="regret", aggfunc="mean", sort=False
    )
    count = df.groupby("cell", sort=False)["seed"].nunique()
    lines = [
        "# Regret of the mixtures that need no runs",
        "",
        "Mean over seeds (synthetic: 10 worlds; RegMix landscape: one world; pool cells have "
        "no truth off their rows and are left out). Made by `references.py` on "
        f"{bench.HOST} at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit "
        f"`{bench.COMMIT}`.",
        "",
        "| cell | worlds | natural proportions | uniform |",
        "|---|---:|---:|---:|",
    ]
    for cell, row in table.iterrows():
        lines.append(f"| {cell} | {count[cell]} | {row['natural']:.5f} | {row['uniform']:.5f} |")
    text = "\n".join(lines) + "\n"
    (HERE / "results" / "references.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
