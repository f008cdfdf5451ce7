"""Thompson sampling: per posterior draw d, the mixture that is optimal under theta_d.

A batch is q distinct draws' optima (closed form per draw for the own-share law): cheap and
diverse. From a pool, each draw proposes its best pool row not yet taken.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bayesmix.acquisition.base import ProposalError
from bayesmix.acquisition.functions import member_objective
from bayesmix.acquisition.model import DTYPE
from bayesmix.acquisition.optim import Problem


def thompson(problem: Problem, q: int) -> tuple[Tensor, Tensor]:
    """q distinct members, in random order; each proposes its own optimum (or its best pool
    row). Acquisition values are NaN: Thompson sampling samples rather than maximises."""
    model, pool = problem.model, problem.pool
    members = problem.gen.permutation(model.ensemble_size)
    chosen: list[Tensor] = []
    if pool is not None:
        with torch.no_grad():
            f = member_objective(model, pool[1], problem.w)  # D x C
        used: set[int] = set()
        for d in members:
            order = torch.argsort(f[d])
            pick = next(int(i) for i in order if int(i) not in used)
            used.add(pick)
            chosen.append(pool[1][pick])
            if len(chosen) == q:
                break
        return torch.stack(chosen), torch.full((len(chosen),), float("nan"))
    optima = torch.tensor(problem.member_optima(), dtype=DTYPE)
    for d in members:
        cand = optima[d]
        if any((cand - c).abs().sum() <= 1e-6 for c in chosen):
            continue
        chosen.append(cand)
        if len(chosen) == q:
            break
    if len(chosen) < q:
        raise ProposalError(
            f"thompson sampling found only {len(chosen)} distinct optima among the "
            f"{model.ensemble_size} draws; ask for fewer runs or use another acquisition"
        )
    return torch.stack(chosen), torch.full((q,), float("nan"))
