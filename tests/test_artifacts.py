"""nas.artifacts: the results directory. Printable storage URLs, one-line errors for a study that is not
there, where a study's --data is read from, and the run files a search writes (real files, real SQLite)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import optuna
import pytest
import torch

from nas.artifacts import (check_results_dir, default_storage, load_study, safe_url, study_data, study_dir,
                           versions, write_run_files)
from nas.errors import NasError


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def umask():
    """`umask(mask)` sets the process umask for the test; the old one comes back after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# ------------------------------------------------------------------------------------------ safe_url


@pytest.mark.parametrize("url, shown", [
    ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
    ("postgresql+psycopg://nas:S3cr%40t@127.0.0.1:5432/search", "postgresql+psycopg://nas:***@127.0.0.1:5432/search"),
    ("mysql://u@h/db", "mysql://u@h/db"),  # no password: nothing to hide
    ("sqlite:////tmp/results/s/study.db", "sqlite:////tmp/results/s/study.db"),
])
def test_safe_url_masks_any_password(url, shown):
    assert safe_url(url) == shown


def test_safe_url_of_something_that_is_no_url_shows_none_of_it():
    assert "secret" not in safe_url("user:secret@somewhere") and "somewhere" not in safe_url("user:secret@somewhere")
    assert safe_url("results/journal.log").startswith("... (rest hidden: the URL does not parse")


def test_safe_url_never_shows_any_part_of_a_password_with_an_unencoded_at():
    shown = safe_url("postgresql://u:p@Zq9x@h/db")
    assert "Zq9x" not in shown and shown.startswith("postgresql://... (rest hidden") and "%40" in shown


# ------------------------------------------------------------------------------------------ load_study


def test_a_missing_study_folder_is_one_line_and_creates_nothing(tmp_path):
    with pytest.raises(NasError) as e:
        load_study("nope", None, tmp_path)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"no study 'nope' in {tmp_path}/ ({tmp_path / 'nope' / 'study.db'} does not exist)")
    assert "nas search --study nope" in message and "--results-dir/--storage" in message
    assert list(tmp_path.iterdir()) == []  # never a new empty study.db


def test_a_storage_without_that_study_names_the_studies_it_holds(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    for name in ("alpha", "beta"):
        optuna.create_study(study_name=name, storage=url)
    with pytest.raises(NasError) as e:
        load_study("gamma", url, tmp_path / "unused")
    assert str(e.value) == (f"storage {url} has no study 'gamma': it holds 'alpha', 'beta'; pass one of them "
                            "with --study")
    assert sorted(optuna.get_all_study_names(url)) == ["alpha", "beta"]  # nothing created on the way


def test_an_empty_storage_holds_no_studies(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(url)  # the tables, no study
    with pytest.raises(NasError, match=r"has no study 's': it holds no studies; pass one of them with --study$"):
        load_study("s", url, tmp_path)


def test_load_study_opens_the_default_storage_of_a_results_folder(tmp_path):
    study_dir(tmp_path, "s").mkdir()
    optuna.create_study(study_name="s", storage=default_storage(tmp_path, "s")).add_trial(
        optuna.trial.create_trial(value=0.5))
    study = load_study("s", None, tmp_path)
    assert study.study_name == "s" and [t.value for t in study.trials] == [0.5]
    assert default_storage(tmp_path, "s") == f"sqlite:///{(tmp_path / 's' / 'study.db').resolve()}"


# ------------------------------------------------------------------------------------------ study_data


def test_study_data_reads_the_study_attribute_first(tmp_path):
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "config.json").write_text(json.dumps({"data": "from-config"}))
    study.set_user_attr("data", "/data/cifar10")
    assert study_data(study, tmp_path) == "/data/cifar10"


def test_study_data_falls_back_to_config_json_then_to_none(tmp_path):
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert study_data(study, tmp_path) is None  # no attribute, no config.json
    (tmp_path / "s").mkdir()
    config = tmp_path / "s" / "config.json"
    config.write_text(json.dumps({"command": "search", "data": "cifar100"}))
    assert study_data(study, tmp_path) == "cifar100"  # an older study: config.json says
    config.write_text("{not json")
    assert study_data(study, tmp_path) is None
    config.write_text(json.dumps({"command": "search"}))
    assert study_data(study, tmp_path) is None


# ------------------------------------------------------------------------------------ check_results_dir


def test_check_results_dir_refuses_a_file_and_accepts_a_folder_or_nothing(tmp_path):
    (tmp_path / "results.txt").write_text("a file")
    with pytest.raises(NasError, match=r"^--results-dir='.*results\.txt' is a file: give a directory$"):
        check_results_dir(tmp_path / "results.txt")
    check_results_dir(tmp_path)
    check_results_dir(tmp_path / "not-yet")
    assert not (tmp_path / "not-yet").exists()  # checking creates nothing


# ------------------------------------------------------------------------------------- write_run_files


@dataclasses.dataclass(frozen=True)
class Knobs:
    epochs: int
    width: float


def test_write_run_files_saves_the_config_with_versions_and_the_space(tmp_path):
    space = tmp_path / "my-space.yaml"
    space.write_text("name: mine\nlayers: [2]\n")
    folder = tmp_path / "results" / "s"
    write_run_files(folder, {"command": "search", "space_file": space, "fidelity": Knobs(3, 0.5),
                             "layers": (2, 3)}, space)
    config = json.loads((folder / "config.json").read_text())
    assert config["command"] == "search" and config["space_file"] == str(space)
    assert config["fidelity"] == {"epochs": 3, "width": 0.5} and config["layers"] == [2, 3]
    assert config["versions"] == versions() and config["versions"]["torch"] == torch.__version__
    assert config["versions"]["optuna"] == optuna.__version__
    assert (folder / "space.yaml").read_text() == space.read_text()
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "space.yaml"]  # no temp files left


def test_an_edited_space_keeps_the_previous_one_beside_it(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("first\n")
    folder = tmp_path / "s"
    write_run_files(folder, {"n": 1}, space)
    write_run_files(folder, {"n": 2}, space)  # resumed with the same space: nothing to keep
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "space.yaml"]
    assert json.loads((folder / "config.json").read_text())["n"] == 2
    os.utime(folder / "space.yaml", (1_700_000_000, 1_700_000_000))
    space.write_text("second\n")
    write_run_files(folder, {"n": 3}, space)
    assert (folder / "space.yaml").read_text() == "second\n"
    assert (folder / "space.previous-1700000000.yaml").read_text() == "first\n"


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_run_files_respect_the_umask(tmp_path, umask, mask, expected):
    space = tmp_path / "space.yaml"
    space.write_text("first\n")
    folder = tmp_path / "s"
    umask(mask)
    write_run_files(folder, {"n": 1}, space)
    space.write_text("second\n")
    write_run_files(folder, {"n": 2}, space)
    modes = {p.name: mode(p) for p in folder.iterdir()}
    [previous] = [name for name in modes if name.startswith("space.previous-")]
    assert modes == {"config.json": expected, "space.yaml": expected, previous: expected}
