"""Crash-safe files and disk faults: every results file, checkpoint and cache is written through here.

Every write goes to a temporary file in the target's own directory, is flushed and fsynced, then
renamed over the target with `os.replace` (atomic on POSIX), and the directory is fsynced so the
rename itself survives a power cut. A reader therefore sees either the old complete file or the new
complete file, never half of one. A full or read-only disk is one NasError line naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from nas.errors import NasError


def _fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable (POSIX only; Windows has no dir fds)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NoSpace(NasError):
    """The disk (or quota) is full. Writes are atomic, so nothing half-written is left and the same
    command resumes once space is freed: callers keep their progress (checkpoints) as after Ctrl+C."""


def causes(error: BaseException | None) -> Iterator[BaseException]:
    """`error` and every exception it was raised from or while handling: the fault that matters hides
    in chains (torch wraps ENOSPC in a RuntimeError, Optuna wraps SQLAlchemy's errors in its own)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def no_space(path: Any) -> NoSpace:
    return NoSpace(f"no space left on device writing {path}: free space and re-run the same command to resume")


def write_fault(error: BaseException, path: Path) -> NasError | None:
    """The one-line error for a write to `path` that failed because of the disk, not the program:
    full (NoSpace) or read-only / not permitted; None for anything else."""
    for e in causes(error):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return no_space(path)
        if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return NasError(f"cannot write {path} ({e.strerror}): make {Path(path).parent} writable, or write "
                            f"elsewhere (--results-dir, $NAS_CACHE)")
    return None


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Run `write` on a temp file beside `path`, fsync it, and rename it over `path`.

    The temp file is created with mode 0o666 less the umask, as open() would (mkstemp's 0o600
    left results that only their owner could read); O_EXCL keeps the random name exclusive.
    A full or read-only disk is a one-line NasError naming `path` (the temp file is removed).
    """
    path = Path(path)
    tmp_name = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        with contextlib.suppress(OSError):  # on a read-only disk even unlinking a missing file fails
            Path(tmp_name).unlink(missing_ok=True)
        fault = write_fault(error, path) if isinstance(error, Exception) else None
        if fault is not None:
            raise fault from None
        raise
    _fsync_directory(path.parent)
    return path


def write_bytes_atomic(data: bytes, path: Path) -> Path:
    """Write `data` to `path` so that readers see the old or the new file, never a torn one."""
    return write_atomic(path, lambda handle: handle.write(data))


def write_text_atomic(text: str, path: Path) -> Path:
    """UTF-8 text variant of `write_bytes_atomic` (reports, CSVs)."""
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_json_atomic(obj: Any, path: Path) -> Path:
    """Write `obj` as indented JSON atomically; results files are read while searches run."""
    return write_text_atomic(json.dumps(obj, indent=2) + "\n", path)
