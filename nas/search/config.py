"""What a search is asked to do: its budget, trial count, fidelity and base recipe, validated once."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from nas.arch.bounds import Bounds
from nas.arch.space import Space
from nas.engine.recipe import PROTOCOLS, Recipe
from nas.errors import NasError

OBJECTIVES = ("accuracy", "params", "macs")  # accuracy is maximised, the costs minimised
RUNGS = ("proxy", "fast")  # the final rung: the trials' proxy 5x longer, or full width with the fast protocol
CONFIRM_LONGER_BY = 5  # the fidelity study's long training, whose ranking is the reference


@dataclass(frozen=True)
class Fidelity:
    """How cheaply each trial trains: the knobs of multi-fidelity search."""

    epochs: int
    train_subset: int  # images per epoch from the training split; 0 = all
    val_subset: int  # validation images scored per evaluation; 0 = the whole validation split
    width: float  # channel multiplier for proxy training (1 = the real network)
    evals_per_epoch: int  # validation points per epoch reported to the pruner

    def __post_init__(self) -> None:
        for name in ("epochs", "evals_per_epoch"):
            if getattr(self, name) < 1:
                raise NasError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("train_subset", "val_subset"):
            if getattr(self, name) < 0:
                raise NasError(f"{name}={getattr(self, name)} must be >= 0 (0 = all images)")
        if not 0 < self.width <= 1:
            raise NasError(f"width={self.width} must be in (0, 1]")


# Chosen by benchmarks/fidelity_study.py (see README): CPU needs ~15 s trials for a
# 200-trial hour; CUDA trains the whole split.
CPU_FIDELITY = Fidelity(epochs=4, train_subset=5000, val_subset=2000, width=0.25, evals_per_epoch=1)
CUDA_FIDELITY = Fidelity(epochs=10, train_subset=0, val_subset=0, width=1.0, evals_per_epoch=1)

# The short-schedule recipe trials train with (space `train:` knobs override it).
SEARCH_RECIPE = Recipe(epochs=CPU_FIDELITY.epochs, batch_size=128, lr=0.2, nesterov=True, schedule="onecycle",
                       label_smoothing=0.1, weight_decay=5e-4)


def default_fidelity(device: torch.device, **given: Any) -> Fidelity:
    """The device's default fidelity with the knobs the user gave (None = default) replaced."""
    base = CUDA_FIDELITY if device.type == "cuda" else CPU_FIDELITY
    return Fidelity(**{**base.__dict__, **{k: v for k, v in given.items() if v is not None}})


def default_rung(device: torch.device) -> str:
    """The final rung a device affords. Measured on the 2-core CPU: the fast protocol at full width costs 1-3 hours
    per 5M-parameter candidate (README, Training protocols), against ~1-4 minutes for the proxy 5x longer, so
    CPU keeps the proxy. On CUDA a full-width fast run takes 26-47 s per ~5M-parameter candidate (measured on an
    H200, README Devices), so the rung ranks the real networks there."""
    return "fast" if device.type == "cuda" else "proxy"


@dataclass(frozen=True)
class SearchConfig:
    budget: int
    trials: int
    study: str
    storage: str
    fidelity: Fidelity
    recipe: Recipe = SEARCH_RECIPE  # the base recipe; epochs/train_subset/evals_per_epoch come from the fidelity
    seed: int = 0
    val_size: int = 5000
    timeout: float | None = None
    pruner: str = "halving"  # a name in nas.search.strategies.PRUNERS (checked by strategies.check)
    sampler: str = "tpe"  # a name in nas.search.strategies.STRATEGIES
    max_failures: int = 10  # trials failing in a row (error, oom) that end the search: it cannot reach --trials
    worker: int = 0  # which of many worker processes this is (0 for a single one)
    objectives: tuple[str, ...] = ("accuracy",)  # more than one: a multi-objective search of the front
    max_macs: int | None = None  # a second hard bound, next to the budget: MACs of one forward pass
    final_rung: str = "proxy"  # how the final rung trains: RUNGS (default_rung picks by device)

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise NasError(f"--trials={self.trials} must be >= 1")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise NasError(f"--timeout={self.timeout} must be a finite number of seconds > 0")
        if self.max_failures < 1:
            raise NasError(f"--max-failures={self.max_failures} must be >= 1 (failed trials in a row that stop the search)")
        if self.val_size < 10:
            raise NasError(f"val_size={self.val_size} must be >= 10 images")
        if self.final_rung not in RUNGS:
            raise NasError(f"--final-rung={self.final_rung!r} is unknown: choose one of {', '.join(RUNGS)}")
        if self.max_macs is not None and self.max_macs < 1:
            raise NasError(f"--max-macs={self.max_macs} must be >= 1 (multiply-accumulates of one image's forward pass)")
        self._check_objectives()
        if not 0 <= self.seed < 2**32:  # numpy's seed range, which the samplers use
            raise NasError(f"--seed={self.seed} must be between 0 and {2**32 - 1}")

    @property
    def bounds(self) -> Bounds:
        """The hard limits every candidate must fit (nas.arch.bounds): the one rule, asked everywhere."""
        return Bounds(self.budget, self.max_macs)

    def _check_objectives(self) -> None:
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown or not self.objectives or len(set(self.objectives)) != len(self.objectives):
            raise NasError(f"--objectives={','.join(self.objectives)!r} is invalid: list distinct objectives from "
                           f"{', '.join(OBJECTIVES)}, e.g. accuracy,params")
        if self.objectives[0] != "accuracy":
            raise NasError(f"--objectives={','.join(self.objectives)!r} must start with accuracy (what is searched "
                           f"for; the others are costs to keep low), e.g. accuracy,{self.objectives[0]}")

    @property
    def multi_objective(self) -> bool:
        """Optuna cannot prune a multi-objective study, so such a search trains every trial to the end of the
        short schedule and its final rung trains the front (nas.search.rung)."""
        return len(self.objectives) > 1

    @property
    def sampler_seed(self) -> int:
        """Workers started together with one seed would propose the same candidates and train them in
        parallel, each unaware of the others' unfinished trials: each worker samples its own stream."""
        return (self.seed + 1000 * self.worker) % 2**32

    def base_name(self, space: Space) -> str:
        """Which recipe `space`'s trials start from. A grid over training settings starts from the reference
        protocol (or the space's `train: base:`), so each row differs from a stated recipe only in what the grid
        lists, not by the search recipe's Nesterov, one-cycle and label smoothing; other searches keep the search
        recipe, whose short-schedule defaults TPE's trials were tuned with."""
        if space.base is not None:
            return space.base
        return "reference" if self.sampler == "grid" and space.train else "search"

    def for_space(self, space: Space) -> SearchConfig:
        """This config with `space`'s base recipe (base_name), checked against the space's train: knobs."""
        name = self.base_name(space)
        cfg = dataclasses.replace(self, recipe=self.recipe if name == "search" else PROTOCOLS[name])
        space.check_train(cfg.trial_recipe({}))
        return cfg

    def describe_base(self, space: Space) -> str:
        """The base recipe as the plan prints it: its name, its main settings and every other field it sets."""
        name, r = self.base_name(space), self.for_space(space).recipe
        shown = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule", "batch_size", "label_smoothing")
        fidelity = ("epochs", "train_subset", "evals_per_epoch", "seed")
        default = Recipe()
        others = [f.name for f in dataclasses.fields(Recipe) if f.name not in shown + fidelity
                  and getattr(r, f.name) != getattr(default, f.name)]
        settings = ", ".join(f"{k} {getattr(r, k)}" for k in (*shown, *others))
        return f"{name} ({settings}; epochs from the fidelity, the space's train: knobs on top)"

    def trial_recipe(self, overrides: dict[str, Any]) -> Recipe:
        f = self.fidelity
        fixed = {"epochs": f.epochs, "train_subset": f.train_subset, "evals_per_epoch": f.evals_per_epoch,
                 "seed": self.seed}
        return self.recipe.updated({**fixed, **overrides})
