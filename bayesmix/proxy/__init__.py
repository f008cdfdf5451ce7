"""Proxy training: domain data -> token shards -> small proxies -> per-domain losses.

Importable with torch, numpy, pandas, pyyaml, tokenizers, rich and tqdm alone (the GPU
machines' set); nothing here imports the inference stack. Names are loaded lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "build_sample_corpus": "bayesmix.proxy.corpus",
    "sample_domains": "bayesmix.proxy.corpus",
    "prepare": "bayesmix.proxy.data",
    "load_manifest": "bayesmix.proxy.data",
    "Manifest": "bayesmix.proxy.data",
    "ProxyDataError": "bayesmix.proxy.data",
    "MixtureSampler": "bayesmix.proxy.sampler",
    "GPT": "bayesmix.proxy.model",
    "ModelConfig": "bayesmix.proxy.model",
    "ProxyRunConfig": "bayesmix.proxy.train",
    "ProxyResult": "bayesmix.proxy.train",
    "ProxyRunError": "bayesmix.proxy.train",
    "train_proxy": "bayesmix.proxy.train",
    "train_swarm": "bayesmix.proxy.train",
    "domain_entropies": "bayesmix.proxy.entropy",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bayesmix.proxy' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
