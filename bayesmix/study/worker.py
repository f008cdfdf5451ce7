"""The code that executes runs, wherever it runs (a local process, a Ray task).

``execute`` claims the named runs in the study's storage (a compare-and-set: a run another
worker holds is skipped), keeps their heartbeats fresh from a thread while the trainer works,
and stores each outcome (observations and completion in one transaction, or the failure
reason). The worker, not the driver, writes results: a driver killed mid-batch loses nothing
that its workers finished.

Also a command, for the local executor's processes:
``python -m bayesmix.study.worker --storage URL --study NAME --token T RUN [RUN ...]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bayesmix.study.config import StudyConfig, with_workdir
from bayesmix.study.storage import Storage, StorageError
from bayesmix.study.trainers import RunSpec, make_trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerReport:
    completed: list[str]
    failed: list[str]
    skipped: list[str]  # held by another worker, or done already


def worker_id(token: str) -> str:
    """host:pid:token; the driver finds a dead local worker by its pid, its runs by its token."""
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


def is_dead_locally(worker: str | None) -> str | None:
    """The reason a worker on this host is dead (its process is gone), or None if unknown."""
    if not worker:
        return None
    parts = worker.split(":")
    if len(parts) < 3 or parts[0] != socket.gethostname():
        return None
    try:
        pid = int(parts[1])
    except ValueError:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"worker {worker} is gone (process {pid} no longer exists)"
    except PermissionError:
        return None
    return None


class Repeating:
    """Calls ``beat`` every ``interval`` seconds from a daemon thread while the ``with`` block
    runs: a worker's heartbeat, a fit's lease renewal. ``beat`` handles its own errors."""

    def __init__(self, beat: Callable[[], object], interval: float, name: str) -> None:
        self.beat, self.interval = beat, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> Repeating:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def heartbeat(
    storage: Storage, study_id: int, names: Sequence[str], worker: str, interval: float
) -> Repeating:
    """Refreshes the heartbeat of the runs a worker holds, every ``interval`` seconds."""
    held = list(names)

    def beat() -> None:
        try:
            storage.heartbeat(study_id, held, worker)
        except Exception as exc:  # a missed beat is retried; staleness is the driver's call
            log.warning("heartbeat failed: %s", exc)

    return Repeating(beat, interval, "heartbeat")


def execute(
    storage_url: str,
    study_name: str,
    names: Sequence[str],
    token: str,
    progress: bool = False,
) -> WorkerReport:
    """Claim, train and store the runs ``names`` of a study (see the module docstring)."""
    storage = Storage(storage_url, create=False)
    try:
        return _execute(storage, study_name, names, token, progress)
    finally:
        storage.close()


def _execute(
    storage: Storage, study_name: str, names: Sequence[str], token: str, progress: bool
) -> WorkerReport:
    study = storage.study(study_name)
    config = with_workdir(
        StudyConfig.model_validate(study.config), storage.default_workdir(study_name)
    )
    dset = storage.domain_set(study.id)
    me = worker_id(token)
    claimed = []
    skipped = []
    for name in names:
        run = storage.claim(study.id, name, me)
        (claimed if run is not None else skipped).append(run or name)
    if not claimed:
        return WorkerReport([], [], list(skipped))
    specs = [RunSpec.of(r) for r in claimed]
    completed, failed = [], []
    with heartbeat(
        storage, study.id, [s.name for s in specs], me, config.executor.heartbeat_seconds
    ):
        try:
            trainer = make_trainer(config, dset.domains, dset.shards, run_dir(config), progress)
            outcomes = trainer.train(specs)
        except Exception as exc:  # the trainer's failure is every claimed run's reason
            reason = describe(exc)
            log.debug("%s", traceback.format_exc())
            for s in specs:
                if storage.fail(study.id, s.name, reason, worker=me):
                    failed.append(s.name)
            return WorkerReport(completed, failed, list(skipped))
    for o in outcomes:
        try:
            if o.ok:
                storage.complete(study.id, o.name, o.rows, worker=me)
                completed.append(o.name)
            elif storage.fail(study.id, o.name, o.reason or "failed", worker=me):
                failed.append(o.name)
        except StorageError as exc:  # released as stale meanwhile, and taken by another
            log.warning("%s", exc)
            skipped.append(o.name)
    return WorkerReport(completed, failed, list(skipped))


def describe(exc: BaseException) -> str:
    """One line naming an exception and its cause."""
    from pydantic import ValidationError

    from bayesmix.study.config import format_error

    if isinstance(exc, ValidationError):
        return format_error(exc, "the study's stored config")
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def run_dir(config: StudyConfig) -> Path:
    """Where proxy runs write checkpoints and results (a killed run resumes from there)."""
    return Path(config.workdir or ".") / "runs"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bayesmix.study.worker")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = execute(args.storage, args.study, args.runs, args.token, args.progress)
    except Exception as exc:
        # The driver records the log's last line as the runs' reason: make it the cause.
        traceback.print_exc()
        print(f"worker error: {describe(exc)}", file=sys.stderr)
        return 1
    print(
        f"completed {len(report.completed)}, failed {len(report.failed)}, "
        f"skipped {len(report.skipped)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
