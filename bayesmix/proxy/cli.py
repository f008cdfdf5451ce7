"""`bayesmix proxy ...`: build the sample corpus, prepare shards, train proxies.

The lead mounts ``proxy_app`` as ``bayesmix proxy``; it also runs alone with
``python -m bayesmix.proxy.cli``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

proxy_app = typer.Typer(
    help="Proxy training: sample corpus, shard preparation, proxy runs.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)


def _fail(msg: str) -> None:
    err.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def parse_mixture(text: str) -> dict[str, float]:
    """'a=0.5,b=0.5', a JSON object, or a path to a JSON/YAML file with one."""
    text = text.strip()
    path = Path(text)
    if path.suffix in (".json", ".yaml", ".yml") and path.is_file():
        import yaml

        data = yaml.safe_load(path.read_text())
    elif text.startswith("{"):
        data = json.loads(text)
    else:
        data = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "=" not in part:
                raise ValueError(f"mixture entry {part!r} is not domain=share")
            name, value = part.split("=", 1)
            data[name.strip()] = float(value)
    if not isinstance(data, dict) or not data:
        raise ValueError("mixture must map domain names to shares")
    return {str(k): float(v) for k, v in data.items()}


@proxy_app.command("sample-corpus")
def sample_corpus(
    out: Annotated[Path, typer.Argument(help="folder to write (one sub-folder per domain)")],
    max_bytes: Annotated[int, typer.Option(help="UTF-8 bytes per domain at most")] = 2_000_000,
) -> None:
    """Build the built-in sample corpus (5 domains of real text from this Python install)."""
    from bayesmix.proxy.corpus import CorpusError, build_sample_corpus

    try:
        m = build_sample_corpus(out, max_bytes_per_domain=max_bytes)
    except CorpusError as exc:
        _fail(str(exc))
    t = Table("domain", "documents", "bytes", title=f"sample corpus in {out}")
    for d, info in m["domains"].items():
        t.add_row(d, str(info["documents"]), f"{info['bytes']:,}")
    console.print(t)


@proxy_app.command("prepare")
def prepare_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="shard folder to write")],
    domain: Annotated[
        list[str] | None,
        typer.Option("--domain", "-d", help="name=folder-or-glob (repeat per domain)"),
    ] = None,
    corpus: Annotated[
        Path | None, typer.Option(help="a sample corpus folder: one domain per sub-folder")
    ] = None,
    tokenizer: Annotated[str, typer.Option(help="byte | bpe | path to a tokenizer.json")] = "byte",
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size")] = 8192,
    val_fraction: Annotated[float, typer.Option(help="held-out share of each domain")] = 0.05,
    seed: int = 0,
    force: Annotated[bool, typer.Option(help="rebuild even if up to date")] = False,
) -> None:
    """Tokenize domain data once into memory-mapped shards with a manifest."""
    from bayesmix.proxy.corpus import CorpusError, sample_domains
    from bayesmix.proxy.data import ProxyDataError, prepare

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        domains: dict[str, str | Path] = {}
        if corpus is not None:
            domains.update(sample_domains(corpus))
        for spec in domain or []:
            if "=" not in spec:
                raise ProxyDataError(f"--domain {spec!r}: expected name=folder-or-glob")
            name, path = spec.split("=", 1)
            domains[name.strip()] = path.strip()
        if not domains:
            raise ProxyDataError("no domains: give --domain name=path (repeatable) or --corpus")
        m = prepare(
            domains,
            out,
            tokenizer=tokenizer,
            vocab_size=vocab_size,
            val_fraction=val_fraction,
            seed=seed,
            force=force,
        )
    except (ProxyDataError, CorpusError) as exc:
        _fail(str(exc))
    t = Table(
        "domain",
        "train tokens",
        "val tokens",
        "bytes/token",
        title=f"shards in {out} (tokenizer {m.tokenizer['kind']}, vocab {m.vocab_size})",
    )
    for d in m.domains:
        t.add_row(
            d,
            f"{m.n_tokens(d, 'train'):,}",
            f"{m.n_tokens(d, 'val'):,}",
            f"{m.bytes_per_token(d, 'val'):.2f}",
        )
    console.print(t)


@proxy_app.command("train")
def train_cmd(
    shards: Annotated[Path, typer.Option(help="shard folder written by `prepare`")],
    mixture: Annotated[
        str, typer.Option(help="'a=0.5,b=0.5', a JSON object or a .json/.yaml file")
    ],
    steps: Annotated[int, typer.Option(help="optimiser steps")] = 300,
    size: Annotated[str, typer.Option(help="tiny | 6m | 15m | 30m | 60m | a YAML file")] = "tiny",
    seed: int = 0,
    out: Annotated[Path, typer.Option(help="runs go to <out>/<run_id>/")] = Path("runs/proxy"),
    run_id: Annotated[
        str | None, typer.Option(help="default: derived from the mixture and settings")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    on_repeat: Annotated[
        str, typer.Option(help="past the repetition limit: error | warn | ignore")
    ] = "warn",
) -> None:
    """Train one proxy on a mixture; print its held-out losses per domain."""
    from bayesmix.proxy.train import ProxyRunConfig, train_proxy

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("bayesmix.proxy.train").setLevel(logging.CRITICAL)  # _fail says it once
    try:
        mix = parse_mixture(mixture)
    except (ValueError, json.JSONDecodeError) as exc:
        _fail(f"--mixture: {exc}")
    cfg = ProxyRunConfig(device=device, on_repeat=on_repeat)
    res = train_proxy(
        cfg,
        shards,
        mix,
        steps=steps,
        size=size,
        seed=seed,
        out_dir=out,
        run_id=run_id,
        progress=True,
    )
    if not res.ok:
        _fail(f"run {res.run_id} failed: {res.reason}")
    df = res.observations
    last = df[df.step == df.step.max()].pivot(index="target", columns="metric", values="value")
    t = Table(
        "domain",
        "share",
        "loss (nats/token)",
        "bits/byte",
        title=f"{res.run_id}: step {res.steps_done}, {res.model_size:,} parameters",
    )
    for d, row in last.iterrows():
        t.add_row(
            str(d), f"{res.mixture.get(str(d), 0):.3f}", f"{row['loss']:.4f}", f"{row['bpb']:.4f}"
        )
    console.print(t)
    if res.tokens_per_s:
        console.print(f"{res.tokens_per_s:,.0f} tokens/s; results in {res.out_dir}")


if __name__ == "__main__":
    proxy_app()
