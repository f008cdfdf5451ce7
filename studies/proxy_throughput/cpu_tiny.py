"""The CPU demo's default proxy run, timed: tiny size, 300 steps of 16 x 256 tokens.

Builds the sample corpus and byte shards (reused when present), trains one tiny proxy on an
even mixture and writes a row to ``cpu_tiny.md`` beside this file: wall time (including
evaluation), training tokens/s, CPU and thread count.

    python -m studies.proxy_throughput.cpu_tiny [--threads N] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--work", default="/tmp/bayesmix-cpu-tiny")
    p.add_argument("--steps", type=int, default=300)
    a = p.parse_args()

    import torch

    from bayesmix.proxy.corpus import build_sample_corpus, sample_domains
    from bayesmix.proxy.data import prepare
    from bayesmix.proxy.train import ProxyRunConfig, train_proxy

    work = Path(a.work)
    if not (work / "corpus" / "manifest.json").is_file():
        build_sample_corpus(work / "corpus", progress=False)
    m = prepare(sample_domains(work / "corpus"), work / "shards", progress=False)
    mix = {d: 1 / len(m.domains) for d in m.domains}
    cfg = ProxyRunConfig(threads=a.threads, device="cpu", checkpoint=True)
    run_id = f"tiny-{int(time.time())}"
    t0 = time.perf_counter()
    res = train_proxy(
        cfg, m.root, mix, steps=a.steps, size="tiny", out_dir=work / "runs", run_id=run_id
    )
    wall = time.perf_counter() - t0
    res.raise_for_status()
    last = res.observations[
        (res.observations.metric == "loss") & (res.observations.step == a.steps)
    ]
    load = os.getloadavg()[0]
    row = (
        f"| {time.strftime('%Y-%m-%d %H:%M')} | {platform.processor() or platform.machine()} "
        f"x{os.cpu_count()} | {a.threads or torch.get_num_threads()} | {load:.1f} | "
        f"{res.model_size:,} | "
        f"{a.steps} | {wall:.1f} | {res.tokens_per_s:,.0f} | {last.value.mean():.3f} |"
    )
    print(row)
    out = Path(__file__).with_name("cpu_tiny.md")
    if not out.exists():
        out.write_text(
            "| when | CPU | torch threads | 1-min load (end) | params | steps | wall s "
            "(with eval) | train tokens/s | mean final loss |\n"
            "|---|---|---|---|---|---|---|---|---|\n"
        )
    with open(out, "a") as fh:
        fh.write(row + "\n")


if __name__ == "__main__":
    main()
