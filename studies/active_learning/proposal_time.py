"""Proposal time for q = 8 at 17 and 64 domains (issue 4: under 20 s and under 60 s).

One own-share world per size (``SyntheticOracle``, world 0), m + 1 rounded up to a batch of
Dirichlet-swarm runs observed (24 at 17 domains, 72 at 64), the law fitted once by Laplace
(its time is reported apart: a proposal starts from a fitted posterior, as
``bayesmix propose post.nc`` does). Then, in the same process, one after the other:
Olmix's Dirichlet swarm (the baseline: no model at all), and ``bayesmix.acquisition.propose``
with each acquisition function (a call still running after 240 s is stopped and reported
so), every time from a cold posterior (the memoised per-draw
optima are dropped, so Thompson sampling pays for them). CPU and wall seconds; the
machine's load average is recorded, since wall time on a shared 2-core machine depends on it.

    python -m studies.active_learning.proposal_time [17 64]   # results/proposal_time.{jsonl,md}
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import warnings
from pathlib import Path

from studies.active_learning import run as bench  # before numpy: one thread per library

HERE = Path(__file__).resolve().parent

# isort: split
import numpy as np  # noqa: E402

Q = 8
SIZES = (17, 64)
TARGET_S = {17: 20.0, 64: 60.0}
ACQS = ("thompson", "qlognei", "optimum-variance")
STOP_S = 240


def timed(fn):  # noqa: ANN001, ANN201
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def measure(m: int, cache: Path) -> list[dict]:
    import bayesmix as bm
    from bayesmix.acquisition import OPTIMA, propose
    from bayesmix.benchmarks import SyntheticOracle
    from bayesmix.proposers import ProposalContext, get_proposer

    world = SyntheticOracle(
        m, law="bimix", world_seed=0, optimum_cache=cache / "synthetic_optima.json"
    )
    n = int(np.ceil((m + 1) / Q) * Q)
    ctx = ProposalContext(world.domains, natural=world.natural, seed=0)
    swarm = get_proposer("dirichlet-swarm")
    first = swarm.propose(ctx, n)
    r = first[[f"r:{d}" for d in world.domains]].to_numpy()
    obs = bm.Observations.from_frame(
        world.observe(r, np.random.default_rng(0), [f"run-{i}" for i in range(n)])
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post, fit_cpu, fit_wall = timed(
            lambda: bm.fit(
                obs, law="bimix", method="laplace", seed=0, progress=False, num_samples=256
            )
        )
    base = {"m": m, "runs": n, "q": Q, "draws": post.num_draws}
    rows = [{**base, "what": "fit (laplace, once)", "cpu_s": fit_cpu, "wall_s": fit_wall}]
    ctx = ProposalContext(
        world.domains, observations=obs, posterior=post, natural=world.natural, seed=1
    )
    _, cpu, wall = timed(lambda: swarm.propose(ctx, Q))
    rows.append({**base, "what": "dirichlet-swarm (baseline)", "cpu_s": cpu, "wall_s": wall})
    for acq in ACQS:
        OPTIMA.clear(post)  # cold: no memoised optima
        cpu, wall = time.process_time(), time.perf_counter()
        signal.alarm(STOP_S)  # a call past STOP_S is stopped and reported as such
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                batch = propose(post, Q, acq, seed=0)
            assert len(batch) == Q
            stopped = False
        except Stopped:
            stopped = True
        finally:
            signal.alarm(0)
        rows.append(
            {
                **base,
                "what": f"bayesmix {acq}",
                "cpu_s": time.process_time() - cpu,
                "wall_s": time.perf_counter() - wall,
                "stopped": stopped,
            }
        )
    return rows


class Stopped(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise Stopped


signal.signal(signal.SIGALRM, _stop)


def table(rows: list[dict]) -> str:
    out = [
        "# Proposal time, q = 8",
        "",
        "One call each, cold (no memoised per-draw optima), one thread per library, niced, "
        "on a shared 2-core machine: the load average (other users' jobs) is in each row, and "
        "wall time grows with it; CPU time is this process's own.",
        "",
        "| domains | observed runs | what | CPU s | wall s | target (wall) | x baseline (CPU) "
        "| host, start (UTC), commit, load |",
        "|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for m in sorted({r["m"] for r in rows}):
        mine = [r for r in rows if r["m"] == m]
        base = next(r for r in mine if r["what"].startswith("dirichlet"))["cpu_s"]
        for r in mine:
            target = ""
            if r.get("stopped"):
                target = f"< {TARGET_S[m]:.0f} s: NOT met (stopped at {STOP_S} s)"
            elif r["what"].startswith("bayesmix"):
                ok = "met" if r["wall_s"] < TARGET_S[m] else "NOT met"
                target = f"< {TARGET_S[m]:.0f} s: {ok}"
            ratio = "" if r["what"].startswith("fit") else f"{r['cpu_s'] / max(base, 1e-6):.0f}"
            out.append(
                f"| {m} | {r['runs']} | {r['what']} | {r['cpu_s']:.2f} | {r['wall_s']:.2f} "
                f"| {target} | {ratio} | {r['host']}, {r['started']}, {r['commit']}, "
                f"{r['load']} |"
            )
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> None:
    """Measure the sizes named (default: all), replace their rows, rewrite the table."""
    import torch

    torch.set_num_threads(1)
    sizes = [int(a) for a in argv] or list(SIZES)
    cache = HERE / "cache"
    cache.mkdir(exist_ok=True)
    bench._jax_compilation_cache(cache)
    header = {
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "commit": bench.COMMIT,
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    path = HERE / "results" / "proposal_time.jsonl"
    old = bench.load(path)
    rows = [r for r in old if r["m"] not in sizes]
    for m in sizes:
        new = [{**header, **r} for r in measure(m, cache)]
        for r in new:
            print(json.dumps(r), flush=True)
        rows += new
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = table(sorted(rows, key=lambda r: r["m"]))
    (HERE / "results" / "proposal_time.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
