"""Studies: a persistent, resumable active-learning loop over proxy runs.

A study is data: a config (``bayesmix.study.config``, one YAML file) and a storage URL
(``bayesmix.study.storage``: SQLite by default, PostgreSQL for teams, ``memory://`` for a
study that lives in one process). ``Study`` asks for runs
and is told their observations; ``run_study`` drives the loop with an executor (``local``
processes or ``ray`` tasks) that trains proxies or, for dry runs, evaluates a known law.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Study": "bayesmix.study.study",
    "StudyError": "bayesmix.study.study",
    "Fit": "bayesmix.study.study",
    "StudyConfig": "bayesmix.study.config",
    "ConfigError": "bayesmix.study.config",
    "load_config": "bayesmix.study.config",
    "parse_config": "bayesmix.study.config",
    "Storage": "bayesmix.study.storage",
    "StorageError": "bayesmix.study.storage",
    "MemoryStorage": "bayesmix.study.storage",
    "open_storage": "bayesmix.study.storage",
    "run_study": "bayesmix.study.loop",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bayesmix.study' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
