"""Multi-fidelity benchmark: regret at the target model size against total training FLOPs.

The world is ``bayesmix.benchmarks.SizeOracle``: RegMix's 1M and 60M runs fitted by the
cross law with a size axis, whose optimum moves with model size; the target is 600M
parameters (never trained), the proxies 1M and 60M, every run 1B tokens (6 N D FLOPs).
Each method spends up to the largest budget, one trajectory per (method, seed), and reports
after every batch its cumulative FLOPs and recommended mixture; the regret at a budget is that
of the last recommendation made within it. Budgets are multiples of ``budget_unit``: the FLOPs
of m + 1 = 18 runs at 60M (the single-size loop's first m + 1 runs).

A method is a function ``(oracle, budget_flops, q, seed) -> list[dict]`` in ``METHODS``: one
dict per batch with at least ``flops`` (cumulative), ``regret`` (at the target size) and
``mixture``; ``runs`` (per size) and ``seconds`` are recorded when given. q is the batch
size the method is asked for (how it counts runs of different sizes is its own, and
documented with it).

Results are appended, one JSON line per (method, seed, batch), to ``results/<name>.jsonl``; a
rerun skips the (method, seed) trajectories already there for at least the budget asked for.

    python -m studies.multi_fidelity.run --methods gp-mf --seeds 0-9 --budgets 1,2,3
    python -m studies.multi_fidelity.run --table      # the table from the results only
"""

from __future__ import annotations

from studies import _common

_common.one_thread_per_library()  # before numpy, jax and torch load

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = _common.DATA / "regmix"
CACHE = HERE / "cache"  # the fitted world and its optima (ignored by git)
PROXY_SIZES = (1e6, 60e6)  # the sizes a method may train
Q = 6  # runs per batch: the held-out check runs m + 1 = 18 runs as 3 batches of 6
DEFAULT_BUDGETS = (1.0, 2.0, 3.0)

Method = Callable[[Any, float, int, int], list[dict[str, Any]]]


def make_oracle(cache: Path = CACHE) -> Any:
    """The benchmark's world (fitted once, then read from ``cache``)."""
    from bayesmix.benchmarks import SizeOracle

    return SizeOracle(DATA, cache=cache)


def budget_unit(oracle: Any) -> float:
    """The FLOPs of m + 1 runs at the largest proxy size."""
    return float((len(oracle.domains) + 1) * oracle.flops(max(PROXY_SIZES)))


# ------------------------------------------------------------------------------ methods
def gp_mf(oracle: Any, budget_flops: float, q: int, seed: int) -> list[dict[str, Any]]:
    """The multi-fidelity GP baseline (``gp_baseline``: BoTorch, MF-MES per FLOP picks the
    size, Thompson sampling the mixtures; a batch is q runs at 60M or the same FLOPs in runs
    at 1M, at most 64)."""
    from studies.multi_fidelity.gp_baseline import run_gp_baseline

    return run_gp_baseline(oracle, budget_flops, q, seed, sizes=PROXY_SIZES)


def bayesmix_mf(
    oracle: Any, budget_flops: float, q: int, seed: int, law: str | None = None
) -> list[dict[str, Any]]:
    """bayesmix's loop choosing (mixture, model size) per run (``bayesmix_loop``: the default
    law with a size axis unless ``law`` names one, Laplace refits; a batch spends the FLOPs of
    q runs at 60M, in at most 64 runs, as the GP baseline's)."""
    from bayesmix.acquisition import AcquisitionSettings
    from studies.multi_fidelity.bayesmix_loop import run_bayesmix

    # Fewer optimiser starts than a study's: a batch of 64 cheap runs is 64 optimisations.
    cheap = AcquisitionSettings(num_restarts=3, raw_samples=128, maxiter=50)
    return run_bayesmix(
        oracle,
        budget_flops,
        q,
        seed,
        PROXY_SIZES,
        law=law,
        max_runs=MAX_RUNS,
        max_draws=64,
        settings=cheap,
    )


def bayesmix_mf_cross(oracle: Any, budget_flops: float, q: int, seed: int) -> list[dict[str, Any]]:
    """``bayesmix-mf`` with the law whose mixture exponents move with size (``cross-scaling``,
    the world's own form) instead of the default (``additive``)."""
    return bayesmix_mf(oracle, budget_flops, q, seed, law="cross-scaling")


def bayesmix_60m(oracle: Any, budget_flops: float, q: int, seed: int) -> list[dict[str, Any]]:
    """bayesmix's loop with one proxy size (60M): q runs per batch, the default law of one
    size; its recommendation is the 60M optimum."""
    from studies.multi_fidelity.bayesmix_loop import run_bayesmix

    return run_bayesmix(oracle, budget_flops, q, seed, [max(PROXY_SIZES)])


MAX_RUNS = 64  # the most runs in one batch, for every method (cheap runs fill batches)
METHODS: dict[str, Method] = {
    "gp-mf": gp_mf,
    "bayesmix-mf": bayesmix_mf,
    "bayesmix-mf-cross": bayesmix_mf_cross,
    "bayesmix-60m": bayesmix_60m,
}


# --------------------------------------------------------------------------- references
def references(oracle: Any) -> dict[str, float]:
    """Regrets at the target size that need no runs of the benchmark: the uniform and the
    natural mixture, and the optimum of each proxy size (what perfect knowledge of that
    size's landscape gives)."""
    m = len(oracle.domains)
    natural = np.array([oracle.natural[d] for d in oracle.domains])
    out = {
        "uniform mixture": float(oracle.regret(np.full((1, m), 1.0 / m))[0]),
        "natural mixture": float(oracle.regret(natural[None])[0]),
    }
    for size in sorted(PROXY_SIZES, reverse=True):
        out[f"optimum at {size / 1e6:g}M"] = float(
            oracle.regret(oracle.best_mixture_at(size)[None])[0]
        )
    return out


# ------------------------------------------------------------------------------- running
def load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(
    methods: list[str], seeds: list[int], budgets: list[float], q: int, out: Path, cache: Path
) -> None:
    import torch

    torch.set_num_threads(1)
    oracle = make_oracle(cache)
    unit = budget_unit(oracle)
    budget = max(budgets) * unit
    done = {(r["method"], r["seed"], r["q"]) for r in load(out) if r["budget_flops"] >= budget}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as fh:
        for name in methods:  # method-major: a run stopped early has every seed of the first
            for seed in seeds:
                if (name, seed, q) in done:
                    continue
                started = time.perf_counter()
                records = METHODS[name](oracle, budget, q, seed)
                wall = time.perf_counter() - started
                stamp = {
                    "commit": _common.commit(),
                    "host": _common.host(),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                }
                for rec in records:
                    line = {
                        "method": name,
                        "seed": seed,
                        "q": q,
                        "budget_flops": budget,
                        "budget_unit": unit,
                        "batch": rec.get("batch"),
                        "flops": float(rec["flops"]),
                        "budget_multiple": float(rec["flops"]) / unit,
                        "regret": float(rec["regret"]),
                        "runs": rec.get("runs"),
                        "mixture": list(rec["mixture"]),
                        "seconds": rec.get("seconds"),
                        "trajectory_s": wall,
                        **{k: v for k, v in rec.items() if k not in _RECORDED},
                        **stamp,
                    }
                    fh.write(json.dumps(line) + "\n")
                fh.flush()
                last = records[-1]
                print(
                    f"{name} seed {seed}: {len(records)} batches, {last['flops'] / unit:.2f} x "
                    f"budget unit, regret {last['regret']:.5f}, {wall:.0f} s",
                    flush=True,
                )


_RECORDED = {"batch", "flops", "regret", "runs", "mixture", "seconds"}


# -------------------------------------------------------------------------------- table
def regret_at(trajectory: pd.DataFrame, flops: float) -> float:
    """The regret of the last recommendation made within ``flops`` (NaN: none was)."""
    within = trajectory[trajectory["flops"] <= flops * (1 + 1e-9)]
    return float(within.sort_values("flops")["regret"].iloc[-1]) if len(within) else np.nan


def longest(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The result lines of each (method, q, seed)'s trajectory with the largest budget (a
    rerun for a larger budget appends a new trajectory beside the shorter one)."""
    df = pd.DataFrame(rows)
    top = df.groupby(["method", "q", "seed"])["budget_flops"].transform("max")
    return df[df["budget_flops"] == top]


def at_budgets(rows: list[dict[str, Any]], budgets: list[float]) -> pd.DataFrame:
    """One row per (method, q, seed, budget multiple): the regret at that budget."""
    df = longest(rows)
    out = []
    for (method, q, seed), g in df.groupby(["method", "q", "seed"], sort=False):
        unit = float(g["budget_unit"].iloc[0])
        for b in budgets:
            if b * unit > float(g["budget_flops"].max()) * (1 + 1e-9):
                continue  # that trajectory stopped before this budget
            out.append(
                {
                    "method": method,
                    "q": q,
                    "seed": seed,
                    "budget": b,
                    "regret": regret_at(g, b * unit),
                }
            )
    return pd.DataFrame(out)


def table(rows: list[dict[str, Any]], budgets: list[float], refs: dict[str, float]) -> str:
    """Markdown: mean regret at the target size per method and budget, the references, and
    per-seed wins of every method against every other at equal budget."""
    lines = ["# Multi-fidelity benchmark: regret at the target size against training FLOPs", ""]
    if not rows:
        return "\n".join([*lines, "no results yet", ""])
    unit = float(rows[0]["budget_unit"])
    lines.append(
        f"World: `SizeOracle` (RegMix 1M + 60M runs, law `cross-scaling`, posterior median), "
        f"target 600M parameters, proxies 1M and 60M, 1B tokens per run. Budget unit: "
        f"m + 1 = 18 runs at 60M = {unit:.3g} FLOPs. Regret (nats, lower is better) of the "
        "last recommendation made within each budget; mean over seeds (seeds in brackets). "
        + _common.commits_and_hosts(rows)
    )
    lines += [
        "",
        "References (no benchmark runs): "
        + "; ".join(f"{k} {v:.5f}" for k, v in refs.items())
        + ".",
        "",
    ]
    scored = at_budgets(rows, budgets)
    lines += [
        "| method | q | " + " | ".join(f"{b:g}x" for b in budgets) + " | batches | s per batch |",
        "|---|---:|" + "---:|" * (len(budgets) + 2),
    ]
    df = longest(rows)
    for (method, q), g in scored.groupby(["method", "q"], sort=False):
        cells = []
        for b in budgets:
            v = g[g["budget"] == b]["regret"].dropna()
            cells.append(f"{v.mean():.5f} ({len(v)})" if len(v) else "")
        runs = df[(df["method"] == method) & (df["q"] == q)]
        per_seed = runs.groupby("seed")
        batches = per_seed.size().mean()
        seconds = (per_seed["trajectory_s"].first() / per_seed.size()).mean()
        lines.append(
            f"| {method} | {q} | " + " | ".join(cells) + f" | {batches:.1f} | {seconds:.1f} |"
        )
    lines += ["", _wins(scored, budgets)]
    return "\n".join(lines) + "\n"


def _wins(scored: pd.DataFrame, budgets: list[float]) -> str:
    """Seeds where each method's regret is below each other method's, at equal budget."""
    out = []
    labels = list(dict.fromkeys(zip(scored["method"], scored["q"], strict=True)))
    for a in labels:
        for b in labels:
            if a == b:
                continue
            mine = scored[(scored["method"] == a[0]) & (scored["q"] == a[1])]
            theirs = scored[(scored["method"] == b[0]) & (scored["q"] == b[1])]
            both = mine.merge(theirs, on=["seed", "budget"], suffixes=("", "_b"))
            if both.empty:
                continue
            per = [
                f"{x:g}x: {int((g['regret'] < g['regret_b']).sum())}/{len(g)}"
                for x, g in both.groupby("budget")
            ]
            out.append(f"{a[0]} (q={a[1]}) beats {b[0]} (q={b[1]}) in " + ", ".join(per))
    return "  \n".join(out) if out else "(one method: no wins to count)"


def _parse_seeds(spec: str) -> list[int]:
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in spec.split(",")]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="gp-mf", help=f"comma-separated, of {sorted(METHODS)}")
    p.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,5")
    p.add_argument(
        "--budgets",
        default=",".join(f"{b:g}" for b in DEFAULT_BUDGETS),
        help="multiples of the budget unit (m + 1 runs at 60M), e.g. 1,2,3",
    )
    p.add_argument("--q", type=int, default=Q, help="batch size asked of every method")
    p.add_argument("--out", type=Path, default=HERE / "results" / "multi_fidelity.jsonl")
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--table", action="store_true", help="only write the table")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    methods = [m for m in a.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; have {sorted(METHODS)}")
    budgets = sorted(float(b) for b in a.budgets.split(","))
    if not a.table:
        run(methods, _parse_seeds(a.seeds), budgets, a.q, a.out, a.cache)
    text = table(load(a.out), budgets, references(make_oracle(a.cache)))
    a.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
