"""Where a sweep lives: an Optuna storage opened from one URL, failing at once when it cannot be reached.

- a file path (default ``runs/sweeps.journal``): Optuna's JournalStorage on a JournalFileBackend. It
  appends one JSON line per operation under a file lock, with fsync, and never rewrites, so several
  worker processes can write at once; a torn last line (a writer killed mid-append) is skipped. SQLite
  serialises writers with a whole-database lock ("database is locked" under contention) and cannot
  lock a row, so the compare-and-set RUNNING → FAIL that makes a stale trial's retry unique is not
  atomic there.
- ``postgresql://user@host:port/db`` (or ``sqlite:///file.db``, ``mysql://...``): Optuna's RDBStorage.
  PostgreSQL locks the trial row (SELECT … FOR UPDATE), so the same sweep command can run on many
  machines against one database.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from lightning_phase.errors import ConfigError

DEFAULT_STORAGE = "runs/sweeps.journal"
RDB_SCHEMES = ("postgresql", "postgresql+psycopg2", "sqlite", "mysql", "mysql+pymysql")


def open_storage(url: str | None) -> BaseStorage:
    """The storage behind ``url`` (module doc); ConfigError('--storage', url, ...) if unreachable."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url is None or url == DEFAULT_STORAGE:
        Path(DEFAULT_STORAGE).parent.mkdir(parents=True, exist_ok=True)
        url = DEFAULT_STORAGE
    scheme = url.split("://", 1)[0] if "://" in url else None
    if scheme is None:
        return _journal(url)
    if scheme not in RDB_SCHEMES:
        raise ConfigError("--storage", url, "a journal file path or a URL with scheme " + ", ".join(RDB_SCHEMES))
    engine_kwargs: dict = {"pool_pre_ping": True}
    if scheme.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 5}
    for attempt in range(5):
        try:
            # get_storage wraps it in Optuna's trial cache, the object a Study uses: trials created
            # through it and through the study must go to the same cache.
            return optuna.storages.get_storage(RDBStorage(url, engine_kwargs=engine_kwargs))
        except Exception as exc:  # sqlalchemy OperationalError, bad driver, bad path ...
            msg = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
            if "already exists" in msg and attempt < 4:
                time.sleep(0.5)   # another process is creating the tables of a fresh database right now
                continue
            raise ConfigError("--storage", describe(url), f"a reachable database ({msg})") from None
    raise AssertionError("unreachable")


def _journal(path: str) -> JournalStorage:
    p = Path(path)
    if not p.parent.is_dir():
        raise ConfigError("--storage", path, f"a file in an existing directory ({p.parent} does not exist)")
    if p.exists() and not os.access(p, os.R_OK | os.W_OK):
        raise ConfigError("--storage", path, "a readable and writable journal file")
    try:
        return JournalStorage(JournalFileBackend(str(p)))
    except OSError as exc:
        raise ConfigError("--storage", path, f"a writable journal file ({exc.strerror})") from None


def describe(url: str | None) -> str:
    """The storage URL with any password masked, for messages."""
    url = url or DEFAULT_STORAGE
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':')[0]}:***@{host}" if ":" in cred else url
    return url
