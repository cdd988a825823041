"""Every read bounded, every file checked before use (issue 28, section A): crafted archives, FIFOs, links to
devices, run files of the wrong shape, class sets that do not match, architectures too large to build, a bad
cache folder, a missing export extra, duplicate keys. Real tar archives, FIFOs, symlinks, JSON files and
trainings; each test failed before its fix (with a memory cap or an alarm, so a failure cannot fill or hang
the machine)."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import nas
from nas.arch import Arch
from nas.arch.archfile import read_arch_file
from nas.arch.counting import count_params
from nas.arch.model import build_model
from nas.arch.space import load_space
from nas.engine.checkpoint import save_weights
from nas.engine.data import load_split
from nas.errors import NasError
from nas.export import export
from nas.retrain import load_retrain_data
from nas.runs import load_model, read_metrics, summarize

TINY = Arch(blocks=(1,), channels=(8,), num_classes=2)
GOOD_RUN = {"name": "trial-1", "arch_id": TINY.id, "protocol": "p1", "arch": TINY.describe(), "test_acc": 0.7,
            "params": 10, "macs": 5, "seed": 0, "trial": 1, "search_val_acc": 0.6}


def png(shade: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (shade, 255 - shade, shade // 2)).save(buf, "PNG")
    return buf.getvalue()


def image_folder(root: Path, train: tuple[str, ...] = ("ant", "bee"), test: tuple[str, ...] | None = None,
                 per_class: int = 4) -> Path:
    """A real ImageFolder tree of 32x32 PNGs: root/{train,test}/<class>/<i>.png."""
    for split, classes in (("train", train), ("test", train if test is None else test)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                (root / split / name / f"{i}.png").write_bytes(png(40 * c + i))
    return root


def finished_run(folder: Path, arch: Arch, weights_of: Arch) -> Path:
    """A run folder as `nas retrain` writes it, its arch.json saying `arch`, its weights those of `weights_of`."""
    folder.mkdir(parents=True)
    (folder / "arch.json").write_text(arch.to_json())
    save_weights(build_model(weights_of), folder / "model.safetensors")
    return folder


@pytest.fixture
def alarm() -> Iterator[None]:
    """A read that blocks (a FIFO) fails the test after 20 s instead of hanging it."""
    def late(*_):
        raise TimeoutError("the read blocked")

    old = signal.signal(signal.SIGALRM, late)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and len(text) < 400, text
    return text


# ------------------------------------------------------------------------------------- 6: duplicate keys


@pytest.mark.parametrize("name, content, read, where", [
    ("a.json", '{"name": "x", "arch": {"blocks": [1], "channels": [8], "channels": [4096]}}', read_arch_file,
     "duplicate key 'channels'"),
    ("space.yaml", "layers: [2]\nblocks: [1]\nchannels: [8, 16]\nlayers: [3]\n", load_space, "at line 4"),
], ids=["architecture file", "space file"])
def test_a_file_with_a_duplicate_key_is_refused_naming_the_line(tmp_path, name, content, read, where):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(NasError) as e:
        read(f)
    assert "duplicate key" in one_line(e) and where in str(e.value)


def test_a_merge_key_then_an_override_is_no_duplicate(tmp_path):
    f = tmp_path / "arch.yaml"
    f.write_text("base: &b {blocks: [1], channels: [8]}\narch: {<<: *b, channels: [16]}\n")
    assert read_arch_file(f).arch.channels == (16,)


def test_a_run_arch_json_with_a_duplicate_key_is_refused(tmp_path):
    run = finished_run(tmp_path / "run", TINY, TINY)
    (run / "arch.json").write_text(TINY.to_json()[:-1] + ', "channels": [16]}')
    with pytest.raises(NasError) as e:
        load_model(run)
    assert "duplicate key 'channels'" in one_line(e)
