"""The data files that ship inside the package: the default search spaces and the example architectures.

One copy of each: the repository's top-level `search_spaces/` and `examples/` are the files users read
and copy, and `nas/search_spaces` and `nas/examples` are relative symlinks to them. A build follows
the links, so a wheel (`pip install .`) carries real files inside the package, and an editable
install reads the clone's own files. Read them through these functions, never through a path relative
to the repository: an installed package has no repository around it.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def default_space() -> Path:
    """The default search space (`search_spaces/default.yaml`)."""
    return _folder("search_spaces") / "default.yaml"


def examples_dir() -> Path:
    """The folder of the example architecture files (`examples/*.json`)."""
    return _folder("examples")


def _folder(name: str) -> Path:
    # files() is a real directory for an ordinary or editable install; in a clone, resolve() names the
    # top-level folder the link points to, which is what users see in messages
    return Path(str(files("nas") / name)).resolve()
