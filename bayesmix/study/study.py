"""A study: its config, its storage, and the ask / tell / fit operations on them.

    study = Study.create("configs/study/dry-run.yaml", storage="sqlite:///studies.db")
    for run in study.ask(4):                  # proposed runs: name, mixture, steps, seed
        rows = train_somewhere(run)            # tidy rows: target, value (, step, metric)
        study.tell(run.name, rows)
    post = study.fit()                         # the law's posterior (a stored snapshot)
    study.optimal_mixture(post).intervals

The study holds no state of its own beyond its name: every call reads or writes the storage,
so any number of processes may hold the same study, and a process killed at any point loses
only what it had not yet told.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from bayesmix.domains import DomainSet, DomainUpdate, DomainUpdateError, shown
from bayesmix.errors import BayesMixError
from bayesmix.laws import default_law, get_law
from bayesmix.observations import Observations, ObservationsError
from bayesmix.proposers.registry import POSTERIOR_FREE
from bayesmix.study.config import (
    ComputeBudget,
    ConfigError,
    StudyConfig,
    format_error,
    load_config,
    with_workdir,
)
from bayesmix.study.storage import (
    DEFAULT_URL,
    DomainSetRecord,
    RunRecord,
    StorageError,
    StudyStorage,
    open_storage,
    runs_key,
)
from bayesmix.study.worker import Repeating, is_dead_locally, worker_id

if TYPE_CHECKING:
    from bayesmix.inference import Posterior
    from bayesmix.optimize import Constraints, OptimalMixture

TELL_COLUMNS = ("run_id", "step", "tokens", "target", "value", "metric")


class StudyError(BayesMixError, ValueError):
    """A study operation was refused; the message says why and nothing was changed."""


@dataclass(frozen=True)
class Fit:
    """A posterior and the id of its stored snapshot."""

    posterior: Posterior
    snapshot: int
    reused: bool


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def default_workdir(storage: StudyStorage, name: str) -> Path:
    """Beside a SQLite file (<file stem>-studies/<name>); under the cwd for a server."""
    return storage.default_workdir(name)


class Study:
    """One study in one storage (see the module docstring)."""

    def __init__(self, storage: StudyStorage, name: str) -> None:
        self.storage = storage
        self.record = storage.study(name)
        self.config = with_workdir(
            StudyConfig.model_validate(self.record.config), storage.default_workdir(name)
        )

    def _stored(self, cfg: StudyConfig) -> dict[str, Any]:
        """``cfg`` as stored: a workdir found beside the database stays unstored."""
        out = cfg.to_json()
        out["workdir"] = self.record.config.get("workdir")
        return out

    # ---------------------------------------------------------------- creation
    @classmethod
    def create(
        cls,
        config: StudyConfig | str | Path,
        storage: str | StudyStorage | None = DEFAULT_URL,
        *,
        progress: bool = False,
        allow_foreign_tables: bool = False,
    ) -> Study:
        """Validate the config, prepare its data, and store the new study.

        ``storage``: a database URL, ``memory://`` or ``None`` (this process only, as
        Optuna's in-memory storage), or a storage object (``open_storage``).
        ``allow_foreign_tables``: store it in a database that holds other tools' tables too
        (refused by default).
        """
        from bayesmix.study.data import prepare_domains

        cfg = config if isinstance(config, StudyConfig) else load_config(config)
        store = open_storage(storage, allow_foreign=allow_foreign_tables)
        if any(s.name == cfg.name for s in store.studies()):
            raise StorageError(
                f"a study named {cfg.name!r} already exists in {store.safe_url} "
                "(resume it, or choose another name)"
            )
        workdir = Path(cfg.workdir) if cfg.workdir else default_workdir(store, cfg.name)
        # A SQLite study's default workdir is not stored but found beside the file each time:
        # a copied database must not write its report over the original study's.
        stored = cfg.model_copy(
            update={"workdir": None if not cfg.workdir and store.is_sqlite else str(workdir)}
        )
        cfg = cfg.model_copy(update={"workdir": str(workdir.resolve())})
        workdir.mkdir(parents=True, exist_ok=True)
        data = prepare_domains(cfg, workdir, progress)
        domains, warm = list(data.domains), None
        if cfg.warm_start is not None:
            warm, domains = _resolve_warm_start(cfg, store, domains, data.token_counts)
            if cfg.data.domains:  # the stored config lists them as the study does
                stored = stored.model_copy(
                    update={"data": stored.data.model_copy(update={"domains": domains})}
                )
        _check_domains(cfg, domains)
        _check_feasible(cfg, domains, data.token_counts)
        store.create_study(
            cfg.name, stored.to_json(), domains, data.token_counts, data.shards, warm
        )
        return cls(store, cfg.name)

    @classmethod
    def load(cls, name: str, storage: str | StudyStorage = DEFAULT_URL) -> Study:
        """The study ``name`` in ``storage`` (a URL, or the storage object that holds it: an
        in-memory study is reached through its storage object only)."""
        return cls(open_storage(storage, create=False), name)

    # ---------------------------------------------------------------- views
    @property
    def name(self) -> str:
        return self.record.name

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def domain_set(self) -> DomainSetRecord:
        return self.storage.domain_set(self.id)

    @property
    def domains(self) -> list[str]:
        return self.domain_set.domains

    @property
    def workdir(self) -> Path:
        return Path(self.config.workdir or ".")

    @property
    def warm_start(self) -> dict[str, Any] | None:
        """Where the study's warm start comes from (config ``warm_start``, resolved when the
        study was created: ``source``, ``path`` or ``snapshot``, ``law``, ``update``); None
        without one."""
        return self.storage.warm_start(self.id)

    @property
    def starts_warm(self) -> bool:
        """Whether the study has a posterior before its first run: a warm start, and no
        domain update since (an update carries the study's own snapshot instead)."""
        return self.domain_set.version == 1 and self.warm_start is not None

    def natural(self) -> dict[str, float]:
        return self.domain_set.natural

    def constraints(self) -> Constraints:
        from bayesmix.optimize import Constraints

        c = self.config.constraints
        caps = c.target_tokens is not None
        return Constraints(
            lower=dict(c.lower),
            upper=dict(c.upper),
            token_counts=self.domain_set.token_counts if caps else None,
            target_tokens=c.target_tokens,
            max_epochs=c.max_epochs,
        )

    def runs(self, status: str | list[str] | None = None) -> list[RunRecord]:
        return self.storage.runs(self.id, status)

    def runs_frame(self) -> pd.DataFrame:
        """One row per run: name, proposal, status, attempts, steps (and model size, where
        runs take several), acquisition value, mixture."""
        rows = []
        for r in self.runs():
            row = {
                "run_id": r.name,
                "proposal": r.proposal,
                "status": r.status,
                "attempts": r.attempts,
                "steps": r.steps,
                **({"model_size": r.model_size} if self.config.model_sizes else {}),
                "acquisition_value": r.acquisition_value,
                "reason": r.reason,
            }
            row.update({f"r:{d}": r.mixture.get(d, 0.0) for d in self.domains})
            rows.append(row)
        return pd.DataFrame(rows)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("proposed", "running", "completed", "failed"), 0)
        for r in self.runs():
            out[r.status] += 1
        return out

    def observations(
        self, metric: str | None = None, all_metrics: bool = False
    ) -> Observations | None:
        """The completed runs' observations (of the objective's metric), or None if none."""
        frame = self.storage.observations(self.id)
        if frame.empty:
            return None
        if self.domain_set.version > 1:
            obs = self._across_versions(frame, self.domain_set.version)
            if obs is None:
                return None
        else:
            obs = Observations.from_frame(frame)
        if all_metrics:
            return obs
        metric = metric or self.config.objective.metric
        if metric not in obs.metrics:
            raise StudyError(
                f"study {self.name!r}: no observations of metric {metric!r} (have {obs.metrics})"
            )
        return obs.select(metric=metric)

    def extend_budget(self, budget: float) -> None:
        """Store a larger budget (``study run --budget``, in runs of the target length), so
        that status and report count against it; a smaller one is a stop for this time only
        and changes nothing. A budget in compute grows in proportion."""
        current = self.config.budget
        if budget <= self.config.budget_runs:
            return
        stored: Any = int(budget)
        if isinstance(current, ComputeBudget):
            stored = {"flops": current.total_flops * budget / self.config.budget_runs}
        try:
            cfg = StudyConfig.model_validate({**self.config.to_json(), "budget": stored})
        except ValidationError as exc:
            raise StudyError(format_error(exc, f"study {self.name!r}")) from None
        self.storage.set_config(self.id, self._stored(cfg))
        self.record = self.storage.study(self.name)
        self.config = cfg

    # ---------------------------------------------------------------- domain updates
    def update(
        self,
        update: Any,
        prior: str | Path | None = None,
        law_values: Mapping[str, Mapping[str, float]] | None = None,
    ) -> DomainSetRecord:
        """Apply a ``DomainUpdate`` to the study's domain set and store the new version.

        Every check runs before anything is written: a malformed update (unknown domain,
        split parts whose token counts do not add up, removing every domain, ...), a config
        that names a removed domain, infeasible caps, runs still in flight, or an unusable
        ``prior`` leave the study unchanged. ``prior``: a saved posterior (a file, or a
        ``models/NAME`` folder) over the current domains to start the new version from,
        instead of the study's latest snapshot.

        With the ``law`` trainer, the stored config follows the new domain set: its
        ``data.domains`` and ``token_counts``, and its known law's per-domain ``alpha`` and
        ``loss`` (a split part takes its parent's value, a merge its sources' mean, a new
        domain the mean of the old ones), unless ``law_values`` gives them:
        ``{"code_rust": {"alpha": 0.15, "loss": 2.4}}``.
        """

        if not isinstance(update, DomainUpdate):
            raise StudyError(f"update must be a DomainUpdate, got {type(update).__name__}")
        rec = self.domain_set
        counts = {d: n for d, n in rec.token_counts.items() if d in rec.domains and n and n > 0}
        try:
            old = DomainSet(tuple(rec.domains), counts, rec.version)
            new = old.apply(update)
        except DomainUpdateError as exc:
            raise StudyError(f"study {self.name!r}: {exc}; nothing was changed") from None
        if len(new.domains) < 2:
            # As `create` refuses: a single domain has no mixture to choose.
            raise StudyError(
                f"study {self.name!r}: the update ({update.describe()}) would leave one domain "
                f"({', '.join(new.domains)}); a mixture needs at least two domains; nothing "
                "was changed"
            )
        creates = [op.kind for op in update.ops if op.kind in ("add", "split", "merge")]
        if creates and rec.shards:
            raise StudyError(
                f"study {self.name!r} trains proxies on prepared shards; an update that "
                f"creates domains ({', '.join(sorted(set(creates)))}) needs their text, which "
                "`study update` cannot prepare yet; nothing was changed"
            )
        try:
            _check_domains(self.config, list(new.domains))
            _check_feasible(self.config, list(new.domains), dict(new.token_counts))
        except ConfigError as exc:
            raise StudyError(f"after the update: {exc}; nothing was changed") from None
        config = _config_after_update(self.config, update, old, new, law_values or {})
        prior_path, snapshot = None, None
        if prior is not None:
            from bayesmix.reuse import load_model

            try:
                post = load_model(prior)
            except (FileNotFoundError, ValueError) as exc:
                raise StudyError(f"--prior {prior}: {exc}; nothing was changed") from None
            if list(post.domains) != list(rec.domains):
                raise StudyError(
                    f"--prior {prior}: its domains ({', '.join(post.domains)}) are not the "
                    f"study's current ones ({', '.join(rec.domains)}); nothing was changed"
                )
            prior_path = str(Path(post.info.get("_loaded_from", prior)).resolve())
        else:
            for snap in reversed(self.storage.posteriors(self.id)):
                if list(snap.summary.get("mixture", {})) == list(rec.domains):
                    snapshot = snap.id
                    break
        record = {
            "update": update.to_dict(),
            "describe": update.describe(),
            "from_version": rec.version,
            "prior_snapshot": snapshot,
            "prior_path": prior_path,
        }
        try:
            out = self.storage.add_domain_set(
                self.id,
                rec.version,
                list(new.domains),
                dict(new.token_counts),
                rec.shards,
                record,
                config=self._stored(config) if config is not self.config else None,
            )
        except StorageError as exc:
            raise StudyError(f"study {self.name!r}: {exc}") from None
        self.record = self.storage.study(self.name)
        self.config = config
        return out

    def _across_versions(self, frame: pd.DataFrame, upto: int) -> Observations | None:
        """Completed runs of versions <= ``upto``, mapped onto version ``upto`` where exact
        (``bayesmix.reuse.map_observations``); None when none maps."""
        from bayesmix.reuse import map_observations

        sets = {d.version: d for d in self.storage.domain_sets(self.id)}
        updates = self.storage.domain_updates(self.id)
        versions = self.storage.run_versions(self.id)
        mixtures = {r.name: r.mixture for r in self.runs("completed")}
        base = [c for c in frame.columns if not str(c).startswith("r:")]
        # Runs map across versions by the configured law; the default changes with the runs,
        # so it maps as the cross law does (exact for every law).
        law = self.config.fit.law
        own_share = law is not None and get_law(law).own_share
        parts: list[Observations] = []
        for v in sorted(x for x in sets if x <= upto):
            names = {n for n, ver in versions.items() if ver == v and n in mixtures}
            sub = frame.loc[frame["run_id"].isin(names), base].copy()
            if sub.empty:
                continue
            for d in sets[v].domains:
                sub[f"r:{d}"] = sub["run_id"].map(lambda n, d=d: float(mixtures[n].get(d, 0.0)))
            obs: Observations | None = Observations.from_frame(sub)
            for w in range(v + 1, upto + 1):
                prev = sets[w - 1]
                counts = {
                    k: x for k, x in prev.token_counts.items() if k in prev.domains and x and x > 0
                }
                ds = DomainSet(tuple(prev.domains), counts, w - 1)
                upd = DomainUpdate.from_dict(updates[w]["update"])
                assert obs is not None
                obs = map_observations(obs, upd, domain_set=ds, own_share=own_share).observations
                if obs is None:
                    break
            if obs is not None:
                parts.append(obs)
        if not parts:
            return None
        out = parts[0]
        for p in parts[1:]:
            out = out.concat(p)
        return out

    # ---------------------------------------------------------------- ask / tell
    def ask(
        self,
        q: int,
        posterior: Posterior | Fit | None = None,
        candidates: pd.DataFrame | None = None,
        seed: int | None = None,
    ) -> list[RunRecord]:
        """Propose ``q`` runs and store them (status ``proposed``); returns them.

        Before any observation the first-batch design (``proposer.first``) proposes; after,
        ``proposer.name`` does, with ``posterior`` (a Posterior, or the Fit that ``fit``
        returns, which also links the proposal to its snapshot). A warm-started study
        (config ``warm_start``) uses ``proposer.name`` from its first batch on, with the
        carried posterior (``fit`` before any run) when ``posterior`` is None.
        ``candidates``: a pool of mixtures (``r:<domain>`` columns); every proposal is then
        one of its rows. The proposal's seed depends only on the study's seed and the
        proposal's number: the same study gives the same proposals. ``seed`` overrides that
        proposal seed (a benchmark that seeds every proposal of a trajectory alike). Every
        run proposed lies at least ``proposer.options.min_distance`` (L1, default 0.02; 0
        allows repeats) from the study's other runs.
        """
        from bayesmix.acquisition.base import MIN_DISTANCE
        from bayesmix.proposers import ProposalContext, ProposalError, get_proposer

        if isinstance(q, bool) or not isinstance(q, int | np.integer) or q < 1:
            raise StudyError(f"q must be a positive integer (runs to propose), got {shown(q)}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
            raise StudyError(f"seed must be an integer or None, got {shown(seed)}")
        snapshot = posterior.snapshot if isinstance(posterior, Fit) else None
        if isinstance(posterior, Fit):
            posterior = posterior.posterior
        cfg = self.config
        number = len(self.storage.proposals(self.id)) + 1
        obs = self.observations() if self.counts()["completed"] else None
        # A warm start has its posterior before any run: the study's own proposer uses it
        # from the first batch on, so that the first runs already aim at the carried optimum
        # and at the domains it is unsure of, instead of the posterior-free design.
        warm_first = obs is None and self.starts_warm
        name = cfg.proposer.name if obs is not None or warm_first else cfg.proposer.first
        if warm_first and posterior is None and name not in POSTERIOR_FREE:
            carried = self.fit()
            posterior, snapshot = carried.posterior, carried.snapshot
        if name == "bayesmix" and posterior is None:
            raise StudyError(
                "proposer 'bayesmix' needs the posterior: study.ask(q, posterior=study.fit())"
            )
        options = dict(cfg.proposer.options) if name == cfg.proposer.name else {}
        # The distance between runs is the study's, for its first batch too.
        options.pop("min_distance", None)
        min_distance = cfg.proposer.options.get("min_distance", MIN_DISTANCE)
        if name == "entropy" and "entropies" not in options and self.domain_set.shards:
            options["shards"] = self.domain_set.shards
        cost_aware = "run_lengths" in options or "model_sizes" in options
        if cost_aware and cfg.proxy.evaluations is not None:
            options.setdefault("checkpoints", cfg.proxy.evaluations)
        pending = self.runs(["proposed", "running"])
        seed = _seed(cfg.seed, number) if seed is None else int(seed)
        try:
            proposer = get_proposer(name, **options)
            context = ProposalContext(
                domains=self.domains,
                observations=obs,
                posterior=posterior,
                constraints=self.constraints(),
                natural=self.natural(),
                weights=cfg.objective.weights,
                step=cfg.objective.step,
                model_size=cfg.objective.model_size,
                seed=seed,
                pending=_mixture_frame(pending, self.domains) if pending else None,
                candidates=candidates,
                min_distance=min_distance,
            )
            frame = proposer.propose(context, int(q))
        except ImportError as exc:
            raise StudyError(f"proposer {name!r} is not available here ({exc})") from None
        except (ProposalError, ObservationsError) as exc:
            raise StudyError(f"proposer {name!r}: {exc}") from None
        if len(frame) == 0:
            raise StudyError(f"proposer {name!r} proposed no run")
        if cfg.model_sizes and "model_size" not in frame.columns:
            # A posterior-free first batch: the design's mixtures, a few at each larger size
            # so that the law's size axis is identified from the first fit.
            frame = frame.assign(model_size=first_batch_sizes(len(frame), cfg.model_sizes))
        first = len(self.runs())
        runs = []
        for i in range(len(frame)):
            values = frame.iloc[i]
            steps = values["steps"] if "steps" in frame.columns else cfg.proxy.steps
            size = float(values["model_size"]) if "model_size" in frame.columns else None
            acq = values["acquisition_value"] if "acquisition_value" in frame.columns else None
            runs.append(
                {
                    "name": f"r{first + i + 1:04d}",
                    "mixture": {d: float(values[f"r:{d}"]) for d in self.domains},
                    "steps": int(steps),
                    "model_size": size,
                    "seed": _seed(cfg.seed, first + i + 1) % (2**31),
                    "acquisition_value": None if acq is None or pd.isna(acq) else float(acq),
                }
            )
        self.storage.add_proposal(self.id, number, name, seed, snapshot, runs)
        # Stored by us, or by a concurrent driver that proposed this number first: either way
        # the runs of proposal ``number`` are the ones to run.
        return [r for r in self.runs() if r.proposal == number]

    def tell(self, run_id: str, observations: pd.DataFrame | Observations) -> None:
        """Store a run's observations and mark it completed, in one transaction.

        ``observations``: tidy rows of this run (``target`` and ``value``; ``step``,
        ``tokens``, ``metric`` optional; ``r:<domain>`` columns, if given, must match the
        run's mixture). A run told already, or failed, is refused and nothing changes.
        """
        self.storage.complete(self.id, run_id, self._checked(run_id, observations))

    def tell_table(self, table: pd.DataFrame) -> list[str]:
        """Tell every run whose rows ``table`` holds (a ``run_id`` column; rows as ``tell``
        takes them): all or none, as every run's rows are checked before any is stored.
        Returns the names of the runs told, in the table's order."""
        if not isinstance(table, pd.DataFrame):
            raise StudyError(f"the table must be a DataFrame, got {type(table).__name__}")
        if "run_id" not in table.columns:
            raise StudyError("the table has no run_id column: which run is each row?")
        if table.empty:
            raise StudyError("the table has no rows")
        names = list(dict.fromkeys(table["run_id"].astype(str)))
        by_run = dict(list(table.groupby(table["run_id"].astype(str), sort=False)))
        checked = {name: self._checked(name, by_run[name]) for name in names}
        for name in names:
            self.storage.complete(self.id, name, checked[name])
        return names

    def _checked(self, run_id: str, observations: pd.DataFrame | Observations) -> pd.DataFrame:
        """The rows ``tell`` stores for ``run_id``; StudyError on anything wrong."""
        run = self._run(run_id)
        if run.status in ("completed", "failed"):
            raise StudyError(
                f"run {run_id!r} is {run.status} already; its observations stay as they are"
            )
        frame = _tell_frame(run, observations, self.domains)
        try:
            obs = Observations.from_frame(frame)
        except ObservationsError as exc:
            raise StudyError(f"run {run_id!r}: {exc}") from None
        return obs.frame[list(TELL_COLUMNS)]

    def fail(self, run_id: str, reason: str) -> None:
        """Mark a proposed or running run failed, with its reason."""
        run = self._run(run_id)
        if not self.storage.fail(self.id, run_id, reason):
            raise StudyError(f"run {run_id!r} is {run.status} already")

    def _run(self, run_id: str) -> RunRecord:
        if not isinstance(run_id, str):
            raise StudyError(f"run_id must be a run name (a string), got {type(run_id).__name__}")
        try:
            return self.storage.run(self.id, run_id)
        except StorageError as exc:
            raise StudyError(f"study {self.name!r}: {exc}") from None

    def release_dead(self) -> list[tuple[str, str]]:
        """Re-queue (once) or fail the running runs whose worker died; returns what changed."""
        ex = self.config.executor
        return self.storage.release_dead(
            self.id,
            ex.stale_after_seconds,
            ex.max_attempts,
            lambda run: is_dead_locally(run.worker),
        )

    # ---------------------------------------------------------------- fit and optimise
    def fit(self, progress: bool = False) -> Fit:
        """The law's posterior on every completed run; a stored snapshot when one exists."""
        obs = self.observations()
        version = self.domain_set.version
        # After an update, no old run may map exactly (a revised domain every run trained
        # on), yet the posterior the update carried still holds what the study knew; a warm
        # start has its carried posterior before the first run.
        if (
            obs is None
            and not self.starts_warm
            and (version == 1 or not self.counts()["completed"])
        ):
            raise StudyError(f"study {self.name!r} has no completed run to fit")
        cfg = self.config.fit
        names = list(obs.run_ids) if obs is not None else []
        key = runs_key(names if version == 1 else [*names, f"@domain-set-v{version}"])
        # Unnamed, the law follows the runs (``laws.default_law``); a carried posterior with no
        # run mapped keeps its own, and so does a warm start (its prior is that law's).
        warm = self.warm_start
        law = cfg.law or (warm["law"] if warm else None)
        law = law or (default_law(obs) if obs is not None else None)
        found = self.storage.find_posterior(self.id, key, law, cfg.method)
        if found is not None:
            return Fit(self.load_posterior(found.id), found.id, True)
        # A lease on this fit, as runs are leased: a second driver of the study waits for the
        # first one's snapshot instead of fitting the same runs again.
        lease = f"fit_lease:{self.id}:{key}:{law}:{cfg.method}"
        me = worker_id(f"fit-{uuid.uuid4().hex[:8]}")
        stale = self.config.executor.stale_after_seconds
        while self.storage.take_lease(lease, me, stale) is None:
            holder = self.storage.lease_holder(lease)
            if holder is not None and is_dead_locally(holder):
                self.storage.drop_lease(lease, holder)
                continue
            time.sleep(LEASE_POLL_SECONDS)
            found = self.storage.find_posterior(self.id, key, law, cfg.method)
            if found is not None:
                return Fit(self.load_posterior(found.id), found.id, True)
        try:
            with _lease_renewal(self.storage, lease, me, self.config.executor.heartbeat_seconds):
                return self._fit_and_store(obs, key, version, progress, law)
        finally:
            self.storage.drop_lease(lease, me)

    def _fit_and_store(
        self, obs: Observations | None, key: str, version: int, progress: bool, law: str | None
    ) -> Fit:
        import bayesmix as bm

        cfg = self.config.fit
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if version > 1:
                warm = self._warm_fit(progress, law)
            else:
                warm = self._warm_start_fit(obs, progress, law)
            if warm is None and obs is None:
                raise StudyError(
                    f"study {self.name!r}: no completed run maps onto the updated domain set "
                    "and the update carried no posterior: run the study to fit it"
                )
            post = warm or bm.fit(
                obs,
                law=law,
                seed=self.config.seed,
                method=cfg.method,
                progress=progress,
                **cfg.options,
            )
        summary = self.summarise(post)
        # A carried posterior (no run over the new domain set yet) stands for every run;
        # its own rows are the old ones, or stand-ins.
        carried = bool(post.info.get("transferred"))
        n_runs = self.counts()["completed"] if carried or obs is None else len(obs.run_ids)
        summary["n_runs"] = n_runs
        summary["fit_seconds"] = time.perf_counter() - started
        summary["warnings"] = sorted({str(w.message) for w in caught})
        netcdf, path = self._posterior_payload(post, key)
        snap = self.storage.add_posterior(
            self.id,
            key,
            n_runs,
            post.law,
            cfg.method,
            bool(post.converged),
            summary,
            netcdf=netcdf,
            path=path,
        )
        return Fit(post, snap, False)

    def _warm_fit(self, progress: bool, law: str | None) -> Posterior | None:
        """After a domain update: the fit warm-started from the posterior the update recorded
        (``bayesmix.reuse.warm_fit``); None when the update recorded no prior."""
        from bayesmix.reuse import load_model

        version = self.domain_set.version
        rec = self.storage.domain_updates(self.id).get(version)
        if rec is None or (rec.get("prior_snapshot") is None and rec.get("prior_path") is None):
            return None
        update = DomainUpdate.from_dict(rec["update"])
        prev = self.storage.domain_set(self.id, version - 1)
        counts = {k: x for k, x in prev.token_counts.items() if k in prev.domains and x and x > 0}
        ds = DomainSet(tuple(prev.domains), counts, version - 1)
        metric = self.config.objective.metric
        frame = self.storage.observations(self.id)
        versions = self.storage.run_versions(self.id)
        current = {n for n, v in versions.items() if v == version}
        new_obs = None
        sub = frame[frame["run_id"].isin(current)]
        if not sub.empty:
            new_obs = Observations.from_frame(sub).select(metric=metric)
        if rec.get("prior_path"):
            old = load_model(rec["prior_path"])
            old_obs = None  # the model's own observations travel with it
        else:
            old = self.load_posterior(int(rec["prior_snapshot"]))
            old_obs = self._across_versions(frame[~frame["run_id"].isin(current)], version - 1)
            old_obs = old_obs.select(metric=metric) if old_obs is not None else None
            if old_obs is None:
                old_obs = old.observations
        return self._carried_fit(
            "after the update",
            old,
            update,
            new_obs,
            law,
            progress,
            old_observations=old_obs,
            domain_set=ds,
        )

    def _carried_fit(
        self,
        what: str,
        old: Posterior,
        update: Any,
        obs: Observations | None,
        law: str | None,
        progress: bool,
        **carry: Any,
    ) -> Posterior:
        """``bayesmix.reuse.warm_fit`` with the study's fit settings (``carry``: how the old
        posterior travels), its errors as the study's."""
        from bayesmix.reuse import warm_fit

        cfg = self.config.fit
        try:
            return warm_fit(
                old,
                update,
                obs,
                law=law or old.law,
                seed=self.config.seed,
                method=cfg.method,
                progress=progress,
                **carry,
                **cfg.options,
            )
        except ValueError as exc:
            raise StudyError(f"study {self.name!r}: warm start {what}: {exc}") from None

    def _warm_start_fit(
        self, obs: Observations | None, progress: bool, law: str | None
    ) -> Posterior | None:
        """A warm-started study's fit (``bayesmix.reuse.warm_fit``): its runs, with the
        earlier posterior carried over the update ``Study.create`` recorded as their prior;
        before any run, the carried posterior itself. None without a warm start."""

        rec = self.warm_start
        if rec is None:
            return None
        old = self._warm_start_posterior(rec)
        return self._carried_fit(
            f"from {rec['source']}",
            old,
            DomainUpdate.from_dict(rec["update"]),
            obs,
            law,
            progress,
            domain_set=DomainSet.create(list(old.domains)),
            # The earlier runs are another study's: they reach this one's fits as a
            # (widened) prior, never as rows, so that a later domain update carries them
            # along with the study's snapshot.
            prior_only=True,
        )

    def _warm_start_posterior(self, rec: Mapping[str, Any]) -> Posterior:
        """The earlier posterior a warm start names, its run ids prefixed with ``prior:`` so
        that they never collide with this study's (r0001...)."""
        if rec.get("path"):
            path = Path(rec["path"])
            if not path.is_file():
                raise StudyError(
                    f"study {self.name!r}: its warm-start posterior {path} is gone; put it "
                    "back to fit the study"
                )
            if _sha256(path) != rec["sha256"]:
                raise StudyError(
                    f"study {self.name!r}: its warm-start posterior {path} changed since the "
                    "study was created; put the original back (or create a new study from it)"
                )
            post = _read_posterior(path)
        else:
            post = _snapshot_posterior(self.storage, int(rec["snapshot"]))
        return _prefixed_runs(post, WARM_PREFIX)

    def _posterior_payload(self, post: Posterior, key: str) -> tuple[bytes | None, str | None]:
        if self.config.store_posteriors == "files":
            folder = self.workdir / "posteriors"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{key[:16]}-{post.law}-{self.config.fit.method}.nc"
            post.save(path)
            return None, str(path)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "posterior.nc"
            post.save(path)
            return path.read_bytes(), None

    def load_posterior(self, snapshot: int) -> Posterior:
        return _snapshot_posterior(self.storage, snapshot)

    def latest_posterior(self) -> tuple[Posterior, int] | None:
        snaps = self.storage.posteriors(self.id)
        if not snaps:
            return None
        return self.load_posterior(snaps[-1].id), snaps[-1].id

    def optimal_mixture(self, posterior: Posterior) -> OptimalMixture:
        obj = self.config.objective
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The target size where the law has a size axis (the study's runs take sizes).
            return posterior.optimal_mixture(
                weights=obj.weights,
                step=obj.step,
                constraints=self.constraints(),
                ci=obj.ci,
                model_size=obj.model_size if posterior.has_sizes else None,
            )

    def summarise(self, post: Posterior) -> dict[str, Any]:
        """What a snapshot records besides its draws: convergence and the optimal mixture."""
        diag = post.diagnostics()
        opt = self.optimal_mixture(post)
        lo, hi = opt.objective_interval
        return {
            "method": post.method,
            "converged": bool(post.converged),
            "divergences": int(post.divergences),
            "max_r_hat": _finite_or_none(diag["r_hat"].max()),
            "min_ess_bulk": _finite_or_none(diag["ess_bulk"].min()),
            "n_runs": len(post.observations.run_ids),
            "mixture": {d: float(v) for d, v in opt.mixture.items()},
            "intervals": {
                d: {k: float(v) for k, v in row.items()} for d, row in opt.intervals.iterrows()
            },
            "expected_objective": float(opt.expected_objective),
            "objective_interval": [float(lo), float(hi)],
            "ci": self.config.objective.ci,
        }


# ------------------------------------------------------------------------------ helpers
LEASE_POLL_SECONDS = 0.5
WARM_PREFIX = "prior:"  # a warm start's runs, in its posterior's observations


def _snapshot_posterior(storage: StudyStorage, snapshot: int) -> Posterior:
    """A stored posterior snapshot (of any study in ``storage``)."""
    data, path = storage.posterior_bytes(snapshot)
    if path is not None:
        return _read_posterior(Path(path))
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "posterior.nc"
        f.write_bytes(data or b"")
        return _read_posterior(f)


def _read_posterior(path: Path) -> Posterior:
    from bayesmix.posterior import Posterior

    return Posterior.load(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prefixed_runs(post: Posterior, prefix: str) -> Posterior:
    """``post`` with ``prefix`` before every run id of its observations (a renaming: the
    draws do not depend on the names)."""
    obs = post.observations
    frame = obs.frame.copy()
    frame["run_id"] = prefix + frame["run_id"].astype(str)
    return replace(post, observations=Observations.from_frame(frame, obs.target_domain))


def _resolve_warm_start(
    cfg: StudyConfig, store: StudyStorage, domains: list[str], token_counts: dict[str, float]
) -> tuple[dict[str, Any], list[str]]:
    """What ``Study.create`` stores of a config's ``warm_start``, and the study's domains in
    the order of the posterior carried over (the earlier posterior's domains, then the added
    ones: a proposal's posterior lists its domains as the study does).

    Every problem is one ConfigError that names it, raised before anything is stored: a
    missing or unreadable file, an unknown study or one without a posterior, a posterior
    of another metric, without spread, or with no domain in common with the study."""
    from bayesmix.reuse import load_model, prior_from_posterior

    ws = cfg.warm_start
    assert ws is not None
    where = f"{cfg.name}: warm_start"
    record: dict[str, Any] = {"source": ws.source}
    if ws.posterior:
        try:
            post = load_model(ws.posterior)
        except FileNotFoundError:
            raise ConfigError(
                f"{where}.posterior: {ws.posterior}: no such file (a posterior saved by "
                "`bayesmix fit -o`, Posterior.save or `study save-model`)"
            ) from None
        except (ValueError, OSError) as exc:  # not a posterior file, or unreadable
            raise ConfigError(f"{where}.posterior: {exc}") from None
        file = Path(post.info["_loaded_from"]).resolve()
        record |= {"path": str(file), "sha256": _sha256(file)}
        where += ".posterior"
    else:
        source = next((s for s in store.studies() if s.name == ws.study), None)
        if source is None:
            known = ", ".join(s.name for s in store.studies()) or "none"
            raise ConfigError(
                f"{where}.study: no study named {ws.study!r} in {store.safe_url} "
                f"(studies there: {known})"
            )
        snaps = store.posteriors(source.id)
        if not snaps:
            raise ConfigError(
                f"{where}.study: study {ws.study!r} has no posterior yet: run or fit it first"
            )
        try:
            post = _snapshot_posterior(store, snaps[-1].id)
        except (ValueError, OSError) as exc:  # a snapshot file moved or damaged
            raise ConfigError(
                f"{where}.study: the latest posterior of study {ws.study!r} cannot be read: {exc}"
            ) from None
        record |= {"study": ws.study, "snapshot": snaps[-1].id}
        where += ".study"
    metric = cfg.objective.metric
    if metric not in post.observations.metrics:
        raise ConfigError(
            f"{where}: the posterior is of metric {', '.join(post.observations.metrics)}, "
            f"the study's objective of {metric!r}"
        )
    if post.num_draws < 2:
        raise ConfigError(
            f"{where}: a posterior of {post.num_draws} draw ({post.method}) has no spread to "
            "start from; fit it with method nuts or laplace"
        )
    if not set(post.domains) & set(domains):
        raise ConfigError(
            f"{where}: the posterior's domains ({', '.join(post.domains)}) share none with "
            f"the study's ({', '.join(domains)}): there is nothing to carry over"
        )
    update = DomainUpdate.between(post.domains, domains, token_counts)
    old = DomainSet.create(list(post.domains))
    ordered = list(old.apply(update).domains) if update.ops else list(post.domains)
    try:  # what reuse would refuse at the first fit is refused now
        prior_from_posterior(post, update, targets=ordered, domain_set=old)
    except ValueError as exc:
        raise ConfigError(f"{where}: cannot carry the posterior over: {exc}") from None
    record |= {
        "law": post.law,
        "from_domains": list(post.domains),
        "update": update.to_dict(),
        "describe": update.describe() if update.ops else "same domains",
    }
    return record, ordered


def _lease_renewal(storage: StudyStorage, key: str, holder: str, interval: float) -> Repeating:
    """Renews a fit's lease every ``interval`` seconds from a thread while the fit runs."""

    def beat() -> None:
        # A missed renewal is retried; staleness is the waiter's call.
        with contextlib.suppress(Exception):
            storage.renew_lease(key, holder)

    return Repeating(beat, interval, "fit-lease")


LAW_KEYS = ("alpha", "loss")  # the known law's per-domain values


def _config_after_update(
    cfg: StudyConfig,
    update: Any,
    old: Any,
    new: Any,
    given: Mapping[str, Mapping[str, float]],
) -> StudyConfig:
    """The config over the updated domain set (``Study.update``): its ``data.domains`` and
    ``token_counts`` when it names them (trainers 'law' and 'external'), and the known law's
    values with trainer 'law'; ``cfg`` itself when its data are shards, which an update does
    not touch."""
    if cfg.proxy.trainer != "law":
        if given:
            raise StudyError(
                f"study {cfg.name!r}: --law-value sets the known law of trainer 'law'; this "
                f"study's trainer is {cfg.proxy.trainer!r}; nothing was changed"
            )
        if not cfg.data.domains:
            return cfg
    law_update = {}
    if cfg.proxy.trainer == "law":
        law_update = _law_after_update(cfg, update, old, new, given)
    data = cfg.data.model_copy(
        update={
            "domains": list(new.domains),
            "token_counts": {d: float(n) for d, n in new.token_counts.items()},
        }
    )
    proxy = cfg.proxy.model_copy(update={"law": cfg.proxy.law.model_copy(update=law_update)})
    # Validated again: the copy skipped pydantic's checks, and the store must hold a config
    # that loads.
    try:
        return StudyConfig.model_validate(
            cfg.model_copy(update={"data": data, "proxy": proxy}).to_json()
        )
    except ValidationError as exc:
        text = format_error(exc, "the config")
        raise StudyError(f"after the update, {text}; nothing was changed") from None


def _law_after_update(
    cfg: StudyConfig,
    update: Any,
    old: Any,
    new: Any,
    given: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
    """The known law's per-domain values over the updated domain set (trainer 'law')."""
    for domain, values in given.items():
        if domain not in new.domains:
            raise StudyError(
                f"--law-value: unknown domain {domain!r} (after the update the domains are "
                f"{', '.join(new.domains)}); nothing was changed"
            )
        for key, v in values.items():
            if key not in LAW_KEYS:
                raise StudyError(
                    f"--law-value {domain}:{key}: the known law's per-domain values are "
                    f"{' and '.join(LAW_KEYS)}; nothing was changed"
                )
            if isinstance(v, bool) or not (isinstance(v, int | float) and np.isfinite(v) and v > 0):
                raise StudyError(
                    f"--law-value {domain}:{key}: must be a positive number, got {shown(v)}; "
                    "nothing was changed"
                )
    fates = update.fates(old)
    law_update: dict[str, Any] = {}
    for key in LAW_KEYS:
        value = getattr(cfg.proxy.law, key)
        mine = {d: float(v[key]) for d, v in given.items() if key in v}
        if not isinstance(value, dict) and not mine:
            continue  # one value for every domain, old and new
        per = value if isinstance(value, dict) else dict.fromkeys(old.domains, float(value))
        out: dict[str, float] = {}
        for d in new.domains:
            fate, sources = fates[d]
            if d in mine:
                out[d] = mine[d]
            elif sources:  # unchanged, revised, split (the parent), merged (the sources)
                out[d] = float(np.mean([per[x] for x in sources]))
            else:  # added: the old domains' mean, a typical domain
                out[d] = float(np.mean([per[x] for x in old.domains]))
        law_update[key] = out
    return law_update


def _check_domains(cfg: StudyConfig, domains: list[str]) -> None:
    found = cfg.unknown_domains(domains)
    if found is not None:
        where, unknown = found
        raise ConfigError(
            f"{cfg.name}: {where} names unknown domain(s) {', '.join(unknown)}; "
            f"the data has {', '.join(domains)}"
        )


def _check_feasible(cfg: StudyConfig, domains: list[str], token_counts: dict[str, float]) -> None:
    """Bounds and repetition caps that admit no mixture are a config error, found now."""
    from bayesmix.optimize import Constraints

    c = cfg.constraints
    caps = c.target_tokens is not None
    try:
        Constraints(
            lower=dict(c.lower),
            upper=dict(c.upper),
            token_counts=token_counts if caps else None,
            target_tokens=c.target_tokens,
            max_epochs=c.max_epochs,
        ).bounds(domains)
    except ValueError as exc:
        raise ConfigError(f"{cfg.name}: constraints: {exc}") from None


def _mixture_frame(runs: list[RunRecord], domains: list[str]) -> pd.DataFrame:
    """The runs' mixtures (``r:<domain>`` columns), and their model sizes where they have."""
    frame = pd.DataFrame([{f"r:{d}": r.mixture.get(d, 0.0) for d in domains} for r in runs])
    if any(r.model_size is not None for r in runs):
        frame["model_size"] = [r.model_size for r in runs]
    return frame


def first_batch_sizes(q: int, sizes: Sequence[float]) -> list[float]:
    """Model sizes of a first batch of ``q`` runs: two at each larger size where q holds
    twice as many, else one, and the rest at the smallest; the larger sizes last.

    The law's size axis needs runs at two sizes or more; most of the first runs are cheap
    ones, which identify the mixture terms (the multi-fidelity benchmark's first batch).
    """
    larger = list(sizes[1:])
    each = max(1, min(2, (q // 2) // max(len(larger), 1)))
    if q < len(sizes):
        raise StudyError(f"a first batch of {q} runs cannot hold each of {len(sizes)} sizes")
    return [float(sizes[0])] * (q - each * len(larger)) + [
        float(s) for s in larger for _ in range(each)
    ]


def _finite_or_none(v: Any) -> float | None:
    f = float(v)
    return f if np.isfinite(f) else None


def _tell_frame(run: RunRecord, observations: Any, domains: list[str]) -> pd.DataFrame:
    if isinstance(observations, Observations):
        frame = observations.frame.copy()
    elif isinstance(observations, pd.DataFrame):
        frame = observations.copy()
    else:
        raise StudyError(
            f"run {run.name!r}: observations must be a DataFrame or Observations, got "
            f"{type(observations).__name__}"
        )
    if frame.empty:
        raise StudyError(f"run {run.name!r}: no observation rows")
    missing = [c for c in ("target", "value") if c not in frame.columns]
    if missing:
        raise StudyError(f"run {run.name!r}: observations lack column(s) {', '.join(missing)}")
    if "run_id" in frame.columns:
        other = sorted(set(frame["run_id"].astype(str)) - {run.name})
        if other:
            raise StudyError(f"run {run.name!r}: rows of other run(s) {', '.join(other[:3])}")
    frame["run_id"] = run.name
    for d in domains:
        col = f"r:{d}"
        if col in frame.columns:
            given = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
            if not np.allclose(given, run.mixture.get(d, 0.0), atol=1e-3):
                raise StudyError(
                    f"run {run.name!r}: column {col!r} differs from the run's mixture "
                    f"({run.mixture.get(d, 0.0):.4g})"
                )
        frame[col] = run.mixture.get(d, 0.0)
    unknown = [c for c in frame.columns if str(c).startswith("r:") and c[2:] not in domains]
    if unknown:
        raise StudyError(f"run {run.name!r}: column(s) for unknown domain(s): {', '.join(unknown)}")
    if "model_size" in frame.columns:
        given = pd.to_numeric(frame["model_size"], errors="coerce").to_numpy(dtype=float)
        if run.model_size is None or not np.allclose(given, run.model_size, rtol=1e-6):
            size = "no model size" if run.model_size is None else f"{run.model_size:.4g}"
            raise StudyError(
                f"run {run.name!r}: column 'model_size' differs from the run's ({size}); "
                "the study records each run's size when it proposes it"
            )
    if "metric" not in frame.columns:
        frame["metric"] = "loss"
    return frame


def storage_url_from_env() -> str:
    return os.environ.get("BAYESMIX_STORAGE", DEFAULT_URL)
