"""Proxy training: domain data -> token shards -> small proxies -> per-domain losses.

Importable with torch, numpy, pandas, pyyaml, tokenizers, rich and tqdm alone (the GPU
machines' set); nothing here imports the inference stack. Names are loaded lazily.
"""

from __future__ import annotations

from bayesmix.lazy import lazy_getattr

_LAZY = {  # module -> the names it provides
    "corpus": ("build_sample_corpus", "sample_domains"),
    "data": ("prepare", "load_manifest", "Manifest", "ProxyDataError"),
    "sampler": ("MixtureSampler",),
    "model": ("GPT", "ModelConfig"),
    "train": ("ProxyRunConfig", "ProxyResult", "ProxyRunError", "train_proxy", "train_swarm"),
    "entropy": ("domain_entropies",),
}
__all__ = [name for names in _LAZY.values() for name in names]
__getattr__ = lazy_getattr(__name__, _LAZY)
