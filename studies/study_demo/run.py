"""Time `bayesmix demo` from scratch and append a row to timings.md (one command, re-runnable).

    .venv/bin/python -m studies.study_demo.run

The row records when and where it ran (CPU count, load average before and after), the wall
time of the whole demo, of its proxy runs and of its fits (from the study's own records),
and the recommendation's convergence state. The issue's figure: under 10 minutes on 2 cores.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TABLE = HERE / "timings.md"
HEADER = (
    "| when | machine | load before/after | demo wall | proxy runs (sum of run times, parallel 2) "
    "| fits | runs | converged | exit |\n|---|---|---|---|---|---|---|---|---|\n"
)


def main() -> int:
    load0 = os.getloadavg()[0]
    when = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "demo"
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "bayesmix.cli", "demo", "--fresh", "--dir", str(folder)],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        db = sqlite3.connect(folder / "demo.db")
        runs = db.execute(
            "SELECT COUNT(*), SUM(finished_at - started_at) FROM runs WHERE status = 'completed'"
        ).fetchone()
        fits = db.execute("SELECT summary FROM posteriors ORDER BY id").fetchall()
        import json

        fit_s = sum(json.loads(s)["fit_seconds"] for (s,) in fits)
        converged = json.loads(fits[-1][0])["converged"] if fits else None
    load1 = os.getloadavg()[0]
    machine = f"{platform.machine()} x{os.cpu_count()}"
    row = (
        f"| {when} | {machine} | {load0:.1f}/{load1:.1f} | {wall / 60:.1f} min "
        f"| {runs[1] or 0:.0f} s | {fit_s:.0f} s ({len(fits)}) | {runs[0]} | {converged} "
        f"| {out.returncode} |\n"
    )
    if not TABLE.exists():
        TABLE.write_text("# `bayesmix demo` timings\n\n" + HEADER)
    with TABLE.open("a") as fh:
        fh.write(row)
    print(row, end="")
    if out.returncode:
        print(out.stderr[-2000:], file=sys.stderr)
    return out.returncode


if __name__ == "__main__":
    sys.exit(main())
