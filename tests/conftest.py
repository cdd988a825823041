"""Shared fixtures: the real CIFAR-10 copy in ../shared/data, skipped with a reason when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CIFAR_TARBALL = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(scope="session")
def cifar_tarball() -> Path:
    if not CIFAR_TARBALL.exists():
        pytest.skip(f"the shared CIFAR-10 copy is missing at {CIFAR_TARBALL} (see ../shared/data/README.md)")
    return CIFAR_TARBALL
