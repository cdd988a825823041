"""nas.engine.data: loading, the content-keyed cache, splits. Real CIFAR-10 images, a few hundred of them."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import nas.engine.data as data
from nas.engine.data import ImageSet, load_split, split_validation, stratified_subset
from nas.errors import NasError


@pytest.fixture
def folder(cifar_folder) -> Path:
    """300 training and 100 test images, 30 and 10 per class (conftest's session copy: tests copy before editing)."""
    return cifar_folder


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def test_directory_loads_as_uint8_in_imagefolder_order(folder, cache):
    s = load_split(str(folder), "train", cache)
    assert s.images.dtype == torch.uint8 and s.images.shape == (300, 3, 32, 32)
    assert s.labels.dtype == torch.int64 and s.labels.bincount().tolist() == [30] * 10
    assert s.classes[0] == "airplane" and s.classes[-1] == "truck" and len(s.classes) == 10
    assert torch.equal(s.labels, s.labels.sort().values)  # class-major, like ImageFolder


def test_archive_and_directory_give_identical_sets(folder, cache, tmp_path):
    archive = tmp_path / "small.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="some-top-folder")
    a, b = load_split(str(archive), "test", cache), load_split(str(folder), "test", cache)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.classes == b.classes
    assert len(a) == 100


def test_second_load_reads_the_cache_without_decoding(folder, cache, monkeypatch):
    first = load_split(str(folder), "train", cache)
    assert len(list(cache.glob("*-train.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data, "_decode_folder", no_decoding)
    second = load_split(str(folder), "train", cache)
    assert torch.equal(first.images, second.images) and first.classes == second.classes


def test_changing_a_file_invalidates_the_directory_cache(folder, cache, tmp_path):
    copy = shutil.copytree(folder, tmp_path / "copy")
    load_split(str(copy), "train", cache)
    victim = next((copy / "train" / "cat").iterdir())
    victim.unlink()
    assert len(load_split(str(copy), "train", cache)) == 299


def test_loading_train_never_touches_test_images(folder, cache, tmp_path):
    copy = shutil.copytree(folder, tmp_path / "copy")
    poisoned = [p for p in (copy / "test").rglob("*") if p.is_file()]
    assert len(poisoned) == 100
    for p in poisoned:
        p.write_bytes(b"not an image")  # decoding any of these would raise
    archive = tmp_path / "poisoned.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(copy, arcname="cifar")
    assert len(load_split(str(archive), "train", cache)) == 300
    with pytest.raises(NasError, match="cannot decode"):
        load_split(str(archive), "test", cache)


def test_unknown_source_and_split_are_user_errors(cache, tmp_path):
    with pytest.raises(NasError, match="--data"):
        load_split(str(tmp_path / "nowhere"), "train", cache)
    with pytest.raises(NasError, match=r"'.*absent.tar.gz' does not exist"):
        load_split(str(tmp_path / "absent.tar.gz"), "train", cache)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NasError, match="'.*notes.txt' is not 'cifar10'"):
        load_split(str(tmp_path / "notes.txt"), "train", cache)
    with pytest.raises(NasError, match="'train' or 'test'"):
        load_split("cifar10", "val", cache)  # type: ignore[arg-type]


def test_builtin_offline_names_the_local_alternative(cache, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(NasError, match="--data") as e:
        load_split("cifar10", "train", cache)
    assert f"files of cifar10 in {cache / 'torchvision' / 'cifar-10-batches-py'} " in str(e.value)  # read from there


def test_decoding_says_so_once_and_the_cache_respects_the_umask(folder, cache, capsys):
    old = os.umask(0o022)
    try:
        load_split(str(folder), "test", cache)
    finally:
        os.umask(old)
    assert capsys.readouterr().err == f"decoding 100 images of {folder}/test once (cached in {cache})\n"
    load_split(str(folder), "test", cache)
    assert capsys.readouterr().err == ""  # a cache hit decodes nothing
    [cached] = cache.glob("*-test.pt")
    assert cached.stat().st_mode & 0o777 == 0o644


def test_cifar100_official_python_format_is_read(cache, monkeypatch):
    """No CIFAR-100 copy here: write tiny files in the official pickled format and read them (trusted as
    official here: only files whose md5 is the official one are unpickled)."""
    base = cache / "torchvision" / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        blob = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": list(range(n)),
                "coarse_labels": [0] * n}
        (base / split).write_bytes(pickle.dumps(blob))
    names = [f"class{i:03d}" for i in range(100)]
    (base / "meta").write_bytes(pickle.dumps({b"fine_label_names": [n.encode() for n in names]}))
    monkeypatch.setattr(data, "official_md5", lambda name: {f.name: md5(f) for f in base.iterdir()})
    s = load_split("cifar100", "train", cache)
    assert s.images.shape == (12, 3, 32, 32) and s.labels.tolist() == list(range(12)) and s.classes == tuple(names)
    raw = pickle.loads((base / "train").read_bytes())["data"]
    assert torch.equal(s.images[3].reshape(-1), torch.from_numpy(raw[3]))  # official order: R plane, G, B


def indexed_set(counts: list[int]) -> ImageSet:
    """A set whose image i holds the number i, so membership can be read back."""
    n = sum(counts)
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    ids = torch.arange(n)
    images = torch.stack([ids // 256, ids % 256, torch.zeros(n, dtype=torch.int64)], 1).to(torch.uint8)
    return ImageSet(images[:, :, None, None].expand(n, 3, 2, 2).contiguous(), labels, tuple("abc"[: len(counts)]))


def ids(s: ImageSet) -> set[int]:
    return set((s.images[:, 0, 0, 0].long() * 256 + s.images[:, 1, 0, 0].long()).tolist())


def test_validation_split_is_disjoint_stratified_and_deterministic():
    s = indexed_set([500, 300, 200])
    train, val = split_validation(s, 100, seed=3)
    assert len(val) == 100 and len(train) == 900
    assert ids(train).isdisjoint(ids(val)) and ids(train) | ids(val) == set(range(1000))
    assert val.labels.bincount().tolist() == [50, 30, 20]
    again_train, again_val = split_validation(s, 100, seed=3)
    assert ids(again_val) == ids(val) and ids(again_train) == ids(train)
    assert ids(split_validation(s, 100, seed=4)[1]) != ids(val)


def test_stratified_subset_keeps_proportions_exactly():
    s = indexed_set([7, 5, 3])
    sub = stratified_subset(s, 6, seed=0)
    assert len(sub) == 6 and sorted(sub.labels.bincount().tolist()) == [1, 2, 3]
    assert ids(sub) <= ids(s)
    assert stratified_subset(s, 15) is s


@pytest.mark.parametrize("size", [0, 15, -1])
def test_impossible_split_sizes_are_user_errors(size):
    with pytest.raises(NasError, match="val_size"):
        split_validation(indexed_set([10, 5]), size)


@pytest.mark.slow
def test_whole_cifar10_archive_loads_balanced_and_caches(cifar_tarball, tmp_path):
    train = load_split(str(cifar_tarball), "train", tmp_path)
    assert train.images.shape == (50000, 3, 32, 32) and train.labels.bincount().tolist() == [5000] * 10
    again = load_split(str(cifar_tarball), "train", tmp_path)
    assert torch.equal(again.images[::997], train.images[::997])
    test = load_split(str(cifar_tarball), "test", tmp_path)
    assert test.images.shape == (10000, 3, 32, 32) and test.labels.bincount().tolist() == [1000] * 10


# -- damaged and hostile files: a one-line error or a fresh decode, never a traceback, never code run ----------


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class Planted:
    """Unpickling this creates `marker`: it stands for any code a planted pickle could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_planted_cifar_pickle_is_refused_and_never_runs(cache, tmp_path):
    base = cache / "torchvision" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    marker = tmp_path / "planted-code-ran"
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]:
        (base / name).write_bytes(pickle.dumps(Planted(marker)))
    with pytest.raises(NasError, match=r"refusing to unpickle .*data_batch_1: its md5 [0-9a-f]{32} is not the "
                                       r"official archive's \(c99cafc152244af753f735de768cd75f\)") as e:
        load_split("cifar10", "train", cache)
    assert "\n" not in str(e.value) and not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "bit flipped", "poisoned"])
def test_a_damaged_cache_is_decoded_again_with_a_one_line_note(folder, cache, tmp_path, capsys, damage):
    fresh = load_split(str(folder), "test", cache)
    [cached] = cache.glob("*-test.pt")
    blob, marker = bytearray(cached.read_bytes()), tmp_path / "planted-code-ran"
    if damage == "truncated":
        cached.write_bytes(blob[: len(blob) // 2])
    elif damage == "bit flipped":  # in the pixels: torch.load checks no checksum, so only the digest sees it
        at = bytes(blob).index(fresh.images[50].numpy().tobytes()[:64])
        blob[at + 7] ^= 0x01
        cached.write_bytes(blob)
    else:
        torch.save({"images": Planted(marker), "labels": fresh.labels, "classes": list(fresh.classes)}, cached)
    capsys.readouterr()
    again = load_split(str(folder), "test", cache)
    notes = capsys.readouterr().err.splitlines()
    assert torch.equal(again.images, fresh.images) and torch.equal(again.labels, fresh.labels)
    assert not marker.exists()
    assert len(notes) == 2 and notes[0].startswith(f"decoded-data cache {cached} is damaged"), notes
    assert notes[1].startswith("decoding 100 images")
    assert torch.equal(load_split(str(folder), "test", cache).images, fresh.images)
    assert capsys.readouterr().err == ""  # the rewritten cache is intact: read, not decoded


def bomb_png(side: int) -> bytes:
    """A PNG whose header claims side x side pixels and that holds almost no data: Pillow reads the
    header first, so this is how a decompression bomb looks to it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20_000, 10_000])  # over 2x Pillow's pixel limit (its error); 1x-2x (its warning)
@pytest.mark.parametrize("packed", [False, True])
def test_a_decompression_bomb_is_one_line_naming_the_file(folder, cache, tmp_path, side, packed):
    tree = tmp_path / "tree"
    shutil.copytree(folder, tree)
    (tree / "train" / "cat" / "bomb.png").write_bytes(bomb_png(side))
    source = tree
    if packed:
        source = tmp_path / "tree.tar.gz"
        with tarfile.open(source, "w:gz") as tar:
            tar.add(tree, arcname="tree")
    with pytest.raises(NasError, match=r"train/cat/bomb\.png is a decompression bomb") as e:
        load_split(str(source), "train", cache)
    assert "\n" not in str(e.value) and not list(cache.glob("*.pt"))
