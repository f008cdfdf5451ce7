"""Real mixtures on the GPU: K packed 6m proxies -> an Observations table for the laws.

Mixtures respect a repetition cap: no domain is repeated more than ``--max-epochs`` times
(Olmix's rule, p_j <= k N_j / R); see ``capped_mixtures``. Writes ``observations.csv`` (tidy,
DESIGN.md) and ``runs.json`` to --out.

    python -m studies.proxy_throughput.gpu_mixture_run --shards carry/shards_bpe --out $OUT
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def capped_mixtures(
    tokens: dict[str, int], n: int, total: float, max_epochs: float, seed: int
) -> list[dict[str, float]]:
    """n mixtures that vary every domain's share and repeat no domain past max_epochs.

    A domain whose cap (max_epochs x its tokens / tokens per run) is below 1 gets a share
    drawn uniformly between 5 % and 100 % of its cap (so the laws see its share vary, rather
    than every run sitting at the cap); the rest of the mass goes to the other domains in
    flat-Dirichlet proportions.
    """
    names = list(tokens)
    cap = np.array([max_epochs * tokens[d] / total for d in names])
    small = cap < 1
    if cap[small].sum() >= 0.9 or not (~small).any():
        raise SystemExit("the corpus is too small for this many tokens per run")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        r = np.zeros(len(names))
        r[small] = cap[small] * rng.uniform(0.05, 1.0, small.sum())
        r[~small] = (1 - r[small].sum()) * rng.dirichlet(np.ones((~small).sum()))
        if (r > cap + 1e-12).any():
            raise SystemExit("a large domain went over its cap; use fewer tokens per run")
        out.append({d: float(v) for d, v in zip(names, r / r.sum(), strict=True)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True)
    p.add_argument("--out", default="out")
    p.add_argument("--size", default="6m")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-epochs", type=float, default=4.0)
    p.add_argument("--runs-dir", default=None, help="run folders (default: <out>/runs)")
    a = p.parse_args()

    from bayesmix.proxy.data import load_manifest
    from bayesmix.proxy.train import ProxyRunConfig, train_swarm

    m = load_manifest(a.shards)
    cfg = ProxyRunConfig(batch_size=a.batch, on_repeat="error", max_epochs=a.max_epochs)
    ctx = cfg.resolved(a.size).ctx
    total = a.steps * a.batch * ctx
    tokens = {d: m.n_tokens(d, "train") for d in m.domains}
    mixes = capped_mixtures(tokens, a.k, total, a.max_epochs * 0.95, seed=1)
    out = Path(a.out)
    t0 = time.time()
    res = train_swarm(
        cfg,
        a.shards,
        mixes,
        steps=a.steps,
        size=a.size,
        seeds=list(range(a.k)),
        out_dir=a.runs_dir or out / "runs",
        run_ids=[f"gpu6m-{i}" for i in range(a.k)],
    )
    wall = time.time() - t0
    frame = pd.concat([r.observations for r in res if r.ok], ignore_index=True)
    frame.to_csv(out / "observations.csv", index=False)
    summary = [
        {
            "run_id": r.run_id,
            "status": r.status,
            "reason": r.reason,
            "tokens_per_s": r.tokens_per_s,
            "mixture": r.mixture,
        }
        for r in res
    ]
    (out / "runs.json").write_text(json.dumps({"wall_s": wall, "runs": summary}, indent=1))
    last = frame[(frame.metric == "loss") & (frame.step == frame.step.max())]
    print(last.pivot(index="run_id", columns="target", values="value").round(3))
    print(f"{len(frame)} rows, {a.k} runs, wall {wall:.1f}s")


if __name__ == "__main__":
    main()
