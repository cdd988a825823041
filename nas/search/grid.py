"""`--sampler grid`: every combination of the space's choices, counted and deduplicated before any trains.

The grid is enumerated once, before the study starts, and queued whole (Optuna's enqueue_trial): workers
take queued trials one at a time, so many workers share one grid with no coordination of their own, and
a resumed search goes on with the points left in the queue. Points over the budget (or --max-macs) or
impossible (a pool larger than the last feature map) are left out, and so is a point whose proxy and
recipe equal an earlier point's (it would train the same thing), so the count announced is the count trained.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import product
from typing import Any, Iterator

from nas.arch import short_hash
from nas.arch.space import Choice, Space
from nas.errors import NasError
from nas.search.config import SearchConfig

MAX_COMBINATIONS = 200_000  # enumerated in seconds; a larger grid is a space meant for TPE


@dataclass(frozen=True)
class Grid:
    """The points a grid search trains, and what was left out of the full factorial and why."""

    points: tuple[dict[str, Any], ...]  # Optuna params of each point, in the order they are queued
    combinations: int  # the full factorial of the space's choices
    over_bounds: int
    impossible: int
    same_proxy: int

    def summary(self) -> str:
        left = [f"{n:,} {why}" for n, why in ((self.over_bounds, "over the budget"), (self.impossible, "impossible"),
                                               (self.same_proxy, "training the same proxy as another point")) if n]
        return (f"grid: {len(self.points):,} points of {self.combinations:,} combinations"
                + (f" ({', '.join(left)})" if left else ""))


def combinations(space: Space) -> int:
    """Size of the full factorial, before anything is counted."""
    train = math.prod(len(k.values) for k in _train_choices(space))
    return train * sum(math.prod(len(k.values) for k in space.arch_knobs(n)) for n in space.layers)


def grid(space: Space, cfg: SearchConfig) -> Grid:
    """Every point of the space that fits the bounds and trains something new, shuffled with the search's seed
    (so a grid cut short by --trials or a stop still covers the whole space evenly). Its recipes start from the
    space's base recipe (SearchConfig.for_space)."""
    cfg = cfg.for_space(space)
    total = combinations(space)
    if total > MAX_COMBINATIONS:
        raise NasError(f"--sampler grid over space {space.name!r} has {total:,} combinations (at most "
                       f"{MAX_COMBINATIONS:,}): list fewer choices in the space file, or use --sampler tpe")
    points, seen, over, impossible = [], set(), 0, 0
    for values, overrides in _factorial(space):
        try:
            arch, recipe = space.arch(values), cfg.trial_recipe(overrides)
        except NasError:
            impossible += 1
            continue
        if not cfg.bounds.fits(arch):
            over += 1
            continue
        key = (arch.scaled(cfg.fidelity.width).id, short_hash(recipe.identity()))
        if key not in seen:
            seen.add(key)
            points.append({k: v for k, v in {**values, **overrides}.items() if space.reads(k, values)})
    random.Random(cfg.seed).shuffle(points)
    return Grid(tuple(points), total, over, impossible, total - over - impossible - len(points))


def _train_choices(space: Space) -> list[Choice]:
    ranges = [k.name for k in space.train if not isinstance(k, Choice)]
    if ranges:
        raise NasError(f"--sampler grid needs listed values, but the space's train: section gives {', '.join(ranges)} "
                       f"as a range: list the values to try, e.g. lr: [0.05, 0.1, 0.2]")
    return list(space.train)  # type: ignore[arg-type]


def _factorial(space: Space) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    train = _train_choices(space)
    for n in space.layers:
        knobs = space.arch_knobs(n)
        for arch_values in product(*(k.values for k in knobs)):
            for train_values in product(*(k.values for k in train)):
                yield ({"layers": n, **{k.name: v for k, v in zip(knobs, arch_values)}},
                       {k.name: v for k, v in zip(train, train_values)})
