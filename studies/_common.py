"""What the studies share: where the data are, one thread per library, and the record of
what ran where and when that each results table carries.

The studies are a package, run as modules from the repository root:

    python -m studies.active_learning.run --config small

Nothing here imports numpy, jax or torch, so ``one_thread_per_library`` can run before they
load.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the repository
DATA = ROOT.parent / "shared" / "data"  # public releases (RegMix, Olmix, DoReMi, ...)


def one_thread_per_library() -> None:
    """Pin BLAS, XLA and torch's CPU pools to one thread each; call before they load.

    On a shared 2-core machine, oversubscribed thread pools spin against each other and
    everything runs 3-10x slower. Settings already in the environment win.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    # Only "--" flags: XLA stops reading at a bare token, which dropped the chain devices
    # bayesmix.jax_setup appends (NUTS chains then ran one after another in every study).
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return ""
    return out.stdout.strip()


def commit() -> str:
    """HEAD's short hash, with "+dirty" when the tracked Python code differs from it (the
    results files that a running study writes do not count)."""
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "*.py")
    return head + ("+dirty" if dirty else "")


def host() -> str:
    """This machine, as a results table names it: its name, CPU cores and GPUs."""
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpu = f"GPUs {gpus}" if gpus else "no GPU"
    return f"{socket.gethostname()} ({os.cpu_count()} CPU cores, {gpu})"


def provenance() -> dict[str, str]:
    """What ran, where and when: the commit, the machine, the UTC time and Python."""
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{host()}, {platform.machine()}, Python {platform.python_version()}",
        "commit": commit(),
    }


def commits_and_hosts(rows: Iterable[dict[str, Any]]) -> str:
    """One sentence for a table built from result lines that carry their ``commit`` and
    ``host``: the hosts, and each commit with the date it was committed."""
    rows = list(rows)
    commits = sorted({str(r.get("commit", "unrecorded")) for r in rows})
    dated = []
    for c in commits:
        when = _git("show", "-s", "--format=%cd", "--date=format:%Y-%m-%d %H:%M", c.split("+")[0])
        dated.append(f"`{c}` ({when or 'date unknown'})")
    hosts = sorted({str(r.get("host", "vm (2 CPU cores, no GPU)")) for r in rows})
    return f"Ran on {', '.join(hosts)}; commits (committed at): {', '.join(dated)}."
