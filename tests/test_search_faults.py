"""The search under faults (issue 16): trials that keep failing, workers killed with SIGKILL, two processes on one
SQLite study, honest counts and honest stop messages. Real SQLite files, a real PostgreSQL server (conftest),
real processes, real signals."""

from __future__ import annotations

import dataclasses
import signal
import socket
import threading
import time
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

import nas.search.objective
from nas import record
from nas.arch.space import load_space
from nas.cli import app
from nas.engine.train import TrainResult
from nas.errors import NasError
from nas.search import (
    SEARCH_RECIPE,
    Fidelity,
    SearchConfig,
    confirm_pool,
    load_search_data,
    open_study,
    run_search,
)
from nas.search.storage import existing_attrs

RUNNING, WAITING, FAIL = TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL
LONG = ("--pruner", "none", "--no-confirm")  # every epoch counts: a trial of epochs=10 trains for 10 s on 2 cores


def config(tmp_path: Path, trials: int = 3, **settings) -> SearchConfig:
    return SearchConfig(budget=50_000, trials=trials, study="f", storage=f"sqlite:///{tmp_path / 'f.db'}",
                        fidelity=Fidelity(epochs=1, train_subset=128, val_subset=100, width=1.0, evals_per_epoch=1),
                        recipe=dataclasses.replace(SEARCH_RECIPE, batch_size=64), val_size=100, pruner="none",
                        **settings)


def ok(val_acc: float = 0.5) -> TrainResult:
    return TrainResult(status="ok", history=(), val_acc=val_acc, seconds=0.01, images_per_s=1.0, images_seen=1,
                       train_loss_sum=1.0, precision="fp32")


def one_line(text: str) -> bool:
    return text.strip().count("\n") == 0 and "Traceback" not in text


def ends_in_one_line(stderr: str, start: str) -> str:
    """The message a run ended with: its last line, which starts with `start`, and no traceback (a line about
    decoding the images once may come before it)."""
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith(start), stderr
    return stderr.strip().splitlines()[-1]


# -- 1. trials that keep failing end the search ------------------------------------------------------------------


@pytest.mark.parametrize("fault, code, cause", [
    (RuntimeError("CUDA error: an illegal memory access was encountered"), 1, "RuntimeError: CUDA error"),
    (NasError("batch_size=256 is larger than the 128 training images"), 2, "failed with batch_size=256"),
])
def test_trials_that_keep_failing_stop_the_search_with_one_line_naming_the_last_cause(
        small_cifar, tmp_path, search_args, outcomes, monkeypatch, fault, code, cause):
    """It ran 87 trials in a minute, "0/3 trained, error 67", and never ended."""
    def broken(*args, **kwargs):
        raise fault

    monkeypatch.setattr(nas.search.objective, "train", broken)
    r = CliRunner().invoke(app, search_args(small_cifar, tmp_path / "res", "--max-failures", "4"))
    assert r.exit_code == code, r.output
    error = r.output[r.output.index("error: "):]
    assert one_line(error) and "4 trials in a row failed (--max-failures 4)" in error and cause in error, error
    trials = outcomes(f"sqlite:///{tmp_path / 'res' / 's' / 'study.db'}")
    assert [record.outcome_of(t) for t in trials if record.outcome_of(t) != "over_budget"] == ["error"] * 4
    assert str(fault) in (tmp_path / "res" / "s" / "trials.csv").read_text()  # every reason kept for the user


def test_a_trained_trial_resets_the_count_of_failures_in_a_row(small_cifar, tmp_path, tiny_space, monkeypatch):
    results = iter([OSError(5, "Input/output error"), OSError(5, "Input/output error"), ok(0.2),
                    OSError(5, "Input/output error"), OSError(5, "Input/output error"), ok(0.3), ok(0.4)])

    def flaky(*args, **kwargs):
        result = next(results)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(nas.search.objective, "train", flaky)
    cfg = config(tmp_path, trials=3, max_failures=3)
    study = run_search(load_space(tiny_space), cfg, load_search_data(str(small_cifar), cfg), torch.device("cpu"))
    assert record.trained(study.get_trials()) == 3
    assert sum(record.outcome_of(t) == "error" for t in study.get_trials()) == 4


def test_a_batch_larger_than_the_images_of_a_trial_is_refused_before_anything_is_written(
        small_cifar, tmp_path, tiny_space, search_args, nas_cli):
    """The issue's space: every trial that draws batch_size 256 fails on 128 training images."""
    space = tmp_path / "big-batch.yaml"
    space.write_text(tiny_space.read_text() + "train:\n  batch_size: [64, 256]\n")
    args = search_args(small_cifar, tmp_path / "res")
    args[args.index("--space") + 1] = str(space)
    r = nas_cli(args, cwd=tmp_path, timeout=150)
    assert r.returncode == 2, r.stderr
    error = ends_in_one_line(r.stderr, "error: batch_size=256 ")
    assert "128 training images" in error and "--train-subset" in error
    assert not (tmp_path / "res").exists()


def test_max_failures_below_one_is_refused(small_cifar, tmp_path, search_args):
    r = CliRunner().invoke(app, search_args(small_cifar, tmp_path / "res", "--max-failures", "0"))
    assert r.exit_code == 2 and "--max-failures=0 must be >= 1" in r.output
    assert not (tmp_path / "res").exists()


# -- 2. a worker killed with SIGKILL ---------------------------------------------------------------------------


def assert_its_candidate_ran_once(trials: list[optuna.trial.FrozenTrial], killed: int) -> None:
    """What a re-run after kill -9 of a --trials 1 search must leave: the dead trial failed as lost, its candidate
    trained once by its queued retry, exactly one trained, and nothing RUNNING or WAITING."""
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state == FAIL and record.outcome_of(by_number[killed]) == "lost"
    retry = [t for t in trials if t.user_attrs.get(record.REQUEUED_FROM) == killed]
    assert len(retry) == 1 and retry[0].params == by_number[killed].params and record.counts_as_trained(retry[0])
    assert record.trained(trials) == 1
    assert not [t for t in trials if t.state in (RUNNING, WAITING)], [(t.number, t.state) for t in trials]


def test_a_second_process_on_a_sqlite_study_is_refused_and_after_kill_9_the_rerun_goes_on_at_once(
        small_cifar, tmp_path, search_args, nas_cli, outcomes, start_worker, wait_for_training):
    """Two processes started together on a fresh SQLite study: one is refused with one line (they trained the same
    candidate twice; one start in four failed on "table already exists"). The other is then killed -9 while it
    trains, with the default heartbeat (stale after 3 minutes): the re-run stalled 3 minutes in silence, then
    trained a new candidate and left the dead trial's retry WAITING for ever. The lock dies with the process."""
    url = f"sqlite:///{tmp_path / 'res' / 's' / 'study.db'}"
    args = search_args(small_cifar, tmp_path / "res", *LONG, trials=1, epochs=5)
    procs = [start_worker(args, tmp_path, env={}) for _ in range(2)]
    while all(p.poll() is None for p in procs):
        time.sleep(0.2)
    refused, first = sorted(procs, key=lambda p: p.poll() is None)
    _, stderr = refused.communicate()
    assert refused.returncode == 2, stderr
    error = ends_in_one_line(stderr, "error: ")
    assert f"pid {first.pid} on host" in error and "--storage postgresql://" in error
    killed = wait_for_training(url, first)
    first.kill()
    first.wait()
    r = nas_cli(args, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    # at once: the dead pid was seen, not the 180 s heartbeat grace waited out (it was timed, < 170 s)
    gone = f"trial {killed} lost its worker pid {first.pid} on host {socket.gethostname()} (the process is gone)"
    assert gone in r.stdout
    assert_its_candidate_ran_once(outcomes(url), killed)


def test_a_waiting_worker_says_what_it_waits_for_and_takes_over_when_that_worker_is_killed(
        small_cifar, pg_url, tmp_path, search_args, outcomes, start_worker, wait_for_training):
    """PostgreSQL, default heartbeat, two workers for one slot: one trains, the other waits and says for what;
    the trainer is killed -9, and the waiter fails the dead trial at once and trains its candidate, not a new one."""
    args = search_args(small_cifar, tmp_path / "res", "--storage", pg_url, *LONG, trials=1, epochs=10)
    procs = [start_worker(args, tmp_path, env={}) for _ in range(2)]
    wait_for_training(pg_url, procs[0], outcome="waiting")
    held = next(t for t in outcomes(pg_url) if t.state == RUNNING and t.user_attrs.get("outcome") == "training")
    holder, waiter = sorted(procs, key=lambda p: p.pid != held.user_attrs[record.WORKER]["pid"])
    holder.kill()
    holder.wait()
    stdout, stderr = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, stderr
    assert (f"waiting for trial {held.number} (worker pid {holder.pid} on host {socket.gethostname()}, last "
            f"heartbeat") in stdout
    # at once: the dead pid was seen, not the 180 s heartbeat grace waited out (it was timed, < 170 s)
    gone = f"trial {held.number} lost its worker pid {holder.pid} on host {socket.gethostname()} (the process is gone)"
    assert gone in stdout
    assert_its_candidate_ran_once(outcomes(pg_url), held.number)


@pytest.mark.slow  # waits out a heartbeat grace period; tests/test_faults.py checks the heartbeat path by default
def test_a_worker_lost_on_another_machine_is_waited_for_then_its_retry_runs(
        small_cifar, pg_url, tmp_path, search_args, nas_cli, outcomes, start_worker, wait_for_training):
    """A lost node: its pid cannot be checked from here, so the heartbeat decides; the re-run says what it waits
    for, and when the trial goes stale its queued retry, not a new proposal, takes the slot."""
    heartbeat = {"NAS_HEARTBEAT_INTERVAL": "2", "NAS_GRACE_PERIOD": "40"}  # > the re-run's start-up
    args = search_args(small_cifar, tmp_path / "res", "--storage", pg_url, *LONG, trials=1, epochs=5)
    first = start_worker(args, tmp_path, env=heartbeat)
    killed = wait_for_training(pg_url, first)
    first.kill()
    first.wait()
    study = optuna.load_study(study_name="s", storage=pg_url)
    elsewhere = {"host": "node-17", "pid": first.pid, "started": 1, "machine": "another-boot/pid:[1]"}
    study._storage.set_trial_user_attr(study.trials[killed]._trial_id, record.WORKER, elsewhere)
    r = nas_cli(args, cwd=tmp_path, env=heartbeat, timeout=200)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"waiting for trial {killed} (worker pid {first.pid} on host node-17, last heartbeat" in r.stdout
    assert "after 40 s without a heartbeat" in r.stdout
    assert f"trial {killed} lost its worker pid {first.pid} on host node-17 (no heartbeat for 40 s)" in r.stdout
    assert_its_candidate_ran_once(outcomes(pg_url), killed)


# -- 7. SQLite: one process, created once ----------------------------------------------------------------------


def test_processes_opening_a_fresh_sqlite_study_together_create_it_once(tmp_path):
    """One start in four failed with "table studies already exists" (a budget check racing the creation)."""
    import sqlalchemy.engine  # noqa: F401 - imported before the threads: a first import is not thread-safe

    for attempt in range(3):
        cfg = dataclasses.replace(config(tmp_path / str(attempt)), study="race")
        (tmp_path / str(attempt)).mkdir()
        barrier, errors = threading.Barrier(6), []

        def open_one(i: int) -> None:
            barrier.wait()
            try:
                (open_study if i % 2 else existing_attrs)(cfg)
            except Exception as e:  # noqa: BLE001 - the assertion shows it
                errors.append(repr(e))

        threads = [threading.Thread(target=open_one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert [s.study_name for s in optuna.get_all_study_summaries(cfg.storage)] == ["race"]


# -- 8. counted from the trial's state -------------------------------------------------------------------------


def test_a_failed_trial_never_counts_whatever_its_label_says(tmp_path):
    """A worker killed after labelling its trial "pruned" left a FAIL trial that was counted, and so was its retry."""
    study = optuna.create_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c.db'}", direction="maximize")
    layers = {"layers": CategoricalDistribution([2, 3])}
    study.add_trials([
        create_trial(state=FAIL, params={"layers": 2}, distributions=layers, user_attrs={"outcome": "pruned"}),
        create_trial(state=TrialState.PRUNED, params={"layers": 2}, distributions=layers,
                     user_attrs={"outcome": "pruned", record.REQUEUED_FROM: 0}),
        create_trial(state=FAIL, params={"layers": 3}, distributions=layers, user_attrs={"outcome": "complete"}),
        create_trial(state=FAIL, params={"layers": 3}, distributions=layers, user_attrs={"outcome": "training"}),
        create_trial(state=WAITING, params={"layers": 3}, distributions=layers, user_attrs={"outcome": "training"}),
        create_trial(state=TrialState.COMPLETE, value=0.5, params={"layers": 3}, distributions=layers,
                     user_attrs={"outcome": "complete"}),
    ])
    trials = study.get_trials()
    assert record.trained(trials) == 2
    assert [record.outcome_of(t) for t in trials] == ["lost", "pruned", "lost", "lost", "queued", "complete"]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # as make_storage does
def test_a_dead_workers_retry_sets_its_own_constraint_without_a_warning(tmp_path):
    """Optuna's retry copied the dead trial's constraint: the re-run's was ignored with a UserWarning in the log,
    and kept the old value had --budget changed on resume."""
    from nas.search.storage import Retry

    study = optuna.create_study(study_name="r", storage=f"sqlite:///{tmp_path / 'r.db'}", direction="maximize")
    layers = {"layers": CategoricalDistribution([2, 3])}
    study.add_trial(create_trial(state=FAIL, params={"layers": 2}, distributions=layers,
                                 system_attrs={f"constraints:{record.BUDGET_CONSTRAINT}": 5.0}))
    Retry(max_retry=3)(study, study.trials[0])
    rerun = study.ask()
    assert rerun.params == {"layers": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rerun.set_constraint(record.BUDGET_CONSTRAINT, -1.0)
    assert study.trials[1].system_attrs[f"constraints:{record.BUDGET_CONSTRAINT}"] == -1.0
    assert study.trials[1].system_attrs["failed_trial"] == 0  # Optuna's own retry record is kept


# -- 10. honest endings ----------------------------------------------------------------------------------------


def test_a_search_whose_every_trial_diverged_says_nothing_usable_was_found(small_cifar, tmp_path, tiny_space,
                                                                           search_args, nas_cli):
    """It exited 0 saying "3/3 candidates trained" above an empty leaderboard."""
    space = tmp_path / "diverge.yaml"
    space.write_text(tiny_space.read_text() + "train:\n  lr: [1.0e+12]\n")
    args = search_args(small_cifar, tmp_path / "res", trials=2)
    args[args.index("--space") + 1] = str(space)
    r = nas_cli(args, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    error = ends_in_one_line(r.stderr, "error: nothing usable found: ")
    assert "none of the 2 trained trials finished with a finite score (nonfinite 2)" in error
    assert "candidates trained" not in r.stdout and "final rung: training" not in r.stdout
    assert (tmp_path / "res" / "s" / "trials.csv").read_text().count("nonfinite") == 2


def test_sigterm_in_the_final_rung_says_the_rung_resumes_and_queues_nothing(
        small_cifar, tmp_path, search_args, nas_cli, outcomes, start_worker):
    """It said a trial was queued again; none was, and none should be."""
    url = f"sqlite:///{tmp_path / 'res' / 's' / 'study.db'}"
    args = search_args(small_cifar, tmp_path / "res", "--pruner", "none", trials=2, epochs=2)
    proc = start_worker(args, tmp_path)
    for line in proc.stdout:  # unbuffered: each line as it is printed
        if line.startswith("final rung: training"):
            break
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)  # a generous bound on a hung process
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    pool = confirm_pool(optuna.load_study(study_name="s", storage=url))
    assert ends_in_one_line(stderr, "stopped by SIGTERM: ") == (
        f"stopped by SIGTERM: the final rung stopped with 0 of {len(pool)} longer trainings done and kept; nothing "
        f"was queued again: it goes on with the next one; run the same command to resume")
    trials = outcomes(url)
    assert not [t for t in trials if t.state in (RUNNING, WAITING) or record.outcome_of(t) == "interrupted"]

    r = nas_cli(args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    attrs = optuna.load_study(study_name="s", storage=url).user_attrs
    assert {record.final_key(t.number) for t in pool} <= set(attrs) and len(outcomes(url)) == len(trials)


def test_a_trial_labelled_complete_before_its_state_is_recorded_still_holds_its_slot(tmp_path):
    """A trial writes its outcome, then Optuna records its state: in between it is RUNNING and labelled
    complete. It must still count against --trials, or a fourth worker claims a seventh slot of six
    (seen in CI: 7 trained of 6)."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    finishing, claimer = study.ask(), study.ask()
    finishing.set_user_attr(record.OUTCOME, record.Outcome.COMPLETE.value)  # its state is still RUNNING
    slots = nas.search.objective._Slots.read(claimer)
    assert slots.done == 0 and [t.number for t in slots.training] == [finishing.number]
    assert not slots.free(1) and slots.free(2)
