"""Stop signals are raised only where a block may be cut in half (nas.stopping), with real signals."""

from __future__ import annotations

import os
import signal

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
