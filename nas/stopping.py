"""Stopping a run on Ctrl+C or SIGTERM without a traceback or a half-written database row.

Why it is built this way:
- Optuna fails the running trial when KeyboardInterrupt leaves its objective, but leaves it RUNNING on
  SIGTERM (the default action kills the process). SIGTERM (SLURM preemption, `kill`, a container stop)
  is therefore turned into KeyboardInterrupt, so both end the same way: trial FAIL, exit 128+signal.
- A KeyboardInterrupt raised while Optuna itself writes (telling a result, asking the sampler) escapes
  Optuna as a traceback and can cut a database query in half (seen in CI: SIGINT inside
  `_tell_with_warning`). So inside `held()` a signal is only recorded, and raised where it is safe:
  when an `at_once()` block is entered or left, or when the `held()` block ends. The search holds signals
  around Optuna's loop and lets them through at once only while a trial trains.
- A second signal exits at once; the heartbeat then fails whatever was left RUNNING.
- The interpreter swallows an exception raised inside a destructor or a weakref callback (seen in CI: the
  handler ran inside importlib's module-lock callback, printed "Exception ignored ... KeyboardInterrupt", and
  the worker trained on). Such a swallowed stop is sent again, a moment later, to land in ordinary code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass
class Stop:
    """What stop_on_signals saw: the signal number received (None until then), and what to do before
    exiting on a second signal (nas.workers kills its processes)."""

    signal: int | None = None
    on_force: Callable[[], None] | None = None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signal or signal.SIGINT)


class Stopped(KeyboardInterrupt):
    """A run stopped by a signal, raised where the run was left in a resumable state. `detail` says what the
    stop left behind (which trial was interrupted and queued again, if any), read from the study afterwards
    so the message is true to what happened, not to what usually happens."""

    def __init__(self, signum: int | None, detail: str = "") -> None:
        super().__init__(signum)
        self.signal = signum or signal.SIGINT
        self.detail = detail

    @property
    def exit_code(self) -> int:
        return 128 + self.signal


# Signals are per process, and so is this state.
_raise_at_once = True  # False inside held()
_pending = False  # a signal arrived inside held() and has not been raised yet


def pending() -> bool:
    """A stop signal arrived where it could not be raised; it will be at the next safe point."""
    return _pending


@contextlib.contextmanager
def stop_on_signals(signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[Stop]:
    """First signal: KeyboardInterrupt in the main thread (the Ctrl+C path, which Optuna records), at once
    or at the next safe point (see held). Second: `on_force`, then exit at once."""
    stop = Stop()
    resent = False  # the next signal is one unraisable() sent again, not a person's second one

    def handler(signum: int, frame: object) -> None:
        global _pending
        nonlocal resent
        if stop.signal is not None and not resent:
            if stop.on_force is not None:
                stop.on_force()
            os.write(2, b"second signal: stopped at once; trials left running are failed by the heartbeat\n")
            os._exit(128 + signum)
        resent = False
        stop.signal = signum
        if _raise_at_once:
            raise KeyboardInterrupt
        _pending = True

    def unraisable(report: sys.UnraisableHookArgs) -> None:
        nonlocal resent
        if stop.signal is None or not issubclass(report.exc_type, KeyboardInterrupt):
            return previous_hook(report)
        resent = True  # sent from another thread after a pause, so that it is not raised in this hook, swallowed again
        resend = threading.Timer(0.01, os.kill, (os.getpid(), stop.signal))
        resend.daemon = True  # a process already on its way out needs no second stop
        resend.start()

    previous = {s: signal.signal(s, handler) for s in signals}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield stop
    finally:
        if stop.signal is None:  # once stopping, keep "a second signal exits at once" until the end
            for s, h in previous.items():
                signal.signal(s, h)
            sys.unraisablehook = previous_hook


def _raise_pending() -> None:
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def _raising(at_once: bool) -> Iterator[None]:
    global _raise_at_once
    outer = _raise_at_once
    if at_once:
        _raise_pending()
    _raise_at_once = at_once
    try:
        yield
    finally:
        _raise_at_once = outer
    if outer:
        _raise_pending()


def held() -> contextlib.AbstractContextManager[None]:
    """A block a signal must not cut in half (database writes): it is raised when the block ends."""
    return _raising(False)


def at_once() -> contextlib.AbstractContextManager[None]:
    """A block a signal may cut anywhere (training): raised at once, or on entry if it came earlier."""
    return _raising(True)
