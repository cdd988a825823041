"""The final rung: the best of each depth and the best seed design, trained longer, decide the winner.

Per depth, because the short schedule ranks networks of one depth well and across depths badly (it
favours shallow ones); the seed design, so every search meets its baseline. Same proxy, recipe and
initial weights as the trial, CONFIRM_LONGER_BY times the training; or, with `--final-rung fast`, the
real network at full width with the fast protocol (the default on CUDA: nas.search.config.default_rung).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import optuna
import torch

from nas import record, stopping
from nas.arch import Arch
from nas.arch.model import build_model
from nas.engine.recipe import Recipe, protocol
from nas.engine.train import train
from nas.record import Record
from nas.search.config import CONFIRM_LONGER_BY, SearchConfig
from nas.search.objective import Builder, SearchData


def longer(recipe: Recipe, by: int, available: int) -> Recipe:
    """`recipe` trained `by` times longer: more distinct images while the split has them, then more epochs."""
    per_epoch = recipe.train_subset or available
    images = min(available, per_epoch * by)
    return dataclasses.replace(recipe, train_subset=0 if images == available else images,
                               epochs=max(1, round(recipe.epochs * by * per_epoch / images)))


MAX_FRONT_RUNG = 12  # a multi-objective rung trains at most this many of the front, spread along it


def confirm_pool(study: optuna.Study) -> list[Record]:
    """The trials the final rung trains longer, by trial number: the best short score of each depth (in a
    multi-objective search, the front of the short scores instead, at most MAX_FRONT_RUNG spread along it), and
    the best seed design. Chosen by short scores alone, so a resumed rung trains the same pool."""
    rs = record.records(study)
    costs = record.objectives_of(study)[1:]
    best: dict[Any, Record] = {}
    if costs:
        best = {r.number: r for r in _spread(record.front(rs, costs), MAX_FRONT_RUNG)}
    for r in record.ranked(rs, short_only=True):
        if not costs:
            best.setdefault(r.depth, r)
        if r.seed_design:
            best.setdefault("seed", r)
    return sorted({r.number: r for r in best.values()}.values(), key=lambda r: r.number)


def _spread(rs: list[Record], most: int) -> list[Record]:
    """`most` of `rs` (ordered along the front) at even steps, both ends kept."""
    if len(rs) <= most:
        return rs
    return [rs[round(i * (len(rs) - 1) / (most - 1))] for i in range(most)]


def confirm(study: optuna.Study, cfg: SearchConfig, data: SearchData, device: torch.device,
            on_result: Callable[[Record, dict[str, Any]], None] | None = None,
            build: Builder = build_model, progress: bool = False) -> dict[int, dict[str, Any]]:
    """Train the confirm_pool CONFIRM_LONGER_BY times longer and store each score as the study attribute
    `confirm.<trial>` (a resumed run skips those already there). Returns {trial number: record}."""
    stored = study.user_attrs  # one read: each access of study.user_attrs is a database query
    results: dict[int, dict[str, Any]] = {}
    for r in confirm_pool(study):
        result = stored.get(record.final_key(r.number))
        if result is None:
            result = _train_longer(r, cfg, data, device, build, progress)
            with stopping.held():
                study.set_user_attr(record.final_key(r.number), result)
        results[r.number] = result
        if on_result is not None:
            on_result(r, result)
    top = record.best(record.records(study))
    if top is not None:
        with stopping.held():
            study.set_user_attr(record.STUDY_BEST, top.number)  # for Optuna's tools, which rank by the short score
    return results


def rung_recipe(r: Record, cfg: SearchConfig, available: int) -> tuple[Recipe, float]:
    """What the final rung trains a trial with, and at which width: its own recipe and proxy CONFIRM_LONGER_BY
    times longer, or (`--final-rung fast`) the real network with the fast protocol (its init scheme too), the
    trial's seed kept. The fast rung compares architectures under one strong recipe, not the recipes the trials sampled."""
    own = Recipe.from_dict(r.recipe)
    if cfg.final_rung == "fast":
        return protocol("fast").updated({"seed": own.seed}), 1.0
    return longer(own, CONFIRM_LONGER_BY, available), cfg.fidelity.width


def _train_longer(r: Record, cfg: SearchConfig, data: SearchData, device: torch.device, build: Builder,
                  progress: bool) -> dict[str, Any]:
    recipe, width = rung_recipe(r, cfg, len(data.train))
    with stopping.at_once():
        model = build(Arch.from_dict(r.arch).scaled(width), recipe.init, recipe.seed)
        result = train(model, recipe, data.train, data.val, device, progress=progress)
    return {"val_acc": result.val_acc if result.status == "ok" else None, "seconds": round(result.seconds, 1),
            "epochs": recipe.epochs, "train_subset": recipe.train_subset or len(data.train),
            "protocol": cfg.final_rung, "width": width}


@dataclass(frozen=True)
class Verdict:
    """The final rung's answer: the best network found against the best seed design, at the rung's schedule."""

    found: Record | None
    seed: Record | None

    @property
    def beats(self) -> bool | None:
        if self.found is None or self.seed is None:
            return None
        return self.found.final_acc > self.seed.final_acc


def verdict(study: optuna.Study) -> Verdict:
    confirmed = [r for r in record.ranked(record.records(study)) if r.final_acc is not None]
    return Verdict(found=next((r for r in confirmed if not r.seed_design), None),
                   seed=next((r for r in confirmed if r.seed_design), None))
