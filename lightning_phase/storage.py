"""Where sweeps live (written by `sweep`, read by `analysis`): an Optuna storage opened from one URL, failing at once
when it cannot be reached. A room of its own so that sweep/ and analysis/ both import it and not each other.

- a file path (default ``runs/sweeps.journal``): Optuna's JournalStorage on a JournalFileBackend. It
  appends one JSON line per operation under a file lock, with fsync, so several worker processes can
  write at once. :class:`FencedJournalFileBackend` adds the fence Optuna lacks: a torn last line (a
  writer killed mid-append, a full disk) is cut off, under the lock, before the next append — Optuna's own
  backend appends onto it, which turns it into a damaged line that every later reader refuses — and a
  damaged line is reported as one line naming the file and its byte offset. Its writers lock with
  ``flock`` (:class:`FlockLock`), which a killed process cannot leave behind. SQLite
  serialises writers with a whole-database lock ("database is locked" under contention) and cannot
  lock a row, so the compare-and-set RUNNING → FAIL that makes a stale trial's retry unique is not
  atomic there.
- ``postgresql://user@host:port/db`` (or ``sqlite:///file.db``, ``mysql://...``): Optuna's RDBStorage.
  PostgreSQL locks the trial row (SELECT … FOR UPDATE), so the same sweep command can run on many
  machines against one database.

With a :class:`Heartbeat`, both kinds implement Optuna's ``BaseHeartbeat`` (Optuna 5's JournalStorage has
none): a running trial's heartbeat is its system attr ``lp:heartbeat`` (the writer's ``time.time()``),
written by Optuna's heartbeat thread, and ``optuna.storages.fail_stale_trials`` fails the RUNNING trials
silent for longer than the grace (compare-and-set RUNNING → FAIL: one winner) and calls the stale
callback for each trial it failed. One implementation for both kinds, because RDBStorage's own never
fails a trial killed before its first heartbeat; here the trial's start time stands in for it. Clocks of
the machines sharing a storage must agree to well within the grace.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import BaseJournalFileLock, get_lock_file
from optuna.trial import FrozenTrial, TrialState

from lightning_phase.errors import ConfigError

DEFAULT_STORAGE = "runs/sweeps.journal"
RDB_SCHEMES = ("postgresql", "postgresql+psycopg2", "sqlite", "mysql", "mysql+pymysql")


HEARTBEAT_KEY = "lp:heartbeat"


@dataclass(frozen=True)
class Heartbeat:
    """A storage's heartbeat: a RUNNING trial is recorded every ``interval`` s; one silent for more than
    ``grace`` s is stale. ``on_stale(study, trial)`` runs for each stale trial failed (Optuna's retry
    callback, for instance); ``mark(trial, silent_s)`` gives user attrs written on a stale trial while it
    is still RUNNING, just before it is failed (why it failed: a failed trial takes no more attrs)."""

    interval: float
    grace: float
    on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None
    mark: Callable[[FrozenTrial, float], dict[str, Any]] | None = None


class _HeartbeatMixin(BaseStorage, BaseHeartbeat):
    """Optuna's BaseHeartbeat over any BaseStorage, with the heartbeat kept as a trial system attr."""

    heartbeat: Heartbeat | None = None

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())
        except UpdateFinishedTrialError:
            pass   # failed as stale meanwhile (or finished): its result is refused at the end

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self.heartbeat is not None
        stale, now = [], time.time()
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            last = t.system_attrs.get(HEARTBEAT_KEY) or (t.datetime_start.timestamp() if t.datetime_start else now)
            if now - last <= self.heartbeat.grace:
                continue
            try:
                for key, value in (self.heartbeat.mark(t, now - last) if self.heartbeat.mark else {}).items():
                    self.set_trial_user_attr(t._trial_id, key, value)
            except UpdateFinishedTrialError:
                continue   # finished meanwhile
            stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:   # Optuna declares int; its heartbeat thread takes any float
        return None if self.heartbeat is None else self.heartbeat.interval  # type: ignore[return-value]

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return None if self.heartbeat is None else self.heartbeat.on_stale


class HeartbeatJournalStorage(_HeartbeatMixin, JournalStorage):
    """Optuna's JournalStorage with the heartbeat it lacks (module doc)."""


class HeartbeatRDBStorage(_HeartbeatMixin, RDBStorage):
    """Optuna's RDBStorage with the same heartbeat as the journal's (module doc)."""


def open_storage(url: str | None, heartbeat: Heartbeat | None = None) -> BaseStorage:
    """The storage behind ``url`` (module doc), with ``heartbeat`` if given; ConfigError('--storage', url,
    ...) if unreachable."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url is None or url == DEFAULT_STORAGE:
        Path(DEFAULT_STORAGE).parent.mkdir(parents=True, exist_ok=True)
        url = DEFAULT_STORAGE
    scheme = url.split("://", 1)[0] if "://" in url else None
    if scheme is None:
        return _journal(url, heartbeat)
    if scheme not in RDB_SCHEMES:
        raise ConfigError("--storage", url, "a journal file path or a URL with scheme " + ", ".join(RDB_SCHEMES))
    given = url
    url, scheme = _with_installed_driver(url, scheme)
    engine_kwargs: dict = {"pool_pre_ping": True}
    if scheme.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 5}
    for attempt in range(5):
        try:
            # get_storage wraps it in Optuna's trial cache, the object a Study uses: trials created
            # through it and through the study must go to the same cache.
            rdb = HeartbeatRDBStorage(url, engine_kwargs=engine_kwargs)
            rdb.heartbeat = heartbeat
            return optuna.storages.get_storage(rdb)
        except Exception as exc:  # sqlalchemy OperationalError, bad driver, bad path ...
            msg = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
            if "already exists" in msg and attempt < 4:
                time.sleep(0.5)   # another process is creating the tables of a fresh database right now
                continue
            if isinstance(exc, ImportError) or "Failed to import DB access module" in msg \
                    or "No module named" in msg:
                raise ConfigError("--storage", describe(given), f"a URL whose database driver is installed ({msg}; "
                                  "for PostgreSQL: pip install psycopg2-binary)") from None
            raise ConfigError("--storage", describe(given), f"a reachable database ({msg})") from None
    raise AssertionError("unreachable")


class JournalDamaged(ConfigError):
    """A journal line that is not a complete JSON record (not the torn last line, which is skipped)."""

    def __init__(self, path: str, offset: int, detail: str):
        super().__init__("--storage", path, f"a readable journal (damaged line at byte {offset}: {detail}; "
                         f"the file up to byte {offset} is intact)")
        self.offset = offset


class FlockLock(BaseJournalFileLock):
    """The journal's writer lock as ``flock`` on ``<journal>.flock``: the kernel releases it when its holder
    dies. Optuna's default symlink lock stays behind when a worker is SIGKILLed mid-append, and every
    other worker then waits its 30 s grace period (longer than a stale-trial grace)."""

    def __init__(self, journal_path: str):
        self._path = journal_path + ".flock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)   # closing the descriptor drops the flock


class FencedJournalFileBackend(JournalFileBackend):
    """Optuna's journal file backend with a torn-tail fence, located read errors and a lock that dies with
    its holder (module doc)."""

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path, lock_obj=FlockLock(file_path))

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        """Optuna's read, but every complete line must be a JSON record: else :class:`JournalDamaged`.
        The last line without a newline is an append in progress (or torn): not yet part of the journal."""
        with open(self._file_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            number, offset = 0, 0
            if log_number_from in self._log_number_offset:
                number, offset = log_number_from, self._log_number_offset[log_number_from]
                f.seek(offset)
            for line in f:
                if offset + len(line) > size or not line.endswith(b"\n"):
                    return   # written after we looked, or torn: the next append cuts a torn tail off
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise JournalDamaged(self._file_path, offset, f"{type(exc).__name__} {exc}"[:120]) from None
                if not isinstance(record, dict):
                    raise JournalDamaged(self._file_path, offset, "not a JSON object")
                offset += len(line)
                number += 1
                self._log_number_offset[number] = offset
                if number > log_number_from:
                    yield record

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append under the lock, after cutting off a torn last line; a failed write (ENOSPC) is undone."""
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        with get_lock_file(self._lock):
            fd = os.open(self._file_path, os.O_RDWR)   # unbuffered: nothing is left to flush after a failure
            try:
                end = fence_torn_tail(fd)
                try:
                    self._write(fd, end, data)
                    os.fsync(fd)
                except BaseException:
                    try:   # leave no torn tail behind (the next append would cut it anyway)
                        os.ftruncate(fd, end)
                        os.fsync(fd)
                    except OSError:
                        pass
                    raise
            finally:
                os.close(fd)

    @staticmethod
    def _write(fd: int, offset: int, data: bytes) -> None:
        """os.pwrite until all of ``data`` is written at ``offset`` (tests replace it to inject ENOSPC)."""
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n


def fence_torn_tail(fd: int) -> int:
    """Truncate a journal (an fd open for writing) after its last newline; returns the new size."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - 4096)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            end = start + cut + 1
            break
        end = start
    if end != size:
        os.ftruncate(fd, end)
        os.fsync(fd)
    return end


def _with_installed_driver(url: str, scheme: str) -> tuple[str, str]:
    """``postgresql://`` as documented: SQLAlchemy 2.1 maps the bare scheme to psycopg 3; where only psycopg2
    is installed (the pinned install), the URL is rewritten to ``postgresql+psycopg2://``."""
    if scheme != "postgresql":
        return url, scheme
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.split("://", 1)[1], "postgresql+psycopg2"
    return url, scheme


def _journal(path: str, heartbeat: Heartbeat | None = None) -> JournalStorage:
    p = Path(path)
    if not p.parent.is_dir():
        raise ConfigError("--storage", path, f"a file in an existing directory ({p.parent} does not exist)")
    if p.exists() and not os.access(p, os.R_OK | os.W_OK):
        raise ConfigError("--storage", path, "a readable and writable journal file")
    try:
        storage = HeartbeatJournalStorage(FencedJournalFileBackend(str(p)))
    except OSError as exc:
        raise ConfigError("--storage", path, f"a writable journal file ({exc.strerror})") from None
    storage.heartbeat = heartbeat
    return storage


def describe(url: str | None) -> str:
    """The storage URL with any password masked, for messages."""
    url = url or DEFAULT_STORAGE
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':')[0]}:***@{host}" if ":" in cred else url
    return url
