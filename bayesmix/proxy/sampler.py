"""The mixture sampler: which training sequences a proxy sees, in proportion r.

Deterministic given the seed and stateless in the step: ``batch(step)`` is a pure function
of (mixture, seed, step), so a resumed run sees exactly the sequences it would have seen.

The domain of each sequence follows a low-discrepancy (golden-ratio) sequence through the
cumulative shares, so even a short run has the shares it asked for (within O(log n) of
r_i * n sequences) rather than a multinomial draw's noise. Within a
domain, the training tokens are cut into windows of ``ctx + 1`` tokens at a random phase
per epoch and visited in a random order per epoch; the sampler counts tokens and epochs per
domain and refuses (or warns) past a repetition limit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from bayesmix.mixtures import SUM_TOLERANCE
from bayesmix.proxy.data import Manifest, ProxyDataError

_GOLDEN = (math.sqrt(5) - 1) / 2


class RepetitionError(ProxyDataError):
    """A domain would be repeated more often than the configured limit allows."""


class RepetitionWarning(UserWarning):
    pass


def normalise_mixture(mixture: Mapping[str, float], domains: list[str]) -> dict[str, float]:
    """Check a mixture against the available domains; return shares for every domain.

    Domains the mixture leaves out get share 0. Raises ProxyDataError for an unknown domain,
    a negative or non-finite share, or shares that do not sum to 1 (within 1e-3).
    """
    if not mixture:
        raise ProxyDataError("empty mixture")
    unknown = sorted(set(mixture) - set(domains))
    if unknown:
        raise ProxyDataError(
            f"mixture names unknown domain(s) {unknown}; the shards have {domains}"
        )
    vals = {d: float(mixture.get(d, 0.0)) for d in domains}
    bad = [d for d, v in vals.items() if not math.isfinite(v) or v < 0]
    if bad:
        raise ProxyDataError(f"mixture share of {bad[0]!r} is {vals[bad[0]]}, not a number >= 0")
    total = sum(vals.values())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ProxyDataError(
            f"mixture shares sum to {total:.6g}, not 1 (tolerance {SUM_TOLERANCE})"
        )
    return {d: v / total for d, v in vals.items()}


@dataclass
class DomainUse:
    sequences: int
    tokens: int
    epochs: float


class MixtureSampler:
    """Draws batches of (ctx + 1)-token windows from the domains in proportion r.

    Args:
        manifest: the prepared shards.
        mixture: domain -> share (validated with :func:`normalise_mixture`).
        batch_size: sequences per step.
        ctx: sequence length (each window holds ctx + 1 tokens: inputs and shifted targets).
        seed: fixes the window order and phase of every epoch.
        max_epochs: repetition limit per domain (passes over its training tokens).
        on_repeat: "error" (refuse to start a run that would pass the limit), "warn" or "ignore".
    """

    def __init__(
        self,
        manifest: Manifest,
        mixture: Mapping[str, float],
        batch_size: int,
        ctx: int,
        seed: int = 0,
        max_epochs: float = 4.0,
        on_repeat: str = "warn",
    ) -> None:
        if on_repeat not in ("error", "warn", "ignore"):
            raise ValueError(f"on_repeat must be 'error', 'warn' or 'ignore', got {on_repeat!r}")
        self.domains = manifest.domains
        self.mixture = normalise_mixture(mixture, self.domains)
        self.r = np.array([self.mixture[d] for d in self.domains])
        self.batch_size, self.ctx, self.seed = batch_size, ctx, seed
        self.max_epochs, self.on_repeat = max_epochs, on_repeat
        self.offsets = np.zeros(len(self.domains), dtype=np.int64)  # into the concatenated stream
        self.windows = np.zeros(len(self.domains), dtype=np.int64)
        pos = 0
        for i, d in enumerate(self.domains):
            n = manifest.n_tokens(d, "train")
            self.offsets[i] = pos
            pos += n
            # Window j starts at phase + j*ctx (phase < ctx) and must fit in the n tokens.
            self.windows[i] = max((n - 2 * ctx) // ctx, 0)
            if self.r[i] > 0 and self.windows[i] < 1:
                raise ProxyDataError(
                    f"domain {d!r} has {n} training tokens, too few for sequences of {ctx} "
                    f"(needs at least {3 * ctx})"
                )
        self.total_tokens = pos
        self._cdf = np.cumsum(self.r)
        self._cdf[-1] = 1.0  # exact, so that u < 1 always lands on a domain
        self._phase = float(np.random.default_rng([seed, 7]).random())
        self._count_at, self._counts = 0, np.zeros(len(self.r), dtype=np.int64)

    # ---------------------------------------------------------------- counts
    def domain_of(self, first: int, count: int) -> np.ndarray:
        """Domain index of global sequences first .. first + count - 1.

        A golden-ratio (Weyl) sequence through the cumulative shares: every prefix of n
        sequences holds r_i * n + O(log n) sequences of domain i, with no multinomial noise,
        and a domain with share 0 is never drawn.
        """
        j = np.arange(first, first + count, dtype=np.float64)
        u = np.mod(self._phase + j * _GOLDEN, 1.0)
        return np.searchsorted(self._cdf, u, side="right").astype(np.int64)

    def counts_until(self, n_steps: int) -> np.ndarray:
        """Sequences drawn from each domain in steps [0, n_steps)."""
        n = n_steps * self.batch_size
        # Counts are extended from the last answer (runs ask for increasing steps).
        if n < self._count_at:
            self._count_at, self._counts = 0, np.zeros(len(self.r), dtype=np.int64)
        for lo in range(self._count_at, n, 1 << 20):
            hi = min(n, lo + (1 << 20))
            self._counts = self._counts + np.bincount(
                self.domain_of(lo, hi - lo), minlength=len(self.r)
            )
        self._count_at = max(self._count_at, n)
        return self._counts.copy()

    def usage(self, n_steps: int) -> dict[str, DomainUse]:
        c = self.counts_until(n_steps)
        return {
            d: DomainUse(
                int(c[i]),
                int(c[i]) * self.ctx,
                float(c[i] / self.windows[i]) if self.windows[i] else 0.0,
            )
            for i, d in enumerate(self.domains)
        }

    def check_repetition(self, n_steps: int) -> dict[str, DomainUse]:
        """Apply the repetition limit to a run of n_steps (before it starts)."""
        use = self.usage(n_steps)
        over = {d: u.epochs for d, u in use.items() if u.epochs > self.max_epochs}
        if over and self.on_repeat != "ignore":
            msg = ", ".join(f"{d} {e:.1f} epochs" for d, e in over.items())
            msg = (
                f"{n_steps} steps would repeat domain data past the limit of "
                f"{self.max_epochs:g} epochs: {msg}"
            )
            if self.on_repeat == "error":
                raise RepetitionError(msg + " (set on_repeat='warn' to train anyway)")
            warnings.warn(msg, RepetitionWarning, stacklevel=2)
        return use

    # ---------------------------------------------------------------- windows
    @lru_cache(maxsize=64)  # noqa: B019 - a sampler lives as long as its run
    def _epoch(self, i: int, epoch: int) -> tuple[int, np.ndarray]:
        rng = np.random.default_rng([self.seed, i, epoch])
        return int(rng.integers(self.ctx)), rng.permutation(int(self.windows[i]))

    def _starts(self, i: int, first: int, count: int) -> np.ndarray:
        """Start offsets (in the concatenated stream) of domain i's sequences first..first+count."""
        out = np.empty(count, dtype=np.int64)
        w = int(self.windows[i])
        e, k = np.divmod(np.arange(first, first + count), w)
        for epoch in np.unique(e):  # usually one epoch per call, at most a few
            phase, perm = self._epoch(i, int(epoch))
            sel = e == epoch
            out[sel] = self.offsets[i] + phase + perm[k[sel]] * self.ctx
        return out

    def batch_starts(self, step: int) -> np.ndarray:
        """Start offsets of the batch of ``step`` (shape (batch_size,)), domains interleaved."""
        before, after = self.counts_until(step), self.counts_until(step + 1)
        parts = [
            self._starts(i, int(before[i]), int(after[i] - before[i]))
            for i in range(len(self.domains))
            if after[i] > before[i]
        ]
        starts = np.concatenate(parts)
        # A fixed shuffle inside the batch, so that no position in the batch belongs to a domain.
        return starts[np.random.default_rng([self.seed, 1 << 20, step]).permutation(len(starts))]

    def starts_block(self, first_step: int, n_steps: int) -> np.ndarray:
        """Batch starts for steps first_step .. first_step + n_steps - 1: shape (n_steps, B)."""
        return np.stack([self.batch_starts(s) for s in range(first_step, first_step + n_steps)])
