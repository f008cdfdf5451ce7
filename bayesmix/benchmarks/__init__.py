"""Benchmarks: worlds whose truth is known, for measuring proposers and recommenders.

- ``oracles``: what a proxy run would have measured, without a GPU: ``SyntheticOracle`` (a
  known law, simulated by ``bayesmix.laws.world.LawWorld``), and the global search for each
  oracle's optimum.
- ``regmix``: RegMix's 768 runs as a smooth landscape (``RegMixLandscape``) and as a pool
  (``PoolOracle``).
- ``scoring``: the regret of a recommended mixture and the coverage of its intervals.
- ``trainer``: an oracle as a study's trainer, so that a benchmark drives ``bm.Study``.
- ``sizes``: RegMix's 1M and 60M runs as one world with a model-size axis (``SizeOracle``),
  whose optimum moves with model size; loaded on first use (``bayesmix.lazy``).

This layer sits above the study (it drives studies) and below the command line.
"""

from __future__ import annotations

from bayesmix.benchmarks.oracles import (
    REGMIX_LOG_NOISE,
    Oracle,
    SyntheticOracle,
    global_minimum,
    weights_mapping,
)
from bayesmix.benchmarks.regmix import PoolOracle, RegMixLandscape
from bayesmix.benchmarks.scoring import Coverage, coverage, regret
from bayesmix.benchmarks.trainer import OracleTrainer, train_and_tell
from bayesmix.lazy import lazy_getattr

_LAZY = {  # module -> the names it provides, imported when first asked for
    "sizes": ("SizeOracle", "fit_size_world", "load_regmix_sizes"),
}

__all__ = [
    "REGMIX_LOG_NOISE",
    "Coverage",
    "Oracle",
    "OracleTrainer",
    "PoolOracle",
    "RegMixLandscape",
    "SyntheticOracle",
    "coverage",
    "global_minimum",
    "regret",
    "train_and_tell",
    "weights_mapping",
    *(name for names in _LAZY.values() for name in names),
]
__getattr__ = lazy_getattr(__name__, _LAZY)
