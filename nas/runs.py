"""Finished runs on disk: where they live, what files a run folder holds, and reading them back (metrics, the
trained model, its normalisation). nas.retrain writes run folders; the report, export and the API read them
through here, so nothing that only reads results imports the retraining code.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.arch import Arch
from nas.artifacts import folder_name, inside, study_dir
from nas.errors import NasError, label, note, shown
from nas.yamlfile import loads_json

if TYPE_CHECKING:
    from torch import nn

    from nas.engine.augment import ChannelStats

METRICS, WEIGHTS, ARCH_FILE, RECIPE_FILE, CURVES = "metrics.json", "model.safetensors", "arch.json", "recipe.json", "curves.html"
CHECKPOINTS = "checkpoints"
PLOTLY_JS = "plotly.min.js"  # one copy per folder of runs, shared by their curves.html


# ------------------------------------------------------------------------------------- loading


def read_metrics(directory: Path) -> dict[str, Any]:
    """A finished run's metrics.json, checked: a file of the wrong shape is one line naming it, not a
    traceback in whatever reads it (a summary, a report, an export)."""
    path = Path(directory) / METRICS
    try:
        metrics = loads_json(path.read_text())
    except OSError:
        raise NasError(f"{path} does not exist: {directory} is not a finished retrain run "
                       f"(re-run the same `nas retrain` command to finish it)") from None
    except ValueError as e:  # malformed, a key written twice, or not UTF-8
        raise NasError(f"{path} is not valid JSON ({label(str(e), 200)}); delete the run directory and retrain") from None
    problem = run_problem(metrics)
    if problem is not None:
        raise NasError(f"{path} is not a run's metrics: {problem}; delete {directory} and retrain it")
    return metrics


def run_problem(metrics: Any) -> str | None:
    """Why `metrics` (a metrics.json's content) cannot be summarised, plotted or exported, or None: every
    field a reader indexes, with the type it needs (optional ones may be absent or null)."""
    if not isinstance(metrics, dict):
        return f"it holds {type(metrics).__name__}, not a mapping of a run's metrics"
    for key, (ok, what) in RUN_FIELDS.items():
        if not ok(metrics.get(key)):
            return f"{key} is {'missing' if key not in metrics else shown(metrics[key])}, not {what}"
    return None


def _text(v: Any) -> bool:
    return isinstance(v, str)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _maybe(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or ok(v)


def _list_of(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(ok(x) for x in v)


def _record(**fields: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, dict) and all(ok(v.get(k)) for k, ok in fields.items())


RUN_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{k: (_text, "text") for k in ("name", "arch_id", "protocol", "arch")},
    "test_acc": (lambda v: _number(v) and 0 <= v <= 1, "a share from 0 to 1"),
    **{k: (_int, "a whole number") for k in ("params", "macs", "seed")},
    "trial": (_maybe(_int), "a trial number or null"),
    "search_val_acc": (_maybe(_number), "a number or null"),
    "data": (_maybe(_text), "a data source or null"),
    "curves": (_maybe(_list_of(_record(epoch=_number, train_loss=_maybe(_number), val_acc=_maybe(_number)))),
               "a list of {epoch, train_loss, val_acc}"),
    "latency": (_maybe(_list_of(_record(batch=_int, median_ms=_number, p10_ms=_number, p90_ms=_number))),
                "a list of {batch, median_ms, p10_ms, p90_ms}"),
    "classes": (_maybe(_list_of(_text)), "a list of class names"),
    "confusion": (_maybe(_list_of(_list_of(_int))), "a matrix of image counts"),
    "normalization": (_maybe(_record(mean=_list_of(_number), std=_list_of(_number))), "{mean: [...], std: [...]}"),
}


def load_model(directory: str | Path) -> nn.Module:
    """The trained model of a finished run, in eval mode: rebuilt from arch.json, weights from safetensors.
    The size and the weights' shapes are checked first (a model on the meta device allocates nothing), so
    an arch.json that does not match its weights is one line, not gigabytes allocated and then refused."""
    import torch

    from nas.arch.model import build_model
    from nas.engine.checkpoint import check_weight_shapes, load_weights

    directory = Path(directory)
    try:
        arch = Arch.from_json((directory / ARCH_FILE).read_text())
    except OSError:
        raise NasError(f"{directory / ARCH_FILE} does not exist: pass a run directory written by `nas retrain`") from None
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in build_model(arch).state_dict().items()}
    check_weight_shapes(expected, directory / WEIGHTS)
    model = build_model(arch)
    load_weights(model, directory / WEIGHTS)
    return model.eval()


def load_stats(directory: str | Path) -> ChannelStats:
    """The normalisation the run trained with; pass it to `nas.engine.train.evaluate(..., stats=)`."""
    from nas.engine.augment import ChannelStats

    norm = read_metrics(directory).get("normalization")
    if norm is None:
        raise NasError(f"{Path(directory) / METRICS} records no normalization (a run from an older nas): "
                       f"retrain it (`nas retrain --force`) to export or evaluate it")
    return ChannelStats(tuple(norm["mean"]), tuple(norm["std"]))


# ---------------------------------------------------------------------------- results for reports


def finished_runs(root: Path) -> list[dict[str, Any]]:
    """metrics.json of every finished run under `root`; unfinished runs are not listed, and a run whose file
    is torn or of the wrong shape is skipped with one line naming it, so one bad file leaves the study readable."""
    root = Path(root)
    runs = []
    for path in sorted(root.glob(f"*/{METRICS}")) if root.is_dir() else []:
        try:
            runs.append({**read_metrics(path.parent), "dir": str(path.parent)})
        except NasError as e:
            note(f"skipped a retrain run: {e}")
    return runs


def summarize(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (architecture, protocol): test accuracy mean and std over its seeds. Entries of the wrong
    shape (see run_problem) are skipped with one line each."""
    runs = [r for r in runs if _usable(r)]
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["arch_id"], r["protocol"]), []).append(r)
    names = [g[0]["name"] for g in groups.values()]
    entries = []
    for (arch_id, protocol), rs in groups.items():
        accs = [r["test_acc"] for r in rs]
        name = rs[0]["name"] if names.count(rs[0]["name"]) == 1 else f"{rs[0]['name']} ({protocol})"
        entries.append({
            "name": name, "params": rs[0]["params"], "macs": rs[0]["macs"], "arch_id": arch_id, "protocol": protocol,
            "trial": rs[0].get("trial"), "val_acc": rs[0].get("search_val_acc"),
            "test_acc": statistics.fmean(accs), "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "seeds": sorted(r["seed"] for r in rs), "arch": rs[0]["arch"],
        })
    return sorted(entries, key=lambda e: (-e["test_acc"], e["params"]))


def _usable(run: Any) -> bool:
    problem = run_problem(run)
    if problem is not None:
        where = run.get("dir") if isinstance(run, dict) else None
        note(f"skipped a retrain run ({where or 'no folder'}): {problem}")
    return problem is None


def retrain_root(results_dir: Path, study: str) -> Path:
    return study_dir(results_dir, study) / "retrain"


def baseline_root(results_dir: Path, name: str) -> Path:
    """RESULTS/baselines/NAME, NAME made a safe folder name: it comes from an architecture file, where
    "/tmp/x" or "../../x" would otherwise be a folder outside the results directory."""
    return inside(results_dir, Path(results_dir) / "baselines" / folder_name(name))
