"""Does NUTS converge on real training curves with the default law? (issue 18, item 2)

Fits ``studies/proxy_throughput/gpu_observations_6m.csv`` (16 packed 6M proxies trained on
the H100, 8 log-spaced evaluations each, the first at step 13 with a loss near its initial
value; the early-step rule leaves the first 3 out) with ``bm.fit`` and the default law, 4
chains x 1000 draws, once per setting in ``VARIANTS``: the defaults (a diagonal metric
adapted in warm-up; one floor per domain on a fixed spread), the Laplace covariance as a
fixed metric, and one learned floor for every domain (``eps="shared"``).

The acceptance (issue 18): every R-hat <= 1.01, ESS_bulk >= 400, no divergences, under 3
minutes on the 2-core VM. Each run appends one line to ``results.jsonl`` and rewrites
``results.md`` from all lines.

    nice .venv/bin/python -m studies.law_convergence.run [--variants default,diagonal] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

from studies import _common

HERE = Path(__file__).resolve().parent
CSV = _common.ROOT / "studies" / "proxy_throughput" / "gpu_observations_6m.csv"
RESULTS = HERE / "results.jsonl"
TABLE = HERE / "results.md"
VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "laplace-metric": {"mass_matrix": "laplace"},
    "shared-floor": {"eps": "shared"},
}


def fit_once(variant: str, seed: int) -> dict[str, object]:
    import pandas as pd

    import bayesmix as bm

    frame = pd.read_csv(CSV)
    obs = bm.Observations.from_frame(frame[frame.metric == "loss"])
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bm.fit(obs, seed=seed, progress=False, **VARIANTS[variant])  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    diag = post.diagnostics()
    worst = diag["r_hat"].idxmax()
    return {
        "variant": variant,
        "seed": seed,
        "law": post.law,
        "rows": len(obs),
        "early_rows": post.info["early_rows"],
        "centered": post.info["centered"],
        "seconds": round(seconds, 1),
        "max_r_hat": round(float(diag["r_hat"].max()), 4),
        "worst_site": str(worst),
        "min_ess_bulk": round(float(diag["ess_bulk"].min()), 1),
        "divergences": int(post.divergences),
        "converged": bool(post.converged),
        **_common.provenance(),
    }


def write_table() -> None:
    lines = [json.loads(x) for x in RESULTS.read_text().splitlines() if x.strip()]
    out = [
        "# NUTS on the GPU proxy swarm's curves (default law)",
        "",
        f"Data: `{CSV.relative_to(_common.ROOT)}`; 4 chains x (500 + 1000) draws. "
        "Acceptance: R-hat <= 1.01, ESS_bulk >= 400, 0 divergences, < 180 s. Variants: "
        + "; ".join(f"{k} {v or '(bm.fit defaults)'}" for k, v in VARIANTS.items())
        + ".",
        "",
        "| when (UTC) | commit | variant | seed | law | centred "
        "| s | max R-hat (site) | min ESS | divergences |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in lines:
        out.append(
            f"| {r['when']} | `{r['commit']}` | {r['variant']} | {r['seed']} | {r['law']} "
            f"| {r['centered']} | {r['seconds']} "
            f"| {r['max_r_hat']} ({r['worst_site']}) | {r['min_ess_bulk']} | {r['divergences']} |"
        )
    machines = sorted({r["machine"] for r in lines})
    out += ["", "Machines: " + "; ".join(machines) + "."]
    TABLE.write_text("\n".join(out) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0")
    a = p.parse_args()
    _common.one_thread_per_library()
    for variant in a.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        for seed in (int(s) for s in a.seeds.split(",")):
            row = fit_once(variant, seed)
            print(json.dumps(row), flush=True)
            with RESULTS.open("a") as f:
                f.write(json.dumps(row) + "\n")
            write_table()


if __name__ == "__main__":
    main()
