"""Datasets as one uint8 tensor each: decoded once, cached, and kept resident for training.

Why uint8: a CIFAR split is 150 MB as uint8 and 600 MB as float32; keeping bytes on the
device and normalising per batch is faster than loading preprocessed floats (airbench).
The test split is read only by an explicit ``load_split(source, "test")`` call.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import stat
import tarfile
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Iterable, Iterator, Literal, Mapping

import torch

from nas.atomic import write_atomic
from nas.engine.checkpoint import why_unloadable
from nas.errors import NasError, note, shown

CACHE_VERSION = 2  # bump when the cached layout changes, so stale caches are not read
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_IMAGE_BYTES = 16 * 2**20  # per image file: a CIFAR PNG is ~2 KB; refuses a sparse 30 GB member or /dev/zero
EXAMPLE = "../shared/data/cifar10-png.tar.gz"  # the README's local copy
BUILTIN = {
    # name: (torchvision class, extracted folder, train files, test files, label key, meta file, names key)
    "cifar10": ("CIFAR10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", "batches.meta", "label_names"),
    "cifar100": ("CIFAR100", "cifar-100-python", ["train"], ["test"], "fine_labels", "meta", "fine_label_names"),
}


@dataclass(frozen=True)
class ImageSet:
    """A whole split in memory: images uint8 (N, C, H, W), labels int64 (N,), class names by index."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: torch.Tensor) -> ImageSet:
        """The images at `index` (a 1-D int64 tensor), same classes."""
        return ImageSet(self.images[index], self.labels[index], self.classes)


def default_cache_dir() -> Path:
    return Path(os.environ.get("NAS_CACHE") or Path.home() / ".cache" / "nas")


def load_split(source: str, split: Literal["train", "test"], cache_dir: Path | None = None) -> ImageSet:
    """Load one split of `source`: "cifar10", "cifar100", an ImageFolder directory, or a .tar.gz of one.

    Decoding happens once; later loads read a uint8 cache keyed by the source's content.
    """
    if split not in ("train", "test"):
        raise NasError(f"split={split!r} must be 'train' or 'test'")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if source in BUILTIN:
        return _load_builtin(source, split, cache)
    path = Path(source).expanduser()
    if path.is_dir():
        key = _directory_key(path, split)
        return _cached(cache, key, split,
                       lambda: _decode_folder(_iter_directory(path, split), f"{path}/{split}", cache))
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        key = _file_sha256(path)
        return _cached(cache, key, split, lambda: _decode_folder(_iter_tar(path, split), f"{path}:{split}", cache))
    what = "is not" if path.exists() else "does not exist; data sources are"
    raise NasError(f"data source {source!r} {what} 'cifar10', 'cifar100', a directory with train/ and test/ in "
                   f"ImageFolder layout, or a .tar.gz of one; pass e.g. --data {EXAMPLE}")


def split_validation(train: ImageSet, val_size: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Split off a stratified validation set; deterministic in `seed`, disjoint, order kept."""
    if not 0 < val_size < len(train):
        raise NasError(f"val_size={val_size} must be between 1 and {len(train) - 1} (the training split has "
                       f"{len(train)} images); pick a smaller validation size")
    val_index = _stratified_index(train.labels, val_size, seed)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[val_index] = False
    return train.take(keep.nonzero().squeeze(1)), train.take(val_index)


def stratified_subset(s: ImageSet, n: int, seed: int = 0) -> ImageSet:
    """`n` images with class proportions kept (largest remainder), deterministic in `seed`."""
    if not 0 < n <= len(s):
        raise NasError(f"subset size {n} must be between 1 and {len(s)} (the set's size); lower it")
    if n == len(s):
        return s
    return s.take(_stratified_index(s.labels, n, seed))


def check_image_shape(s: ImageSet, input_size: int, in_channels: int, owner: str) -> None:
    """Networks are sized for `input_size` x `input_size` images of `in_channels` channels (pooling, feature
    maps); other data fails deep inside the first training step, after files were written, so it is
    refused up front. `owner` names what set the sizes, e.g. "space 'tiny'"."""
    c, h, w = (int(n) for n in s.images.shape[1:])
    if (c, h, w) != (in_channels, input_size, input_size):
        fix = f"set input_size: {h}" if h == w else "resize the data to square images"
        fix += "" if c == in_channels else f" and in_channels: {c}"
        raise NasError(f"{owner} has input_size: {input_size}, in_channels: {in_channels} but the data's images are "
                       f"{h}x{w} with {c} channels: {fix}, or give data of that size")


def check_same_classes(train: ImageSet, test: ImageSet, source: str) -> None:
    """Labels are indices into the sorted class names, so a test split with other classes (one more, one less)
    would score wrong labels or fail after training: refused before it."""
    if train.classes != test.classes:
        extra, missing = sorted(set(test.classes) - set(train.classes)), sorted(set(train.classes) - set(test.classes))
        what = "; ".join(f"{label} {shown(names)}" for label, names in (("test only:", extra), ("train only:", missing))
                         if names)
        raise NasError(f"{source}: the test split's classes differ from the training split's ({what}); "
                       f"give both splits the same class folders")


def _stratified_index(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of `n` items drawn per class in proportion to class sizes."""
    counts = torch.bincount(labels).tolist()
    total = sum(counts)
    quotas = [c * n / total for c in counts]
    take = [int(q) for q in quotas]
    # largest remainder, ties broken by class index, so the allocation is exact and deterministic
    for c in sorted(range(len(counts)), key=lambda c: (-(quotas[c] - take[c]), c))[: n - sum(take)]:
        take[c] += 1
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c, k in enumerate(take):
        members = (labels == c).nonzero().squeeze(1)
        picked.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.cat(picked).sort().values


# ---------------------------------------------------------------------------------------------
# cache


def _cached(cache: Path, key: str, split: str, decode) -> ImageSet:
    """Read `<cache>/<key>-<split>.pt` if present and intact; else decode and write it atomically.

    The cache is data, not code: it is read with weights_only=True (pickled code is refused, never run),
    and a file that fails to load, is not laid out as written, or whose bytes no longer match the digest
    written with them (truncated, bit rot, planted) is decoded again with a one-line note."""
    path = cache / f"v{CACHE_VERSION}-{key[:32]}-{split}.pt"
    if path.exists():
        cached = _read_cache(path)
        if cached is not None:
            return cached
    check_cache_dir(cache)
    s = decode()
    blob = {"images": s.images, "labels": s.labels, "classes": list(s.classes), "sha256": _digest(s)}
    write_atomic(path, lambda handle: torch.save(blob, handle))
    return s


def check_cache_dir(cache: Path) -> None:
    """Refuse a cache folder that cannot be written before the decoding (or download) whose result it would
    hold: otherwise a bad NAS_CACHE is found minutes later, after 50,000 images were decoded for nothing.
    A read-only cache that already holds the split is never checked: it is only read."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=cache).close()
    except OSError as e:
        raise NasError(f"the decoded-data cache folder {str(cache)!r} cannot be written ({e.strerror}): set "
                       f"NAS_CACHE to a folder you can write, e.g. NAS_CACHE=~/.cache/nas") from None


def _read_cache(path: Path) -> ImageSet | None:
    """The cached split, or None (with a note saying why) when the file cannot be trusted."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        s = ImageSet(blob["images"], blob["labels"], tuple(blob["classes"]))
        intact = (s.images.dtype == torch.uint8 and s.images.dim() == 4 and s.labels.dtype == torch.int64
                  and s.labels.shape == s.images.shape[:1] and all(isinstance(c, str) for c in s.classes)
                  and blob["sha256"] == _digest(s))
        why = "its contents do not match the digest written with them"
    except Exception as e:  # torch raises several types for damaged or refused files; a planted blob, others
        intact, why = False, why_unloadable(e)
    if intact:
        return s
    note(f"decoded-data cache {path} is damaged, {why[:300]}; decoding the source again")
    return None


def _digest(s: ImageSet) -> str:
    """sha256 of a split's images, labels and class names: torch.load checks no checksum, so a damaged
    cache would otherwise load as wrong pixels."""
    h = hashlib.sha256()
    for t in (s.images, s.labels):
        h.update(t.contiguous().numpy())
    h.update("\0".join(s.classes).encode())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _directory_key(root: Path, split: str) -> str:
    """Hash of relative paths, sizes and mtimes under root/split: cheap, and changes when files do."""
    top = root / split
    if not top.is_dir():
        raise NasError(f"{root} has no {split}/ folder; the ImageFolder layout is {root}/{split}/<class>/<image>")
    h = hashlib.sha256(str(root.resolve()).encode())
    for p in sorted(top.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# ImageFolder layout, from a directory or a .tar.gz


def _iter_directory(root: Path, split: str) -> Iterator[tuple[str, str, bytes]]:
    """(class, file name, bytes) for every image under root/split/<class>/."""
    for p in sorted((root / split).glob("*/*")):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            yield p.parent.name, p.name, _read_image_file(p)


def _read_image_file(path: Path) -> bytes:
    """The bytes of one image file, checked first: a FIFO would block the read forever and a link to
    /dev/zero would fill memory, so only a regular file (a link to one is fine) of at most MAX_IMAGE_BYTES
    is read."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise NasError(f"{path} is not a regular file (a FIFO, a device, a folder, or a link to one); "
                           f"remove it or replace it with the image itself")
        if info.st_size > MAX_IMAGE_BYTES:
            raise _too_large(str(path), info.st_size)
        with open(path, "rb") as f:
            return _bounded_read(f, str(path))
    except OSError as e:
        raise NasError(f"cannot read {path} ({e.strerror}); check the file and its permissions") from None


def _bounded_read(f: IO[bytes], where: str) -> bytes:
    """At most MAX_IMAGE_BYTES: a file that grows, or an archive member whose size lies, stops there."""
    blob = f.read(MAX_IMAGE_BYTES + 1)
    if len(blob) > MAX_IMAGE_BYTES:
        raise _too_large(where, len(blob))
    return blob


def _too_large(where: str, size: int) -> NasError:
    return NasError(f"{where} is {size:,} bytes, over the {MAX_IMAGE_BYTES // 2**20} MiB limit for one image "
                    f"(training images are a few KB): remove it, or resize the dataset's images first")


def _iter_tar(path: Path, split: str) -> Iterator[tuple[str, str, bytes]]:
    """Images of one split inside an archive (any top folder); other members are never extracted."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if (len(parts) >= 3 and parts[-3] == split
                        and PurePosixPath(member.name).suffix.lower() in IMAGE_SUFFIXES):
                    yield parts[-2], parts[-1], _read_member(tar, member, f"{path}:{member.name}")
    except (tarfile.TarError, OSError, EOFError, KeyError) as e:  # KeyError: a hard link to a missing member
        raise NasError(f"cannot read archive {path}: {e}; check the file is a complete .tar.gz") from None


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> bytes:
    """One image member, its size checked before reading: a 200-byte archive can hold a sparse 30 GB member."""
    if not (member.isfile() or member.islnk()):
        raise NasError(f"{where} is not a regular file in the archive (a FIFO, a device, a folder or a symlink); "
                       f"archive the image itself (tar -h stores what a link points to)")
    if member.size > MAX_IMAGE_BYTES:
        raise _too_large(where, member.size)
    return _bounded_read(tar.extractfile(member), where)


def _decode_folder(items: Iterable[tuple[str, str, bytes]], where: str, cache: Path) -> ImageSet:
    # Pillow, not torchvision.io: the latter's decoders are deprecated since torchvision 0.29
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    records = sorted(items)  # (class, name): ImageFolder's order, independent of archive order
    if not records:
        raise NasError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {where}/<class>/; check the layout")
    classes = tuple(sorted({c for c, _, _ in records}))
    if len(classes) == 1:
        raise NasError(f"{where} has one class ({classes[0]!r}): a classifier needs at least two, and one class "
                       f"scores 100% by construction; add the other classes' folders")
    note(f"decoding {len(records):,} images of {where} once (cached in {cache})")
    index = {c: i for i, c in enumerate(classes)}
    images = []
    for c, name, blob in records:
        try:
            with warnings.catch_warnings():  # Pillow only warns up to 2x its pixel limit: refuse from 1x
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(blob)) as img:
                    array = np.asarray(img.convert("RGB"))  # (H, W, C) uint8
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise NasError(f"{where}/{c}/{name} is a decompression bomb ({e}); remove it: training images are "
                           f"small (e.g. 32x32)") from None
        except (UnidentifiedImageError, OSError) as e:
            raise NasError(f"cannot decode {where}/{c}/{name}: {e}; remove or re-encode the file") from None
        if images and array.shape != images[0].shape:
            raise NasError(f"{where}/{c}/{name} is {array.shape[:2]} pixels but earlier images are "
                           f"{images[0].shape[:2]}; resize the dataset to one size first")
        images.append(array)
    labels = torch.tensor([index[c] for c, _, _ in records], dtype=torch.int64)
    return ImageSet(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), labels, classes)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 in the official python format


def _load_builtin(name: str, split: str, cache: Path) -> ImageSet:
    cls_name, folder, train_files, test_files, label_key, meta_file, names_key = BUILTIN[name]
    root = cache / "torchvision"
    base = root / folder
    files = train_files if split == "train" else test_files
    if not all((base / f).is_file() for f in [*files, meta_file]):
        check_cache_dir(root)
        _download(cls_name, root, base, name)
    return read_cifar_python(base, files, label_key, meta_file, names_key, md5=official_md5(cls_name))


def official_md5(cls_name: str) -> dict[str, str]:
    """md5 of every file of the official python-format archive ("CIFAR10", "CIFAR100"), as torchvision
    records them: the only files `read_cifar_python` unpickles."""
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    return {**dict(cls.train_list), **dict(cls.test_list), cls.meta["filename"]: cls.meta["md5"]}


def _download(cls_name: str, root: Path, base: Path, name: str) -> None:
    import torchvision

    try:
        getattr(torchvision.datasets, cls_name)(root=str(root), train=True, download=True)
    except Exception as e:  # urllib/ssl/socket errors all mean: no copy and no network
        raise NasError(
            f"could not download {name} into {root} ({type(e).__name__}: {e}); this machine may be offline. "
            f"Point --data at a local copy instead: an ImageFolder directory with train/ and test/, or a .tar.gz "
            f"of one (e.g. --data {EXAMPLE}), or put the official python-format files of {name} in {base} "
            "($NAS_CACHE moves the cache folder)"
        ) from None


def read_cifar_python(base: Path, files: list[str], label_key: str, meta_file: str, names_key: str, *,
                      md5: Mapping[str, str]) -> ImageSet:
    """Read the official pickled CIFAR batches. These are pickles, and unpickling runs whatever code a file
    names, so each file is read only when its md5 is the one `md5` gives for its name (`official_md5`)."""
    import numpy as np

    data, labels = [], []
    for f in files:
        batch = _unpickle(base / f, md5)
        data.append(np.asarray(_get(batch, "data"), dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(_get(batch, label_key))
    names = [n.decode() if isinstance(n, bytes) else n for n in _get(_unpickle(base / meta_file, md5), names_key)]
    images = torch.from_numpy(np.concatenate(data))
    return ImageSet(images.contiguous(), torch.tensor(labels, dtype=torch.int64), tuple(names))


def _unpickle(path: Path, md5: Mapping[str, str]) -> dict:
    blob = path.read_bytes()
    found = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    if found != md5.get(path.name):
        raise NasError(f"refusing to unpickle {path}: its md5 {found} is not the official archive's "
                       f"({md5.get(path.name, 'no such file')}), and a pickle can run code; delete {path.parent} "
                       f"and re-run to download the archive again, or pass --data an ImageFolder copy")
    return pickle.loads(blob, encoding="latin1")


def _get(d: dict, key: str):
    """Python-2 pickles have str keys under latin1; files written from Python 3 may have bytes keys."""
    return d[key] if key in d else d[key.encode()]


__all__ = ["MAX_IMAGE_BYTES", "ImageSet", "check_cache_dir", "check_image_shape", "check_same_classes",
           "default_cache_dir", "load_split", "official_md5", "read_cifar_python", "split_validation",
           "stratified_subset"]
