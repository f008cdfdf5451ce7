"""Proxy-training throughput on one GPU: bayesmix's trainer vs the naive reference loop.

Runs, each configuration in its own process (so one failure or OOM costs one row):
  * the naive nanoGPT loop (../shared/reference/naive_gpt_bench.py, bf16 + torch.compile)
  * bayesmix's trainer, single (K = 1) and packed (K proxies of different mixtures), with and
    without the whole-step CUDA graph,
at the same model shapes, on real tokens (BPE 8192 shards of the sample corpus). Writes
``results.jsonl`` and ``results.md`` (a table) to --out; with --profile also the torch-profiler
tables of one naive and one bayesmix step.

    python -m studies.proxy_throughput.bench --shards carry/shards_bpe \
        --naive carry/naive_gpt_bench.py --out $OUT --sizes 6m --packs 1,4,8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PEAK = 989e12  # H100 SXM dense bf16, as the reference benchmark counts MFU
SHAPES = {  # size -> naive benchmark arguments with the same model shape
    "6m": ["--d", "256", "--layers", "6", "--heads", "4", "--ctx", "512", "--batch", "128"],
    "15m": ["--d", "384", "--layers", "7", "--heads", "6", "--ctx", "512", "--batch", "128"],
    "30m": ["--d", "512", "--layers", "8", "--heads", "4", "--ctx", "1024", "--batch", "64"],
    "60m": ["--d", "768", "--layers", "8", "--heads", "6", "--ctx", "1024", "--batch", "64"],
}


def one(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from bayesmix.proxy.data import load_manifest
    from bayesmix.proxy.train import ProxyRunConfig, Trainer

    manifest = load_manifest(args.shards)
    rng = np.random.default_rng(0)
    mixtures = [
        dict(zip(manifest.domains, rng.dirichlet(np.ones(len(manifest.domains))), strict=True))
        for _ in range(args.k)
    ]
    cfg = ProxyRunConfig(
        cuda_graph=bool(args.graph),
        compile=bool(args.compile),
        on_repeat="ignore",
        eval_points=1,
        checkpoint=False,
        compile_mode=args.mode or None,
        bf16_residual=bool(args.bf16_resid),
        n_heads=args.heads or None,
    ).resolved(args.size)
    warm, n = 8, args.steps
    tr = Trainer(cfg, manifest, mixtures, list(range(args.k)), warm + n)
    t0 = time.perf_counter()
    tr.train_until(warm)
    setup = time.perf_counter() - t0
    if args.profile_out:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            tr.train_until(warm + 3)
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30)
        Path(args.profile_out).write_text(
            f"bayesmix size={args.size} K={args.k} graph={args.graph} (3 steps)\n{table}\n"
        )
        return {}
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    tr.train_until(warm + n)
    dt = (time.perf_counter() - t0) / n
    tok = args.k * cfg.batch_size * cfg.ctx
    loss = tr.loss_hist[warm + n - 1].float().cpu().numpy()
    return {
        "impl": "bayesmix",
        "size": args.size,
        "K": args.k,
        "graph": args.graph,
        "compile": args.compile,
        "mode": args.mode,
        "bf16_resid": args.bf16_resid,
        "heads": cfg.n_heads,
        "params": tr.mcfg.n_params(),
        "vocab": manifest.vocab_size,
        "d": cfg.d_model,
        "layers": cfg.n_layers,
        "ctx": cfg.ctx,
        "batch": cfg.batch_size,
        "ms_per_step": dt * 1e3,
        "tokens_per_s": tok / dt,
        "mfu": tr.mcfg.flops_per_token() * tok / dt / PEAK,
        "setup_s": setup,
        "max_mem_gb": torch.cuda.max_memory_allocated() / 1e9,
        "final_train_loss": [round(float(x), 3) for x in loss],
        "device": torch.cuda.get_device_name(),
    }


def profile_naive(args: argparse.Namespace) -> None:
    """One profiled step of the naive loop (compiled, bf16) at the 6m shape."""
    import importlib.util

    import torch
    from torch.profiler import ProfilerActivity, profile

    spec = importlib.util.spec_from_file_location("naive", args.naive)
    naive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(naive)
    model = naive.GPT(8192, 256, 6, 4, 512).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    fwd = torch.compile(model)
    x = torch.randint(0, 8192, (128, 512), device="cuda")
    y = torch.randint(0, 8192, (128, 512), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", torch.bfloat16):
            loss = fwd(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30)
    Path(args.profile_out).write_text(f"naive 6m bf16+compile (3 steps)\n{table}\n")


def run(cmd: list[str], timeout: int) -> dict | None:
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"TIMEOUT after {timeout}s: {' '.join(cmd)}", flush=True)
        return {"error": f"timeout {timeout}s", "cmd": " ".join(cmd[2:])}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        tail = (p.stderr or p.stdout)[-1500:]
        print(f"FAILED ({p.returncode}) {' '.join(cmd)}\n{tail}", flush=True)
        return {
            "error": tail.strip().splitlines()[-1] if tail.strip() else "failed",
            "cmd": " ".join(cmd[2:]),
        }
    out = json.loads(lines[-1])
    out["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(out), flush=True)
    return out


def table(rows: list[dict]) -> str:
    head = (
        "| impl | size | params | K | variant | ms/step | tokens/s (total) | MFU | "
        "vs naive | peak mem GB |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    naive = {r["size"]: r["tokens_per_s"] for r in rows if r.get("impl") == "naive"}
    out = []
    for r in rows:
        if "error" in r:
            out.append(f"| failed | {r.get('cmd', '')} | | | | | | | | {r['error'][:60]} |")
            continue
        ref = naive.get(r["size"])
        ratio = f"{r['tokens_per_s'] / ref:.2f}x" if ref else ""
        out.append(
            f"| {r['impl']} | {r['size']} | {r['params'] / 1e6:.1f}M | {r.get('K', 1)} | "
            f"{r.get('variant', '')} | {r.get('ms_per_step', 0):.2f} | "
            f"{r['tokens_per_s'] / 1e6:.2f}M | {100 * r['mfu']:.1f} % | {ratio} | "
            f"{r.get('max_mem_gb', float('nan')):.1f} |"
        )
    return head + "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True)
    p.add_argument("--naive", required=True)
    p.add_argument("--out", default="out")
    p.add_argument("--sizes", default="6m,30m,60m")
    p.add_argument("--packs", default="1,4,8")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--nograph", action="store_true", help="also K=1 without the CUDA graph")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--timeout", type=int, default=240)
    p.add_argument("--extra", default="", help="flags for the packed runs")
    # internal: one configuration
    p.add_argument("--one", action="store_true")
    p.add_argument("--size")
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--graph", type=int, default=1)
    p.add_argument("--compile", type=int, default=1)
    p.add_argument("--naive-profile", action="store_true")
    p.add_argument("--profile-out")
    p.add_argument("--mode", default="", help="torch.compile mode")
    p.add_argument("--bf16-resid", type=int, default=1)
    p.add_argument("--heads", type=int, default=0)
    p.add_argument("--variants", default="", help="extra K=1 variants: name:flags;...")
    a = p.parse_args()
    if a.one:
        if a.naive_profile:
            profile_naive(a)
            return
        res = one(a)
        if res:
            print(json.dumps(res), flush=True)
        return

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, os.path.abspath(__file__)]
    common = ["--shards", a.shards, "--naive", a.naive, "--steps", str(a.steps)]
    rows: list[dict] = []

    def add(r: dict | None) -> None:
        if r:
            rows.append(r)
            with open(out / "results.jsonl", "a") as fh:
                fh.write(json.dumps(r) + "\n")
            (out / "results.md").write_text(table(rows))

    if a.profile:
        run(
            [
                *me,
                "--one",
                "--naive-profile",
                *common,
                "--profile-out",
                str(out / "profile_naive_6m.txt"),
            ],
            a.timeout,
        )
        run(
            [
                *me,
                "--one",
                *common,
                "--size",
                "6m",
                "--k",
                "1",
                "--graph",
                "0",
                "--profile-out",
                str(out / "profile_bayesmix_6m.txt"),
            ],
            a.timeout,
        )
    for size in a.sizes.split(","):
        r = run(
            [
                sys.executable,
                a.naive,
                *SHAPES[size],
                "--vocab",
                "8192",
                "--mode",
                "bf16+compile",
                "--steps",
                str(a.steps),
            ],
            a.timeout,
        )
        if r and "error" not in r:
            r.update(
                impl="naive", size=size, ms_per_step=r["batch"] * r["ctx"] / r["tokens_per_s"] * 1e3
            )
        add(r)
        if a.nograph:
            add(run([*me, "--one", *common, "--size", size, "--k", "1", "--graph", "0"], a.timeout))
        for v in filter(None, a.variants.split(";")):
            name, flags = v.split(":", 1)
            r = run([*me, "--one", *common, "--size", size, *flags.split()], a.timeout)
            if r and "error" not in r:
                r["variant"] = name
            add(r)
        for k in [int(x) for x in a.packs.split(",") if x]:
            r = run(
                [*me, "--one", *common, "--size", size, "--k", str(k), *a.extra.split()], a.timeout
            )
            if r and "error" not in r:
                r["variant"] = "default " + a.extra
            add(r)
    print(table(rows))


if __name__ == "__main__":
    main()
