"""Where a study lives: opening and creating it in its Optuna storage, safely for many workers.

SQLite serves one process (`exclusive` refuses a second); PostgreSQL (or MySQL) serves any number of
workers on any machines. Heartbeats let a dead worker's trial be failed and its candidate run again.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna

from nas import record
from nas.arch.space import Space
from nas.artifacts import db_message, safe_url, storage_backend
from nas.errors import NasError
from nas.record import OBJECTIVE
from nas.search.config import SearchConfig
from nas.search.strategies import make_pruner, make_sampler


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace) in seconds. A worker beats every `interval`; a trial silent for `grace` is
    failed and its candidate queued again. Trials run for minutes, so a minute of beats costs
    nothing, and 3x grace never fails a live worker stalled by a slow database. Tests shorten both
    with NAS_HEARTBEAT_INTERVAL / NAS_GRACE_PERIOD."""
    def read(name: str, default: int) -> int:
        text = os.environ.get(name, str(default))
        try:
            value = int(text)
        except ValueError:
            raise NasError(f"{name}={text!r} must be a whole number of seconds") from None
        if value < 1:
            raise NasError(f"{name}={value} must be >= 1 second")
        return value

    interval = read("NAS_HEARTBEAT_INTERVAL", 60)
    grace = read("NAS_GRACE_PERIOD", 3 * interval)
    if grace <= interval:
        raise NasError(f"NAS_GRACE_PERIOD={grace} must exceed NAS_HEARTBEAT_INTERVAL={interval}, or live trials are failed")
    return interval, grace


def make_storage(url: str, attempts: int = 8) -> optuna.storages.RDBStorage:
    """A database storage with heartbeats: a trial whose worker died (SIGKILL, lost node) is failed
    after the grace period and its candidate re-queued, to be run by whichever worker asks next.

    Processes opening a fresh database together race to create its tables; the losers see a
    duplicate-key error (PostgreSQL) or "table ... already exists" (SQLite, where a search checking the
    budget races the one creating the study) and simply retry, finding the tables made."""
    from sqlalchemy.exc import (
        IntegrityError,
        OperationalError,
        ProgrammingError,
        SQLAlchemyError,
    )

    storage_backend(url)
    interval, grace = heartbeat_settings()
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5 and have been since 2.x
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=interval, grace_period=grace,
                                                  heartbeat_stale_trial_callback=Retry(max_retry=3))
        except SQLAlchemyError as e:
            race = isinstance(e, (IntegrityError, ProgrammingError)) or (
                isinstance(e, OperationalError) and "already exists" in str(e))
            if race and attempt < attempts - 1:
                _backoff(attempt)
                continue
            if race:
                raise NasError(f"cannot create the tables in {safe_url(url)}: {db_message(e, url)}") from None
            raise NasError(f"cannot open storage {safe_url(url)}: {db_message(e, url)}: check that the server runs "
                           f"and the URL, user and password are right") from None
        except ImportError as e:
            raise NasError(f"storage {safe_url(url)} needs a database driver ({e}): pip install 'nas[postgres]'") from None
    raise AssertionError("unreachable")


class Retry(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a dead worker's trial, queued with only what a re-run inherits (record.carried_attrs).
    Optuna's own copies every user attribute, so the queued copy would claim to be training (or complete)
    before it ever ran, and be counted as such; and every system attribute, constraints included, so the
    re-run could not set its own (Optuna warns and keeps the old value, stale if --budget changed)."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        retried = copy.deepcopy(trial)
        retried.user_attrs = record.carried_attrs(trial)
        retried.system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith("constraints")}
        super().__call__(study, retried)


@contextlib.contextmanager
def exclusive(url: str) -> Iterator[None]:
    """Hold the study for this process while a search runs on a SQLite file; refuse a second process.

    SQLite is not safe for concurrent writers: two searches on one file train the same candidates twice
    and both run the final rung. A lock file beside the database, locked with flock(2), is held for the
    search's lifetime; the kernel drops the lock with the process however it ends (kill -9 included), so
    there is never a stale lock to clean up. Other backends serve many workers and need no lock."""
    path = _sqlite_file(url)
    if path is None:
        yield
        return
    import fcntl

    path = path.resolve()  # two paths to one file (a symlink, `..`) must find one lock, not two

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise NasError(f"{path} is in use by another search ({holder}): SQLite serves one process; wait for it "
                           f"to end, or share one study among processes with --storage "
                           f"postgresql://USER@HOST:PORT/DB (see README, Many workers)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)


def _holder(fd: int, wait: float = 1.0) -> str:
    """Who holds the lock, as it wrote it: a holder writes just after it locks, so an empty file is read again
    for up to `wait` seconds before it is called "another process"."""
    deadline = time.monotonic() + wait
    while True:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if text or time.monotonic() > deadline:
            return text or "another process"
        time.sleep(0.05)


def _sqlite_file(url: str) -> Path | None:
    """The database file of a sqlite:/// URL; None for other backends, in-memory SQLite, or where there is
    no flock(2) (Windows)."""
    from sqlalchemy.engine import make_url

    if storage_backend(url) != "sqlite" or os.name != "posix":
        return None
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" and not database.startswith("file:") else None


def _backoff(attempt: int) -> None:
    time.sleep(0.1 * (attempt + 1) * (1 + random.random()))  # jittered, so racers do not collide again


def open_study(cfg: SearchConfig, space: Space | None = None, attempts: int = 8) -> optuna.Study:
    """Create the study, or load it to resume (the same command continues where it stopped).

    Workers started together race: two may both find no study (or no tables) and both create it; the
    loser sees a duplicate-key error. Retrying the load then finds the winner's study."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            directions = ["maximize", *["minimize"] * (len(cfg.objectives) - 1)]
            study = optuna.create_study(study_name=cfg.study, storage=make_storage(cfg.storage), directions=directions,
                                        sampler=make_sampler(cfg, space), pruner=make_pruner(cfg), load_if_exists=True)
            if study.metric_names is None:  # so Optuna's tools label the values as what they are
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names([OBJECTIVE, *cfg.objectives[1:]])
            return study
        except (optuna.exceptions.DuplicatedStudyError, IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            _backoff(attempt)
    raise AssertionError("unreachable")


def claim_study_attr(url: str, study_name: str, key: str, value: Any) -> Any:
    """Store `value` as the study attribute `key` unless the study has one, and return what the study holds.

    One INSERT on the table's (study, key) unique constraint: of workers started together with different
    values, exactly one stores its value and the others read it back and can refuse. Optuna's
    set_user_attr reads then writes, so each racer would find the key absent and overwrite the other's."""
    import json

    import sqlalchemy as sa
    from sqlalchemy.exc import IntegrityError

    storage = make_storage(url)
    study_id = storage.get_study_id_from_name(study_name)
    table = sa.table("study_user_attributes", sa.column("study_id"), sa.column("key"), sa.column("value_json"))
    try:
        with storage.engine.begin() as connection:
            connection.execute(sa.insert(table).values(study_id=study_id, key=key, value_json=json.dumps(value)))
    except IntegrityError:
        pass  # present already: the first writer's value stands
    try:
        return storage.get_study_user_attrs(study_id)[key]
    finally:
        storage.engine.dispose()


def existing_attrs(cfg: SearchConfig) -> dict[str, Any] | None:
    """The user attributes (budget, bounds, objectives) of the study of this name, or None when there is no such
    study yet. Read before anything is written, so a wrong --budget changes nothing."""
    from sqlalchemy.engine import make_url

    if storage_backend(cfg.storage) == "sqlite":
        database = make_url(cfg.storage).database
        if not database or database == ":memory:" or not Path(database).exists():
            return None
    try:
        study = optuna.load_study(study_name=cfg.study, storage=make_storage(cfg.storage))
    except KeyError:
        return None
    return study.user_attrs


