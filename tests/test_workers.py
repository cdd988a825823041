"""Many workers on one study, against a real PostgreSQL server (tests/postgres.py)."""

from __future__ import annotations

import os
import threading

import optuna
from typer.testing import CliRunner

from nas.cli import app
from nas.search import SEARCH_RECIPE, Fidelity, SearchConfig, open_study
from postgres import PASSWORD

# search_args, nas_cli, outcomes, trained and fast_heartbeat are conftest fixtures (test_faults uses them too)


def test_up_to_four_worker_processes_train_exactly_the_requested_number_of_trials(
        small_cifar, pg_url, tmp_path, search_args, nas_cli, outcomes, trained, fast_heartbeat):
    """The README's `--storage postgresql://USER:PW@HOST:PORT/DB`, no driver named, as `pip install '.[postgres]'`
    sets it up: SQLAlchemy maps it to psycopg 3, and four workers (or one per core) together train exactly
    --trials candidates, each a different one."""
    import re

    import sqlalchemy

    assert re.fullmatch(r"postgresql://nas:[^@]+@127\.0\.0\.1:\d+/\w+", pg_url)  # the README's form
    assert sqlalchemy.make_url(pg_url).get_dialect().driver == "psycopg"
    workers = min(4, len(os.sched_getaffinity(0)))  # --workers is bounded by the usable cores
    r = nas_cli(search_args(small_cifar, tmp_path / "res", "--storage", pg_url, "--workers", str(workers),
                            "--no-confirm", trials=6),
                cwd=tmp_path, env=fast_heartbeat)
    assert r.returncode == 0, r.stderr
    assert f"{workers} worker processes" in r.stdout
    trials = outcomes(pg_url)
    assert len(trained(trials)) == 6, [t.user_attrs.get("outcome") for t in trials]
    keys = [t.user_attrs["candidate_key"] for t in trained(trials)]
    assert len(set(keys)) == len(keys), keys  # workers sample their own streams: no candidate trained twice
    assert "needs a database driver" not in r.stdout + r.stderr
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # unique, no gaps
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    folder = tmp_path / "res" / "s"
    text = r.stdout + r.stderr + "".join(p.read_text(errors="replace") for p in folder.iterdir() if p.is_file())
    assert PASSWORD not in text and "nas:***@" in (folder / "config.json").read_text()
    assert "trials.csv" in {p.name for p in folder.iterdir()}


def test_workers_starting_together_create_the_study_once(pg_url, tmp_path):
    """create_study(load_if_exists=True) races on a fresh database (tables and study): all must succeed."""
    cfg = SearchConfig(budget=50_000, trials=1, study="race", storage=pg_url, recipe=SEARCH_RECIPE,
                       fidelity=Fidelity(epochs=1, train_subset=0, val_subset=0, width=1.0, evals_per_epoch=1))
    barrier, ids, errors = threading.Barrier(8), [], []

    def open_one() -> None:
        barrier.wait()
        try:
            ids.append(open_study(cfg)._study_id)
        except Exception as e:  # noqa: BLE001 - the assertion below shows it
            errors.append(repr(e))

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(ids) == 8 and len(set(ids)) == 1
    assert [s.study_name for s in optuna.get_all_study_summaries(pg_url)] == ["race"]


def test_sqlite_with_many_workers_is_refused_before_anything_is_written(small_cifar, tmp_path, search_args):
    r = CliRunner().invoke(app, search_args(small_cifar, tmp_path / "res", "--workers", "2"))
    assert r.exit_code == 2
    assert "SQLite" in r.output and "--storage postgresql://" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "res").exists()


def test_a_wrong_database_password_is_one_line_and_never_printed(small_cifar, postgres_server, tmp_path, search_args):
    url = postgres_server.url("postgres").replace(PASSWORD, "not-the-Pw-91")
    r = CliRunner().invoke(app, search_args(small_cifar, tmp_path / "res", "--storage", url))
    assert r.exit_code == 2, r.output
    assert "cannot open storage" in r.output and "***" in r.output
    assert "not-the-Pw-91" not in r.output and "Traceback" not in r.output
    assert not (tmp_path / "res").exists()


def test_a_different_budget_on_an_existing_study_changes_nothing(small_cifar, pg_url, tmp_path, search_args, outcomes):
    first = CliRunner().invoke(app, search_args(small_cifar, tmp_path / "res", "--storage", pg_url, trials=1))
    assert first.exit_code == 0, first.output
    config = (tmp_path / "res" / "s" / "config.json").read_text()
    before = len(outcomes(pg_url))
    r = CliRunner().invoke(app, [a if a != "50k" else "60k" for a in search_args(small_cifar, tmp_path / "res",
                                                                                "--storage", pg_url, trials=1)])
    assert r.exit_code == 2 and "budget 50,000, not 60,000" in r.output
    assert (tmp_path / "res" / "s" / "config.json").read_text() == config
    assert len(outcomes(pg_url)) == before
