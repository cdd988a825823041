"""The results directory: where a study's files live, and writing them (the side-effect edge).

    RESULTS/<study>/study.db        default Optuna storage (SQLite)
    RESULTS/<study>/config.json     the resolved search configuration, versions, storage (no password)
    RESULTS/<study>/space.yaml      the space file exactly as used
    RESULTS/<study>/trials.csv      one row per trial (pandas)
    RESULTS/<study>/report.html     the interactive report
    RESULTS/<study>/retrain/<id>/   retrained models
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import optuna

from nas.arch import short_hash
from nas.atomic import NoSpace, causes, no_space, write_fault, write_json_atomic, write_text_atomic
from nas.errors import NasError, shown

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


_FOLDER_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


def _is_folder_name(name: Any) -> bool:
    return isinstance(name, str) and _FOLDER_NAME.fullmatch(name) is not None and name.strip(".") != ""


def check_study_name(study: str) -> str:
    """`study`, refused unless it is a plain folder name: it becomes RESULTS/STUDY/ and also names the study
    in its storage, so it is refused (not changed: the two must agree) when it could leave the folder."""
    if not _is_folder_name(study):
        raise NasError(f"--study {shown(study)} cannot name a folder under --results-dir: use 1-100 letters, digits, "
                       f"'.', '_' or '-', not only dots (e.g. --study r5m)")
    return study


def folder_name(name: str) -> str:
    """A name from a file (an architecture file's `name`) as one safe folder name: kept when it is one; else
    its other characters become '_' and a hash of the name is appended, so two names never share a folder."""
    if _is_folder_name(name):
        return name
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', name)[:60]}-{short_hash(name, 8)}"


def inside(results_dir: Path, path: Path) -> Path:
    """`path`, if it lies strictly inside `results_dir`, else a NasError: every output path passes here, so no
    name ('..', '/tmp/x') writes elsewhere. Compared as absolute normalised paths, not resolved: a symlink
    the user placed in the results directory is theirs to place."""
    root, target = os.path.abspath(results_dir), os.path.abspath(path)
    if target == root or os.path.commonpath([root, target]) != root:
        raise NasError(f"{shown(str(path))} is not inside --results-dir {shown(str(results_dir))}: "
                       f"name studies and designs with plain names (letters, digits, '.', '_', '-')")
    return Path(path)


def study_dir(results_dir: Path, study: str) -> Path:
    """RESULTS/STUDY, the one place a study name becomes a path: the name checked, and the path."""
    return inside(results_dir, Path(results_dir) / check_study_name(study))


def default_storage(results_dir: Path, study: str) -> str:
    return f"sqlite:///{(study_dir(results_dir, study) / 'study.db').resolve()}"


# Query parameters that carry a secret, matched as words in the lowercased name without '_' and '-':
# libpq/psycopg password and sslpassword, MySQL passwd and password1-3, pyodbc PWD (and odbc_connect, a
# whole connection string), Oracle wallet_password, tokens and private keys of cloud drivers. Blanking a
# harmless one (sslkey is a path) costs nothing; missing one leaks it.
_SECRET_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "cred")
_SECRET_PARAMS = ("odbcconnect", "dsn", "conninfo")


def _secret_param(name: str) -> bool:
    key = name.lower().replace("_", "").replace("-", "")
    return key in _SECRET_PARAMS or any(word in key for word in _SECRET_WORDS)


CONCURRENT_BACKENDS = ("postgresql", "mysql")  # storages safe for many writers (SQLite is not)


def parse_url(url: str) -> URL | None:
    """The SQLAlchemy URL of `url`, or None where it does not parse, or parses ambiguously: an unencoded '@'
    in a password splits it at the first '@', leaving the rest in the host or database name."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # ArgumentError, or ValueError for a port that is no number
        return None
    if parsed.password is not None and "@" in f"{parsed.host or ''}{parsed.database or ''}":
        return None
    return parsed


def safe_url(url: str) -> str:
    """A storage URL fit to print or save: the password and every secret query parameter (?password=...)
    shown as ***. Parsed as SQLAlchemy parses it, never pattern-matched; a URL that does not parse shows
    only its scheme, since where its secret is cannot be known."""
    parsed = parse_url(url)
    if parsed is None:
        scheme = url.partition("://")[0] if "://" in url else ""
        start = f"{scheme}://..." if re.fullmatch(r"[A-Za-z][A-Za-z0-9+._-]{0,30}", scheme) else "..."
        return f"{start} (rest hidden: the URL does not parse; percent-encode a password's special characters, e.g. @ as %40)"
    query = "&".join(f"{quote_plus(k)}={'***' if _secret_param(k) else quote_plus(v)}"
                     for k in sorted(parsed.query) for v in ([parsed.query[k]] if isinstance(parsed.query[k], str)
                                                             else parsed.query[k]))
    return parsed.set(query={}).render_as_string(hide_password=True) + (f"?{query}" if query else "")


def secrets(parsed: URL | None) -> list[str]:
    """Every secret a parsed URL carries (password, secret query parameters), longest first, to blank
    wherever a driver might repeat them."""
    if parsed is None:
        return []
    found = [parsed.password or ""] + [v for k in parsed.query if _secret_param(k)
                                       for v in ([parsed.query[k]] if isinstance(parsed.query[k], str) else parsed.query[k])]
    return sorted({s for s in found if s}, key=len, reverse=True)


def versions() -> dict[str, str]:
    """What produced a result, saved beside it."""
    import pandas
    import plotly
    import safetensors
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "optuna": optuna.__version__,
            "pandas": pandas.__version__, "plotly": plotly.__version__, "safetensors": safetensors.__version__}


def as_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {k: as_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: as_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_run_files(directory: Path, config: dict[str, Any], space_file: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic({**as_jsonable(config), "versions": versions()}, directory / "config.json")
    target = directory / "space.yaml"
    if not target.exists() or target.read_text() != Path(space_file).read_text():
        if target.exists():  # a resumed study with an edited space: keep the older file beside it
            shutil.copyfile(target, directory / f"space.previous-{int(target.stat().st_mtime)}.yaml")
        write_text_atomic(Path(space_file).read_text(), target)


def check_results_dir(results_dir: Path) -> None:
    p = Path(results_dir)
    if p.exists() and not p.is_dir():
        raise NasError(f"--results-dir={str(p)!r} is a file: give a directory")



def storage_backend(url: str) -> str:
    """'sqlite', 'postgresql' or 'mysql' for a valid URL; a NasError naming the fix otherwise. A URL that
    parses ambiguously (an unencoded '@' in its password) is refused here, before a driver can echo the
    half of the password it took for the host."""
    parsed = parse_url(url)
    if parsed is None:
        raise NasError(f"--storage={safe_url(url)!r} is not a database URL: use sqlite:///PATH or "
                       f"postgresql://USER@HOST:PORT/DB, with a password's special characters percent-encoded "
                       f"(@ as %40)")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", *CONCURRENT_BACKENDS):
        raise NasError(f"--storage backend {backend!r} is not supported: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    return backend


def db_message(e: Exception, url: str) -> str:
    """The driver's first line, with every secret of the URL (password, ?password=...) blanked in case a
    driver ever echoes it."""
    text = str(getattr(e, "orig", None) or e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    for secret in secrets(parse_url(url)):
        text = text.replace(secret, "***")
    return text

class NoStudy(NasError):
    """No study of that name where the command looked (not: a storage that failed)."""


def load_study(study: str, storage: str | None, results_dir: Path) -> optuna.Study:
    """An existing study; a missing one is a one-line error, never a new empty file. So is a damaged
    file or an unreachable server (`check_sqlite`, `storage_faults`)."""
    if storage is None:
        db = study_dir(results_dir, study) / "study.db"
        if not db.is_file():
            raise NoStudy(f"no study {study!r} in {results_dir}/ ({db} does not exist): run `nas search --study {study}` "
                           f"first, or pass --results-dir/--storage where it lives")
        storage = default_storage(results_dir, study)
    storage_backend(storage)  # a URL that is none is one line too
    check_sqlite(storage, require_study=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with storage_faults(storage):
        try:
            return optuna.load_study(study_name=study, storage=storage)
        except KeyError:
            names = optuna.get_all_study_names(storage)
            raise NoStudy(f"storage {safe_url(storage)} has no study {study!r}: it holds "
                           f"{', '.join(map(repr, names)) or 'no studies'}; pass one of them with --study") from None


# -- faults of the environment: full or read-only disks, damaged files, unreachable servers -----------------


def check_writable(path: Path) -> None:
    """Fail before any work when `path` (or the nearest folder above it that exists, where it would be made)
    cannot be written, or its disk is full: found after an hour of training, that would cost the hour."""
    target = Path(path).absolute()
    folder = next(p for p in (target, *target.parents) if p.exists())
    if not folder.is_dir():
        raise NasError(f"{folder} is a file, so {target} cannot be made: give a folder that is not inside a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".nas-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
        full = hasattr(os, "statvfs") and os.statvfs(folder).f_bavail == 0
    except OSError as e:
        fault = write_fault(e, folder)
        if isinstance(fault, NoSpace):
            raise fault from None
        raise NasError(f"cannot write in {folder} ({e.strerror or e}): make it writable, or pass --results-dir a "
                       f"writable folder") from None
    if full:
        raise no_space(folder)


def check_sqlite(url: str, require_study: bool = False) -> None:
    """Check an existing SQLite file before anything touches it. SQLite finds a damaged page only when a query
    reaches it (mid-search, after files were written), and Optuna opening an empty or foreign file creates
    tables in it. `require_study`: the file must hold Optuna's tables (readers; a search may start afresh)."""
    import sqlite3

    u = parse_url(url)
    if u is None or u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:") \
            or not Path(u.database).is_file():
        return
    try:  # mode=rw never creates a file, and falls back to reading where the file is write-protected
        with contextlib.closing(sqlite3.connect(f"{Path(u.database).resolve().as_uri()}?mode=rw", uri=True)) as con:
            problems = [row[0] for row in con.execute("PRAGMA quick_check")]
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.OperationalError:
        return  # locked by a writer, or unreadable: not damage; the open that follows names it
    except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
        problems, tables = [str(e)], set()
    if problems != ["ok"]:
        raise _damaged(u.database, problems[0])
    if require_study and "studies" not in tables:
        raise _damaged(u.database, "it holds no Optuna study: empty or truncated")


def _damaged(database: str, detail: str) -> NasError:
    return NasError(f"{database} is damaged ({detail[:200]}): restore it from a backup (or salvage it: sqlite3 "
                    f"{database} .recover | sqlite3 recovered.db), or move it away to start the study afresh")


@contextlib.contextmanager
def storage_faults(url: str) -> Iterator[None]:
    """Inside, a storage or disk fault (see `storage_fault`) is raised as its one-line NasError."""
    try:
        yield
    except NasError:
        raise
    except Exception as e:
        fault = storage_fault(e, url)
        if fault is None:
            raise
        raise fault from None


def storage_fault(error: BaseException, url: str) -> NasError | None:
    """The one-line error for a fault of the storage at `url` anywhere in `error`'s chain (Optuna wraps
    SQLAlchemy's errors, which wrap the driver's); None when it is not one. A full disk comes first: SQLite
    reports it as an OperationalError, the class that otherwise means an unreachable server."""
    from sqlalchemy import exc

    chain = list(causes(error))
    for e in chain:
        if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or "disk is full" in str(e) \
                or getattr(e, "sqlstate", None) == "53100":  # PostgreSQL's disk_full
            return no_space(e.filename if isinstance(e, OSError) and e.filename else _storage_name(url))
    e = next((e for e in chain if isinstance(e, exc.DBAPIError)), None)
    if e is None:
        return None
    text, where, sqlite = db_message(e, url), _storage_name(url), url.startswith("sqlite")
    if isinstance(e, exc.OperationalError) and "readonly" in text:
        return NasError(f"storage {where} is read-only ({text}): make the file and its folder writable")
    if isinstance(e, exc.OperationalError) and "locked" in text:
        return NasError(f"storage {where} is busy ({text}): another process is writing it; wait for it to end, "
                        f"or share a study between processes with --storage postgresql://...")
    if isinstance(e, exc.OperationalError):
        fix = ("check that the file and its folder exist and are readable" if sqlite
               else "check that the server runs and the URL, user and password are right")
        return NasError(f"cannot reach storage {where}: {text}: {fix}")
    if sqlite:
        return _damaged(where, text)
    return NasError(f"storage {where} failed: {text}: check that it holds the Optuna database of a `nas search`")


def _storage_name(url: str) -> str:
    """A SQLite storage by its file, any other by its URL without secrets."""
    parsed = parse_url(url)
    return parsed.database if parsed is not None and parsed.get_backend_name() == "sqlite" else safe_url(url)


def study_data(study: optuna.Study, results_dir: Path) -> str | None:
    """The --data a study searched: its attribute, or config.json for studies older than that attribute."""
    from nas.record import STUDY_DATA

    if study.user_attrs.get(STUDY_DATA):
        return str(study.user_attrs[STUDY_DATA])
    try:
        return json.loads((study_dir(results_dir, study.study_name) / "config.json").read_text()).get("data")
    except (OSError, ValueError):
        return None
