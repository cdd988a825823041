"""The search loop of one worker: Optuna trials until the study holds `--trials` trained candidates,
and what a trial is expected to cost before any runs."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import optuna
import torch

from nas import record, stopping
from nas.counting import count_params
from nas.errors import NasError
from nas.model import build_model
from nas.search.config import SearchConfig
from nas.search.objective import Builder, SearchData, TrialFault, make_objective
from nas.search.storage import open_study
from nas.space import Space
from nas.train import train


def run_search(space: Space, cfg: SearchConfig, data: SearchData, device: torch.device,
               on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
               build: Builder = build_model, max_rejections: int = 20_000) -> optuna.Study:
    """Run trials until `cfg.trials` candidates have been trained in this study (resumed runs
    count what is already there), or the timeout passes."""
    study = open_study(cfg, space)
    rejected_in_a_row = 0

    def stop_when_done(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal rejected_in_a_row
        rejected = trial.user_attrs.get(record.OUTCOME) in record.REJECTED
        rejected_in_a_row = rejected_in_a_row + 1 if rejected else 0
        if on_trial is not None:
            on_trial(study, trial)
        if trained(study) >= cfg.trials or rejected_in_a_row >= max_rejections or stopping.pending():
            study.stop()

    if trained(study) >= cfg.trials:
        return study
    with stopping.held():  # a stop signal is raised only while a trial trains, or after Optuna's loop
        study.optimize(make_objective(space, cfg, data, device, build), timeout=cfg.timeout,
                       callbacks=[stop_when_done], catch=(TrialFault,), gc_after_trial=False)
    return study


def trained(study: optuna.Study) -> int:
    return record.trained(study.get_trials(deepcopy=False))


def over_budget_fraction(study: optuna.Study, window: int = 50) -> list[float]:
    """Share of proposals rejected for the budget in consecutive windows: it should fall."""
    outcomes = [t.user_attrs.get(record.OUTCOME) for t in study.get_trials(deepcopy=False)]
    return [sum(o == record.Outcome.OVER_BUDGET.value for o in outcomes[i:i + window]) / len(outcomes[i:i + window])
            for i in range(0, len(outcomes), window)]


def per_trial_seconds(study: optuna.Study) -> float:
    times = [t.user_attrs[record.SECONDS] for t in study.get_trials(deepcopy=False) if record.SECONDS in t.user_attrs]
    return sum(times) / len(times) if times else math.nan


def estimate_trial_seconds(space: Space, cfg: SearchConfig, data: SearchData, device: torch.device,
                           probes: int = 3, steps: int = 4) -> float:
    """Measured cost of one full trial: time a few training steps of random in-budget candidates
    at this fidelity and extrapolate (pruned trials cost less, so this is an upper estimate)."""
    rng = torch.Generator().manual_seed(cfg.seed)
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
        if count_params(arch) <= cfg.budget:
            rates.append(train(build_model(arch.scaled(cfg.fidelity.width)), probe, data.train, None, device).images_per_s)
    if not rates:
        return math.nan
    rate = sum(rates) / len(rates)
    images = cfg.fidelity.epochs * (cfg.fidelity.train_subset or len(data.train))
    evals = cfg.fidelity.epochs * cfg.fidelity.evals_per_epoch * len(data.val)
    return images / rate + evals / (3 * rate)  # a forward pass costs about a third of a training step
