"""One trial: propose a candidate, count it, and train it only when it fits the budget, is new, and a
training slot is free. Every outcome is written to the trial record (nas.record).

- Every candidate is counted analytically before anything is built. Over-budget candidates are
  completed at once with a violated constraint (`trial.set_constraint`), so TPE learns where the
  infeasible region is instead of proposing it again; pruning them would teach the sampler nothing.
- `--trials N` counts candidates that were actually trained, across all workers (claim_training_slot), and
  queued candidates (a stopped or dead worker's) take the free slots before new proposals.
- The same network with the same recipe is never trained twice: the earlier result is reused.
- The test split is never loaded here: only train, split into train/validation.
"""

from __future__ import annotations

import gc
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import optuna
import torch

from nas import record, stopping
from nas.arch import Arch, short_hash
from nas.arch.counting import count_macs, count_params
from nas.arch.model import build_model
from nas.arch.space import Choice, Range, Space
from nas.engine.data import ImageSet, load_split, split_validation, stratified_subset
from nas.engine.precision import resolved
from nas.engine.recipe import Recipe
from nas.engine.train import EvalPoint, train
from nas.errors import NasError
from nas.record import Outcome, set_outcome
from nas.search.config import SearchConfig
from nas.search.recovery import Say, fail_dead_trials, identity, quiet, waiting_message
from nas.search.strategies import strategy

Builder = Callable[[Arch, str, int], torch.nn.Module]  # build_model(arch, init, seed); tests inject recorders
Values = float | tuple[float, ...]  # a trial's value: accuracy, or accuracy and costs (multi-objective)


@dataclass(frozen=True)
class SearchData:
    train: ImageSet
    val: ImageSet


def load_search_data(source: str, cfg: SearchConfig) -> SearchData:
    """Train and validation only: the test split is reserved for final reports."""
    train_set, val_set = split_validation(load_split(source, "train"), cfg.val_size, seed=0)
    if cfg.fidelity.val_subset and cfg.fidelity.val_subset < len(val_set):
        val_set = stratified_subset(val_set, cfg.fidelity.val_subset, seed=0)
    if cfg.fidelity.train_subset > len(train_set):
        raise NasError(f"--train-subset={cfg.fidelity.train_subset} exceeds the {len(train_set)} training images "
                       f"left after the validation split: lower it, or use 0 for all")
    return SearchData(train_set, val_set)


def check_batch_size(space: Space, cfg: SearchConfig, train_images: int) -> None:
    """Refuse, before any trial, a batch larger than the images a trial trains on: every trial that draws it
    fails (the trainer needs one whole batch), and a search of failing trials never reaches --trials."""
    cfg = cfg.for_space(space)  # the base recipe's batch (and its rules, checked against the train: knobs)
    per_trial = cfg.fidelity.train_subset or train_images
    knob = next((k for k in space.train if k.name == "batch_size"), None)
    largest = (int(max(knob.values)) if isinstance(knob, Choice) else int(knob.high) if knob is not None
               else cfg.recipe.batch_size)
    if largest > per_trial:
        source = "in the space's train: section" if knob is not None else f"of the {cfg.base_name(space)} recipe"
        raise NasError(f"batch_size={largest} {source} is larger than the {per_trial:,} training images of each "
                       f"trial: raise --train-subset to at least {largest}, or list smaller batch_size values in "
                       f"the space's train: section")


def suggest(trial: optuna.Trial, space: Space) -> tuple[dict[str, Any], dict[str, Any]]:
    """Architecture values and training overrides for one trial, in a fixed order (reproducible)."""
    values: dict[str, Any] = {"layers": trial.suggest_categorical("layers", space.layers)}
    for knob in space.arch_knobs(values["layers"]):  # the network-wide knobs come first: block, se_ratio, ...
        if space.reads(knob.name, values):  # ... so a knob of another family is never sampled
            values[knob.name] = trial.suggest_categorical(knob.name, knob.values)
    overrides: dict[str, Any] = {}
    for knob in space.train:
        if isinstance(knob, Choice):
            overrides[knob.name] = trial.suggest_categorical(knob.name, knob.values)
        elif isinstance(knob, Range) and knob.integer:
            overrides[knob.name] = trial.suggest_int(knob.name, int(knob.low), int(knob.high), log=knob.log)
        else:
            overrides[knob.name] = trial.suggest_float(knob.name, knob.low, knob.high, log=knob.log)
    return values, overrides


class TrialFault(Exception):
    """A trial failed in a way that must not stop the search (Optuna records it as FAIL)."""


def hash_recipe(recipe: Recipe) -> str:
    return short_hash(recipe.identity())


def make_objective(space: Space, cfg: SearchConfig, data: SearchData, device: torch.device,
                   build: Builder = build_model, say: Say = quiet) -> Callable[[optuna.Trial], Values]:
    """The function Optuna calls per trial. `build` is injectable so tests can prove that
    over-budget candidates are never built; `say` tells the person watching what a waiting trial waits for."""

    queued = strategy(cfg.sampler).points is not None
    cfg = cfg.for_space(space)

    def objective(trial: optuna.Trial) -> Values:
        if queued and record.GRID_POINT not in trial.user_attrs:  # the queue holds every point the strategy has
            set_outcome(trial, Outcome.SURPLUS, "not trained: every point of the grid has been taken")
            trial.study.stop()
            raise TrialFault("grid done")
        values, overrides = suggest(trial, space)
        try:
            arch = space.arch(values)
        except NasError as e:  # a combination the space allows but no network has
            set_outcome(trial, Outcome.INVALID, str(e))
            trial.set_constraint(record.BUDGET_CONSTRAINT, 1.0)
            return (0.0,) * len(cfg.objectives) if cfg.multi_objective else 0.0
        recipe = cfg.trial_recipe(overrides)
        proxy = arch.scaled(cfg.fidelity.width)  # what is trained: two candidates may share one proxy
        score = _describe(trial, arch, recipe, f"{proxy.id}:{hash_recipe(recipe)}", cfg)
        over = _over_bounds(trial, cfg)
        if over:  # rejected in microseconds: nothing built, nothing trained
            set_outcome(trial, Outcome.OVER_BUDGET, over)
            return score(0.0)
        earlier = _previous(trial.study, trial.user_attrs[record.CANDIDATE_KEY])
        if earlier is not None:
            set_outcome(trial, Outcome.DUPLICATE, f"trains the same network and recipe as trial {earlier.number}")
            return score(earlier.values[0] if earlier.values else 0.0)
        try:
            refusal = claim_training_slot(trial, cfg.trials, say=say)
            if refusal is not None:
                set_outcome(trial, Outcome.SURPLUS, f"not trained: {refusal.reason}")
                if refusal.full:
                    trial.study.stop()
                raise TrialFault("surplus")
            return score(_train_trial(trial, proxy, recipe, data, device, build, prunable=not cfg.multi_objective))
        except KeyboardInterrupt:  # Ctrl+C or SIGTERM (nas.stopping): Optuna marks this trial FAIL
            requeue(trial)
            raise

    return objective


def _describe(trial: optuna.Trial, arch: Arch, recipe: Recipe, candidate_key: str,
              cfg: SearchConfig) -> Callable[[float], Values]:
    """Write what the trial is (architecture, size, recipe) and its constraints; return how its accuracy becomes
    the trial's value(s): accuracy alone, or accuracy and the costs a multi-objective search minimises."""
    costs = {"params": count_params(arch), "macs": count_macs(arch)}
    for key, value in ((record.ARCH, arch.to_dict()), (record.ARCH_ID, arch.id), (record.PARAMS, costs["params"]),
                       (record.MACS, costs["macs"]), (record.RECIPE, recipe.to_dict()),
                       (record.CANDIDATE_KEY, candidate_key)):
        trial.set_user_attr(key, value)
    trial.set_constraint(record.BUDGET_CONSTRAINT, float(costs["params"] - cfg.budget))
    if cfg.max_macs is not None:
        trial.set_constraint(record.MACS_CONSTRAINT, float(costs["macs"] - cfg.max_macs))
    if not cfg.multi_objective:
        return lambda acc: acc
    return lambda acc: (acc, *(float(costs[name]) for name in cfg.objectives[1:]))


def _over_bounds(trial: optuna.Trial, cfg: SearchConfig) -> str | None:
    """Why the described candidate breaks a hard bound (the budget, --max-macs), or None when it fits both."""
    return cfg.bounds.problem_of(trial.user_attrs[record.PARAMS], trial.user_attrs[record.MACS])


def _previous(study: optuna.Study, key: str) -> optuna.trial.FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)):
        if t.user_attrs.get(record.CANDIDATE_KEY) == key and t.user_attrs.get(record.OUTCOME) in record.TRAINED:
            return t
    return None


def requeue(trial: optuna.Trial) -> None:
    """Queue a stopped trial's candidate again, so the next worker trains it first."""
    set_outcome(trial, Outcome.INTERRUPTED, "worker stopped by Ctrl+C/SIGTERM: candidate queued again")
    trial.study.enqueue_trial(dict(trial.params), user_attrs=record.carried_attrs(trial))


# -- training slots ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    """Why a trial does not train: `full` when the study holds its --trials (the worker stops), else a queued
    trial takes the slot (the worker goes on, and runs the queued one next)."""

    reason: str
    full: bool


@dataclass(frozen=True)
class _Slots:
    """One read of the study, as one trial sees it: trained trials, others training now, and queued trials
    (a stopped or dead worker's candidates, the seed designs), which take free slots before new proposals."""

    done: int
    training: tuple[optuna.trial.FrozenTrial, ...]
    queued: tuple[int, ...]

    @classmethod
    def read(cls, trial: optuna.Trial) -> _Slots:
        trials = trial.study.get_trials(deepcopy=False)
        # a trial labels its outcome before Optuna records its state: one still RUNNING but labelled complete
        # (pruned, nonfinite) has trained and holds its slot until the state follows, or it would count nowhere
        holding = {Outcome.TRAINING.value, *record.TRAINED}
        training = tuple(t for t in trials if t.number != trial.number and t.state == optuna.trial.TrialState.RUNNING
                         and t.user_attrs.get(record.OUTCOME) in holding)
        queued = tuple(t.number for t in trials if t.state == optuna.trial.TrialState.WAITING)
        return cls(record.trained(trials), training, queued)

    def refusal(self, target: int) -> Refusal | None:
        if self.done >= target:
            return Refusal(f"other workers had already trained {target} trials", full=True)
        if self.queued and self.done + len(self.training) + len(self.queued) >= target:
            shown = ", ".join(map(str, self.queued[:5])) + (", ..." if len(self.queued) > 5 else "")
            return Refusal(f"the free slots go to queued trial(s) {shown} first", full=False)
        return None

    def free(self, target: int) -> bool:
        return self.done + len(self.training) < target


def claim_training_slot(trial: optuna.Trial, target: int, poll: float = 1.0, say: Say = quiet) -> Refusal | None:
    """None when this trial may train; else why not (the study holds `target` trained trials, or queued trials
    need the free slots).

    Many workers share one study, and `--trials N` must mean exactly N trained. A worker writes its
    claim first and then counts: of any N+1 claims, the last one written sees all of them and backs
    off, so no more than N ever train. A worker that backs off withdraws its claim while it waits
    (so two waiting workers cannot block each other) and claims again when a slot frees, which
    happens when a trial fails or a dead worker's trial is failed (recovery.fail_dead_trials: at once
    on this machine, after the heartbeat's grace period elsewhere; Optuna only checks when a trial
    starts, and a waiting worker starts none). The dead trial's retry is queued, and takes the slot."""
    trial.set_user_attr(record.WORKER, identity())  # so a worker on this machine can tell when it died
    while True:
        set_outcome(trial, Outcome.TRAINING)
        slots = _Slots.read(trial)
        if slots.refusal(target) is not None or slots.free(target):
            return slots.refusal(target)
        set_outcome(trial, Outcome.WAITING)
        refusal = _wait_for_slot(trial, target, slots, poll, say)
        if refusal is not None:
            return refusal


def _wait_for_slot(trial: optuna.Trial, target: int, slots: _Slots, poll: float, say: Say) -> Refusal | None:
    """Wait, with the claim withdrawn, until a slot may be free (None) or the trial is refused; say once
    what it waits for, and again whenever that changes."""
    rng, shown = random.Random(), None
    while True:
        if shown != [t.number for t in slots.training]:
            shown = [t.number for t in slots.training]
            say(f"trial {trial.number}: " + waiting_message(trial.study, slots.training, target))
        time.sleep(poll * (0.5 + rng.random()))  # jitter: two colliding workers do not collide again
        fail_dead_trials(trial.study, say)
        slots = _Slots.read(trial)
        if slots.refusal(target) is not None or slots.free(target):
            return slots.refusal(target)


# -- training ----------------------------------------------------------------------------------
def _train_trial(trial: optuna.Trial, proxy: Arch, recipe: Recipe, data: SearchData, device: torch.device,
                 build: Builder, prunable: bool = True) -> float:
    """Train the proxy, reporting each evaluation to the pruner where the study can prune (Optuna prunes no
    multi-objective study: there every trial trains the whole short schedule)."""
    curve: list[list[float]] = []

    def on_eval(point: EvalPoint) -> None:
        with stopping.held():  # database writes
            curve.append([round(point.epoch, 4), point.val_acc])
            trial.set_user_attr(record.CURVE, curve)
            trial.set_user_attr(record.SECONDS, round(point.seconds, 3))  # so pruned trials show their cost too
            prune = False
            if prunable:
                trial.report(point.val_acc, step=len(curve))
                prune = trial.should_prune()
            if prune:
                set_outcome(trial, Outcome.PRUNED,
                            f"val_acc {point.val_acc:.4f} at epoch {point.epoch:g} below the pruner's rung")
        if prune:
            raise optuna.TrialPruned()

    with stopping.held():  # a database write
        trial.set_user_attr(record.PRECISION, resolved(recipe.precision, device))
    oom = False
    try:
        with stopping.at_once():  # nothing is being written while a trial trains
            model = build(proxy, recipe.init, recipe.seed)
            result = train(model, recipe, data.train, data.val, device, on_eval=on_eval)
    except torch.OutOfMemoryError:
        oom = True  # free memory outside the except block: the exception keeps frames alive
    except (optuna.TrialPruned, KeyboardInterrupt):
        raise
    except Exception as e:  # one broken trial never stops the search
        set_outcome(trial, Outcome.ERROR, f"{type(e).__name__}: {e}"[:500])
        raise TrialFault(str(e)) from e
    if oom:
        model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        set_outcome(trial, Outcome.OOM, "CUDA out of memory: memory released, search continues")
        raise TrialFault("out of memory")
    trial.set_user_attr(record.SECONDS, round(result.seconds, 3))
    trial.set_user_attr(record.IMAGES_PER_S, round(result.images_per_s, 1))
    trial.set_user_attr(record.TRAIN_LOSS_SUM, result.train_loss_sum)
    if result.status != "ok":  # never a number that could become "best"
        set_outcome(trial, Outcome.NONFINITE, "training loss became non-finite (NaN/inf): learning rate too high?")
        raise optuna.TrialPruned()
    set_outcome(trial, Outcome.COMPLETE)
    return result.val_acc
