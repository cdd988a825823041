"""The registries of how a search proposes candidates (`--sampler`: strategies) and stops trials early
(`--pruner`), one record each.

A strategy is its sampler factory plus what the rest of the search asks of it: whether it queues every point
before the study starts (grid: the search ends when the queue is empty), whether it can search a
multi-objective front, whether depths take turns. Adding one is one `register_strategy(...)` or
`register_pruner(...)`; tests/test_strategies.py runs one real short search with every entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import optuna

from nas.arch.space import Space
from nas.errors import NasError
from nas.registry import Registry
from nas.search.config import SearchConfig
from nas.search.grid import Grid, grid
from nas.search.sampling import CandidateSampler, SameDepthPruner, budget_check, tpe


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str  # one line, for --help and README
    sampler: Callable[[SearchConfig, Space | None], optuna.samplers.BaseSampler]  # space None: a bare study
    per_depth: bool = False  # depths take turns, each with its own sampler (nas.search.sampling.CandidateSampler)
    points: Callable[[Space, SearchConfig], Grid] | None = None  # every point, queued before the study starts
    multi_objective: bool = True  # can search a front (--objectives accuracy,params)


@dataclass(frozen=True)
class Pruner:
    name: str
    summary: str
    make: Callable[[SearchConfig], optuna.pruners.BasePruner]


STRATEGIES: Registry[Strategy] = Registry("sampler", "--sampler")
PRUNERS: Registry[Pruner] = Registry("pruner", "--pruner")


def register_strategy(s: Strategy) -> Strategy:
    return STRATEGIES.add(s.name, s)


def register_pruner(p: Pruner) -> Pruner:
    return PRUNERS.add(p.name, p)


def strategy(name: str) -> Strategy:
    return STRATEGIES.named(name)


def pruner(name: str) -> Pruner:
    return PRUNERS.named(name)


def check(cfg: SearchConfig) -> None:
    """Refuse a sampler or pruner no entry names, and a front asked of a strategy that cannot search one."""
    s, _ = strategy(cfg.sampler), pruner(cfg.pruner)
    if cfg.multi_objective and not s.multi_objective:
        raise NasError(f"--sampler {s.name} cannot search a front ({s.summary}): drop --objectives (the report draws "
                       f"the front of any study) or use --sampler tpe")


def make_sampler(cfg: SearchConfig, space: Space | None = None) -> optuna.samplers.BaseSampler:
    return strategy(cfg.sampler).sampler(cfg, space)


def make_pruner(cfg: SearchConfig) -> optuna.pruners.BasePruner:
    return pruner(cfg.pruner).make(cfg)


# -- the entries -------------------------------------------------------------------------------------
def _tpe(cfg: SearchConfig, space: Space | None) -> optuna.samplers.BaseSampler:
    """Given the space, one TPE per depth, taking turns, redrawing over-budget proposals. TPE is multi-objective
    as it is (it ranks trials by non-domination), so one sampler serves both kinds of search: with 50-200
    trials, NSGA-II's generations would be too few to evolve a front."""
    if space is None:
        return tpe(cfg.sampler_seed)
    return CandidateSampler(lambda i: tpe(cfg.sampler_seed + i), space.layers, budget_check(space, cfg.bounds))


def _random(cfg: SearchConfig, space: Space | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=cfg.sampler_seed)


for _s in (
    Strategy("tpe", "TPE per depth, depths taking turns, over-budget proposals redrawn", _tpe, per_depth=True),
    Strategy("random", "uniform random proposals: the unlearned baseline", _random),
    Strategy("grid", "every combination of the space's listed choices that fits the bounds, counted first", _random,
             points=grid, multi_objective=False),
):
    register_strategy(_s)


def _steps(cfg: SearchConfig) -> int:
    return cfg.fidelity.epochs * cfg.fidelity.evals_per_epoch


for _p in (
    # one bracket: no start-up trials wasted per bracket
    Pruner("halving", "successive halving (rate 3) against the trial's own depth",
           lambda cfg: SameDepthPruner(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))),
    # its brackets are studies of their own: it compares across depths
    Pruner("hyperband", "Hyperband (rate 3) over the trial's validation points",
           lambda cfg: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=_steps(cfg), reduction_factor=3)),
    Pruner("median", "below the median of its own depth's trials at the same point (after 5 trials)",
           lambda cfg: SameDepthPruner(optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1))),
    Pruner("none", "every trial trains its whole short schedule", lambda cfg: optuna.pruners.NopPruner()),
):
    register_pruner(_p)
