"""Many search workers on one study, and stopping any of them cleanly.

Why it is built this way:
- Workers share nothing but the study's database; each is a whole `run_search`, so N local processes,
  N SLURM array tasks and N machines are the same thing. `--trials N` stays exact because a worker
  claims a training slot in the database before it trains (nas.search.objective.claim_training_slot).
- Processes, not threads: training holds the interpreter; each worker gets its share of the CPU
  threads (or its own GPU) so N workers do not oversubscribe the cores.
- Ctrl+C reaches the parent only; it forwards SIGTERM once to each worker, which stops the way a single
  search does (nas.stopping): trial FAIL, candidate queued again, exit 128+signal.
- A parent killed with kill -9 forwards nothing: each worker asks the kernel for SIGTERM when its parent dies
  (prctl PR_SET_PDEATHSIG on Linux; elsewhere a thread watches the parent id) and stops as on Ctrl+C.
- A worker that ends on a NasError (a SearchFailed: its trials keep failing) sends its one line to the
  parent, which raises it as its own: the person sees the cause, not a list of exit codes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Callable

import optuna
import torch

from nas.arch.space import Space
from nas.errors import NasError
from nas.search.config import SearchConfig
from nas.search.loop import SearchFailed, run_search
from nas.search.objective import load_search_data
from nas.stopping import Stop, stop_on_signals

STOP_GRACE_SECONDS = 30  # how long a stopping worker may take to record its trial before it is killed
# A worker's resident memory: 0.5 GiB measured after importing torch and nas, plus its decoded data and a
# training's activations.
WORKER_GIB = 1.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, as taskset, SLURM and containers set it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_threads(workers: int) -> int:
    """The CPU threads each of `workers` processes may use: the cores this process may run on, shared."""
    return max(1, usable_cores() // workers)


def available_gib() -> float | None:
    """Memory that new processes can take without swapping (MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def worker_device(device: torch.device, index: int) -> torch.device:
    """One GPU per worker, round robin, when several are visible and none was named.
    Written for multi-GPU machines; not run yet (the one GPU lent so far was a single H200)."""
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        return torch.device("cuda", index % torch.cuda.device_count())
    return device


def check_concurrent_storage(backend: str, url_shown: str, workers: int) -> None:
    if workers < 1:
        raise NasError(f"--workers={workers} must be >= 1")
    check_worker_count(workers)
    if workers > 1 and backend == "sqlite":
        raise NasError(f"--workers {workers} needs a database that many processes can write at once, and SQLite "
                       f"({url_shown}) is not one: pass --storage postgresql://USER@HOST:PORT/DB (see README, Many workers)")


def check_worker_count(workers: int) -> None:
    """Each worker imports torch, loads the data and trains with its own share of the cores: more workers than
    cores only slow every one down, and more than memory holds swap or meet the OOM killer."""
    if workers <= 1:
        return
    cores, gib = usable_cores(), available_gib()
    by_memory = cores if gib is None else max(1, int(gib // WORKER_GIB))
    limit = min(cores, by_memory)
    if workers > limit:
        memory = "" if gib is None else f" and {gib:.1f} GiB of available memory (~{WORKER_GIB:g} GiB per worker)"
        raise NasError(f"--workers {workers} is more than this machine can run: {cores} usable core(s){memory} allow "
                       f"{limit}; use --workers {limit}, and start more workers on other machines (see README, Many workers)")


def exit_with_parent(parent: int) -> None:
    """SIGTERM this worker when its parent dies, so a parent killed with kill -9 leaves no worker training into
    the study: the kernel sends it on Linux (prctl); elsewhere a daemon thread polls the parent id."""
    try:
        armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):  # no prctl: not Linux
        armed = False
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), name="nas-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_parent(parent: int, every: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker(space: Space, cfg: SearchConfig, source: str, device: torch.device, threads: int,
            errors: multiprocessing.SimpleQueue, parent: int) -> None:
    """One worker process: Ctrl+C reaches it only through the parent, which forwards it once as SIGTERM.
    What it waits for and which dead workers' trials it failed, it prints itself; a NasError goes to the
    parent (`errors`), which reports it."""
    exit_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # outcomes and reasons are in the study
    with stop_on_signals((signal.SIGTERM,)) as stop:
        try:
            run_search(space, cfg, load_search_data(source, cfg), device,
                       say=lambda message: print(f"worker {cfg.worker}: {message}", flush=True))
        except KeyboardInterrupt:
            sys.exit(stop.exit_code)
        except NasError as e:
            code = getattr(e, "exit_code", 2)  # a SearchFailed knows whether the input is at fault
            errors.put((str(e), code))
            sys.exit(code)


def run_workers(space: Space, cfg: SearchConfig, source: str, device: torch.device, workers: int, stop: Stop,
                on_poll: Callable[[], None] | None = None, poll: float = 2.0) -> None:
    """Run `workers` processes on the (already created) study until it has `cfg.trials` trained trials.

    On Ctrl+C/SIGTERM the workers are told once (SIGTERM), given STOP_GRACE_SECONDS to record their
    trials, then killed; KeyboardInterrupt is re-raised for the caller's exit message. Call it inside
    stop_on_signals(), whose `stop` it is given, so a second signal kills the workers too."""
    ctx = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and locks
    threads, errors = cpu_threads(workers), ctx.SimpleQueue()
    procs = [ctx.Process(target=_worker, name=f"nas-worker-{i}", args=(
        space, dataclasses.replace(cfg, worker=i), source, worker_device(device, i), threads, errors, os.getpid()))
             for i in range(workers)]

    def kill_all() -> None:
        for p in procs:
            if p.is_alive():
                p.kill()

    stop.on_force = kill_all
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=poll / workers)
            if on_poll is not None:
                on_poll()
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(timeout=STOP_GRACE_SECONDS)
        kill_all()
        raise
    failed = {p.name: p.exitcode for p in procs if p.exitcode != 0}
    if failed and not errors.empty():
        raise SearchFailed(*errors.get())  # the workers fail alike: the first one's line says why
    if failed:
        raise NasError(f"{len(failed)} of {workers} workers failed (exit codes {failed}): "
                       f"run the same command again to resume the study")
