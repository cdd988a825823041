"""Retrain chosen architectures on the full schedule, score them once on the test split, keep the files.

Why a separate step: the search ranks candidates with a cheap proxy (short schedule, subset,
maybe reduced width); the number a person reports comes from retraining the real network with
the full recipe on the whole training split and evaluating once on the test split. The test
split is loaded here and nowhere in the search, so nothing is ever selected on test data.

One run = one architecture x one recipe x one seed, in its own directory:

    RESULTS/<study>/retrain/<arch_id>-<protocol>-seed<k>/     (candidates from a study)
    RESULTS/baselines/<name>/<arch_id>-<protocol>-seed<k>/    (--arch files, e.g. examples/)
        checkpoints/ckpt-*.pt   engine state after each epoch (deleted once the run finished)
        arch.json, recipe.json  everything needed to rebuild the run
        model.safetensors       final weights (plain tensors: loading never unpickles)
        metrics.json            test accuracy, per-class accuracy, curves, wall time, versions
        curves.html             training curves (plotly, offline)

`<protocol>` hashes the recipe without its seed, the validation carve-out and the data
source, so the seeds of one protocol sit side by side and are averaged in reports. A run
whose metrics.json exists is finished and is not trained again; any other run resumes from
its last complete epoch (re-running the same command is the resume).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas import record
from nas.arch import Arch, short_hash
from nas.arch.archfile import read_arch_file
from nas.arch.bounds import check_buildable
from nas.atomic import NoSpace, write_json_atomic, write_text_atomic
from nas.engine.recipe import Recipe
from nas.errors import NasError
from nas.record import Record
from nas.runs import (
    ARCH_FILE,
    CHECKPOINTS,
    CURVES,
    METRICS,
    PLOTLY_JS,
    RECIPE_FILE,
    WEIGHTS,
    read_metrics,
)

if TYPE_CHECKING:  # torch loads with training: reading finished runs (leaderboards, reports) needs none
    import optuna
    import torch
    from torch import nn

    from nas.engine.data import ImageSet
    from nas.engine.train import TrainResult

RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))
# Schedule length and sampling belong to the search's fidelity, not to the candidate: never carried over.
FIDELITY_KEYS = ("epochs", "train_subset", "evals_per_epoch", "seed")


# ---------------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    """One architecture to retrain and the training settings that belong to it."""

    name: str  # "trial-12" or a baseline's name
    arch: Arch  # full width: the network the search scored, not its proxy
    overrides: tuple[tuple[str, Any], ...] = ()  # Recipe fields the space sampled (or the file fixed)
    trial: int | None = None
    search_val_acc: float | None = None
    source: str = ""  # where it came from, for metrics.json


def recipe_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """The sampled values that are training hyperparameters: trial.params keys that are Recipe fields,
    minus the fidelity keys (the full schedule replaces the short one)."""
    return {k: v for k, v in params.items() if k in RECIPE_FIELDS and k not in FIDELITY_KEYS}


def trial_candidate(r: Record) -> Candidate:
    """A Candidate from a trial of a `nas search` study; it carries the score that ranked it."""
    if r.arch is None:
        raise NasError(f"trial {r.number} stores no architecture (outcome {r.outcome!r}): "
                       f"pick a trial with outcome 'complete' (see `nas leaderboard`)")
    return Candidate(name=f"trial-{r.number}", arch=Arch.from_dict(r.arch),
                     overrides=tuple(sorted(recipe_overrides(r.sampled).items())), trial=r.number,
                     search_val_acc=r.score, source=f"trial {r.number}")


def select_trials(study: optuna.Study, which: str | int, top: int | None = None) -> list[Record]:
    """Trials to retrain: 'best', a trial number, or the `top` best finished in-budget trials, in the
    leaderboard's order (nas.record.rank_key: the final rung's score first)."""
    rs = record.records(study)
    if not rs:
        raise NasError(f"study {study.study_name!r} has no trials yet: run `nas search` first")
    if top is not None or which == "best":
        k = 1 if top is None else top
        if k < 1:
            raise NasError(f"--top={k} must be >= 1")
        board = record.ranked(rs)[:k]
        if not board:
            raise NasError(f"study {study.study_name!r} has no trial that completed within the budget "
                           f"({len(rs)} trials, none finished in budget): run `nas search` longer or raise --budget")
        return board
    number = _trial_number(which)
    by_number = {r.number: r for r in rs}
    if number not in by_number:
        raise NasError(f"trial {number} is not in study {study.study_name!r}: trials are numbered "
                       f"0..{max(by_number)}; see `nas leaderboard`")
    return [by_number[number]]


def _trial_number(which: str | int) -> int:
    try:
        number = int(which)
    except (TypeError, ValueError):
        raise NasError(f"TARGET={which!r} must be 'best' or a trial number such as 12") from None
    if number < 0:
        raise NasError(f"trial number {number} must be >= 0")
    return number


def file_candidate(path: Path) -> Candidate:
    """A Candidate from an architecture file (nas.arch.archfile)."""
    f = read_arch_file(path)
    return Candidate(name=f.name, arch=f.arch, overrides=f.recipe, source=f.path)


# --------------------------------------------------------------------------------------- recipe


def resolve_recipe(candidate: Candidate, flags: Mapping[str, Any], base: Recipe | None = None) -> Recipe:
    """The protocol's recipe (`base`, default: reference) <- the candidate's sampled (or file) settings
    <- command-line flags."""
    return (base or Recipe()).updated({**dict(candidate.overrides), **dict(flags), "evals_per_epoch": 1})


def protocol_key(recipe: Recipe, val_size: int, data: str) -> str:
    """Hash of everything that makes two runs comparable except the seed (which varies within a protocol)."""
    d = {**recipe.identity(), "seed": None, "val_size": val_size, "data": Path(str(data)).name}
    return short_hash(d, 8)


def run_dir(root: Path, arch: Arch, recipe: Recipe, val_size: int, data: str) -> Path:
    return Path(root) / f"{arch.id}-{protocol_key(recipe, val_size, data)}-seed{recipe.seed}"


# ------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class RetrainData:
    """The training split (minus the optional validation carve-out) and the test split."""

    train: ImageSet
    val: ImageSet | None
    test: ImageSet
    source: str
    val_size: int


def load_retrain_data(source: str, val_size: int = 0) -> RetrainData:
    """Whole training split by default (the search's validation images are training data again);
    `val_size` > 0 carves out a stratified validation set, only for curves: nothing selects on it."""
    from nas.engine.data import check_same_classes, load_split, split_validation

    train_set, test_set = load_split(source, "train"), load_split(source, "test")
    check_same_classes(train_set, test_set, source)
    val_set = None
    if val_size:
        train_set, val_set = split_validation(train_set, val_size, seed=0)
    return RetrainData(train_set, val_set, test_set, str(source), val_size)


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else x


@dataclass(frozen=True)
class Run:
    """One planned run: a candidate, its full recipe (seed included), and its directory."""

    candidate: Candidate
    recipe: Recipe
    directory: Path

    @property
    def state(self) -> str:
        """'finished', 'resuming after epoch K' or 'starting', as a re-run of the same command finds it.
        K is the epoch of the newest checkpoint that loads, the one training resumes from (a corrupt newer
        file is skipped there too), so this loads it: a file name alone would announce the wrong epoch."""
        from nas.engine.checkpoint import latest_checkpoint

        if (self.directory / METRICS).is_file():
            return "finished"
        latest = latest_checkpoint(self.directory / CHECKPOINTS, warn=False)  # training warns when it loads
        return f"resuming after epoch {latest[0]}" if latest else "starting"


def plan_runs(candidates: Sequence[Candidate], roots: Sequence[Path], flags: Mapping[str, Any], seeds: int,
              val_size: int, source: str, base: Recipe | None = None) -> list[Run]:
    """Every (candidate, seed) run, each in its own directory under its root (seeds 0..seeds-1)."""
    if seeds < 1:
        raise NasError(f"--seeds={seeds} must be >= 1")
    if "seed" in flags:
        raise NasError("the seed is set by --seeds N (seeds 0..N-1), not --set seed=...")
    for c in candidates:
        check_buildable(c.arch, c.name)  # before the data is decoded
    runs = []
    for c, root in zip(candidates, roots):
        for seed in range(seeds):
            recipe = resolve_recipe(c, {**flags, "seed": seed}, base)
            runs.append(Run(c, recipe, run_dir(root, c.arch, recipe, val_size, source)))
    return runs


def retrain_one(candidate: Candidate, recipe: Recipe, data: RetrainData, device: torch.device, directory: Path,
                *, force: bool = False, progress: bool = False) -> dict[str, Any]:
    """Train one run to the end (resuming if it was interrupted), evaluate once on test, write its files.

    Returns metrics.json's content. A finished run (metrics.json present) is read, not retrained,
    unless `force`, which deletes the run directory first. A run that fails (not one that is
    interrupted, which resumes) leaves no directory behind when this call created it.
    """
    from nas.arch.model import build_model
    from nas.engine.data import check_image_shape
    from nas.engine.train import train

    directory = Path(directory)
    n_classes = len(data.train.classes)
    if candidate.arch.num_classes != n_classes:
        raise NasError(f"{candidate.name} has num_classes={candidate.arch.num_classes} but {data.source} has "
                       f"{n_classes} classes: retrain it on the data it was designed for, or change num_classes")
    check_image_shape(data.train, candidate.arch.input_size, candidate.arch.in_channels, candidate.name)
    if force and directory.exists():
        shutil.rmtree(directory)
    if (directory / METRICS).is_file():
        return read_metrics(directory)
    fresh = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(candidate.arch.to_dict(), directory / ARCH_FILE)
        write_json_atomic(recipe.to_dict(), directory / RECIPE_FILE)
        model = build_model(candidate.arch, recipe.init, recipe.seed)  # the initial weights are part of what the seed fixes
        result = train(model, recipe, data.train, data.val, device, checkpoint_dir=directory / CHECKPOINTS,
                       progress=progress)
        if result.status != "ok":
            raise NasError(f"{candidate.name}: training diverged (loss became NaN/inf) with lr={recipe.lr}; "
                           f"lower it (--lr) or add warm-up (--set warmup_epochs=1)")
        return _finish(candidate, recipe, data, device, directory, model, result)
    except (KeyboardInterrupt, NoSpace):
        raise  # the checkpoints stay: re-running resumes (once space is freed)
    except BaseException:
        if fresh:
            shutil.rmtree(directory, ignore_errors=True)
        raise


def _finish(candidate: Candidate, recipe: Recipe, data: RetrainData, device: torch.device, directory: Path,
            model: nn.Module, result: TrainResult) -> dict[str, Any]:
    """Score once on test, write weights, curves and metrics.json (last: its presence means finished)."""
    import torch

    from nas.arch.counting import count_macs, count_params
    from nas.artifacts import versions
    from nas.engine.augment import channel_stats
    from nas.engine.checkpoint import save_weights
    from nas.engine.train import evaluate

    stats = channel_stats(data.train)  # the statistics training normalised with
    test = evaluate(model, data.test, device, tta=recipe.tta_level, stats=stats)
    save_weights(model, directory / WEIGHTS)
    metrics = {
        "name": candidate.name, "source": candidate.source, "trial": candidate.trial,
        "search_val_acc": candidate.search_val_acc, "arch_id": candidate.arch.id, "arch": candidate.arch.describe(),
        "params": count_params(candidate.arch), "macs": count_macs(candidate.arch), "seed": recipe.seed,
        "protocol": protocol_key(recipe, data.val_size, data.source),
        "test_acc": test.acc, "test_loss": test.loss,
        "per_class_acc": {c: _finite(a) for c, a in zip(data.test.classes, test.per_class)},
        "classes": list(data.test.classes), "confusion": test.confusion,  # [true][predicted] test images
        "final_val_acc": _finite(result.val_acc),
        "curves": [{"epoch": p.epoch, "train_loss": _finite(p.train_loss), "val_loss": _finite(p.val_loss),
                    "val_acc": _finite(p.val_acc), "seconds": p.seconds} for p in result.history],
        "train_images": recipe.train_subset or len(data.train),
        "val_images": len(data.val) if data.val is not None else 0, "test_images": len(data.test),
        "data": data.source, "normalization": {"mean": list(stats.mean), "std": list(stats.std)},
        "wall_seconds": result.seconds, "images_per_s": result.images_per_s, "precision": result.precision,
        "device": str(device),
        "latency": _latency(model, candidate.arch, device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "versions": versions(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_curves(metrics, directory / CURVES)
    write_json_atomic(metrics, directory / METRICS)  # last: its presence means "finished"
    shutil.rmtree(directory / CHECKPOINTS, ignore_errors=True)  # the weights above supersede them
    return metrics


def _latency(model: nn.Module, arch: Arch, device: torch.device) -> list[dict[str, float]]:
    """Inference latency at batch 1 and 64 on the device that trained the run (nas.engine.latency)."""
    from nas.engine.latency import measure_latency

    return [{"batch": r.batch, "median_ms": r.median_ms, "p10_ms": r.p10_ms, "p90_ms": r.p90_ms}
            for r in (measure_latency(model, device, b, arch.input_size, arch.in_channels, warmup=3, runs=runs)
                      for b, runs in ((1, 30), (64, 5)))]


def write_curves(metrics: Mapping[str, Any], path: Path) -> Path:
    """Training loss (and validation accuracy, with --val-size) per epoch, the test accuracy as a line.
    Every run's page loads one shared plotly.min.js beside the run folders, not 4.8 MB of its own."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs
    from plotly.subplots import make_subplots

    curves = metrics["curves"]
    epochs = [c["epoch"] for c in curves]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(name="train loss", x=epochs, y=[c["train_loss"] for c in curves], mode="lines+markers"),
                  secondary_y=False)
    if any(c["val_acc"] is not None for c in curves):
        fig.add_trace(go.Scatter(name="val acc", x=epochs, y=[c["val_acc"] for c in curves], mode="lines+markers"),
                      secondary_y=True)
    fig.add_trace(go.Scatter(name=f"test acc {metrics['test_acc']:.2%}", x=[epochs[0] if epochs else 0, epochs[-1] if epochs else 1],
                             y=[metrics["test_acc"]] * 2, mode="lines", line={"dash": "dash"}), secondary_y=True)
    fig.update_layout(title=f"{metrics['name']} ({metrics['arch']}), seed {metrics['seed']}",
                      xaxis_title="epoch", height=480)
    fig.update_yaxes(title_text="train loss", secondary_y=False)
    fig.update_yaxes(title_text="accuracy", tickformat=".1%", secondary_y=True)
    shared = Path(path).parent.parent / PLOTLY_JS
    if not shared.is_file():
        write_text_atomic(get_plotlyjs(), shared)
    return write_text_atomic(fig.to_html(full_html=True, include_plotlyjs=f"../{PLOTLY_JS}", div_id="curves"), path)
