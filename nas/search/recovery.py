"""Dead workers: who trains a trial, whether that process still lives, and what a waiting worker waits for.

A worker killed with SIGKILL (or lost with its node) leaves its trial RUNNING, holding a training slot.
Optuna's heartbeat fails such a trial once it has been silent for the grace period (3 minutes by default,
so that a live worker stalled by a slow database is never failed), and the storage's retry callback
queues its candidate again. On the dead worker's own machine there is a test that is both faster and
exact: the process is gone. So a trial records its worker (host, pid, the process's start time and the
process table it lives in), and a worker that finds a RUNNING trial whose process no longer exists in
its own process table fails it at once and queues its candidate, as the heartbeat would. A process
table is told apart by boot id and pid namespace, not by host name (containers may share one), and a
process by pid and start time (pids are reused), so a live worker is never taken for a dead one.
Anywhere else, and on systems without /proc, the heartbeat decides.
"""

from __future__ import annotations

import copy
import functools
import os
import socket
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas import record
from nas.record import Outcome
from nas.search.storage import heartbeat_settings

Say = Callable[[str], None]  # where a worker tells the person watching what it is doing (one line each)


def quiet(message: str) -> None:
    """The default `say`: a library call prints nothing."""


@functools.cache
def _process_table() -> str | None:
    """Which process table this process sees (boot id and pid namespace), or None without /proc."""
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _started(pid: int) -> int | None:
    """The start time of a live process (clock ticks since boot), or None when it is gone or a zombie."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the name, in parentheses, may hold spaces
    return None if fields[0] in ("Z", "X") else int(fields[19])


def identity() -> dict[str, Any]:
    """This worker, as a trial records it (record.WORKER)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _started(pid), "machine": _process_table()}


def is_gone(worker: Mapping[str, Any]) -> bool:
    """True only when the worker's process certainly no longer exists: it ran in this process table, and
    no process with its pid and start time does now."""
    table = _process_table()
    return (table is not None and worker.get("machine") == table and worker.get("started") is not None
            and _started(int(worker["pid"])) != worker["started"])


def where(worker: Mapping[str, Any] | None) -> str:
    return f"worker pid {worker['pid']} on host {worker['host']}" if worker else "a worker that recorded no pid"


def fail_dead_trials(study: optuna.Study, say: Say = quiet, retry: bool = True) -> list[int]:
    """Fail the RUNNING trials whose worker is dead: gone from this machine (at once), or silent for the
    heartbeat's grace period (anywhere). Each failed trial's candidate is queued again (up to 3 times)
    unless `retry` is False, for a study that already holds its --trials. Returns the failed trials."""
    running = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    failed = [n for n, t in running.items() if is_gone(t.user_attrs.get(record.WORKER) or {})
              and _fail(study, t, retry)]
    for n in failed:
        say(f"trial {n} lost its {where(running[n].user_attrs.get(record.WORKER))} (the process is gone): "
            f"{_fate(study, n, retry)}")
    if retry:  # Optuna's heartbeat test, for workers on other machines
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        still = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for n in sorted(set(running) - still - set(failed)):  # finished since: by the heartbeat, or normally
            if record.outcome_of(study._storage.get_trial(running[n]._trial_id)) == Outcome.LOST.value:
                failed.append(n)
                say(f"trial {n} lost its {where(running[n].user_attrs.get(record.WORKER))} (no heartbeat for "
                    f"{heartbeat_settings()[1]} s): {_fate(study, n, retry)}")
    return failed


def _fail(study: optuna.Study, trial: FrozenTrial, retry: bool) -> bool:
    """Fail one trial whose worker is gone, exactly once among racing workers, and queue it as the
    heartbeat would (the storage's own retry callback). False when another worker got there first."""
    storage = study._storage
    worker = trial.user_attrs.get(record.WORKER)
    try:
        storage.set_trial_user_attr(trial._trial_id, record.OUTCOME, Outcome.LOST.value)
        storage.set_trial_user_attr(trial._trial_id, record.REASON,
                                    f"{where(worker)} died while the trial ran")
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    callback = storage.get_heartbeat_stale_trial_callback()
    if retry and callback is not None:
        callback(study, copy.deepcopy(storage.get_trial(trial._trial_id)))
    return True


def _fate(study: optuna.Study, number: int, retry: bool) -> str:
    queued = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
              if t.user_attrs.get(record.REQUEUED_FROM) == number]
    if queued:
        return f"failed, its candidate queued again as trial {queued[0]}"
    return "failed; " + ("not queued again: retried 3 times already" if retry else "the study has its --trials")


def waiting_message(study: optuna.Study, blockers: Iterable[FrozenTrial], target: int) -> str:
    """One line: which trials hold the training slots this worker waits for, whose they are, and how long
    it may wait for one whose worker died."""
    blockers = list(blockers)
    ages = heartbeat_ages(study, blockers)
    held = ", ".join(f"trial {t.number} ({where(t.user_attrs.get(record.WORKER))}, last heartbeat "
                     f"{f'{ages[t.number]:.0f} s ago' if t.number in ages else 'not yet'})" for t in blockers)
    return (f"waiting for {held} to finish: all {target} training slots (--trials) are trained or taken; a "
            f"worker that died is noticed at once on this host, elsewhere after {heartbeat_settings()[1]} s "
            f"without a heartbeat")


def heartbeat_ages(study: optuna.Study, trials: Iterable[FrozenTrial]) -> dict[int, float]:
    """Seconds since each trial's last heartbeat by the database's clock, which Optuna's staleness test reads
    too. Optuna has no public reader of heartbeats: where its tables differ, the ages are simply unknown."""
    import sqlalchemy

    backend = getattr(study._storage, "_backend", study._storage)
    ids = {t._trial_id: t.number for t in trials}
    if not ids or not isinstance(backend, optuna.storages.RDBStorage):
        return {}
    try:
        from optuna.storages._rdb import models

        beat = models.TrialHeartbeatModel
        with backend.engine.connect() as con:
            now = con.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
            rows = con.execute(sqlalchemy.select(beat.trial_id, beat.heartbeat).where(beat.trial_id.in_(ids))).all()
        return {ids[i]: (now.replace(tzinfo=None) - at.replace(tzinfo=None)).total_seconds() for i, at in rows}
    except Exception:  # noqa: BLE001 - a message detail, never worth failing a search for
        return {}
