"""Per-domain entropies of the prepared shards, for BiMix's entropy mixtures.

BiMix (arXiv 2405.14908) proposes r_i = softmax(H_i) over domains i, with H_i an entropy of
domain i's tokens: Shannon (unigram) entropy, or the conditional entropy of a token given the
one before it (token bigrams), which worked best there. No proxy run is needed: it costs one
pass over the training shards. Entropies are in nats. The mixture itself is the proposers'
(``bayesmix.proposers.swarms.entropy_mixture``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix.proxy.data import Manifest, load_manifest

ENTROPY_KINDS = ("conditional", "shannon", "joint")  # the columns of domain_entropies


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def domain_entropies(
    shards: str | Path | Manifest, max_tokens: int | None = 4_000_000
) -> pd.DataFrame:
    """Per-domain entropies of the training split (nats), one row per domain.

    Columns: ``shannon`` H(X), ``joint`` H(X_{t-1}, X_t), ``conditional`` H(X_t | X_{t-1}) =
    joint - H(X_{t-1}), and ``tokens`` (how many were read). Bigrams across a document
    boundary (previous token = end of document) are left out. ``max_tokens`` reads an evenly
    spaced set of blocks of that many tokens in all from large domains.
    """
    m = shards if isinstance(shards, Manifest) else load_manifest(shards)
    eos = int(m.tokenizer["eos_id"])
    v = m.vocab_size
    rows = {}
    for d in m.domains:
        toks = _sample(np.asarray(m.tokens(d, "train")), max_tokens).astype(np.int64)
        prev, nxt = toks[:-1], toks[1:]
        keep = prev != eos
        pairs = prev[keep] * v + nxt[keep]
        _, pair_counts = np.unique(pairs, return_counts=True)
        prev_counts = np.bincount(prev[keep], minlength=v)
        joint = _entropy(pair_counts)
        rows[d] = {
            "shannon": _entropy(np.bincount(toks, minlength=v)),
            "joint": joint,
            "conditional": joint - _entropy(prev_counts),
            "tokens": len(toks),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _sample(toks: np.ndarray, max_tokens: int | None) -> np.ndarray:
    if max_tokens is None or len(toks) <= max_tokens:
        return np.asarray(toks)
    # 64 evenly spaced contiguous blocks: bigrams stay intact, the whole domain is covered.
    block = max_tokens // 64
    starts = np.linspace(0, len(toks) - block, 64).astype(np.int64)
    return np.concatenate([np.asarray(toks[s : s + block]) for s in starts])
