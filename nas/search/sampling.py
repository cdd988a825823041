"""Which candidates a search proposes and which it stops early: Optuna samplers and pruners that
respect depth and the budget.

The short schedule ranks networks of one depth well and across depths badly (it favours shallow
ones: benchmarks/fidelity_study.py). So depth is not left to it: each depth gets its share of
trials and its own TPE (CandidateSampler), and pruning compares a trial with its own depth
(SameDepthPruner). Over-budget proposals are redrawn before a trial is created.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import optuna

from nas.arch.bounds import Bounds
from nas.arch.space import Space
from nas.errors import NasError


class DepthView:
    """A study seen through the trials of one depth (`layers`), for a sampler or a pruner: what they
    read of the study (trials) is filtered, everything else is the study's own."""

    def __init__(self, study: optuna.Study, layers: Any) -> None:
        self._study, self._layers = study, layers

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[optuna.trial.FrozenTrial]:
        return self._mine(self._study.get_trials(deepcopy=deepcopy, states=states))

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[optuna.trial.FrozenTrial]:
        return self._mine(self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache))

    def _mine(self, trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
        return [t for t in trials if t.params.get("layers") == self._layers]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class CandidateSampler(optuna.samplers.BaseSampler):
    """The search's sampler: one sampler per depth, taking turns. Two things make it necessary:

    - The short schedule ranks networks of one depth well and across depths badly (fidelity study:
      within a depth 16 of 19 pairs keep their order at 5x, across depths 43 of 59; two-layer nets
      lead all at 4 epochs and trail the deepest at 5x). One TPE over all depths gives up the deep
      networks early. So trial k has depth `depths[k % len(depths)]`, its knobs are proposed by that
      depth's own TPE, which sees only that depth's trials (DepthView), and the final rung
      (`confirm`) decides between depths.
    - Per depth, every knob is present in every trial, so TPE models them jointly and learns the
      budget: over-budget proposals are redrawn, up to `tries` times (counting costs microseconds,
      a rejected trial a database round trip). Rejections still happen (start-up trials are sampled
      knob by knob) and still teach TPE via the constraint.
    """

    def __init__(self, make_inner: Callable[[int], optuna.samplers.BaseSampler], depths: tuple[int, ...],
                 fits: Callable[[dict[str, Any]], bool | None], tries: int = 32) -> None:
        self._inner = {n: make_inner(i) for i, n in enumerate(depths)}
        self._depths, self._fits, self._tries = depths, fits, tries

    def depth(self, trial: optuna.trial.FrozenTrial) -> int:
        return self._depths[trial.number % len(self._depths)]

    def _for(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> tuple[optuna.samplers.BaseSampler, Any]:
        n = self.depth(trial)
        return self._inner[n], DepthView(study, n)

    def infer_relative_search_space(self, study, trial):  # type: ignore[no-untyped-def]
        inner, view = self._for(study, trial)
        return inner.infer_relative_search_space(view, trial)

    def sample_relative(self, study, trial, search_space):  # type: ignore[no-untyped-def]
        inner, view = self._for(study, trial)
        params: dict[str, Any] = {}
        for _ in range(self._tries):
            params = {**inner.sample_relative(view, trial, search_space), "layers": self.depth(trial)}
            if self._fits(params) is not False:
                break
        return params if "layers" in search_space else {k: v for k, v in params.items() if k != "layers"}

    def sample_independent(self, study, trial, param_name, param_distribution):  # type: ignore[no-untyped-def]
        if param_name == "layers":
            return self.depth(trial)
        inner, view = self._for(study, trial)
        return inner.sample_independent(view, trial, param_name, param_distribution)

    def before_trial(self, study, trial):  # type: ignore[no-untyped-def]
        inner, view = self._for(study, trial)
        inner.before_trial(view, trial)

    def after_trial(self, study, trial, state, values):  # type: ignore[no-untyped-def]
        inner, view = self._for(study, trial)
        inner.after_trial(view, trial, state, values)

    def reseed_rng(self) -> None:
        for inner in self._inner.values():
            inner.reseed_rng()


class SameDepthPruner(optuna.pruners.BasePruner):
    """Prunes a trial only against trials of its own depth: across depths the short schedule's early
    epochs say little (see CandidateSampler), and a deep network would lose every rung to shallow ones."""

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self._inner = inner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return self._inner.prune(DepthView(study, trial.params.get("layers")), trial)  # type: ignore[arg-type]


def budget_check(space: Space, bounds: Bounds) -> Callable[[dict[str, Any]], bool | None]:
    """fits(params): True/False when params name a whole candidate, None when knobs are missing."""
    def fits(params: dict[str, Any]) -> bool | None:
        if "layers" not in params:
            return None
        # single-choice knobs never reach a sampler's relative search space: take their one value
        knobs = space.arch_knobs(params["layers"])
        values = {**{k.name: k.values[0] for k in knobs if len(k.values) == 1}, **params}
        if any(k.name not in values for k in knobs if k.name in ("block", "se_ratio")):
            return None
        if any(k.name not in values for k in knobs if space.reads(k.name, values)):
            return None
        try:
            arch = space.arch(values)
            return bounds.fits(arch)
        except NasError:
            return False
    return fits


def tpe(seed: int) -> optuna.samplers.TPESampler:
    # multivariate models the knobs jointly, which is how TPE learns the budget (a sum over knobs);
    # group=True keeps that for conditional knobs where one sampler sees several depths.
    # constant_liar keeps parallel workers apart.
    with warnings.catch_warnings():  # `group` is marked experimental in Optuna 5 (since 2.8)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True, group=True,
                                          constant_liar=True)
