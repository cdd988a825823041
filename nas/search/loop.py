"""The search loop of one worker: Optuna trials until the study holds `--trials` trained candidates,
and what a trial is expected to cost before any runs."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import optuna
import torch

from nas import record, stopping
from nas.arch.model import build_model
from nas.arch.space import Space
from nas.engine.train import train
from nas.errors import NasError
from nas.search.config import SearchConfig
from nas.search.objective import Builder, SearchData, TrialFault, make_objective
from nas.search.recovery import Say, fail_dead_trials, quiet
from nas.search.storage import open_study


class SearchFailed(NasError):
    """A search that can never reach --trials, or that trained nothing usable: one line naming the cause.
    `exit_code` is 2 when the cause is the input (nas refused a value inside the trials: the fix is in the
    command or the space), 1 when trials ran and failed or found nothing usable (the reason names the fault)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run_search(space: Space, cfg: SearchConfig, data: SearchData, device: torch.device,
               on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
               build: Builder = build_model, max_rejections: int = 20_000, say: Say = quiet) -> optuna.Study:
    """Run trials until `cfg.trials` candidates have been trained in this study (resumed runs
    count what is already there), or the timeout passes. A dead worker's trial found on this machine is
    failed first, so its queued candidate runs before any new proposal. Raises SearchFailed when the
    study can never get there (see _Watch)."""
    study = open_study(cfg, space)
    watch = _Watch(cfg, on_trial, max_rejections, say)
    with stopping.held():  # a stop signal is raised only while a trial trains, or after Optuna's loop
        done = trained(study)
        fail_dead_trials(study, say, retry=done < cfg.trials)
        if done < cfg.trials:
            study.optimize(make_objective(space, cfg, data, device, build, say), timeout=cfg.timeout,
                           callbacks=[watch], catch=(TrialFault,), gc_after_trial=False)
    if watch.failure is not None:
        raise watch.failure
    return study


class _Watch:
    """Optuna's callback after every trial: shows it (`on_trial`), fails dead workers' trials, and stops the
    loop when the study holds --trials, on a stop signal, or when it can never get there: `max_failures`
    trials failed in a row (error, oom: only a trained trial resets the count; rejections and re-queued
    trials leave it as it is), or `max_rejections` proposals rejected in a row (the space holds too few
    new candidates within the budget). Either ends the search with a SearchFailed naming the last cause."""

    def __init__(self, cfg: SearchConfig, on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None,
                 max_rejections: int, say: Say) -> None:
        self.cfg, self.on_trial, self.max_rejections, self.say = cfg, on_trial, max_rejections, say
        self.failed_in_a_row = self.rejected_in_a_row = 0
        self.failure: SearchFailed | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        outcome = trial.user_attrs.get(record.OUTCOME)
        self.rejected_in_a_row = self.rejected_in_a_row + 1 if outcome in record.REJECTED else 0
        if record.counts_as_trained(trial):
            self.failed_in_a_row = 0
        elif outcome in record.FAILED:
            self.failed_in_a_row += 1
        if self.on_trial is not None:
            self.on_trial(study, trial)
        self.failure = self.failure or self._failure(trial)
        done = trained(study)
        fail_dead_trials(study, self.say, retry=done < self.cfg.trials)
        if done >= self.cfg.trials or self.failure is not None or stopping.pending():
            study.stop()

    def _failure(self, trial: optuna.trial.FrozenTrial) -> SearchFailed | None:
        reason = str(trial.user_attrs.get(record.REASON) or "no reason recorded").splitlines()[0][:300]
        if self.failed_in_a_row >= self.cfg.max_failures:
            own = reason.startswith(f"{NasError.__name__}: ")  # nas refused a value: the input's fault
            return SearchFailed(f"stopped after {self.failed_in_a_row} trials in a row failed (--max-failures "
                                f"{self.cfg.max_failures}); the last, trial {trial.number}, failed with "
                                f"{reason.removeprefix(f'{NasError.__name__}: ') if own else reason}: fix that and "
                                f"run the same command to resume", exit_code=2 if own else 1)
        if self.rejected_in_a_row >= self.max_rejections:
            return SearchFailed(f"stopped after {self.rejected_in_a_row:,} proposals in a row were rejected (the "
                                f"last, trial {trial.number}: {reason}): the space holds too few new candidates "
                                f"within the budget for --trials {self.cfg.trials}: widen the space, raise --budget "
                                f"or lower --trials", exit_code=2)
        return None


def trained(study: optuna.Study) -> int:
    return record.trained(study.get_trials(deepcopy=False))


def over_budget_fraction(study: optuna.Study, window: int = 50) -> list[float]:
    """Share of proposals rejected for the budget in consecutive windows: it should fall."""
    outcomes = [t.user_attrs.get(record.OUTCOME) for t in study.get_trials(deepcopy=False)]
    return [sum(o == record.Outcome.OVER_BUDGET.value for o in outcomes[i:i + window]) / len(outcomes[i:i + window])
            for i in range(0, len(outcomes), window)]


def measured_trial_seconds(study: optuna.Study) -> float:
    """Mean cost of the study's trials that trained the whole short schedule (a resumed search knows its
    cost instead of timing probes); NaN before the first."""
    times = [t.user_attrs[record.SECONDS] for t in study.get_trials(deepcopy=False)
             if t.user_attrs.get(record.OUTCOME) == record.Outcome.COMPLETE.value and record.SECONDS in t.user_attrs]
    return sum(times) / len(times) if times else math.nan


def estimate_trial_seconds(space: Space, cfg: SearchConfig, data: SearchData, device: torch.device,
                           probes: int = 3, steps: int = 4) -> float:
    """Measured cost of one full trial: time a few training steps of random in-budget candidates
    at this fidelity and extrapolate (pruned trials cost less, so this is an upper estimate)."""
    rng = torch.Generator().manual_seed(cfg.seed)
    cfg = cfg.for_space(space)
    probe = dataclasses.replace(cfg.trial_recipe({}), epochs=1, evals_per_epoch=1,
                                train_subset=min(len(data.train), cfg.recipe.batch_size * steps))
    rates = []
    for _ in range(200):
        if len(rates) == probes:
            break
        n = space.layers[int(torch.randint(len(space.layers), (1,), generator=rng))]
        values = {"layers": n, **{k.name: k.values[int(torch.randint(len(k.values), (1,), generator=rng))]
                                  for k in space.arch_knobs(n)}}
        try:
            arch = space.arch(values)
        except NasError:
            continue
        if cfg.bounds.fits(arch):
            rates.append(train(build_model(arch.scaled(cfg.fidelity.width)), probe, data.train, None, device).images_per_s)
    if not rates:
        return math.nan
    rate = sum(rates) / len(rates)
    images = cfg.fidelity.epochs * (cfg.fidelity.train_subset or len(data.train))
    evals = cfg.fidelity.epochs * cfg.fidelity.evals_per_epoch * len(data.val)
    return images / rate + evals / (3 * rate)  # a forward pass costs about a third of a training step
