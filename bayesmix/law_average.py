"""Several laws' posteriors over the same runs, each with a weight: an average of laws.

``bm.average_laws`` (``bayesmix.selection``) weights the laws by how well they predict held-out
runs; proposals are then over every law's draws (``bayesmix.acquisition``), and the optimal
mixture is the law-weighted one (``bayesmix.acquisition.optimal_mixture``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LawAverage:
    """Several laws' posteriors over the same runs and the weight of each (``average_laws``).

    ``bm.propose`` proposes over the weighted ensemble of their draws; ``posterior`` is the
    law the comparison chose, the one to recommend from.
    """

    posteriors: Mapping[str, Any]
    weights: Mapping[str, float]
    comparison: Any  # the held-out comparison behind the weights (selection.LawComparison)

    @property
    def posterior(self) -> Any:
        return self.comparison.posterior

    @property
    def domains(self) -> list[str]:
        return list(self.posterior.domains)

    @property
    def targets(self) -> list[str]:
        return list(self.posterior.targets)

    def parts(self) -> list[tuple[Any, float]]:
        """(posterior, weight) of each law with a positive weight, the heaviest first."""
        laws = sorted(self.posteriors, key=lambda law: -self.weights[law])
        return [(self.posteriors[law], self.weights[law]) for law in laws if self.weights[law] > 0]

    def __str__(self) -> str:
        weights = ", ".join(f"{law} {w:.2f}" for law, w in self.weights.items())
        return f"{self.comparison}\nlaw weights: {weights}"


def chosen_posterior(fitted: Any) -> Any:
    """The posterior to recommend from: a ``LawAverage``'s chosen law, else ``fitted``."""
    return fitted.posterior if isinstance(fitted, LawAverage) else fitted
