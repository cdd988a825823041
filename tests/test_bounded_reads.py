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


# ------------------------------------------------------------- 1: archive members and image files bounded


def test_a_tiny_archive_with_a_sparse_30_gb_member_is_refused_before_reading(tmp_path, memory_cap):
    archive = tmp_path / "sparse.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("d/train/ant/0.png"), io.BytesIO(png(0)))
        info = tarfile.TarInfo("d/train/ant/1.png")  # all holes: 0 bytes stored, 30 GB of zeros when read
        info.pax_headers = {"GNU.sparse.map": "0,0", "GNU.sparse.size": str(30 * 2**30), "GNU.sparse.numblocks": "1"}
        tar.addfile(info, io.BytesIO(b""))
    assert archive.stat().st_size < 1000
    with memory_cap(256), pytest.raises(NasError) as e:
        load_split(str(archive), "train")
    assert "d/train/ant/1.png" in one_line(e) and "16 MiB" in str(e.value)


def test_a_fifo_or_device_stored_as_an_image_in_an_archive_is_named(tmp_path):
    archive = tmp_path / "odd.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        fifo = tarfile.TarInfo("d/train/ant/x.png")
        fifo.type = tarfile.FIFOTYPE
        tar.addfile(fifo)
    with pytest.raises(NasError) as e:
        load_split(str(archive), "train")
    assert "d/train/ant/x.png" in one_line(e) and "not a regular file" in str(e.value)


def test_a_symlink_to_dev_zero_in_an_image_folder_is_refused(tmp_path, memory_cap):
    root = image_folder(tmp_path / "data")
    (root / "train" / "ant" / "zero.png").symlink_to("/dev/zero")
    with memory_cap(256), pytest.raises(NasError) as e:
        load_split(str(root), "train")
    assert "zero.png" in one_line(e) and "not a regular file" in str(e.value)


def test_a_fifo_named_png_in_an_image_folder_is_refused_without_hanging(tmp_path, alarm):
    root = image_folder(tmp_path / "data")
    os.mkfifo(root / "train" / "bee" / "x.png")
    with pytest.raises(NasError) as e:
        load_split(str(root), "train")
    assert "x.png" in one_line(e) and "not a regular file" in str(e.value)


def test_an_image_file_over_the_cap_is_refused_before_it_is_read(tmp_path, memory_cap):
    root = image_folder(tmp_path / "data")
    with open(root / "train" / "ant" / "huge.png", "wb") as f:
        f.truncate(4 * 2**30)  # a sparse 4 GiB file: no disk, 4 GiB when read
    with memory_cap(256), pytest.raises(NasError) as e:
        load_split(str(root), "train")
    assert "huge.png" in one_line(e) and "16 MiB" in str(e.value)


def test_a_symlink_to_a_real_image_still_loads(tmp_path):
    root = image_folder(tmp_path / "data")
    (root / "train" / "ant" / "linked.png").symlink_to(root / "train" / "bee" / "0.png")
    assert len(load_split(str(root), "train")) == 9


# ------------------------------------------------------------------------ 2: run files of the wrong shape


@pytest.mark.parametrize("content", ["{}", "[1, 2]", '"done"', json.dumps({**GOOD_RUN, "test_acc": "0.9"}),
                                     json.dumps({**GOOD_RUN, "params": None}), json.dumps({**GOOD_RUN, "curves": 3}),
                                     json.dumps({**GOOD_RUN, "test_acc": 7.0}),
                                     '{"test_acc": 0.5, ' + json.dumps(GOOD_RUN)[1:]])  # a duplicate key
def test_a_run_file_of_the_wrong_shape_is_skipped_with_one_line_naming_it(tmp_path, capsys, content):
    study = nas.Study("s", tmp_path)
    root = tmp_path / "s" / "retrain"
    for name, text in (("good", json.dumps(GOOD_RUN)), ("bad", content)):
        (root / name).mkdir(parents=True)
        (root / name / "metrics.json").write_text(text)
    entries = study.retrained()  # what leaderboard, report and show read
    assert [e["test_acc"] for e in entries] == [0.7]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(root / "bad" / "metrics.json") in lines[0] and "skipped" in lines[0]
    with pytest.raises(NasError) as e:  # export and load_stats read one run: one line, never a traceback
        read_metrics(root / "bad")
    assert "metrics.json" in one_line(e)


def test_summarize_skips_an_entry_of_the_wrong_shape(capsys):
    assert [e["name"] for e in summarize([GOOD_RUN, {**GOOD_RUN, "seed": "zero", "dir": "runs/x"}])] == ["trial-1"]
    assert "runs/x" in capsys.readouterr().err


# ------------------------------------------------------------------------- 3: class sets before training


def test_a_test_split_with_classes_training_lacks_is_refused_before_training(tmp_path):
    root = image_folder(tmp_path / "data", ("ant", "bee"), ("ant", "bee", "cow"))
    with pytest.raises(NasError) as e:
        nas.train_architecture(TINY, str(root), val_size=0, test=True, device="cpu", epochs=1, batch_size=4)
    assert "cow" in one_line(e)
    with pytest.raises(NasError, match="cow"):
        load_retrain_data(str(root))


def test_a_test_split_missing_a_class_is_refused_too(tmp_path):
    """Labels index the sorted class names: a missing class would shift every later label."""
    root = image_folder(tmp_path / "data", ("ant", "bee", "cow"), ("ant", "cow"))
    with pytest.raises(NasError) as e:
        load_retrain_data(str(root))
    assert "bee" in one_line(e)


def test_a_one_class_dataset_is_refused(tmp_path):
    root = image_folder(tmp_path / "data", ("ant",))
    for arch in (TINY, Arch(blocks=(1,), channels=(8,), num_classes=1)):
        with pytest.raises(NasError) as e:
            nas.train_architecture(arch, str(root), val_size=0, device="cpu", epochs=1, batch_size=4)
        assert "one class" in one_line(e) and "'ant'" in str(e.value)


# ------------------------------------------------------------------------- 4: sizes before building


def test_load_model_of_an_arch_json_with_200000_channels_is_refused_before_allocating(tmp_path, memory_cap):
    run = finished_run(tmp_path / "run", Arch(blocks=(1,), channels=(200_000,)), TINY)
    with memory_cap(512), pytest.raises(NasError) as e:
        load_model(run)
    assert "parameters" in one_line(e) and "2,000,000,000" in str(e.value)


def test_weights_that_do_not_fit_the_architecture_are_refused_before_allocating(tmp_path, memory_cap):
    big = Arch(blocks=(1,), channels=(8192,), num_classes=2)  # 1.2 billion parameters: 4.8 GB if built
    run = finished_run(tmp_path / "run", big, TINY)
    with memory_cap(512), pytest.raises(NasError) as e:
        load_model(run)
    assert "stem.0.0.weight is (8, 3, 3, 3) in the file but (8192, 3, 3, 3)" in one_line(e)


def test_a_run_whose_weights_fit_still_loads(tmp_path):
    run = finished_run(tmp_path / "run", TINY, TINY)
    assert sum(p.numel() for p in load_model(run).parameters()) == count_params(TINY)


def test_an_architecture_of_a_billion_channels_is_refused_before_the_data_is_read(tmp_path, capsys, memory_cap):
    root = image_folder(tmp_path / "data")
    with memory_cap(512), pytest.raises(NasError) as e:
        nas.train_architecture(Arch(blocks=(1,), channels=(10**9,), num_classes=2), str(root), val_size=0,
                               device="cpu", epochs=1, batch_size=4)
    assert "parameters" in one_line(e) and "decoding" not in capsys.readouterr().err


# ------------------------------------------------------------------------ 5: the environment before work


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_a_bad_nas_cache_is_refused_before_decoding(tmp_path, monkeypatch, capsys, where):
    root = image_folder(tmp_path / "data")
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NAS_CACHE", str(blocker if where == "a file" else blocker / "cache"))
    with pytest.raises(NasError) as e:
        load_split(str(root), "train")
    assert "NAS_CACHE" in one_line(e) and "decoding" not in capsys.readouterr().err


def test_a_missing_onnx_extra_is_refused_before_the_test_split_is_decoded(tmp_path, monkeypatch, capsys):
    root = image_folder(tmp_path / "data")
    run = finished_run(tmp_path / "run", TINY, TINY)
    (run / "metrics.json").write_text(json.dumps({**GOOD_RUN, "data": str(root),
                                                  "normalization": {"mean": [0.5] * 3, "std": [0.2] * 3}}))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` finds without the extra
    with pytest.raises(NasError) as e:
        export(run, "onnx")
    assert "nas[export]" in one_line(e) and "decoding" not in capsys.readouterr().err


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
