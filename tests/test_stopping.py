"""Stop signals are raised only where a block may be cut in half (nas.stopping), with real signals."""

from __future__ import annotations

import os
import signal
import time

import pytest

from nas import stopping


def test_a_signal_outside_any_block_raises_at_once(handlers):
    with stopping.stop_on_signals() as stop, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("not interrupted")
    assert stop.signal == signal.SIGTERM and stop.exit_code == 143


def test_a_held_signal_waits_for_the_end_of_the_block(handlers):
    finished = []
    with stopping.stop_on_signals() as stop, pytest.raises(KeyboardInterrupt):
        with stopping.held():
            os.kill(os.getpid(), signal.SIGINT)
            assert stopping.pending()
            finished.append("write")
        raise AssertionError("not raised when the held block ended")
    assert finished == ["write"] and stop.exit_code == 130 and not stopping.pending()


def test_inside_held_an_at_once_block_raises_on_entry_and_at_once(handlers):
    with stopping.stop_on_signals(), stopping.held():
        os.kill(os.getpid(), signal.SIGINT)  # held: e.g. Optuna asking the sampler
        with pytest.raises(KeyboardInterrupt):
            with stopping.at_once():  # the next trial does not start training
                raise AssertionError("entered")
        assert not stopping.pending()


def test_inside_at_once_a_signal_cuts_the_block_at_once(handlers):
    with stopping.stop_on_signals(), stopping.held():
        with pytest.raises(KeyboardInterrupt), stopping.at_once():
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("not interrupted")
        assert not stopping.pending()


class _SignalInCleanup:
    """A destructor the interpreter runs for its own reasons (CI saw one: importlib's module-lock callback)."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # Python code: the handler runs here, and its KeyboardInterrupt is swallowed
            pass


def test_a_signal_swallowed_by_a_destructor_is_raised_again_and_never_lost(handlers, capfd):
    with stopping.stop_on_signals() as stop, pytest.raises(KeyboardInterrupt):
        _SignalInCleanup()  # dropped at once: __del__ runs, the interpreter ignores what it raises
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the training loop the signal meant to stop
            pass
        raise AssertionError("the signal was lost")
    assert stop.signal == signal.SIGTERM
    assert "Traceback" not in capfd.readouterr().err
