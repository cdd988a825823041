"""Shared fixtures: the real CIFAR-10 copy in ../shared/data, skipped with a reason when absent."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CIFAR_TARBALL = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(scope="session")
def cifar_tarball() -> Path:
    if not CIFAR_TARBALL.exists():
        pytest.skip(f"the shared CIFAR-10 copy is missing at {CIFAR_TARBALL} (see ../shared/data/README.md)")
    return CIFAR_TARBALL


def extract_small_cifar(dest: Path, per_class: dict[str, int]) -> Path:
    """The first images per class and split of the real archive, as an ImageFolder tree."""
    import tarfile

    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(CIFAR_TARBALL, "r:gz") as tar:
        for m in tar:
            parts = Path(m.name).parts
            if not m.isfile() or len(parts) < 4 or parts[-3] not in per_class:
                continue
            key = (parts[-3], parts[-2])
            if counts.get(key, 0) >= per_class[key[0]]:
                continue
            counts[key] = counts.get(key, 0) + 1
            out = dest / key[0] / key[1] / parts[-1]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(m).read())
            if len(counts) == 10 * len(per_class) and all(counts[k] >= per_class[k[0]] for k in counts):
                break
    return dest


@pytest.fixture(scope="session")
def small_cifar(cifar_tarball, tmp_path_factory) -> Path:
    """600 training and 200 test images of the real CIFAR-10 copy: enough for tiny searches."""
    return extract_small_cifar(tmp_path_factory.mktemp("cifar") / "cifar10-small", {"train": 60, "test": 20})


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Decoded-image caches go to a per-session folder, never the user's ~/.cache."""
    monkeypatch.setenv("NAS_CACHE", str(tmp_path_factory.getbasetemp() / "nas-cache"))


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (tests/postgres.py), installed if missing."""
    import postgres  # tests/postgres.py: pytest puts this folder on sys.path

    try:
        server, stop = postgres.start()
    except (RuntimeError, FileNotFoundError) as e:
        pytest.skip(f"no PostgreSQL server for the multi-worker tests: {e}")
    yield server
    stop()


@pytest.fixture
def pg_url(postgres_server) -> str:
    """A fresh, empty database on the session's server, as a URL with a password in it."""
    return postgres_server.url(postgres_server.create_database())


@pytest.fixture
def handlers():
    """stop_on_signals keeps its handler once a signal came (a second one exits): put pytest's back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)
