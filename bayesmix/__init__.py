"""bayesmix: Bayesian data-mixing laws for choosing a pretraining data mixture.

The top level imports lazily so that the proxy-training path (``bayesmix.proxy``) stays
importable on machines that have torch but not the inference stack (arviz, SQLAlchemy).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Observations": "bayesmix.observations",
    "datasets": "bayesmix.datasets",
    "fit": "bayesmix.inference",
    "Posterior": "bayesmix.posterior",
    "FittedLaw": "bayesmix.posterior",
    "NotConvergedError": "bayesmix.posterior",
    "ConvergenceWarning": "bayesmix.posterior",
    "Constraints": "bayesmix.optimize",
    "OptimalMixture": "bayesmix.optimize",
    "entropy_mixture": "bayesmix.proposers.swarms",
    "propose": "bayesmix.acquisition",
    "optimal_mixture": "bayesmix.acquisition",
    "compare_laws": "bayesmix.selection",
    "average_laws": "bayesmix.selection",
    "DomainSet": "bayesmix.domains",
    "DomainUpdate": "bayesmix.domains",
    "Study": "bayesmix.study",
    # What the calls above return.
    "LawComparison": "bayesmix.selection",
    "LawAverage": "bayesmix.selection",
    "Fit": "bayesmix.study.study",
    "RunRecord": "bayesmix.study.storage",
    "DomainSetRecord": "bayesmix.study.storage",
    # What they raise: every error derives from BayesMixError (bayesmix.errors).
    "BayesMixError": "bayesmix.errors",
    "ArgumentError": "bayesmix.errors",
    "ObservationsError": "bayesmix.observations",
    "LawError": "bayesmix.laws.base",
    "PosteriorFileError": "bayesmix.posterior",
    "InfeasibleError": "bayesmix.optimize",
    "SelectionError": "bayesmix.selection",
    "SeparabilityError": "bayesmix.separability",
    "DomainUpdateError": "bayesmix.domains",
    "ProposalError": "bayesmix.proposers.base",
    "StudyError": "bayesmix.study.study",
    "ConfigError": "bayesmix.study.config",
    "StorageError": "bayesmix.study.storage",
    "ProxyDataError": "bayesmix.proxy.data",
    "CorpusError": "bayesmix.proxy.corpus",
    "ProxyRunError": "bayesmix.proxy.train",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bayesmix' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if name == "datasets" else getattr(module, name)
