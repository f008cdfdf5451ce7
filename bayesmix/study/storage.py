"""Where studies live, chosen by URL as in Optuna: SQLAlchemy over a SQLite file (default,
``sqlite:///study.db``) or PostgreSQL (``postgresql+psycopg://...``), or this process's memory
(``memory://``, or ``None``: nothing is written and nothing outlives the process).

Tables: ``studies``, ``domain_sets`` (versions of a study's domain set), ``proposals`` (one
per ask: who proposed, from which posterior), ``runs`` (one per proposed mixture, with its
status lifecycle proposed -> running -> completed | failed, attempts and heartbeats),
``observations`` (the tidy rows a run produced), ``posteriors`` (snapshots: NetCDF bytes or
a file path, and a summary) and ``meta`` (the schema version).

Exactly-once is a property of the transactions here, not of the callers: a run is claimed by
a compare-and-set on its status, and its observations are written in the same transaction
that moves it from running to completed, under the same compare-and-set. A process killed at
any point leaves either all of a run's rows or none.

``StudyStorage`` is what a study calls; ``open_storage`` picks the backend for a URL. The
in-memory backend runs the same tables and transactions on an in-memory SQLite database, so
a study behaves alike in both (one implementation of the compare-and-sets, not two).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from bayesmix.errors import BayesMixError

SCHEMA_VERSION = 2
# Each migration brings a database of the version it is keyed by to the next one.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE runs ADD COLUMN model_size FLOAT",),  # runs of several model sizes
}
STATUSES = ("proposed", "running", "completed", "failed")
DEFAULT_URL = "sqlite:///bayesmix.db"
MEMORY_URL = "memory://"  # studies kept in this process only


class StorageError(BayesMixError, ValueError):
    """The storage cannot do what was asked (unknown study, bad URL, run in the wrong state)."""


# ------------------------------------------------------------------------------- schema
class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class StudyRow(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    config: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)


class _OfStudy:
    """The first columns of a row that belongs to a study: its id and its study's (sort_order
    keeps them first, where the tables have always had them)."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, sort_order=-2)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), sort_order=-1)


class DomainSetRow(_OfStudy, Base):
    __tablename__ = "domain_sets"
    __table_args__ = (UniqueConstraint("study_id", "version"),)
    version: Mapped[int] = mapped_column(Integer)
    domains: Mapped[list] = mapped_column(JSON)
    token_counts: Mapped[dict] = mapped_column(JSON)
    shards: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class ProposalRow(_OfStudy, Base):
    __tablename__ = "proposals"
    __table_args__ = (UniqueConstraint("study_id", "number"),)
    number: Mapped[int] = mapped_column(Integer)
    proposer: Mapped[str] = mapped_column(String(64))
    posterior_id: Mapped[int | None] = mapped_column(ForeignKey("posteriors.id"), nullable=True)
    seed: Mapped[int] = mapped_column(BigInteger)  # up to 2**32 (numpy seeds)
    created_at: Mapped[float] = mapped_column(Float)


class RunRow(_OfStudy, Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("study_id", "name"),)
    proposal_id: Mapped[int | None] = mapped_column(ForeignKey("proposals.id"), nullable=True)
    domain_set_id: Mapped[int] = mapped_column(ForeignKey("domain_sets.id"))
    name: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)  # index within its proposal
    mixture: Mapped[dict] = mapped_column(JSON)
    steps: Mapped[int] = mapped_column(Integer)
    model_size: Mapped[float | None] = mapped_column(Float, nullable=True)  # parameters
    seed: Mapped[int] = mapped_column(BigInteger)
    acquisition_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    history: Mapped[list] = mapped_column(JSON, default=list)  # earlier attempts' ends


class ObservationRow(Base):
    __tablename__ = "observations"
    __table_args__ = (UniqueConstraint("run_id", "step", "target", "metric"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    step: Mapped[float | None] = mapped_column(Float, nullable=True)
    tokens: Mapped[float | None] = mapped_column(Float, nullable=True)
    target: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)


class PosteriorRow(_OfStudy, Base):
    __tablename__ = "posteriors"
    domain_set_id: Mapped[int] = mapped_column(ForeignKey("domain_sets.id"))
    runs_key: Mapped[str] = mapped_column(String(64), index=True)  # hash of the fitted runs
    n_runs: Mapped[int] = mapped_column(Integer)
    law: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))
    converged: Mapped[bool] = mapped_column(Boolean)
    summary: Mapped[dict] = mapped_column(JSON)
    netcdf: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


# ------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class StudyRecord:
    id: int
    name: str
    config: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class DomainSetRecord:
    id: int
    version: int
    domains: list[str]
    token_counts: dict[str, float]
    shards: str | None

    @property
    def natural(self) -> dict[str, float]:
        """Natural proportions: each domain's share of the tokens (uniform without counts)."""
        counts = [float(self.token_counts.get(d, 0.0)) for d in self.domains]
        total = sum(counts)
        if total <= 0:
            return {d: 1.0 / len(self.domains) for d in self.domains}
        return {d: c / total for d, c in zip(self.domains, counts, strict=True)}


@dataclass(frozen=True)
class RunRecord:
    id: int
    name: str
    proposal: int | None  # proposal number
    mixture: dict[str, float]
    steps: int
    seed: int
    acquisition_value: float | None
    status: str
    attempts: int
    worker: str | None
    heartbeat_at: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    reason: str | None
    history: list[dict[str, Any]]
    model_size: float | None = None  # parameters; None: the study's one proxy size


@dataclass(frozen=True)
class PosteriorRecord:
    id: int
    runs_key: str
    n_runs: int
    law: str
    method: str
    converged: bool
    summary: dict[str, Any]
    path: str | None
    created_at: float


def runs_key(names: Sequence[str]) -> str:
    """A stable key of a set of runs: a posterior fitted to them can be reused on resume."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:32]


def open_storage(
    url: str | StudyStorage | None = DEFAULT_URL,
    *,
    create: bool = True,
    allow_foreign: bool = False,
) -> StudyStorage:
    """The storage for ``url``, as Optuna picks one: ``None`` or ``memory://``: a new
    in-memory storage (this process only); a database URL: ``Storage``; a storage object is
    returned as it is. ``create`` and ``allow_foreign``: as ``Storage``."""
    if url is None or url == MEMORY_URL:
        return MemoryStorage()
    if isinstance(url, str):
        return Storage(url, create=create, allow_foreign=allow_foreign)
    return url


# ------------------------------------------------------------------------------ storage
def normalise_url(url: str) -> str:
    """Validate a URL; SQLite paths become absolute so every process opens the same file."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(
            f"storage {url!r} is not a database URL (e.g. sqlite:///study.db or "
            "postgresql+psycopg://user@host/db)"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        db = parsed.database
        if not db or db == ":memory:":
            raise StorageError(
                "storage: an in-memory SQLite database cannot be shared; give a file, or "
                f"{MEMORY_URL} for studies kept in this process only"
            )
        path = Path(db).expanduser().resolve()
        if not path.parent.is_dir():
            raise StorageError(f"storage {url!r}: folder {path.parent} does not exist")
        return parsed.set(database=str(path)).render_as_string(hide_password=False)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":  # psycopg 3 rather than SQLAlchemy's psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed.render_as_string(hide_password=False)
    raise StorageError(f"storage {url!r}: unsupported database {backend!r} (sqlite or postgresql)")


class Storage:
    """All reads and writes of studies, each in its own short transaction. Studies are found
    by name, runs by (study id, run name)."""

    def __init__(
        self, url: str = DEFAULT_URL, *, create: bool = True, allow_foreign: bool = False
    ) -> None:
        """``create``: add bayesmix's tables when the database has none. ``allow_foreign``:
        add them even beside other tools' tables (refused by default: a mistyped URL must not
        write into another application's database)."""
        self.url = normalise_url(url)
        if not create and self.is_sqlite and not Path(make_url(self.url).database or "").is_file():
            raise StorageError(f"storage {self.safe_url}: no such database file")
        self.engine = _engine(self.url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._check_schema(create, allow_foreign)
        except DatabaseError as exc:
            self.engine.dispose()
            text = _first_line(exc)
            if self.is_sqlite and "not a database" in text:
                raise StorageError(
                    f"storage {self.safe_url}: {make_url(self.url).database}: file is not a "
                    "database (SQLite cannot read it)"
                ) from None
            raise StorageError(f"storage {self.safe_url}: cannot connect ({text})") from None

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def default_workdir(self, name: str) -> Path:
        """A study's files when its config names no workdir: beside a SQLite file
        (<file stem>-studies/<name>, so a copied database writes beside the copy); under the
        cwd for a server."""
        if self.is_sqlite:
            db = Path(make_url(self.url).database or "")
            return db.parent / f"{db.stem}-studies" / name
        return Path.cwd() / "bayesmix-studies" / name

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._session() as s, s.begin():
            yield s

    def _check_schema(self, create: bool, allow_foreign: bool = False) -> None:
        with self.engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
        ours = "meta" in tables and "studies" in tables
        if not ours:
            foreign = sorted(t for t in tables if not t.startswith("sqlite_"))
            listed = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            if not create:
                held = f" (it holds other tables: {listed})" if foreign else ""
                raise StorageError(f"storage {self.safe_url}: no bayesmix studies here{held}")
            if "meta" in foreign:  # bayesmix's own table name is taken: no way to share
                raise StorageError(
                    f"storage {self.safe_url}: the database has a table 'meta' that is not "
                    "bayesmix's; give bayesmix a database of its own"
                )
            if foreign and not allow_foreign:
                raise StorageError(
                    f"storage {self.safe_url}: the database holds tables that are not "
                    f"bayesmix's ({listed}); bayesmix will not add its tables to another "
                    "tool's database. Give a new file (or database), or pass "
                    "--allow-foreign-tables to share this one"
                )
            Base.metadata.create_all(self.engine)
            with self.session() as s:
                if s.get(MetaRow, "schema_version") is None:
                    s.add(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))
            return
        with self.session() as s:
            row = s.get(MetaRow, "schema_version")
            version = int(row.value) if row else 0
        if version < SCHEMA_VERSION and all(
            v in MIGRATIONS for v in range(version, SCHEMA_VERSION)
        ):
            self._migrate(version)
        elif version != SCHEMA_VERSION:
            raise StorageError(
                f"storage {self.safe_url}: schema version {version}, this bayesmix reads "
                f"version {SCHEMA_VERSION} (upgrade bayesmix, or migrate the database)"
            )

    def _migrate(self, version: int) -> None:
        """Bring a database of schema ``version`` up to ``SCHEMA_VERSION``, one transaction
        per step, so that a failed step leaves the database at the last version it reached."""
        for v in range(version, SCHEMA_VERSION):
            with self.session() as s:
                for statement in MIGRATIONS[v]:
                    s.execute(sql_text(statement))
                s.merge(MetaRow(key="schema_version", value=str(v + 1)))

    # ---------------------------------------------------------------- studies
    def create_study(
        self,
        name: str,
        config: dict[str, Any],
        domains: list[str],
        token_counts: dict[str, float],
        shards: str | None,
        warm_start: dict[str, Any] | None = None,
    ) -> StudyRecord:
        """Store a new study and its domain set (version 1); ``warm_start``: where its prior
        comes from (``Study.create``), stored in the same transaction."""
        now = time.time()
        try:
            with self.session() as s:
                row = StudyRow(name=name, config=config, created_at=now)
                s.add(row)
                s.flush()
                if warm_start is not None:
                    s.add(
                        MetaRow(
                            key=f"warm_start:{row.id}",
                            value=json.dumps(warm_start, default=_json_default),
                        )
                    )
                s.add(
                    DomainSetRow(
                        study_id=row.id,
                        version=1,
                        domains=list(domains),
                        token_counts=dict(token_counts),
                        shards=shards,
                        created_at=now,
                    )
                )
                rec = _study_record(row)
        except IntegrityError:
            raise StorageError(
                f"a study named {name!r} already exists in {self.safe_url} "
                "(resume it, or choose another name)"
            ) from None
        return rec

    def set_config(self, study_id: int, config: dict[str, Any]) -> None:
        """Replace a study's stored config (a budget extended by ``run --budget``)."""
        with self.session() as s:
            row = s.get(StudyRow, study_id)
            if row is None:
                raise StorageError(f"no study with id {study_id}")
            row.config = config

    def study(self, name: str) -> StudyRecord:
        with self.session() as s:
            row = s.scalars(select(StudyRow).where(StudyRow.name == name)).first()
            if row is None:
                names = s.scalars(select(StudyRow.name).order_by(StudyRow.id)).all()
                have = f"; studies here: {', '.join(names)}" if names else "; it holds no study"
                raise StorageError(f"no study named {name!r} in {self.safe_url}{have}")
            return _study_record(row)

    def studies(self) -> list[StudyRecord]:
        with self.session() as s:
            return [_study_record(r) for r in s.scalars(select(StudyRow).order_by(StudyRow.id))]

    def domain_set(self, study_id: int, version: int | None = None) -> DomainSetRecord:
        with self.session() as s:
            q = select(DomainSetRow).where(DomainSetRow.study_id == study_id)
            q = (
                q.where(DomainSetRow.version == version)
                if version
                else q.order_by(DomainSetRow.version.desc())
            )
            row = s.scalars(q).first()
            if row is None:
                raise StorageError(f"study {study_id}: no domain set version {version}")
            return _domain_set_record(row)

    def add_domain_set(
        self,
        study_id: int,
        expected_version: int,
        domains: list[str],
        token_counts: dict[str, float],
        shards: str | None,
        update: dict[str, Any],
        config: dict[str, Any] | None = None,
    ) -> DomainSetRecord:
        """Store the next version of a study's domain set and the update that made it, in one
        transaction; refused (nothing written) if the latest version is no longer
        ``expected_version`` or runs are still proposed or running. ``config``: the study's
        config over the new domain set, stored in the same transaction."""
        now = time.time()
        with self.session() as s:
            latest = s.scalar(
                select(func.max(DomainSetRow.version)).where(DomainSetRow.study_id == study_id)
            )
            if latest != expected_version:
                raise StorageError(
                    f"the domain set changed meanwhile (version {latest}, expected "
                    f"{expected_version}); nothing was updated"
                )
            busy = s.scalar(
                select(func.count(RunRow.id)).where(
                    RunRow.study_id == study_id, RunRow.status.in_(["proposed", "running"])
                )
            )
            if busy:
                raise StorageError(
                    f"{busy} run(s) are proposed or running over the current domain set: run "
                    "or fail them before updating it; nothing was updated"
                )
            row = DomainSetRow(
                study_id=study_id,
                version=expected_version + 1,
                domains=list(domains),
                token_counts=dict(token_counts),
                shards=shards,
                created_at=now,
            )
            s.add(row)
            if config is not None:
                study = s.get(StudyRow, study_id)
                if study is not None:
                    study.config = config
            s.add(
                MetaRow(
                    key=f"domain_update:{study_id}:{expected_version + 1}",
                    value=json.dumps(update, default=_json_default),
                )
            )
            s.flush()
            return _domain_set_record(row)

    def domain_updates(self, study_id: int) -> dict[int, dict[str, Any]]:
        """The update that made each version (> 1) of a study's domain set."""
        prefix = f"domain_update:{study_id}:"
        with self.session() as s:
            rows = s.scalars(select(MetaRow).where(MetaRow.key.startswith(prefix))).all()
            return {int(r.key[len(prefix) :]): json.loads(r.value) for r in rows}

    def warm_start(self, study_id: int) -> dict[str, Any] | None:
        """Where a study's warm start comes from (``Study.create``); None without one."""
        with self.session() as s:
            row = s.get(MetaRow, f"warm_start:{study_id}")
            return None if row is None else json.loads(row.value)

    def run_versions(self, study_id: int) -> dict[str, int]:
        """Run name -> the version of the domain set it was proposed over."""
        with self.session() as s:
            rows = s.execute(
                select(RunRow.name, DomainSetRow.version)
                .join(DomainSetRow, RunRow.domain_set_id == DomainSetRow.id)
                .where(RunRow.study_id == study_id)
            ).all()
            return {name: int(v) for name, v in rows}

    def domain_sets(self, study_id: int) -> list[DomainSetRecord]:
        with self.session() as s:
            rows = _study_rows(s, DomainSetRow, study_id, DomainSetRow.version)
            return [_domain_set_record(r) for r in rows]

    # ---------------------------------------------------------------- proposals and runs
    def add_proposal(
        self,
        study_id: int,
        number: int,
        proposer: str,
        seed: int,
        posterior_id: int | None,
        runs: Sequence[dict[str, Any]],
    ) -> bool:
        """Store proposal ``number`` and its runs at once; False if it exists already.

        Two drivers of one study may both try to propose the same next batch: the unique
        (study, number) lets exactly one of them in, and the other runs what was stored.
        """
        # The proposal and its runs: one study's, made at one time.
        made = {"study_id": study_id, "created_at": time.time()}
        dset = self.domain_set(study_id)
        try:
            with self.session() as s:
                prop = ProposalRow(
                    number=number, proposer=proposer, posterior_id=posterior_id, seed=seed, **made
                )
                s.add(prop)
                s.flush()
                for i, r in enumerate(runs):
                    s.add(
                        RunRow(
                            **made,
                            proposal_id=prop.id,
                            domain_set_id=dset.id,
                            name=r["name"],
                            position=i,
                            mixture=r["mixture"],
                            steps=int(r["steps"]),
                            model_size=r.get("model_size"),
                            seed=int(r["seed"]),
                            acquisition_value=r.get("acquisition_value"),
                            status="proposed",
                            attempts=0,
                            history=[],
                        )
                    )
        except IntegrityError:
            return False
        return True

    def proposals(self, study_id: int) -> pd.DataFrame:
        with self.session() as s:
            rows = _study_rows(s, ProposalRow, study_id, ProposalRow.number)
            return pd.DataFrame(
                [
                    {
                        "number": r.number,
                        "proposer": r.proposer,
                        "seed": r.seed,
                        "posterior_id": r.posterior_id,
                        "created_at": r.created_at,
                    }
                    for r in rows
                ],
                columns=["number", "proposer", "seed", "posterior_id", "created_at"],
            )

    def runs(self, study_id: int, status: str | Sequence[str] | None = None) -> list[RunRecord]:
        with self.session() as s:
            q = (
                select(RunRow, ProposalRow.number)
                .outerjoin(ProposalRow, RunRow.proposal_id == ProposalRow.id)
                .where(RunRow.study_id == study_id)
                .order_by(RunRow.id)
            )
            if status is not None:
                wanted = [status] if isinstance(status, str) else list(status)
                q = q.where(RunRow.status.in_(wanted))
            return [_run_record(r, n) for r, n in s.execute(q).all()]

    def run(self, study_id: int, name: str) -> RunRecord:
        with self.session() as s:
            got = s.execute(
                select(RunRow, ProposalRow.number)
                .outerjoin(ProposalRow, RunRow.proposal_id == ProposalRow.id)
                .where(RunRow.study_id == study_id, RunRow.name == name)
            ).first()
            if got is None:
                raise StorageError(f"no run named {name!r} in this study")
            return _run_record(*got)

    def claim(self, study_id: int, name: str, worker: str) -> RunRecord | None:
        """proposed -> running for ``worker``; None when someone else has it (or it is done)."""
        now = time.time()
        with self.session() as s:
            res = s.execute(
                update(RunRow)
                .where(
                    RunRow.study_id == study_id, RunRow.name == name, RunRow.status == "proposed"
                )
                .values(
                    status="running",
                    worker=worker,
                    attempts=RunRow.attempts + 1,
                    heartbeat_at=now,
                    started_at=now,
                )
            )
            if res.rowcount != 1:
                return None
        return self.run(study_id, name)

    def heartbeat(self, study_id: int, names: Sequence[str], worker: str) -> int:
        """Refresh the heartbeat of the runs ``worker`` holds; returns how many it still holds."""
        with self.session() as s:
            res = s.execute(
                update(RunRow)
                .where(
                    RunRow.study_id == study_id,
                    RunRow.name.in_(list(names)),
                    RunRow.status == "running",
                    RunRow.worker == worker,
                )
                .values(heartbeat_at=time.time())
            )
            return int(res.rowcount)

    def complete(
        self,
        study_id: int,
        name: str,
        rows: pd.DataFrame,
        worker: str | None = None,
    ) -> None:
        """Store a run's observations and mark it completed, in one transaction.

        ``worker``: the holder that claimed the run (executors); None for a user's ``tell``,
        which may complete a run that is proposed or running. A run completed or failed
        already, or claimed by another worker since, is refused and nothing is written.
        """
        now = time.time()
        with self.session() as s:
            ended = dict(status="completed", finished_at=now, heartbeat_at=now, reason=None)
            if not _end_run(s, study_id, name, worker, ended):
                state = s.scalars(
                    select(RunRow.status).where(RunRow.study_id == study_id, RunRow.name == name)
                ).first()
                if state is None:
                    raise StorageError(f"no run named {name!r} in this study")
                raise StorageError(
                    f"run {name!r} is {state}"
                    + (" by another worker" if state == "running" else "")
                    + "; its observations were not stored"
                )
            run_pk = s.scalars(
                select(RunRow.id).where(RunRow.study_id == study_id, RunRow.name == name)
            ).one()
            s.add_all(
                ObservationRow(
                    run_id=run_pk,
                    step=_float_or_none(r.step),
                    tokens=_float_or_none(r.tokens),
                    target=str(r.target),
                    metric=str(r.metric),
                    value=float(r.value),
                )
                for r in rows.itertuples(index=False)
            )

    def fail(self, study_id: int, name: str, reason: str, worker: str | None = None) -> bool:
        """Mark a run failed with its reason (only from proposed or running, by its holder)."""
        with self.session() as s:
            ended = dict(status="failed", finished_at=time.time(), reason=reason[:2000])
            return _end_run(s, study_id, name, worker, ended)

    def release(
        self,
        study_id: int,
        run: RunRecord,
        reason: str,
        max_attempts: int,
    ) -> str | None:
        """A running run whose worker died: back to proposed, or failed after max_attempts.

        Compare-and-set on (worker, heartbeat) so that a worker that was merely slow and has
        just beaten its heartbeat keeps its run. Returns the new status, or None if unchanged.
        """
        new = "proposed" if run.attempts < max_attempts else "failed"
        event_ = {
            "attempt": run.attempts,
            "worker": run.worker,
            "reason": reason,
            "at": time.time(),
        }
        values: dict[str, Any] = {"status": new, "history": [*run.history, event_]}
        if new == "proposed":
            values.update(worker=None, heartbeat_at=None, started_at=None)
        else:
            values.update(
                finished_at=time.time(),
                reason=f"{reason} (attempt {run.attempts} of {max_attempts}; not retried)",
            )
        with self.session() as s:
            res = s.execute(
                update(RunRow)
                .where(
                    RunRow.id == run.id,
                    RunRow.status == "running",
                    RunRow.worker == run.worker,
                    RunRow.heartbeat_at == run.heartbeat_at,
                )
                .values(**values)
            )
            return new if res.rowcount == 1 else None

    def release_dead(
        self,
        study_id: int,
        stale_after: float,
        max_attempts: int,
        is_dead: Callable[[RunRecord], str | None],
    ) -> list[tuple[str, str]]:
        """Release every running run whose worker is dead or whose heartbeat is stale."""
        out = []
        now = time.time()
        for run in self.runs(study_id, "running"):
            why = is_dead(run)
            if (
                why is None
                and run.heartbeat_at is not None
                and now - run.heartbeat_at > stale_after
            ):
                age = now - run.heartbeat_at
                why = f"worker {run.worker} stopped its heartbeat ({age:.0f} s ago)"
            if why is not None:
                new = self.release(study_id, run, why, max_attempts)
                if new is not None:
                    out.append((run.name, new))
        return out

    # ---------------------------------------------------------------- observations
    def observations(self, study_id: int, runs: Sequence[str] | None = None) -> pd.DataFrame:
        """The tidy table of the study's completed runs (DESIGN.md), in run order; with a
        ``model_size`` column where the study's runs have sizes."""
        dset = self.domain_set(study_id)
        with self.session() as s:
            q = (
                select(
                    RunRow.name,
                    RunRow.mixture,
                    RunRow.seed,
                    RunRow.model_size,
                    ObservationRow.step,
                    ObservationRow.tokens,
                    ObservationRow.target,
                    ObservationRow.value,
                    ObservationRow.metric,
                )
                .join(RunRow, ObservationRow.run_id == RunRow.id)
                .where(RunRow.study_id == study_id, RunRow.status == "completed")
                .order_by(RunRow.id, ObservationRow.id)
            )
            if runs is not None:
                q = q.where(RunRow.name.in_(list(runs)))
            rows = s.execute(q).all()
        cols = ["run_id", "step", "tokens", "target", "value", "metric", "seed"]
        ratio_cols = [f"r:{d}" for d in dset.domains]
        records = []
        for name, mixture, seed, model_size, step, tokens, target, value, metric in rows:
            rec = {
                "run_id": name,
                "step": step,
                "tokens": tokens,
                "target": target,
                "value": value,
                "metric": metric,
                "seed": seed,
                "model_size": model_size,
            }
            rec.update({f"r:{d}": float(mixture.get(d, 0.0)) for d in dset.domains})
            records.append(rec)
        frame = pd.DataFrame(records, columns=[*cols, "model_size", *ratio_cols])
        if frame["model_size"].isna().all():
            frame = frame.drop(columns="model_size")
        return frame

    def count_observations(self, study_id: int) -> int:
        with self.session() as s:
            return int(
                s.scalar(
                    select(func.count(ObservationRow.id))
                    .join(RunRow, ObservationRow.run_id == RunRow.id)
                    .where(RunRow.study_id == study_id)
                )
                or 0
            )

    # ---------------------------------------------------------------- posteriors
    def add_posterior(
        self,
        study_id: int,
        key: str,
        n_runs: int,
        law: str,
        method: str,
        converged: bool,
        summary: dict[str, Any],
        netcdf: bytes | None = None,
        path: str | None = None,
    ) -> int:
        dset = self.domain_set(study_id)
        with self.session() as s:
            row = PosteriorRow(
                study_id=study_id,
                domain_set_id=dset.id,
                runs_key=key,
                n_runs=n_runs,
                law=law,
                method=method,
                converged=converged,
                summary=json.loads(json.dumps(summary, default=_json_default)),
                netcdf=netcdf,
                path=path,
                created_at=time.time(),
            )
            s.add(row)
            s.flush()
            return int(row.id)

    def posteriors(self, study_id: int) -> list[PosteriorRecord]:
        with self.session() as s:
            rows = _study_rows(s, PosteriorRow, study_id, PosteriorRow.id)
            return [_posterior_record(r) for r in rows]

    def find_posterior(
        self, study_id: int, key: str, law: str | None, method: str
    ) -> PosteriorRecord | None:
        """The latest snapshot of these runs by this method and ``law`` (None: any law)."""
        same = [
            PosteriorRow.study_id == study_id,
            PosteriorRow.runs_key == key,
            PosteriorRow.method == method,
        ]
        if law is not None:
            same.append(PosteriorRow.law == law)
        with self.session() as s:
            row = s.scalars(
                select(PosteriorRow).where(*same).order_by(PosteriorRow.id.desc())
            ).first()
            return _posterior_record(row) if row else None

    def posterior_bytes(self, posterior_id: int) -> tuple[bytes | None, str | None]:
        with self.session() as s:
            row = s.get(PosteriorRow, posterior_id)
            if row is None:
                raise StorageError(f"no posterior snapshot {posterior_id}")
            return row.netcdf, row.path

    # ---------------------------------------------------------------- leases
    def take_lease(self, key: str, holder: str, stale_after: float) -> str | None:
        """Claim the lease ``key`` (a fit of one set of runs) for ``holder``; None when taken,
        else the holder it was taken over from ("" when free). A lease not renewed for
        ``stale_after`` seconds is taken over: its holder died."""
        now = time.time()
        try:
            with self.session() as s:
                row = s.get(MetaRow, key)
                if row is None:
                    s.add(MetaRow(key=key, value=json.dumps({"holder": holder, "at": now})))
                    return ""
                held = json.loads(row.value)
                if now - float(held["at"]) <= stale_after:
                    return None
                row.value = json.dumps({"holder": holder, "at": now})
                return str(held["holder"])
        except IntegrityError:  # a concurrent claim won (servers without a write lock)
            return None

    def lease_holder(self, key: str) -> str | None:
        with self.session() as s:
            row = s.get(MetaRow, key)
            return None if row is None else str(json.loads(row.value)["holder"])

    def renew_lease(self, key: str, holder: str) -> bool:
        with self.session() as s:
            row = s.get(MetaRow, key)
            if row is None or json.loads(row.value)["holder"] != holder:
                return False
            row.value = json.dumps({"holder": holder, "at": time.time()})
            return True

    def drop_lease(self, key: str, holder: str) -> None:
        with self.session() as s:
            row = s.get(MetaRow, key)
            if row is not None and json.loads(row.value)["holder"] == holder:
                s.delete(row)

    def fingerprint(self) -> str:
        """A hash of every table's rows (tests: a refused input changes nothing)."""
        h = hashlib.sha256()
        with self.session() as s:
            for table in Base.metadata.sorted_tables:
                for row in s.execute(select(table).order_by(*table.primary_key.columns)).all():
                    h.update(repr(tuple(row)).encode())
        return h.hexdigest()


class MemoryStorage(Storage):
    """Studies kept in this process's memory (``memory://``), as Optuna's InMemoryStorage:
    nothing is written to disk and nothing outlives the process. For benchmarks and
    notebooks that drive a study with ask / tell; worker processes cannot reach it, so
    ``run_study``'s executors refuse it.

    The tables and transactions are ``Storage``'s, on an in-memory SQLite database over one
    connection; the threads of the process (a fit's lease renewal) take turns on it.
    """

    def __init__(self) -> None:
        self.url = MEMORY_URL
        self.engine = _engine("sqlite://", poolclass=StaticPool)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        # One connection: a second thread's transaction must not interleave with the first's.
        self._lock = threading.RLock()
        self._check_schema(create=True)

    @property
    def safe_url(self) -> str:
        return MEMORY_URL

    def default_workdir(self, name: str) -> Path:
        """Under the cwd (as for a server): give the config a workdir to put it elsewhere."""
        return Path.cwd() / "bayesmix-studies" / name

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._lock, super().session() as s:
            yield s


# What a study, its loop, its workers and its report read and write (every call one
# transaction): ``Storage``, or its subclass ``MemoryStorage``; ``open_storage`` picks one.
StudyStorage = Storage


# ------------------------------------------------------------------------------ helpers
def _study_rows(s: Session, table: Any, study_id: int, order_by: Any) -> list[Any]:
    """The rows of ``table`` (a row class with a study_id) that belong to a study, in order."""
    return list(s.scalars(select(table).where(table.study_id == study_id).order_by(order_by)))


def _end_run(
    s: Session, study_id: int, name: str, worker: str | None, values: dict[str, Any]
) -> bool:
    """Set a run's end ``values`` (completed or failed) where it may still end: proposed or
    running for a user's ``tell`` (``worker`` None), else running and held by ``worker``.
    Whether it was set (a compare-and-set: a run ended already, or taken over, is left)."""
    cond = [RunRow.study_id == study_id, RunRow.name == name]
    if worker is None:
        cond.append(RunRow.status.in_(["proposed", "running"]))
    else:
        cond += [RunRow.status == "running", RunRow.worker == worker]
    return s.execute(update(RunRow).where(*cond).values(**values)).rowcount == 1


def _engine(url: str, poolclass: type | None = None) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    if poolclass is not None:  # one connection shared by the threads of this process
        engine = create_engine(url, poolclass=poolclass, connect_args={"check_same_thread": False})
    else:
        engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (below); WAL lets readers and one writer overlap,
        # NORMAL sync is durable against a killed process (only power loss can cost the tail).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads, then
        # writes, fails at once with 'database is locked' when another process wrote between.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _study_record(r: StudyRow) -> StudyRecord:
    return StudyRecord(r.id, r.name, dict(r.config), r.created_at)


def _domain_set_record(r: DomainSetRow) -> DomainSetRecord:
    return DomainSetRecord(r.id, r.version, list(r.domains), dict(r.token_counts), r.shards)


def _run_record(r: RunRow, number: int | None) -> RunRecord:
    return RunRecord(
        id=r.id,
        name=r.name,
        proposal=number,
        mixture={k: float(v) for k, v in r.mixture.items()},
        steps=r.steps,
        model_size=r.model_size,
        seed=r.seed,
        acquisition_value=r.acquisition_value,
        status=r.status,
        attempts=r.attempts,
        worker=r.worker,
        heartbeat_at=r.heartbeat_at,
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        reason=r.reason,
        history=list(r.history or []),
    )


def _posterior_record(r: PosteriorRow) -> PosteriorRecord:
    return PosteriorRecord(
        r.id,
        r.runs_key,
        r.n_runs,
        r.law,
        r.method,
        bool(r.converged),
        dict(r.summary),
        r.path,
        r.created_at,
    )


def _float_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else f  # NaN -> NULL


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", exc)) or type(exc).__name__
    return text.strip().splitlines()[0]


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
