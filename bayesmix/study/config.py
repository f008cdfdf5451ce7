"""A study's configuration: one YAML file, validated by pydantic.

Every section forbids unknown keys, so a typo is an error that names the key and the file
instead of a silently ignored setting. ``load_config`` turns pydantic's errors into one
``ConfigError`` line; relative paths are resolved against the file's folder, so a study
created from any working directory reads the same data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

import bayesmix.laws
from bayesmix.acquisition import ACQUISITIONS
from bayesmix.errors import BayesMixError
from bayesmix.proposers.registry import POSTERIOR_FREE, PROPOSERS
from bayesmix.study.trainers import TRAINERS

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
DOMAIN = re.compile(r"^[a-z0-9][a-z0-9_:.\-]*$")
FIRST_PROPOSERS = POSTERIOR_FREE  # the first batch has no observations to fit
PROXY_SIZES = ("tiny", "6m", "15m", "30m", "60m")

PositiveInt = Annotated[int, Field(gt=0)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]


def _registered(what: str, names: Callable[[], Collection[str]]) -> AfterValidator:
    """The check of a field that names an entry of a registry, ``names()``: read when the
    field is validated, so that a law registered since the import counts."""
    return AfterValidator(lambda v: _one_of(v, names(), what))


TrainerName = Annotated[str, _registered("trainer", lambda: TRAINERS)]
LawName = Annotated[str, _registered("law", lambda: bayesmix.laws.LAW_NAMES)]
ProposerName = Annotated[str, _registered("proposer", lambda: PROPOSERS)]


class ConfigError(BayesMixError, ValueError):
    """A study configuration is malformed; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """The training domains and where their text is.

    Either ``sample_corpus`` (the built-in corpus of five domains, built on first use) or
    ``paths`` (domain -> folder, file or glob). The trainers ``law`` and ``external`` need
    neither: give ``domains`` (names) and, optionally, ``token_counts``.
    """

    sample_corpus: bool = False
    sample_bytes: PositiveInt = 300_000  # per domain of the sample corpus
    paths: dict[str, str] = Field(default_factory=dict)
    domains: list[str] = Field(default_factory=list)
    token_counts: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    tokenizer: str = "byte"
    shards: str | None = None  # folder for prepared shards (default: beside the storage)

    @field_validator("paths", "token_counts")
    @classmethod
    def _canonical_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            _check_domain(name)
        return v

    @field_validator("domains")
    @classmethod
    def _canonical_list(cls, v: list[str]) -> list[str]:
        for name in v:
            _check_domain(name)
        if len(set(v)) != len(v):
            raise ValueError("domain names repeat")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        given = [bool(self.sample_corpus), bool(self.paths), bool(self.domains)]
        if not any(given):
            # An empty list or mapping given on purpose is its own mistake: "give exactly one
            # of ..." would send the user looking for a key they did give.
            for key in ("domains", "paths"):
                if key in self.model_fields_set:
                    raise ValueError(f"{key} is empty: list the training domains (at least two)")
        if sum(given) != 1:
            raise ValueError("give exactly one of sample_corpus: true, paths or domains")
        names = self.names
        if names is not None and len(names) < 2:
            raise ValueError("a mixture needs at least two domains")
        unknown = [d for d in self.token_counts if names is not None and d not in names]
        if unknown:
            raise ValueError(f"token_counts names unknown domain(s): {', '.join(unknown)}")
        return self

    @property
    def names(self) -> list[str] | None:
        """Domain names when the config fixes them (None for the sample corpus)."""
        if self.paths:
            return list(self.paths)
        if self.domains:
            return list(self.domains)
        return None


class KnownLaw(_Section):
    """The law the ``law`` trainer evaluates instead of training (a dry run of a study).

    log L_t(r, s) = log K_t - alpha r-exponents (own ``alpha``, others ``cross``) + the step
    factor of ``bayesmix.laws.formulas``; ``noise`` is the sd of Gaussian noise on log L.

    Runs of several model sizes N (``proposer.options.model_sizes``) add Chinchilla's size
    term, ``size_share`` of the loss at ``reference_size`` removed as N^-``size_exponent``,
    and own exponents alpha_t + ``size_drift``_t log(N / reference_size): domains whose
    drift differs move the optimum with size (``bayesmix.laws.world.LawWorld``).
    """

    alpha: float | dict[str, float] = 0.1
    cross: float = 0.01
    loss: float | dict[str, float] = 2.0  # K_t: loss at r_t + eps = 1 and the last step
    frac: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    beta: Annotated[float, Field(gt=0.0)] = 0.5
    eps: Annotated[float, Field(gt=0.0)] = 1e-3
    noise: Annotated[float, Field(ge=0.0)] = 0.01
    size_share: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3
    size_exponent: Annotated[float, Field(gt=0.0)] = 0.3
    size_drift: float | dict[str, float] = 0.0
    reference_size: Annotated[float, Field(gt=0.0)] = 1e8
    points: PositiveInt = 4  # evaluations per run, log-spaced, the last at the run's steps
    seconds: Annotated[float, Field(ge=0.0)] = 0.0  # simulated duration of a run

    @field_validator("alpha", "loss")
    @classmethod
    def _positive(cls, v: float | dict[str, float]) -> float | dict[str, float]:
        values = v.values() if isinstance(v, dict) else [v]
        for x in values:
            if not (math.isfinite(x) and x > 0):
                raise ValueError(f"must be positive, got {x}")
        return v

    @model_validator(mode="after")
    def _shares(self) -> KnownLaw:
        if self.frac + self.size_share >= 1:
            raise ValueError(
                f"frac + size_share must be below 1 (the shares of the loss that more steps "
                f"and a bigger model remove), got {self.frac} + {self.size_share}"
            )
        return self


class ProxyConfig(_Section):
    """How one run is trained: a real proxy LM, the known law (``trainer: law``), or
    elsewhere (``trainer: external``: the runs are asked for and told)."""

    trainer: TrainerName = "proxy"  # a name in bayesmix.study.trainers.TRAINERS
    size: str = "tiny"
    steps: PositiveInt = 300
    # Tokens one step trains (batch x context): prices a run in FLOPs (6 N D) for a budget
    # given in FLOPs or GPU-hours.
    tokens_per_step: Annotated[float, Field(gt=0.0)] | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # ProxyRunConfig fields
    law: KnownLaw = KnownLaw()

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        if v not in PROXY_SIZES and not v.endswith((".yaml", ".yml")):
            raise ValueError(f"unknown size {v!r}; choose {', '.join(PROXY_SIZES)} or a .yaml")
        return v

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any]) -> dict[str, Any]:
        allowed = _proxy_run_fields() if v else None
        if allowed is None:  # nothing to check, or torch missing: the trainer checks at run time
            return v
        return _known_keys(v, allowed, "proxy")

    @property
    def evaluations(self) -> int | None:
        """Losses recorded per run (the checkpoints a run-length proposal counts on); None
        when the trainer cannot say (runs trained elsewhere)."""
        return TRAINERS[self.trainer].evaluations(self)


class ObjectiveConfig(_Section):
    """Minimise sum_t w_t L_t over targets t at ``step`` (the last step by default)."""

    metric: str = "loss"
    weights: dict[str, Annotated[float, Field(ge=0.0)]] | None = None
    step: Annotated[float, Field(gt=0.0)] | None = None
    # The size (parameters) of the model the mixture is for; with proposer.options.model_sizes
    # the proxies' sizes differ from it, and the law's size axis carries the optimum over.
    model_size: Annotated[float, Field(gt=0.0)] | None = None
    ci: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None:
            for name in v:
                _check_domain(name)
            if not v or sum(v.values()) <= 0:
                raise ValueError("weights must not be all zero")
        return v


class ConstraintsConfig(_Section):
    """Bounds on shares and the repetition limit of the target run (Constraints)."""

    lower: dict[str, Share] = Field(default_factory=dict)
    upper: dict[str, Share] = Field(default_factory=dict)
    target_tokens: Annotated[float, Field(gt=0.0)] | None = None
    max_epochs: Annotated[float, Field(gt=0.0)] | None = None

    @model_validator(mode="after")
    def _pairs(self) -> ConstraintsConfig:
        if (self.target_tokens is None) != (self.max_epochs is None):
            raise ValueError("target_tokens and max_epochs go together (the repetition limit)")
        if sum(self.lower.values()) > 1 + 1e-9:
            raise ValueError(f"lower bounds sum to {sum(self.lower.values()):.4g} > 1")
        for d in (*self.lower, *self.upper):
            _check_domain(d)
        return self


class FitConfig(_Section):
    """The law fitted to the study's observations (``bayesmix.fit``)."""

    # None: ``laws.default_law`` of the runs, decided again at each fit.
    law: LawName | None = None
    method: Literal["nuts", "laplace", "svi"] = "nuts"
    options: dict[str, Any] = Field(default_factory=dict)  # e.g. num_warmup, num_samples
    final: bool = True  # fit once more when the budget is spent (the recommendation)

    @property
    def law_label(self) -> str:
        return self.law or "the default law"

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any]) -> dict[str, Any]:
        allowed = (
            "num_chains",
            "num_warmup",
            "num_samples",
            "eps",
            "noise",
            "rank",
            "target_accept",
            "max_tree_depth",
            "svi_steps",
            "early_steps",
            "centered",
            "mass_matrix",
        )
        return _known_keys(v, allowed, "fit")


class ProposerConfig(_Section):
    """Who proposes the next runs; the first batch (no observations yet) by ``first``."""

    name: ProposerName = "bayesmix"
    first: str = "d-optimal"  # designed for the law (proposers/designs.py)
    first_batch: PositiveInt | None = None  # default: batch_size
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("first")
    @classmethod
    def _first(cls, v: str) -> str:
        if v not in FIRST_PROPOSERS:
            raise ValueError(
                f"the first batch needs a design without observations; choose "
                f"{', '.join(FIRST_PROPOSERS)} (got {v!r})"
            )
        return v

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "acquisition" in v and v["acquisition"] not in ACQUISITIONS:
            raise ValueError(
                f"proposer.options.acquisition: unknown acquisition {v['acquisition']!r}; "
                f"choose {', '.join(ACQUISITIONS)}"
            )
        lengths = v.get("run_lengths")
        if lengths is not None and not (
            isinstance(lengths, list) and lengths and all(_positive_number(x) for x in lengths)
        ):
            raise ValueError(
                f"proposer.options.run_lengths must be a list of positive step counts, got "
                f"{lengths!r}"
            )
        sizes = v.get("model_sizes")
        if sizes is not None:
            # YAML 1.1 reads 1.0e9 (no sign after e) as a string: take it as the number meant.
            numbers = [_as_number(x) for x in sizes] if isinstance(sizes, list) else []
            if not (len({x for x in numbers if _positive_number(x)}) == len(numbers) >= 2):
                raise ValueError(
                    "proposer.options.model_sizes must be a list of at least two different "
                    f"positive parameter counts, got {sizes!r}"
                )
            v = {**v, "model_sizes": numbers}
        checkpoints = v.get("checkpoints")
        if checkpoints is not None and not (
            isinstance(checkpoints, int) and not isinstance(checkpoints, bool) and checkpoints > 0
        ):
            raise ValueError(
                f"proposer.options.checkpoints must be a positive integer, got {checkpoints!r}"
            )
        if "min_distance" in v:
            spacing = v["min_distance"]
            number = isinstance(spacing, int | float) and not isinstance(spacing, bool)
            if not (number and 0 <= spacing < 2):
                raise ValueError(
                    "proposer.options.min_distance must be a number in [0, 2) (the smallest "
                    f"L1 distance between two runs of the study; 0 allows repeats), got {spacing!r}"
                )
        return v


class WarmStartConfig(_Section):
    """Start the study from an earlier posterior instead of from nothing.

    ``posterior``: a file written by ``Posterior.save`` (``bayesmix fit ... -o post.nc``, a
    study's snapshot file) or a ``models/NAME`` folder (``study save-model``); a relative
    path is read from the config file's folder. ``study``: a study in the same storage, whose
    latest posterior snapshot is taken when this study is created. Give one of them.

    The earlier posterior's domains may differ from this study's: a name in both is the same
    domain, the others are removed or added (``DomainUpdate.between``), and
    ``bayesmix.reuse`` carries the posterior over, as a domain update does. The first batch
    then comes from ``proposer.name`` with that carried posterior (``proposer.first`` is not
    used), and every fit takes the earlier posterior as its prior (``reuse.warm_fit``), in
    its law unless ``fit.law`` names another. A domain update carries the study's latest
    snapshot, the warm start included; one made before the first fit (or ask) has none to
    carry, and its new version starts cold.
    """

    posterior: str | None = None
    study: str | None = None

    @field_validator("posterior")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("posterior is empty: give the path of a saved posterior (.nc)")
        return v

    @field_validator("study")
    @classmethod
    def _study(cls, v: str | None) -> str | None:
        if v is not None and not NAME.match(v):
            raise ValueError(f"study {v!r} is not a study name")
        return v

    @model_validator(mode="after")
    def _one(self) -> WarmStartConfig:
        if (self.posterior is None) == (self.study is None):
            raise ValueError(
                "give one of posterior (a saved posterior file) or study (a study in the "
                "same storage)"
            )
        return self

    @property
    def source(self) -> str:
        """Where the posterior comes from, as messages name it."""
        return f"posterior {self.posterior}" if self.posterior else f"study {self.study!r}"


class ExecutorConfig(_Section):
    """Where runs execute: ``local`` processes or ``ray`` tasks; failure handling."""

    kind: Literal["local", "ray"] = "local"
    parallel: PositiveInt = 1  # local: processes at once (CPU); with GPUs: GPUs / gpus_per_run
    gpus: Literal["auto"] | Annotated[int, Field(ge=0)] = "auto"
    gpus_per_run: Annotated[float, Field(ge=0.0)] = 1.0
    pack: PositiveInt = 1  # proxies trained together in one process (train_swarm)
    cpus_per_run: Annotated[float, Field(gt=0.0)] = 1.0
    address: str | None = None  # ray: cluster address (None: RAY_ADDRESS or a local cluster)
    heartbeat_seconds: Annotated[float, Field(gt=0.0)] = 5.0
    stale_after_seconds: Annotated[float, Field(gt=0.0)] = 60.0
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 2

    @model_validator(mode="after")
    def _stale(self) -> ExecutorConfig:
        if self.stale_after_seconds < 2 * self.heartbeat_seconds:
            raise ValueError(
                "stale_after_seconds must be at least twice heartbeat_seconds, or live "
                "workers would be taken for dead"
            )
        return self


class ComputeBudget(_Section):
    """A study's budget in training compute: ``flops``, or ``gpu_hours`` at ``gpu_flops``
    sustained FLOP/s per GPU. A run costs 6 N D FLOPs (N parameters, D = steps x
    ``proxy.tokens_per_step`` tokens)."""

    flops: Annotated[float, Field(gt=0.0)] | None = None
    gpu_hours: Annotated[float, Field(gt=0.0)] | None = None
    gpu_flops: Annotated[float, Field(gt=0.0)] = 4e14  # an H100's bf16 peak at ~40 % MFU

    @model_validator(mode="after")
    def _one(self) -> ComputeBudget:
        if (self.flops is None) == (self.gpu_hours is None):
            raise ValueError("give one of flops or gpu_hours")
        return self

    @property
    def total_flops(self) -> float:
        if self.flops is not None:
            return float(self.flops)
        return float(self.gpu_hours) * 3600.0 * self.gpu_flops  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self.flops is not None:
            return f"{self.flops:.3g} FLOPs"
        return f"{self.gpu_hours:g} GPU-hours ({self.total_flops:.3g} FLOPs)"


def _budget_kind(v: Any) -> str:
    return "compute" if isinstance(v, dict | ComputeBudget) else "runs"


# A mapping is a budget in compute, anything else a number of runs: an error is then that of
# the form given, not of both.
Budget = Annotated[
    Annotated[PositiveInt, Tag("runs")] | Annotated[ComputeBudget, Tag("compute")],
    Discriminator(_budget_kind),
]


class StudyConfig(_Section):
    """One study: its data, runs, objective, law, proposer, budget and executor, and
    optionally the earlier posterior it starts from (``warm_start``, ``WarmStartConfig``)."""

    name: str
    seed: Annotated[int, Field(ge=0)] = 0
    description: str = ""
    data: DataConfig
    proxy: ProxyConfig = ProxyConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    constraints: ConstraintsConfig = ConstraintsConfig()
    fit: FitConfig = FitConfig()
    fit_every_batch: bool | None = None  # None: when the proposer needs a posterior
    proposer: ProposerConfig = ProposerConfig()
    batch_size: PositiveInt = 4
    # Runs of the target length (proxy.steps; with model sizes, at the largest size), or
    # training compute (ComputeBudget).
    budget: Budget = 16
    executor: ExecutorConfig = ExecutorConfig()
    report: bool = True  # write the report when the budget is spent
    workdir: str | None = None  # runs, shards, posteriors, reports (default: beside the storage)
    store_posteriors: Literal["database", "files"] = "database"  # NetCDF bytes, or a path
    warm_start: WarmStartConfig | None = None  # an earlier posterior to start from

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(
                f"study name {v!r}: letters, digits, '_', '.', '-' (at most 64, "
                "starting with a letter or digit)"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        first = self.proposer.first_batch or self.batch_size
        if self.proposer.name == "bayesmix" and first < 2:
            raise ValueError(
                "proposer 'bayesmix' fits the law to the first batch, which needs at least two "
                "runs (set proposer.first_batch or batch_size to 2 or more)"
            )
        if isinstance(self.budget, int) and first > self.budget:
            raise ValueError(f"the first batch ({first} runs) exceeds the budget ({self.budget})")
        self._check_model_sizes(first)
        lengths = self.proposer.options.get("run_lengths")
        if lengths is not None:
            self._check_cost_aware("run_lengths", "information per step trained")
            if max(lengths) > self.proxy.steps:
                raise ValueError(
                    f"proposer.options.run_lengths: {max(lengths):g} steps is longer than the "
                    f"target run (proxy.steps = {self.proxy.steps})"
                )
        if TRAINERS[self.proxy.trainer].texts and self.data.domains:
            names_only = " and ".join(repr(k) for k, t in TRAINERS.items() if not t.texts)
            raise ValueError(
                f"data.domains (names only) suits trainers {names_only}; trainer "
                f"{self.proxy.trainer!r} trains on text: give data.paths or data.sample_corpus"
            )
        names = self.data.names
        found = None if names is None else self.unknown_domains(names)
        if found is not None:
            where, unknown = found
            raise ValueError(f"{where} names unknown domain(s): {', '.join(unknown)}")
        law = self.proxy.law
        for what, value in (
            ("alpha", law.alpha),
            ("loss", law.loss),
            ("size_drift", law.size_drift),
        ):
            if isinstance(value, dict) and names is not None and set(value) != set(names):
                raise ValueError(
                    f"proxy.law.{what} must give a value for each domain and only those "
                    f"({', '.join(names)})"
                )
        if self.warm_start is not None and self.warm_start.study == self.name:
            raise ValueError(
                f"warm_start.study: study {self.name!r} cannot start from its own posterior"
            )
        if self.constraints.target_tokens is not None and self.proxy.trainer == "law":
            missing = [d for d in names or [] if d not in self.data.token_counts]
            if missing:
                raise ValueError(
                    "the repetition limit needs data.token_counts for every domain with "
                    f"trainer 'law' (missing {', '.join(missing)})"
                )
        return self

    def _check_model_sizes(self, first: int) -> None:
        """Runs of several model sizes, and a budget in compute, need what prices them and
        the size the optimum is for."""
        sizes = self.model_sizes
        if sizes is not None:
            self._check_cost_aware("model_sizes", "information per FLOP")
            if self.objective.model_size is None:
                raise ValueError(
                    "proposer.options.model_sizes needs objective.model_size: the size "
                    "(parameters) of the model the mixture is for"
                )
            if TRAINERS[self.proxy.trainer].texts:
                raise ValueError(
                    f"proposer.options.model_sizes: trainer {self.proxy.trainer!r} trains one "
                    "size (proxy.size); runs of several sizes need trainer 'law' or 'external'"
                )
            if first < len(sizes):
                raise ValueError(
                    f"the first batch ({first} runs) must hold a run of each of the "
                    f"{len(sizes)} model sizes"
                )
        if isinstance(self.budget, ComputeBudget):
            if sizes is None:
                raise ValueError(
                    "a budget in FLOPs or GPU-hours prices runs by their model size: give "
                    "proposer.options.model_sizes (parameters)"
                )
            if self.proxy.tokens_per_step is None:
                raise ValueError(
                    "a budget in FLOPs or GPU-hours prices runs by their tokens: give "
                    "proxy.tokens_per_step"
                )

    def _check_cost_aware(self, option: str, why: str) -> None:
        acquisition = self.proposer.options.get("acquisition", "optimum-variance")
        if self.proposer.name != "bayesmix" or acquisition != "optimum-variance":
            raise ValueError(
                f"proposer.options.{option} needs proposer 'bayesmix' with the "
                f"optimum-variance acquisition ({why})"
            )

    @property
    def model_sizes(self) -> list[float] | None:
        """The sizes (parameters) a run may take, smallest first; None: one proxy size."""
        sizes = self.proposer.options.get("model_sizes")
        return None if sizes is None else sorted(float(x) for x in sizes)

    def run_cost(self, steps: float, model_size: float | None) -> float:
        """A run's compute in budget units: runs of the target length (``proxy.steps``) at
        the largest model size offered."""
        largest = self.model_sizes[-1] if self.model_sizes else None
        sized = largest is not None and model_size is not None and math.isfinite(model_size)
        size = model_size / largest if sized else 1.0  # type: ignore[operator]
        return steps / self.proxy.steps * size

    @property
    def budget_label(self) -> str:
        """The budget as the config gives it: '16 runs' or '1e+19 FLOPs'."""
        return f"{self.budget} runs" if isinstance(self.budget, int) else str(self.budget)

    def spent(self, runs: Collection[Any]) -> float:
        """Compute spent by ``runs`` (each with ``steps`` and, maybe, ``model_size``), in
        the budget's units (``run_cost``)."""
        return sum(self.run_cost(r.steps, getattr(r, "model_size", None)) for r in runs)

    def spent_label(self, runs: Collection[Any]) -> str:
        """What ``runs`` used of the budget, as status and report say it."""
        spent = self.spent(runs)
        n = len(runs)
        if isinstance(self.budget, ComputeBudget):
            flops = spent / self.budget_runs * self.budget.total_flops
            return f"{n} runs, {flops:.3g} of {self.budget_label}"
        if abs(spent - n) < 1e-9:
            return f"{n} of {self.budget} runs"
        return f"{n} runs, the compute of {spent:.2f} of {self.budget} target-length runs"

    @property
    def budget_runs(self) -> float:
        """The budget in the units of ``run_cost``."""
        if isinstance(self.budget, int):
            return float(self.budget)
        sizes, tokens = self.model_sizes, self.proxy.tokens_per_step
        assert sizes is not None and tokens is not None  # checked by _check_model_sizes
        return self.budget.total_flops / (6.0 * sizes[-1] * self.proxy.steps * tokens)

    def unknown_domains(self, domains: Collection[str]) -> tuple[str, list[str]] | None:
        """The first setting keyed by domain (weights, bounds) that names domains outside
        ``domains``: where it stands in the file, and those names; None when none does."""
        for where, mapping in (
            ("objective.weights", self.objective.weights or {}),
            ("constraints.lower", self.constraints.lower),
            ("constraints.upper", self.constraints.upper),
        ):
            unknown = [d for d in mapping if d not in domains]
            if unknown:
                return where, unknown
        return None

    @property
    def needs_posterior(self) -> bool:
        """Whether the loop fits after every batch (the proposer uses the posterior)."""
        if self.fit_every_batch is not None:
            return self.fit_every_batch
        return self.proposer.name == "bayesmix"

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _one_of(v: str, names: Collection[str], what: str) -> str:
    """v, where it is one of ``names`` (a registry's); else an error that lists them."""
    if v not in names:
        raise ValueError(f"unknown {what} {v!r}; choose {', '.join(names)}")
    return v


def _known_keys(v: dict[str, Any], allowed: Collection[str], what: str) -> dict[str, Any]:
    """v, where every key is one of ``allowed``; else an error that names the others."""
    unknown = [k for k in v if k not in allowed]
    if unknown:
        raise ValueError(
            f"unknown {what} option(s) {', '.join(unknown)}; known: {', '.join(allowed)}"
        )
    return v


def _as_number(x: Any) -> Any:
    """x as a float where it is a string that spells a number, else x as it is."""
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return x
    return x


def _positive_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and x > 0


def _check_domain(name: str) -> None:
    if not isinstance(name, str) or not DOMAIN.match(name):
        raise ValueError(
            f"domain name {name!r} is not canonical (lower case letters, digits and _ : . - "
            "only, as in 'pile_cc')"
        )


def _proxy_run_fields() -> tuple[str, ...] | None:
    try:
        from bayesmix.proxy.train import ProxyRunConfig
    except ImportError:
        return None
    from dataclasses import fields

    return tuple(f.name for f in fields(ProxyRunConfig))


# ------------------------------------------------------------------------------ loading
def format_error(exc: ValidationError, source: str) -> str:
    """pydantic's first error as one line: '<file>: <key.path>: <message> (got <value>)'."""
    errors = exc.errors()
    first = errors[0]
    # A tagged union's tag is a step of pydantic's path, not a key of the file.
    path = [p for i, p in enumerate(first["loc"]) if i == 0 or first["loc"][i - 1] != "budget"]
    loc = ".".join(str(p) for p in path)
    msg = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    got = ""
    if first["type"] not in ("missing", "extra_forbidden") and "input" in first:
        shown = repr(first["input"])
        if len(shown) <= 60 and not isinstance(first["input"], dict):
            got = f" (got {shown})"
    more = f" [and {len(errors) - 1} more error(s)]" if len(errors) > 1 else ""
    where = f"{loc}: " if loc else ""  # model-level checks name their keys in the message
    return f"{source}: {where}{msg}{got}{more}"


def parse_config(data: Any, source: str = "<config>", base: Path | None = None) -> StudyConfig:
    """Validate a mapping (the parsed YAML) and resolve relative paths against ``base``."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{source}: a study config is a mapping of keys, this file is {kind}")
    try:
        cfg = StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_error(exc, source)) from None
    if base is not None:
        cfg = _resolve_paths(cfg, base)
    return cfg


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study's YAML file; every problem is one ConfigError line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    return parse_config(data, str(path), path.resolve().parent)


def with_workdir(cfg: StudyConfig, default: Path) -> StudyConfig:
    """``cfg`` with its workdir, ``default`` when it names none (SQLite studies: found beside
    the database, so that a copy of the file has files of its own)."""
    if cfg.workdir:
        return cfg
    return cfg.model_copy(update={"workdir": str(default.resolve())})


def _resolve_paths(cfg: StudyConfig, base: Path) -> StudyConfig:
    def absolute(p: str) -> str:
        return p if Path(p).is_absolute() else str((base / p).resolve())

    data = cfg.data.model_copy(
        update={
            "paths": {k: absolute(v) for k, v in cfg.data.paths.items()},
            "shards": absolute(cfg.data.shards) if cfg.data.shards else None,
        }
    )
    size = cfg.proxy.size
    if size.endswith((".yaml", ".yml")):
        size = absolute(size)
    proxy = cfg.proxy.model_copy(update={"size": size})
    workdir = absolute(cfg.workdir) if cfg.workdir else None
    warm = cfg.warm_start
    if warm is not None and warm.posterior:
        warm = warm.model_copy(update={"posterior": absolute(warm.posterior)})
    return cfg.model_copy(
        update={"data": data, "proxy": proxy, "workdir": workdir, "warm_start": warm}
    )
