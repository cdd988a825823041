"""The results directory: where a study's files live, and writing them (the side-effect edge).

    RESULTS/<study>/study.db        default Optuna storage (SQLite)
    RESULTS/<study>/config.json     the resolved search configuration, versions, storage (no password)
    RESULTS/<study>/space.yaml      the space file exactly as used
    RESULTS/<study>/trials.csv      one row per trial (pandas)
    RESULTS/<study>/report.html     the interactive report
    RESULTS/<study>/retrain/<id>/   retrained models
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
from pathlib import Path
from typing import Any

import optuna
import torch

from nas.checkpoint import write_json_atomic, write_text_atomic
from nas.errors import NasError


def study_dir(results_dir: Path, study: str) -> Path:
    return Path(results_dir) / study


def default_storage(results_dir: Path, study: str) -> str:
    return f"sqlite:///{(study_dir(results_dir, study) / 'study.db').resolve()}"


def safe_url(url: str) -> str:
    """A storage URL fit to print or save: any password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL (e.g. a journal file): nothing secret in it
        return url.split("@")[-1] if "@" in url else url


def versions() -> dict[str, str]:
    """What produced a result, saved beside it."""
    import pandas
    import plotly
    import safetensors

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


def load_study(study: str, storage: str | None, results_dir: Path) -> optuna.Study:
    """An existing study; a missing one is a one-line error, never a new empty file."""
    if storage is None:
        db = study_dir(results_dir, study) / "study.db"
        if not db.is_file():
            raise NasError(f"no study {study!r} in {results_dir}/ ({db} does not exist): run `nas search --study {study}` "
                           f"first, or pass --results-dir/--storage where it lives")
        storage = default_storage(results_dir, study)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise NasError(f"storage {safe_url(storage)} has no study {study!r}: it holds "
                       f"{', '.join(map(repr, names)) or 'no studies'}; pass one of them with --study") from None


def study_data(study: optuna.Study, results_dir: Path) -> str | None:
    """The --data a study searched: its attribute, or config.json for studies older than that attribute."""
    from nas.record import STUDY_DATA

    if study.user_attrs.get(STUDY_DATA):
        return str(study.user_attrs[STUDY_DATA])
    try:
        return json.loads((study_dir(results_dir, study.study_name) / "config.json").read_text()).get("data")
    except (OSError, ValueError):
        return None
