"""Where a study lives: opening and creating it in its Optuna storage, safely for many workers.

SQLite serves one process; PostgreSQL (or MySQL) serves any number of workers on any machines.
Heartbeats let a dead worker's trial be failed and its candidate run again.
"""

from __future__ import annotations

import os
import random
import time
import warnings
from pathlib import Path

import optuna

from nas.errors import NasError
from nas.record import OBJECTIVE, STUDY_BUDGET
from nas.search.config import SearchConfig
from nas.search.sampling import make_pruner, make_sampler
from nas.space import Space

CONCURRENT_BACKENDS = ("postgresql", "mysql")  # storages safe for many writers (SQLite is not)


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


def storage_backend(url: str) -> str:
    """'sqlite', 'postgresql' or 'mysql' for a valid URL; a NasError naming the fix otherwise."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from nas.artifacts import safe_url

    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        raise NasError(f"--storage={safe_url(url)!r} is not a database URL: use sqlite:///PATH or "
                       f"postgresql://USER@HOST:PORT/DB") from None
    if backend not in ("sqlite", *CONCURRENT_BACKENDS):
        raise NasError(f"--storage backend {backend!r} is not supported: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    return backend


def make_storage(url: str, attempts: int = 8) -> optuna.storages.RDBStorage:
    """A database storage with heartbeats: a trial whose worker died (SIGKILL, lost node) is failed
    after the grace period and its candidate re-queued, to be run by whichever worker asks next.

    Workers opening a fresh database together race to create its tables; the losers see a
    duplicate-key error and simply retry, finding the tables made."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

    from nas.artifacts import safe_url

    storage_backend(url)
    interval, grace = heartbeat_settings()
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5 and have been since 2.x
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=interval, grace_period=grace,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
        except (IntegrityError, ProgrammingError) as e:
            if attempt == attempts - 1:
                raise NasError(f"cannot create the tables in {safe_url(url)}: {_db_message(e, url)}") from None
            _backoff(attempt)
        except SQLAlchemyError as e:
            raise NasError(f"cannot open storage {safe_url(url)}: {_db_message(e, url)}: check that the server runs "
                           f"and the URL, user and password are right") from None
        except ImportError as e:
            raise NasError(f"storage {safe_url(url)} needs a database driver ({e}): pip install 'nas[postgres]'") from None
    raise AssertionError("unreachable")


def _backoff(attempt: int) -> None:
    time.sleep(0.1 * (attempt + 1) * (1 + random.random()))  # jittered, so racers do not collide again


def _db_message(e: Exception, url: str) -> str:
    """The driver's first line, with the password blanked in case a driver ever echoes it."""
    from sqlalchemy.engine import make_url

    text = str(getattr(e, "orig", None) or e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    password = make_url(url).password
    return text.replace(password, "***") if password else text


def open_study(cfg: SearchConfig, space: Space | None = None, attempts: int = 8) -> optuna.Study:
    """Create the study, or load it to resume (the same command continues where it stopped).

    Workers started together race: two may both find no study (or no tables) and both create it; the
    loser sees a duplicate-key error. Retrying the load then finds the winner's study."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            study = optuna.create_study(study_name=cfg.study, storage=make_storage(cfg.storage), direction="maximize",
                                        sampler=make_sampler(cfg, space), pruner=make_pruner(cfg), load_if_exists=True)
            if study.metric_names is None:  # so Optuna's tools label the value as what it is
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names([OBJECTIVE])
            return study
        except (optuna.exceptions.DuplicatedStudyError, IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            _backoff(attempt)
    raise AssertionError("unreachable")


def existing_budget(cfg: SearchConfig) -> int | None:
    """The budget a study of this name was searched with, or None when there is no such study yet.
    Read before anything is written, so a wrong --budget changes nothing."""
    from sqlalchemy.engine import make_url

    if storage_backend(cfg.storage) == "sqlite":
        database = make_url(cfg.storage).database
        if not database or database == ":memory:" or not Path(database).exists():
            return None
    try:
        study = optuna.load_study(study_name=cfg.study, storage=make_storage(cfg.storage))
    except KeyError:
        return None
    return study.user_attrs.get(STUDY_BUDGET)


