"""Executors: where a study's runs execute. ``local`` processes, or ``ray`` tasks.

An executor only starts workers (``bayesmix.study.worker.execute``) on groups of run names
and reports when they end; claiming, heartbeats and storing results happen in the worker,
against the shared storage. So two drivers, or two nodes, handed the same run never both
train it: the second claim fails and that worker skips the run.

Each submitted group has a ``token``: the worker's id ends with it, so when a worker dies
the driver finds the runs it held and releases them (re-queued once, then failed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bayesmix.study.config import ConfigError, StudyConfig
from bayesmix.study.storage import MEMORY_URL, StorageError
from bayesmix.study.trainers import TRAINERS


@dataclass
class Task:
    token: str
    names: list[str]
    handle: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class Finished:
    task: Task
    error: str | None  # None: the worker ended normally (its runs' outcomes are stored)


class Executor(Protocol):
    kind: str
    slots: int  # groups running at once

    @property
    def busy(self) -> int: ...

    def submit(self, names: Sequence[str]) -> Task: ...

    def poll(self) -> list[Finished]: ...

    def close(self) -> None: ...


def new_token() -> str:
    return uuid.uuid4().hex[:12]


def make_executor(kind: str, storage_url: str, study: str, config: StudyConfig) -> Executor:
    if storage_url == MEMORY_URL:
        # Workers are other processes (or nodes): they reach the study by its URL.
        raise StorageError(
            f"study {study!r} is kept in memory ({MEMORY_URL}), where worker processes cannot "
            "reach its runs: store it in a database (sqlite:///study.db), or train its runs "
            "yourself with study.ask / study.tell"
        )
    if kind == "local":
        return LocalExecutor(storage_url, study, config)
    if kind == "ray":
        return RayExecutor(storage_url, study, config)
    raise ConfigError(f"unknown executor {kind!r}; choose local or ray")


# ------------------------------------------------------------------------------ local
def visible_gpus(config: StudyConfig) -> list[str]:
    """GPU ids this machine offers to proxy runs (none for a trainer without GPUs)."""
    ex = config.executor
    if not TRAINERS[config.proxy.trainer].gpus or ex.gpus == 0:
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [g for g in env.split(",") if g.strip()]
    else:
        try:
            import torch

            ids = [str(i) for i in range(torch.cuda.device_count())]
        except ImportError:
            ids = []
    return ids if ex.gpus == "auto" else ids[: int(ex.gpus)]


def gpu_slots(gpus: list[str], per_run: float) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each slot: one GPU per run, several per run, or several runs
    sharing a GPU (per_run < 1: small proxies that fit side by side)."""
    if not gpus or per_run <= 0:
        return []
    if per_run >= 1:
        k = int(per_run)
        return [",".join(gpus[i : i + k]) for i in range(0, len(gpus) - k + 1, k)]
    share = int(1 / per_run)
    return [g for g in gpus for _ in range(share)]


class LocalExecutor:
    """One process per group of runs (``executor.pack`` runs; 1 by default), ``slots`` at
    once: one per GPU (or per GPU share) when the machine has GPUs, ``executor.parallel``
    on CPU. A process, not a thread: a run that crashes or runs out of memory takes only
    itself down, and CUDA_VISIBLE_DEVICES pins it to its GPUs."""

    kind = "local"

    def __init__(self, storage_url: str, study: str, config: StudyConfig) -> None:
        self.storage_url, self.study, self.config = storage_url, study, config
        self.gpu_slots = gpu_slots(visible_gpus(config), config.executor.gpus_per_run)
        self.slots = len(self.gpu_slots) or config.executor.parallel
        self.free_slots = list(range(self.slots))
        self.running: list[Task] = []
        self.log_dir = Path(config.workdir or ".") / "logs"

    def submit(self, names: Sequence[str]) -> Task:
        if not self.free_slots:
            raise RuntimeError("no free slot")
        slot = self.free_slots.pop(0)
        token = new_token()
        env = dict(os.environ)
        if self.gpu_slots:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu_slots[slot]
        elif TRAINERS[self.config.proxy.trainer].gpus:
            env["CUDA_VISIBLE_DEVICES"] = ""  # CPU slots: no GPU even if one appears
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"worker-{token}.log", "wb")  # noqa: SIM115 (closed on poll)
        cmd = [
            sys.executable,
            "-m",
            "bayesmix.study.worker",
            "--storage",
            self.storage_url,
            "--study",
            self.study,
            "--token",
            token,
            *names,
        ]
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        task = Task(token, list(names), (proc, slot, log))
        self.running.append(task)
        return task

    def poll(self) -> list[Finished]:
        done = []
        for task in list(self.running):
            proc, slot, log = task.handle
            rc = proc.poll()
            if rc is None:
                continue
            log.close()
            self.running.remove(task)
            self.free_slots.append(slot)
            done.append(Finished(task, None if rc == 0 else self._why(rc, log.name)))
        return done

    @staticmethod
    def _why(rc: int, log_path: str) -> str:
        if rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            what = f"worker process killed by {name}"
        else:
            what = f"worker process exited with code {rc}"
        try:
            lines = Path(log_path).read_text(errors="replace").strip().splitlines()
            tail = next((ln for ln in reversed(lines) if ln.strip()), "")
        except OSError:
            tail = ""
        return f"{what}: {tail[:300]}" if tail else what

    @property
    def busy(self) -> int:
        return len(self.running)

    def close(self) -> None:
        # Interrupted driver: stop its workers; their runs are released on resume.
        for task in self.running:
            proc, _, log = task.handle
            if proc.poll() is None:
                proc.terminate()
        for task in self.running:
            proc, _, log = task.handle
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        self.running.clear()


# ------------------------------------------------------------------------------ ray
def _ray_task(storage_url: str, study: str, names: list[str], token: str) -> dict[str, list]:
    from bayesmix.study.worker import execute

    report = execute(storage_url, study, names, token)
    return {"completed": report.completed, "failed": report.failed, "skipped": report.skipped}


class RayExecutor:
    """Each group of runs is one Ray task asking for ``gpus_per_run`` GPUs (x pack) and
    ``cpus_per_run`` CPUs. Ray places and queues the tasks; the storage (a database every
    node reaches: PostgreSQL for several nodes) decides who trains what. Ray's own retries
    are off: a task whose worker died is re-queued through the storage, once."""

    kind = "ray"

    def __init__(self, storage_url: str, study: str, config: StudyConfig) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("executor 'ray' needs the ray package (pip install ray)") from None
        self.ray = ray
        self.storage_url, self.study, self.config = storage_url, study, config
        if storage_url.startswith("sqlite") and config.executor.address:
            # A SQLite file is shared only by processes of one machine.
            raise ConfigError(
                "executor 'ray' on a cluster address needs a storage every node reaches "
                "(postgresql+psycopg://...), not a SQLite file"
            )
        self.started_ray = False
        if not ray.is_initialized():
            ray.init(
                address=config.executor.address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            self.started_ray = True
        ex = config.executor
        gpus = ex.gpus_per_run * ex.pack if TRAINERS[config.proxy.trainer].gpus else 0.0
        if gpus and not ray.cluster_resources().get("GPU"):
            gpus = 0.0  # a CPU-only cluster trains on CPU, as the local executor does
        self.remote = ray.remote(_ray_task).options(
            num_cpus=ex.cpus_per_run, num_gpus=gpus, max_retries=0
        )
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self.slots = max(1, int(cpus // ex.cpus_per_run))
        self.running: dict[Any, Task] = {}

    def submit(self, names: Sequence[str]) -> Task:
        token = new_token()
        ref = self.remote.remote(self.storage_url, self.study, list(names), token)
        task = Task(token, list(names), ref)
        self.running[ref] = task
        return task

    def poll(self) -> list[Finished]:
        if not self.running:
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
        done = []
        for ref in ready:
            task = self.running.pop(ref)
            try:
                self.ray.get(ref)
                done.append(Finished(task, None))
            except Exception as exc:  # RayTaskError, WorkerCrashedError, ...
                first = str(exc).strip().splitlines()
                done.append(Finished(task, f"ray task failed: {first[-1] if first else exc}"))
        return done

    @property
    def busy(self) -> int:
        return len(self.running)

    def close(self) -> None:
        for ref in list(self.running):
            self.ray.cancel(ref, force=True)
        self.running.clear()
        if self.started_ray:
            self.ray.shutdown()
