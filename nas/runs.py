"""Finished runs on disk: where they live, what files a run folder holds, and reading them back (metrics, the
trained model, its normalisation). nas.retrain writes run folders; the report, export and the API read them
through here, so nothing that only reads results imports the retraining code.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.arch import Arch
from nas.artifacts import folder_name, inside, study_dir
from nas.errors import NasError

if TYPE_CHECKING:
    from torch import nn

    from nas.engine.augment import ChannelStats

METRICS, WEIGHTS, ARCH_FILE, RECIPE_FILE, CURVES = "metrics.json", "model.safetensors", "arch.json", "recipe.json", "curves.html"
CHECKPOINTS = "checkpoints"
PLOTLY_JS = "plotly.min.js"  # one copy per folder of runs, shared by their curves.html


# ------------------------------------------------------------------------------------- loading


def read_metrics(directory: Path) -> dict[str, Any]:
    path = Path(directory) / METRICS
    try:
        return json.loads(path.read_text())
    except OSError:
        raise NasError(f"{path} does not exist: {directory} is not a finished retrain run "
                       f"(re-run the same `nas retrain` command to finish it)") from None
    except json.JSONDecodeError as e:
        raise NasError(f"{path} is not valid JSON ({e}); delete the run directory and retrain") from None


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

    norm = read_metrics(directory)["normalization"]
    return ChannelStats(tuple(norm["mean"]), tuple(norm["std"]))


# ---------------------------------------------------------------------------- results for reports


def finished_runs(root: Path) -> list[dict[str, Any]]:
    """metrics.json of every finished run under `root` (unfinished ones are skipped)."""
    root = Path(root)
    runs = []
    for path in sorted(root.glob(f"*/{METRICS}")) if root.is_dir() else []:
        try:
            runs.append({**json.loads(path.read_text()), "dir": str(path.parent)})
        except (OSError, json.JSONDecodeError):
            continue  # a torn or foreign file: that run simply does not count
    return runs


def summarize(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (architecture, protocol): test accuracy mean and std over its seeds."""
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


def retrain_root(results_dir: Path, study: str) -> Path:
    return study_dir(results_dir, study) / "retrain"


def baseline_root(results_dir: Path, name: str) -> Path:
    """RESULTS/baselines/NAME, NAME made a safe folder name: it comes from an architecture file, where
    "/tmp/x" or "../../x" would otherwise be a folder outside the results directory."""
    return inside(results_dir, Path(results_dir) / "baselines" / folder_name(name))
