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

from nas.errors import NasError


def default_space() -> Path:
    """The default search space (`search_spaces/default.yaml`)."""
    return _folder("search_spaces") / "default.yaml"


def examples_dir() -> Path:
    """The folder of the example architecture files (`examples/*.json`)."""
    return _folder("examples")


def example_file(given: str | Path) -> Path:
    """An architecture file as a user names it: a path that exists, else a bundled example by name (`resnet10`,
    `resnet10.json`, `examples/resnet10.json`), since an installed package has no examples/ in the working folder."""
    return _resolve(given, "examples", "architecture file", ".json")


def space_file(given: str | Path) -> Path:
    """A space file as a user names it: a path that exists, else a bundled space by name (`tiny`,
    `search_spaces/tiny.yaml`)."""
    return _resolve(given, "search_spaces", "space file", ".yaml")


def _resolve(given: str | Path, folder: str, what: str, suffix: str) -> Path:
    path = Path(given)
    if path.exists() or path.is_symlink():  # a path that is there is read as given; its reader names its faults
        return path
    if len(path.parts) == 1 or path.parent.as_posix() == folder:
        bundled = _folder(folder) / (path.name if path.suffix else path.name + suffix)
        if bundled.is_file():
            return bundled
    names = ", ".join(sorted(p.stem for p in _folder(folder).glob(f"*{suffix}")))
    raise NasError(f"cannot read {what} {str(given)!r}: no such file, nor a bundled one of that name; pass a "
                   f"file's path or a bundled name: {names}")


def _folder(name: str) -> Path:
    # files() is a real directory for an ordinary or editable install; in a clone, resolve() names the
    # top-level folder the link points to, which is what users see in messages
    return Path(str(files("nas") / name)).resolve()
