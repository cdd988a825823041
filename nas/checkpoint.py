"""Crash-safe files: training checkpoints, RNG state, safetensors weights and JSON.

Every write goes to a temporary file in the target's own directory, is flushed and
fsynced, then renamed over the target with `os.replace` (atomic on POSIX), and the
directory is fsynced so the rename itself survives a power cut. A reader therefore sees
either the old complete file or the new complete file, never half of one.

Loading uses `torch.load(weights_only=True)` only: a checkpoint is data, and a file that
needs arbitrary unpickling is refused, never executed. Checkpoint directories assume one
writer at a time (one training run per directory).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pickle
import random
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save

from nas.errors import NasError

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2
_CKPT_RE = re.compile(r"^ckpt-(\d{5,})\.pt$")
_TMP_GLOB = ".ckpt-*.tmp"


# ---------------------------------------------------------------------------- atomic files


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


# ----------------------------------------------------------------------------- checkpoints


def _checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every checkpoint file in `directory`, oldest epoch first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _CKPT_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(state: dict, directory: Path, epoch: int) -> Path:
    """Atomically write `ckpt-{epoch:05d}.pt`, then prune to the last KEEP_CHECKPOINTS.

    Older files are deleted only after the new one is durable, so a kill at any moment
    leaves at least one complete checkpoint. Checkpoints of later epochs than `epoch`
    belong to an abandoned run (we resumed from an earlier one) and are deleted too, so
    `load_latest_checkpoint` returns what was just written.
    """
    if epoch < 0:
        raise NasError(f"checkpoint epoch must be >= 0, but got epoch={epoch}")
    directory = Path(directory)
    path = write_atomic(directory / f"ckpt-{epoch:05d}.pt", lambda handle: torch.save(state, handle))
    older = [p for e, p in _checkpoints(directory) if e < epoch]
    keep = {path, *older[len(older) - (KEEP_CHECKPOINTS - 1) :]}
    for _, stale in _checkpoints(directory):
        if stale not in keep:
            stale.unlink(missing_ok=True)
    for leftover in directory.glob(_TMP_GLOB):  # temp files of writers killed mid-save
        leftover.unlink(missing_ok=True)
    return path


def why_unloadable(error: Exception) -> str:
    """One line for the log. Torch's own weights-only message suggests weights_only=False,
    which is exactly what must never be done with an untrusted file, so keep only the
    line naming the forbidden global."""
    if isinstance(error, pickle.UnpicklingError):
        detail = next((line for line in str(error).splitlines() if "GLOBAL" in line), "")
        return f"refused: it holds objects weights-only loading forbids, possibly malicious code. {detail}"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"truncated or corrupt ({first})"


def load_latest_checkpoint(directory: Path) -> dict | None:
    """The newest checkpoint that loads; None when `directory` holds no checkpoint at all."""
    latest = latest_checkpoint(directory)
    return None if latest is None else latest[1]


def latest_checkpoint(directory: Path, warn: bool = True) -> tuple[int, dict] | None:
    """(epoch, state) of the newest checkpoint that loads; None when `directory` holds no checkpoint.

    The epoch is the file's, of the file that loaded: what a run announces must be what it resumes
    from, not the newest file name. Unloadable files (truncated by a crash, corrupt, or carrying
    pickled code) are skipped with a warning naming them (`warn`: a look before a load that will warn).
    If every file is unloadable, resuming silently from scratch would hide the problem, so NasError
    names the files instead.
    """
    candidates = _checkpoints(Path(directory))
    skipped = log.warning if warn else log.debug
    if not candidates:
        return None
    for epoch, path in reversed(candidates):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for damaged files
            skipped("skipping checkpoint %s: %s", path, why_unloadable(error))
            continue
        if not isinstance(state, dict):
            skipped("skipping checkpoint %s: holds %s, not a dict", path, type(state).__name__)
            continue
        return epoch, state
    names = ", ".join(str(p) for _, p in candidates)
    raise NasError(
        f"no loadable checkpoint in {directory}: {names} are all corrupt or refused; "
        "delete them (or the directory) to start this run from scratch"
    )


# ------------------------------------------------------------------------------------- RNG


def capture_rng() -> dict:
    """Python, NumPy, torch CPU and (if present) every CUDA generator's state.

    NumPy's state is stored as a tensor and plain numbers because `np.random.get_state()`
    returns an ndarray, which `torch.load(weights_only=True)` refuses.
    """
    version, mt_state, gauss_next = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(mt_state), "gauss_next": gauss_next},
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    # CUDA branch is written to the documented API but not exercised here (no GPU on CI).
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Inverse of `capture_rng`, so a resumed run draws the same numbers as an unbroken one."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    # CUDA branch is written to the documented API but not exercised here (no GPU on CI).
    cuda = state.get("cuda")
    if cuda is None:
        return
    if not torch.cuda.is_available() or torch.cuda.device_count() != len(cuda):
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise NasError(
            f"checkpoint holds RNG state for {len(cuda)} CUDA device(s) but {found} are visible; "
            "resume on a machine with the same GPUs (or set CUDA_VISIBLE_DEVICES to match)"
        )
    torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------------------------- weights


def save_weights(model: torch.nn.Module, path: Path) -> Path:
    """Write the model's state_dict as safetensors (plain tensors, no code path), atomically."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    return write_bytes_atomic(save(tensors), Path(path))


def load_weights(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load safetensors weights into `model` in place; names and shapes must match exactly."""
    path = Path(path)
    if not path.is_file():
        raise NasError(f"weights file {path} does not exist; pass the model.safetensors a run wrote")
    try:
        load_model(model, path, strict=True, device="cpu")
    except (RuntimeError, OSError, SafetensorError) as error:
        raise NasError(
            f"weights in {path} are unreadable or do not fit this model ({error}); "
            "build the model from the arch.json saved beside the weights"
        ) from error
    return model
