"""Studies: a persistent, resumable active-learning loop over proxy runs.

A study is data: a config (``bayesmix.study.config``, one YAML file) and a storage URL
(``bayesmix.study.storage``: SQLite by default, PostgreSQL for teams, ``memory://`` for a
study that lives in one process). ``Study`` asks for runs
and is told their observations; ``run_study`` drives the loop with an executor (``local``
processes or ``ray`` tasks) that trains proxies or, for dry runs, evaluates a known law.
"""

from __future__ import annotations

from bayesmix.lazy import lazy_getattr

_LAZY = {  # module -> the names it provides
    "study": ("Study", "StudyError", "Fit"),
    "config": ("StudyConfig", "ConfigError", "load_config", "parse_config"),
    "storage": ("Storage", "StorageError", "MemoryStorage", "open_storage"),
    "loop": ("run_study",),
}
__all__ = [name for names in _LAZY.values() for name in names]
__getattr__ = lazy_getattr(__name__, _LAZY)
