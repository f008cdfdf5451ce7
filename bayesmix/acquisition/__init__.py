"""Acquisition: which q proxy runs most improve the final mixture, chosen by name.

The user's objective is F(x) = sum_t w_t L_t(x) at the target step (lower is better), over
the ensemble of posterior draws (``model.py``: one member per draw, several laws' draws for
a ``LawAverage``). The acquisitions (``ACQUISITIONS``):

- ``thompson`` (``thompson.py``): q distinct draws' optima. Cheap, diverse.
- ``qlognei`` (``functions.py``): BoTorch's qLogNoisyExpectedImprovement on -F.
- ``optimum-variance`` (``functions.py``): the expected reduction of the posterior variance
  of the optimal mixture r* after observing the batch: information aimed at where the
  optimum is, not at the loss.

``propose`` (``proposal.py``) builds the ``Problem`` (``optim.py``: the simplex optimiser)
and asks the named acquisition for a batch; ``cost.py`` chooses run lengths as well;
``optimal_mixture`` (``optimum.py``) is the recommendation of a posterior or an average of
laws.

A new acquisition is one file with a function ``(problem, q) -> (mixtures, values)`` and one
line in ``_ACQUISITIONS``. The package imports lazily, like ``bayesmix.laws``: the names of
the acquisitions (the CLI's help, the study config) come without torch and BoTorch.

    import bayesmix as bm
    batch = bm.propose(post, q=8, acquisition="qlognei")
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> (module, function): the function chooses q runs for a Problem (``get_acquisition``).
_ACQUISITIONS = {
    "thompson": ("bayesmix.acquisition.thompson", "thompson"),
    "qlognei": ("bayesmix.acquisition.functions", "qlognei"),
    "optimum-variance": ("bayesmix.acquisition.functions", "optimum_variance"),
}
ACQUISITIONS = tuple(_ACQUISITIONS)

_LAZY = {
    "ProposalError": "bayesmix.acquisition.base",
    "objective_weights": "bayesmix.acquisition.base",
    "OptimaCache": "bayesmix.acquisition.cache",
    "OPTIMA": "bayesmix.acquisition.cache",
    "LawAverageModel": "bayesmix.acquisition.model",
    "LawEnsembleModel": "bayesmix.acquisition.model",
    "ensemble_model": "bayesmix.acquisition.model",
    "AcquisitionSettings": "bayesmix.acquisition.optim",
    "Problem": "bayesmix.acquisition.optim",
    "EnsembleMean": "bayesmix.acquisition.functions",
    "expected_gain": "bayesmix.acquisition.functions",
    "qOptimumVarianceReduction": "bayesmix.acquisition.functions",
    "expected_optimum": "bayesmix.acquisition.optimum",
    "optimal_mixture": "bayesmix.acquisition.optimum",
    "get_acquisition": "bayesmix.acquisition.proposal",
    "propose": "bayesmix.acquisition.proposal",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bayesmix.acquisition' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [*_LAZY, "ACQUISITIONS"]
