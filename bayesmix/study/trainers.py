"""What turns a proposed run into observations: a real proxy LM, or a known law.

``ProxyTrainer`` trains CPU- or GPU-sized proxies through ``bayesmix.proxy.train_swarm`` (a
pack of runs shares one process and, on a GPU, one stacked model). ``LawTrainer`` evaluates a
law with known parameters (``bayesmix.laws.formulas``) plus noise instead of training: a dry
run of a whole study in seconds, to check a configuration, a cluster or a database before
spending GPU hours, and the trainer of the fault and Ray tests.

``ExternalTrainer`` trains nothing: the study's runs are trained elsewhere, and the user
drives it by ask and tell (``bayesmix study ask`` / ``tell``); ``study run`` refuses it.

Each returns one ``Outcome`` per run: the tidy rows (``run_id, step, tokens, target, value,
metric``) or the reason it failed. Nothing here imports the study's storage.

``TRAINERS`` is the registry ``proxy.trainer`` names: a new trainer is one class (a
``TrainerKind``: ``create``, ``train`` and its traits) and one line there.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from bayesmix.laws.world import LawWorld

if TYPE_CHECKING:  # the config validates trainer names against TRAINERS: no import back
    from bayesmix.study.config import KnownLaw, ProxyConfig, StudyConfig


@dataclass(frozen=True)
class RunSpec:
    """One run to train: its name (the run_id of its rows), mixture, steps and seed, and
    its model size (parameters; None: the study's one proxy size)."""

    name: str
    mixture: Mapping[str, float]
    steps: int
    seed: int
    model_size: float | None = None

    @classmethod
    def of(cls, run: Any) -> RunSpec:
        """The spec of a stored run (``RunRecord``)."""
        return cls(run.name, run.mixture, run.steps, run.seed, run.model_size)


@dataclass(frozen=True)
class Outcome:
    name: str
    rows: pd.DataFrame | None  # tidy rows, None when the run failed
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.rows is not None


class Trainer(Protocol):
    def train(self, runs: Sequence[RunSpec]) -> list[Outcome]: ...


@dataclass(frozen=True)
class TrainerSetup:
    """What a trainer is made from (``TrainerKind.create``): the study's config, its domain
    set (names, prepared shards), the folder its runs write to, and whether to show progress."""

    config: StudyConfig
    domains: list[str]
    shards: str | None
    out_dir: Path
    progress: bool


class TrainerKind(Protocol):
    """A trainer class as the registry holds it: how to make one, and what it needs."""

    texts: bool  # trains on the domains' text: data.paths or data.sample_corpus, not names
    gpus: bool  # takes the GPUs the executor offers

    def create(self, setup: TrainerSetup) -> Trainer: ...

    def evaluations(self, proxy: ProxyConfig) -> int | None:
        """Losses recorded per run (the checkpoints a run-length proposal counts on)."""
        ...

    def refusal(self, study: str) -> str | None:
        """Why `study run` cannot train this study's runs (None: it can)."""
        ...


def make_trainer(
    config: StudyConfig,
    domains: list[str],
    shards: str | None,
    out_dir: Path,
    progress: bool = False,
) -> Trainer:
    setup = TrainerSetup(config, domains, shards, out_dir, progress)
    return TRAINERS[config.proxy.trainer].create(setup)


# ------------------------------------------------------------------------------ proxies
class ProxyTrainer:
    """Real proxy LMs: one ``train_swarm`` call per pack of runs."""

    texts: ClassVar[bool] = True
    gpus: ClassVar[bool] = True

    def __init__(self, config: StudyConfig, shards: str, out_dir: Path, progress: bool) -> None:
        self.config, self.shards, self.out_dir, self.progress = config, shards, out_dir, progress

    @classmethod
    def create(cls, setup: TrainerSetup) -> ProxyTrainer:
        if setup.shards is None:
            raise ValueError("trainer 'proxy' needs prepared shards; this study has none")
        return cls(setup.config, setup.shards, setup.out_dir, setup.progress)

    @staticmethod
    def evaluations(proxy: ProxyConfig) -> int | None:
        from bayesmix.proxy.train import ProxyRunConfig

        return ProxyRunConfig(**proxy.options).eval_points

    @staticmethod
    def refusal(study: str) -> str | None:
        return None

    def train(self, runs: Sequence[RunSpec]) -> list[Outcome]:
        from bayesmix.proxy.train import ProxyRunConfig, train_swarm

        steps = {r.steps for r in runs}
        if len(steps) != 1:  # a packed swarm shares its step count
            return [o for r in runs for o in self.train([r])]
        cfg = ProxyRunConfig(**self.config.proxy.options)
        results = train_swarm(
            cfg,
            self.shards,
            [dict(r.mixture) for r in runs],
            steps=steps.pop(),
            size=self.config.proxy.size,
            seeds=[r.seed for r in runs],
            out_dir=self.out_dir,
            run_ids=[r.name for r in runs],
            progress=self.progress,
        )
        out = []
        for res in results:
            if res.ok and len(res.observations):
                cols = ["run_id", "step", "tokens", "target", "value", "metric"]
                out.append(Outcome(res.run_id, res.observations[cols].reset_index(drop=True)))
            else:
                out.append(Outcome(res.run_id, None, res.reason or "no observations recorded"))
        return out


# ------------------------------------------------------------------------------ known law
class LawTrainer:
    """Evaluates a known cross-domain BiMix law at log-spaced steps, with log-normal noise
    (``bayesmix.laws.world.LawWorld``, the one simulator of a known law).

    Targets are the training domains. The noise of a run depends only on the run's seed, so a
    re-run (after its worker died) gives the same rows, as a real deterministic proxy would.
    """

    texts: ClassVar[bool] = False  # data.domains (names) suffice
    gpus: ClassVar[bool] = False

    def __init__(self, law: KnownLaw, domains: list[str], reference_steps: int) -> None:
        self.law, self.domains, self.reference = law, list(domains), float(reference_steps)
        m = len(self.domains)
        alpha_own = _per_domain(law.alpha, self.domains, "alpha")
        drift = _per_domain(law.size_drift, self.domains, "size_drift")
        self.world = LawWorld(
            self.domains,
            logk=np.log(_per_domain(law.loss, self.domains, "loss")),
            alpha=np.full((m, m), law.cross) + np.diag(alpha_own - law.cross),
            eps=np.full(m, law.eps),
            frac=np.full(m, law.frac),
            beta=np.full(m, law.beta),
            reference_step=self.reference,
            noise=law.noise,
            frac_size=np.full(m, law.size_share),
            gamma=np.full(m, law.size_exponent),
            delta=np.diag(drift),
            reference_size=law.reference_size,
        )

    @classmethod
    def create(cls, setup: TrainerSetup) -> LawTrainer:
        return cls(setup.config.proxy.law, setup.domains, setup.config.proxy.steps)

    @staticmethod
    def evaluations(proxy: ProxyConfig) -> int | None:
        return proxy.law.points

    @staticmethod
    def refusal(study: str) -> str | None:
        return None

    def steps_of(self, steps: int) -> np.ndarray:
        first = max(1.0, steps / 30)
        grid = np.unique(np.round(np.geomspace(first, steps, self.law.points)))
        return grid[grid >= 1]

    def _mixture(self, mixture: Mapping[str, float]) -> np.ndarray:
        return np.array([float(mixture.get(d, 0.0)) for d in self.domains])

    def train(self, runs: Sequence[RunSpec]) -> list[Outcome]:
        out = []
        for run in runs:
            if self.law.seconds:
                time.sleep(self.law.seconds)
            steps = self.steps_of(run.steps)
            noise_seed = int(hashlib.sha256(f"{run.name}:{run.seed}".encode()).hexdigest()[:8], 16)
            r = np.repeat(self._mixture(run.mixture)[None], len(steps), axis=0)
            sizes = None if run.model_size is None else np.full(len(steps), run.model_size)
            rows = self.world.observe(
                r, np.random.default_rng(noise_seed), [run.name] * len(steps), steps, sizes
            )
            rows.insert(2, "tokens", np.nan)
            out.append(
                Outcome(run.name, rows[["run_id", "step", "tokens", "target", "value", "metric"]])
            )
        return out

    def objective(
        self,
        mixture: Mapping[str, float],
        weights: Mapping[str, float] | None,
        model_size: float | None = None,
    ) -> float:
        """The true objective at the last step (and ``model_size``): a dry run's regret."""
        r = self._mixture(mixture)[None]
        sizes = None if model_size is None else np.array([model_size])
        loss = np.exp(self.world.log_loss(r, np.array([self.reference]), sizes)[0])
        w = np.array([1.0 if weights is None else float(weights.get(d, 0.0)) for d in self.domains])
        return float((loss * w).sum() / w.sum())


# ------------------------------------------------------------------------------ external
class ExternalTrainer:
    """Runs trained elsewhere (another cluster, another team's pipeline): the study proposes
    them (``ask``) and stores the losses it is told (``tell``); nothing trains here, and
    ``study run`` refuses the study with the commands to use instead (``refusal``)."""

    texts: ClassVar[bool] = False  # data.domains (names, and token counts if known) suffice
    gpus: ClassVar[bool] = False

    def __init__(self, study: str) -> None:
        self.study = study

    @classmethod
    def create(cls, setup: TrainerSetup) -> ExternalTrainer:
        return cls(setup.config.name)

    @staticmethod
    def evaluations(proxy: ProxyConfig) -> int | None:
        return None  # the user's runs record what they record

    @staticmethod
    def refusal(study: str) -> str:
        return (
            f"study {study!r} has trainer 'external': its runs are trained elsewhere, not by "
            f"`study run`. Propose runs with `bayesmix study ask {study} --out runs.csv`, "
            "train them, then store each run's losses with "
            f"`bayesmix study tell {study} results.csv` (columns run_id, target, value; step, "
            "metric optional); in Python: study.ask(q, posterior=study.fit()) and "
            "study.tell(run_id, frame)"
        )

    def train(self, runs: Sequence[RunSpec]) -> list[Outcome]:
        # A worker started by hand on such a study: every run fails with the way to tell it.
        raise RuntimeError(self.refusal(self.study))


TRAINERS: dict[str, TrainerKind] = {
    "proxy": ProxyTrainer,
    "law": LawTrainer,
    "external": ExternalTrainer,
}


def _per_domain(value: float | Mapping[str, float], domains: list[str], what: str) -> np.ndarray:
    if isinstance(value, Mapping):
        missing = [d for d in domains if d not in value]
        if missing:
            raise ValueError(f"proxy.law.{what}: no value for domain(s) {', '.join(missing)}")
        return np.array([float(value[d]) for d in domains])
    return np.full(len(domains), float(value))
