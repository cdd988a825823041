"""Training checkpoints, RNG state and safetensors weights, written crash-safe (nas.atomic).

Loading uses `torch.load(weights_only=True)` only: a checkpoint is data, and a file that
needs arbitrary unpickling is refused, never executed. Checkpoint directories assume one
writer at a time (one training run per directory).
"""

from __future__ import annotations

import logging
import pickle
import random
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save

from nas.atomic import write_atomic, write_bytes_atomic
from nas.errors import NasError

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2
_CKPT_RE = re.compile(r"^ckpt-(\d{5,})\.pt$")
_TMP_GLOB = ".ckpt-*.tmp"


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


def check_weight_shapes(expected: Mapping[str, tuple[int, ...]], path: Path) -> None:
    """Compare the file's tensor names and shapes with `expected` (a model's, e.g. built on the meta device)
    reading only the file's header: an arch.json that says 200,000 channels beside small weights is refused
    before a model of that size is allocated."""
    path = Path(path)
    try:
        with safe_open(path, "pt") as f:
            found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except (OSError, SafetensorError) as error:
        raise NasError(f"weights file {path} is missing or unreadable ({error}); pass the model.safetensors a run "
                       f"wrote") from None
    wrong = next((n for n in [*expected, *found] if found.get(n) != expected.get(n)), None)
    if wrong is not None:
        raise NasError(f"weights in {path} do not fit the architecture: {wrong} is {found.get(wrong, 'absent')} in "
                       f"the file but {expected.get(wrong, 'absent')} in the architecture; keep the arch.json written "
                       f"beside these weights (or retrain the run)")


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
