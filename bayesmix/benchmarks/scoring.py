"""How a benchmark scores a recommendation against the truth it knows.

- ``regret``: simple regret, the true objective of the recommended mixture minus the best
  achievable (nats; lower is better, 0 at the optimum).
- ``coverage``: whether the credible intervals of the optimal mixture (``OptimalMixture
  .intervals``) hold the true optimum, domain by domain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# An interval "holds" a share within this of its ends: the optimiser's round-off, not a miss.
INTERVAL_SLACK = 1e-9


def regret(objective: Callable[[np.ndarray], Any], mixture: np.ndarray, best: float) -> float:
    """The true objective at ``mixture`` (M,) minus the best achievable value ``best``."""
    return float(np.asarray(objective(np.asarray(mixture, dtype=float)[None]))[0] - best)


@dataclass(frozen=True)
class Coverage:
    """Per-domain intervals (lo, hi) of the optimal mixture and the true optimum."""

    lo: np.ndarray
    hi: np.ndarray
    truth: np.ndarray

    @property
    def inside(self) -> np.ndarray:
        """Per domain: whether its interval holds the true share."""
        return (self.truth >= self.lo - INTERVAL_SLACK) & (self.truth <= self.hi + INTERVAL_SLACK)

    @property
    def covered(self) -> int:
        return int(self.inside.sum())

    @property
    def share(self) -> float:
        """The share of domains whose interval holds the truth."""
        return float(self.inside.mean())

    @property
    def width(self) -> float:
        """The mean width of the intervals."""
        return float((self.hi - self.lo).mean())


def coverage(intervals: pd.DataFrame, truth: np.ndarray, domains: Sequence[str]) -> Coverage:
    """``intervals`` (indexed by domain, columns ``lo`` and ``hi``) against the true optimal
    mixture ``truth``, in the order of ``domains``."""
    iv = intervals.reindex(list(domains))
    return Coverage(
        iv["lo"].to_numpy(dtype=float),
        iv["hi"].to_numpy(dtype=float),
        np.asarray(truth, dtype=float),
    )
