"""Checkpoints must survive kills, truncation and hostile files, and resume exactly."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nas.atomic import write_json_atomic
from nas.engine.checkpoint import (
    capture_rng,
    load_latest_checkpoint,
    load_weights,
    restore_rng,
    save_checkpoint,
    save_weights,
)
from nas.errors import NasError

REPO = Path(__file__).resolve().parents[1]


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def _training_parts(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    return model, optimizer, scheduler


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> None:
    x = torch.randn(4, 3, 8, 8)
    y = torch.randint(0, 10, (4,))
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    scheduler.step()


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_model_optimizer_scheduler_and_rng_resume_exactly(tmp_path: Path) -> None:
    model, optimizer, scheduler = _training_parts(seed=0)
    for _ in range(3):
        _step(model, optimizer, scheduler)
    state = {
        "epoch": 3,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng(),
    }
    save_checkpoint(state, tmp_path, epoch=3)
    _step(model, optimizer, scheduler)  # the uninterrupted run goes on

    loaded = load_latest_checkpoint(tmp_path)
    resumed, resumed_opt, resumed_sched = _training_parts(seed=1)
    resumed.load_state_dict(loaded["model"])
    resumed_opt.load_state_dict(loaded["optimizer"])
    resumed_sched.load_state_dict(loaded["scheduler"])
    restore_rng(loaded["rng"])
    _step(resumed, resumed_opt, resumed_sched)

    assert loaded["epoch"] == 3
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed_sched.get_last_lr() == scheduler.get_last_lr()


def test_only_the_last_two_checkpoints_are_kept(tmp_path: Path) -> None:
    for epoch in range(5):
        save_checkpoint({"epoch": epoch}, tmp_path, epoch)
    assert _files(tmp_path) == ["ckpt-00003.pt", "ckpt-00004.pt"]
    assert load_latest_checkpoint(tmp_path) == {"epoch": 4}


def test_saving_an_earlier_epoch_discards_the_abandoned_later_ones(tmp_path: Path) -> None:
    for epoch in range(6):
        save_checkpoint({"epoch": epoch}, tmp_path, epoch)
    save_checkpoint({"epoch": 3, "resumed": True}, tmp_path, 3)
    assert load_latest_checkpoint(tmp_path) == {"epoch": 3, "resumed": True}


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temp_file(tmp_path: Path) -> None:
    save_checkpoint({"epoch": 0}, tmp_path, 0)
    with pytest.raises(Exception):
        save_checkpoint({"epoch": 1, "unpicklable": lambda: None}, tmp_path, 1)
    assert _files(tmp_path) == ["ckpt-00000.pt"]
    assert load_latest_checkpoint(tmp_path) == {"epoch": 0}


def test_missing_or_empty_directory_means_no_checkpoint(tmp_path: Path) -> None:
    assert load_latest_checkpoint(tmp_path / "absent") is None
    assert load_latest_checkpoint(tmp_path) is None


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, caplog) -> None:
    save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, tmp_path, 1)
    newest = save_checkpoint({"epoch": 2, "w": torch.ones(1000)}, tmp_path, 2)
    newest.write_bytes(newest.read_bytes()[:300])

    with caplog.at_level(logging.WARNING, logger="nas.engine.checkpoint"):
        state = load_latest_checkpoint(tmp_path)

    assert state["epoch"] == 1
    assert "ckpt-00002.pt" in caplog.text and "truncated or corrupt" in caplog.text


class _Payload:
    """Unpickling this runs a shell command: what a poisoned checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_refused_and_never_executed(tmp_path: Path, caplog) -> None:
    marker = tmp_path / "pwned"
    ckpts = tmp_path / "ckpts"
    save_checkpoint({"epoch": 1}, ckpts, 1)
    torch.save({"epoch": 2, "x": _Payload(marker)}, ckpts / "ckpt-00002.pt")

    with caplog.at_level(logging.WARNING, logger="nas.engine.checkpoint"):
        state = load_latest_checkpoint(ckpts)

    assert state == {"epoch": 1}
    assert not marker.exists()
    assert "ckpt-00002.pt" in caplog.text and "possibly malicious" in caplog.text
    assert "weights_only` set to `False`" not in caplog.text  # never advise the unsafe load


def test_no_loadable_checkpoint_is_an_error_naming_the_files(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    torch.save({"x": _Payload(marker)}, ckpts / "ckpt-00007.pt")
    (ckpts / "ckpt-00008.pt").write_bytes(b"not a zip")

    with pytest.raises(NasError, match=r"ckpt-00007\.pt.*ckpt-00008\.pt.*delete them"):
        load_latest_checkpoint(ckpts)
    assert not marker.exists()


def _draws() -> tuple:
    return random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist()


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    random.gauss(0, 1)  # leave a cached gaussian in both generators: it is part of the state
    np.random.randn()
    save_checkpoint({"rng": capture_rng()}, tmp_path, 0)
    expected = _draws()
    _draws()  # move every generator on

    restore_rng(load_latest_checkpoint(tmp_path)["rng"])

    assert _draws() == expected


def test_weights_round_trip_through_safetensors(tmp_path: Path) -> None:
    model, optimizer, scheduler = _training_parts(seed=0)
    _step(model, optimizer, scheduler)
    path = save_weights(model, tmp_path / "model.safetensors")

    fresh = load_weights(_training_parts(seed=5)[0], path)

    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert _files(tmp_path) == ["model.safetensors"]


def test_weights_that_do_not_fit_name_the_file(tmp_path: Path) -> None:
    path = save_weights(nn.Linear(3, 2), tmp_path / "w.safetensors")
    with pytest.raises(NasError, match="w.safetensors"):
        load_weights(nn.Linear(3, 4), path)
    with pytest.raises(NasError, match="does not exist"):
        load_weights(nn.Linear(3, 2), tmp_path / "absent.safetensors")


def test_json_is_written_atomically_and_reads_back(tmp_path: Path) -> None:
    path = write_json_atomic({"arch": {"blocks": [2, 2]}, "params": 5}, tmp_path / "sub" / "arch.json")
    assert json.loads(path.read_text()) == {"arch": {"blocks": [2, 2]}, "params": 5}
    assert _files(path.parent) == ["arch.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_mode_the_umask_allows(tmp_path: Path, umask: int, mode: int) -> None:
    """Results are shared (report.html, trials.csv, weights): readable as any file the user writes."""
    old = os.umask(umask)
    try:
        paths = [write_json_atomic({}, tmp_path / "a.json"), save_checkpoint({}, tmp_path, 0),
                 save_weights(nn.Linear(2, 2), tmp_path / "w.safetensors")]
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in paths] == [mode] * 3


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    from nas.engine.checkpoint import load_latest_checkpoint, save_checkpoint

    directory = Path(sys.argv[1])
    latest = load_latest_checkpoint(directory)
    epoch = 0 if latest is None else latest["epoch"] + 1
    payload = torch.arange(1_000_000, dtype=torch.float32)  # 4 MB, so kills land mid-write
    print("ready", flush=True)
    while True:
        save_checkpoint({"epoch": epoch, "payload": payload + epoch}, directory, epoch)
        epoch += 1
    """
)


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the checkpoint writer"
        time.sleep(0.001)


def test_sigkill_during_checkpointing_always_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    last_epoch = -1
    for kill in range(4):
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            assert writer.stdout.readline().strip() == "ready"
            _wait_for(lambda: any(tmp_path.glob("ckpt-*.pt")))
            if kill % 2:  # aim at the middle of a save: a temp file is being written
                _wait_for(lambda: any(tmp_path.glob(".ckpt-*.tmp")))
            else:
                time.sleep(random.uniform(0.05, 0.3))
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait()
            writer.stdout.close()

        state = load_latest_checkpoint(tmp_path)

        assert state is not None
        assert state["epoch"] >= last_epoch
        assert torch.equal(state["payload"], torch.arange(1_000_000, dtype=torch.float32) + state["epoch"])
        last_epoch = state["epoch"]
