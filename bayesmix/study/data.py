"""A study's domain set from its config: prepared shards, domain names and token counts.

Preparing happens once, when the study is created (``prepare`` reuses shards that are up to
date); the resulting names, token counts and shard folder are stored as the study's first
domain-set version, so that runs, caps and natural proportions never depend on the working
directory of a later command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bayesmix.study.config import StudyConfig


@dataclass(frozen=True)
class DomainData:
    domains: list[str]
    token_counts: dict[str, float]
    shards: str | None


def prepare_domains(config: StudyConfig, workdir: Path, progress: bool = False) -> DomainData:
    data = config.data
    if data.domains:
        return DomainData(list(data.domains), dict(data.token_counts), None)

    from bayesmix.proxy.corpus import build_sample_corpus, sample_domains
    from bayesmix.proxy.data import load_manifest, prepare

    shards = Path(data.shards) if data.shards else workdir / "shards"
    if data.sample_corpus:
        corpus = workdir / "corpus"
        if not (corpus / "manifest.json").is_file():
            build_sample_corpus(corpus, max_bytes_per_domain=data.sample_bytes, progress=progress)
        sources: dict[str, str | Path] = dict(sample_domains(corpus))
    else:
        sources = dict(data.paths)
    manifest = prepare(sources, shards, tokenizer=data.tokenizer, progress=progress)
    manifest = load_manifest(shards)
    counts = {d: float(manifest.n_tokens(d, "train")) for d in manifest.domains}
    counts.update(data.token_counts)  # the user's counts (the full corpus) win over the sample's
    return DomainData(list(manifest.domains), counts, str(shards.resolve()))
