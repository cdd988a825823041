"""The search loop: an Optuna study that maximises validation accuracy under a hard parameter budget.

Why it is built this way (field-notes.md):
- One objective, so trials can be pruned; the accuracy/params Pareto front is computed afterwards.
- Every candidate is counted analytically before anything is built. Over-budget candidates are
  completed at once with a violated constraint (`trial.set_constraint`), so TPE learns where the
  infeasible region is instead of proposing it again; pruning them would teach the sampler nothing.
- `--trials N` counts candidates that were actually trained; rejected ones are recorded apart.
- Identical architectures (by `Arch.id`) with identical recipes are never trained twice: the
  earlier result is reused.
- The test split is never loaded here: only train, split into train/validation.
- The short schedule ranks networks of one depth well and across depths badly (it favours shallow
  ones: benchmarks/fidelity_study.py). So depth is not left to it: each depth gets its share of
  trials (CandidateSampler), pruning compares a trial with its own depth (SameDepthPruner), and a
  final rung (`confirm`) trains the best of each depth and the best seed design 5x longer; the
  leaderboard ranks by that.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
import torch

from nas import stopping
from nas.arch import Arch, short_hash
from nas.counting import count_macs, count_params
from nas.data import ImageSet, load_split, split_validation, stratified_subset
from nas.errors import NasError
from nas.model import build_model
from nas.recipe import Recipe
from nas.results import BUDGET_CONSTRAINT, CONFIRM_PREFIX
from nas.space import Choice, Range, Space
from nas.train import EvalPoint, train

CONFIRM_LONGER_BY = 5  # the final rung: the fidelity study's long training, whose ranking is the reference
EVALUATED = ("complete", "pruned", "nonfinite")  # outcomes that spent training compute
CONCURRENT_BACKENDS = ("postgresql", "mysql")  # storages safe for many writers (SQLite is not: field-notes)
Builder = Callable[[Arch, str, int], torch.nn.Module]  # build_model(arch, init, seed); tests inject recorders
PRUNERS = ("halving", "hyperband", "median", "none")
SAMPLERS = ("tpe", "random")


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


def default_fidelity(device: torch.device) -> Fidelity:
    return CUDA_FIDELITY if device.type == "cuda" else CPU_FIDELITY


@dataclass(frozen=True)
class SearchConfig:
    budget: int
    trials: int
    study: str
    storage: str
    fidelity: Fidelity
    recipe: Recipe  # the base recipe; epochs/train_subset/evals_per_epoch come from the fidelity
    seed: int = 0
    val_size: int = 5000
    timeout: float | None = None
    pruner: str = "halving"
    sampler: str = "tpe"

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise NasError(f"--trials={self.trials} must be >= 1")
        if self.pruner not in PRUNERS:
            raise NasError(f"--pruner={self.pruner!r} is unknown: choose one of {', '.join(PRUNERS)}")
        if self.sampler not in SAMPLERS:
            raise NasError(f"--sampler={self.sampler!r} is unknown: choose one of {', '.join(SAMPLERS)}")
        if self.timeout is not None and self.timeout <= 0:
            raise NasError(f"--timeout={self.timeout} must be > 0 seconds")
        if self.val_size < 10:
            raise NasError(f"val_size={self.val_size} must be >= 10 images")
        if not 0 <= self.seed < 2**32:  # numpy's seed range, which the samplers use
            raise NasError(f"--seed={self.seed} must be between 0 and {2**32 - 1}")

    def trial_recipe(self, overrides: dict[str, Any]) -> Recipe:
        f = self.fidelity
        fixed = {"epochs": f.epochs, "train_subset": f.train_subset, "evals_per_epoch": f.evals_per_epoch,
                 "seed": self.seed}
        return dataclasses.replace(self.recipe, **{**fixed, **overrides})


# -- Optuna plumbing -------------------------------------------------------------------------
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


def budget_check(space: Space, budget: int) -> Callable[[dict[str, Any]], bool | None]:
    """fits(params): True/False when params name a whole candidate, None when knobs are missing."""
    def fits(params: dict[str, Any]) -> bool | None:
        if "layers" not in params:
            return None
        # single-choice knobs never reach a sampler's relative search space: take their one value
        values = {**{k.name: k.values[0] for k in space.arch_knobs(params["layers"]) if len(k.values) == 1}, **params}
        if any(k.name not in values for k in space.arch_knobs(params["layers"])):
            return None
        try:
            return count_params(space.arch(values)) <= budget
        except NasError:
            return False
    return fits


def make_sampler(cfg: SearchConfig, space: Space | None = None) -> optuna.samplers.BaseSampler:
    """The configured sampler; given the space, one per depth, taking turns, redrawing over-budget proposals."""
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)  # the unlearned baseline: never wrapped
    if space is not None:
        return CandidateSampler(lambda i: tpe(cfg.seed + i), space.layers, budget_check(space, cfg.budget))
    return tpe(cfg.seed)


def tpe(seed: int) -> optuna.samplers.TPESampler:
    # multivariate models the knobs jointly, which is how TPE learns the budget (a sum over knobs);
    # group=True keeps that for conditional knobs where one sampler sees several depths.
    # constant_liar keeps parallel workers apart.
    with warnings.catch_warnings():  # `group` is marked experimental in Optuna 5 (since 2.8)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True, group=True,
                                          constant_liar=True)


def make_pruner(cfg: SearchConfig) -> optuna.pruners.BasePruner:
    steps = cfg.fidelity.epochs * cfg.fidelity.evals_per_epoch
    if cfg.pruner == "halving":  # one bracket: no start-up trials wasted per bracket (field-notes)
        return SameDepthPruner(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
    if cfg.pruner == "hyperband":  # its brackets are studies of their own: it compares across depths
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=steps, reduction_factor=3)
    if cfg.pruner == "median":
        return SameDepthPruner(optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1))
    return optuna.pruners.NopPruner()


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace) in seconds. A worker beats every `interval`; a trial silent for `grace` is
    failed and its candidate queued again. Trials run for minutes, so a minute of beats costs
    nothing, and 3x grace never fails a live worker stalled by a slow database. Tests shorten both
    with NAS_HEARTBEAT_INTERVAL / NAS_GRACE_PERIOD."""
    def read(name: str, default: int) -> int:
        text = os.environ.get(name, str(default))
        try:
            value = int(text)
        except ValueError:
            raise NasError(f"{name}={text!r} must be a whole number of seconds") from None
        if value < 1:
            raise NasError(f"{name}={value} must be >= 1 second")
        return value

    interval = read("NAS_HEARTBEAT_INTERVAL", 60)
    grace = read("NAS_GRACE_PERIOD", 3 * interval)
    if grace <= interval:
        raise NasError(f"NAS_GRACE_PERIOD={grace} must exceed NAS_HEARTBEAT_INTERVAL={interval}, or live trials are failed")
    return interval, grace


def storage_backend(url: str) -> str:
    """'sqlite', 'postgresql' or 'mysql' for a valid URL; a NasError naming the fix otherwise."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from nas.artifacts import safe_url

    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        raise NasError(f"--storage={safe_url(url)!r} is not a database URL: use sqlite:///PATH or "
                       f"postgresql://USER@HOST:PORT/DB") from None
    if backend not in ("sqlite", *CONCURRENT_BACKENDS):
        raise NasError(f"--storage backend {backend!r} is not supported: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    return backend


def make_storage(url: str, attempts: int = 8) -> optuna.storages.RDBStorage:
    """A database storage with heartbeats: a trial whose worker died (SIGKILL, lost node) is failed
    after the grace period and its candidate re-queued, to be run by whichever worker asks next.

    Workers opening a fresh database together race to create its tables; the losers see a
    duplicate-key error and simply retry, finding the tables made."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

    from nas.artifacts import safe_url

    storage_backend(url)
    interval, grace = heartbeat_settings()
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5 and have been since 2.x
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=interval, grace_period=grace,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
        except (IntegrityError, ProgrammingError) as e:
            if attempt == attempts - 1:
                raise NasError(f"cannot create the tables in {safe_url(url)}: {_db_message(e, url)}") from None
            _backoff(attempt)
        except SQLAlchemyError as e:
            raise NasError(f"cannot open storage {safe_url(url)}: {_db_message(e, url)}: check that the server runs "
                           f"and the URL, user and password are right") from None
        except ImportError as e:
            raise NasError(f"storage {safe_url(url)} needs a database driver ({e}): pip install 'nas[postgres]'") from None
    raise AssertionError("unreachable")


def _backoff(attempt: int) -> None:
    time.sleep(0.1 * (attempt + 1) * (1 + random.random()))  # jittered, so racers do not collide again


def _db_message(e: Exception, url: str) -> str:
    """The driver's first line, with the password blanked in case a driver ever echoes it."""
    from sqlalchemy.engine import make_url

    text = str(getattr(e, "orig", None) or e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    password = make_url(url).password
    return text.replace(password, "***") if password else text


def open_study(cfg: SearchConfig, space: Space | None = None, attempts: int = 8) -> optuna.Study:
    """Create the study, or load it to resume (the same command continues where it stopped).

    Workers started together race: two may both find no study (or no tables) and both create it; the
    loser sees a duplicate-key error. Retrying the load then finds the winner's study."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            return optuna.create_study(study_name=cfg.study, storage=make_storage(cfg.storage), direction="maximize",
                                       sampler=make_sampler(cfg, space), pruner=make_pruner(cfg), load_if_exists=True)
        except (optuna.exceptions.DuplicatedStudyError, IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            _backoff(attempt)
    raise AssertionError("unreachable")


def enqueue_seeds(study: optuna.Study, space: Space, budget: int) -> list[str]:
    """Queue the space's seed designs that fit the budget as a new study's first trials (names returned):
    the sampler starts from known-good networks, and every search is measured against them."""
    if study.get_trials(deepcopy=False):
        return []
    fitting = [(name, arch) for name, arch in space.seeds if count_params(arch) <= budget]
    for name, arch in fitting:
        study.enqueue_trial(space.values(arch), user_attrs={"seed_design": name})
    return [name for name, _ in fitting]


def existing_budget(cfg: SearchConfig) -> int | None:
    """The budget a study of this name was searched with, or None when there is no such study yet.
    Read before anything is written, so a wrong --budget changes nothing."""
    from sqlalchemy.engine import make_url

    if storage_backend(cfg.storage) == "sqlite":
        database = make_url(cfg.storage).database
        if not database or database == ":memory:" or not Path(database).exists():
            return None
    try:
        study = optuna.load_study(study_name=cfg.study, storage=make_storage(cfg.storage))
    except KeyError:
        return None
    return study.user_attrs.get("budget")


def suggest(trial: optuna.Trial, space: Space) -> tuple[dict[str, Any], dict[str, Any]]:
    """Architecture values and training overrides for one trial, in a fixed order (reproducible)."""
    values: dict[str, Any] = {"layers": trial.suggest_categorical("layers", space.layers)}
    for knob in space.arch_knobs(values["layers"]):
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


_STATE_WORDS = {optuna.trial.TrialState.RUNNING: "running", optuna.trial.TrialState.WAITING: "queued"}  # enqueued


def count_outcomes(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = t.user_attrs.get("outcome") or _STATE_WORDS.get(t.state, t.state.name.lower())
        counts[key] = counts.get(key, 0) + 1
    return counts


def evaluated(study: optuna.Study) -> int:
    return sum(n for k, n in count_outcomes(study).items() if k in EVALUATED)


def _slots(study: optuna.Study) -> tuple[int, int]:
    """(trained, training now): one read, so a trial moving from one to the other is counted once."""
    done = training = 0
    for t in study.get_trials(deepcopy=False):
        outcome = t.user_attrs.get("outcome")
        done += outcome in EVALUATED
        training += outcome == "training" and t.state == optuna.trial.TrialState.RUNNING
    return done, training


def claim_training_slot(trial: optuna.Trial, target: int, poll: float = 1.0) -> bool:
    """True when this trial may train, False when the study already has `target` trained trials.

    Many workers share one study, and `--trials N` must mean exactly N trained. A worker writes its
    claim first and then counts: of any N+1 claims, the last one written sees all of them and backs
    off, so no more than N ever train. A worker that backs off withdraws its claim while it waits
    (so two waiting workers cannot block each other) and claims again when a slot frees, which
    happens when a trial fails or a dead worker's trial goes stale. Stale trials are failed here
    too: Optuna only checks when a trial starts, and a waiting worker starts none."""
    rng = random.Random()
    while True:
        trial.set_user_attr("outcome", "training")
        done, training = _slots(trial.study)
        if done >= target:
            return False
        if done + training <= target:
            return True
        trial.set_user_attr("outcome", "waiting")
        while True:
            time.sleep(poll * (0.5 + rng.random()))  # jitter: two colliding workers do not collide again
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(trial.study)
            done, training = _slots(trial.study)
            if done >= target:
                return False
            if done + training < target:
                break


# -- the objective ---------------------------------------------------------------------------
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


class TrialFault(Exception):
    """A trial failed in a way that must not stop the search (Optuna records it as FAIL)."""


def _previous(study: optuna.Study, key: str) -> optuna.trial.FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)):
        if t.user_attrs.get("candidate_key") == key and t.user_attrs.get("outcome") in EVALUATED:
            return t
    return None


def make_objective(space: Space, cfg: SearchConfig, data: SearchData, device: torch.device,
                   build: Builder = build_model) -> Callable[[optuna.Trial], float]:
    """The function Optuna calls per trial. `build` is injectable so tests can prove that
    over-budget candidates are never built."""

    def objective(trial: optuna.Trial) -> float:
        values, overrides = suggest(trial, space)
        try:
            arch = space.arch(values)
        except NasError as e:  # a combination the space allows but no network has
            trial.set_user_attr("outcome", "invalid")
            trial.set_user_attr("reason", str(e))
            trial.set_constraint(BUDGET_CONSTRAINT, 1.0)
            return 0.0
        params = count_params(arch)
        recipe = cfg.trial_recipe(overrides)
        proxy = arch.scaled(cfg.fidelity.width)  # what is trained: two candidates may share one proxy
        for key, value in (("arch", arch.to_dict()), ("arch_id", arch.id), ("params", params),
                           ("macs", count_macs(arch)), ("recipe", recipe.to_dict()),
                           ("candidate_key", f"{proxy.id}:{hash_recipe(recipe)}")):
            trial.set_user_attr(key, value)
        trial.set_constraint(BUDGET_CONSTRAINT, float(params - cfg.budget))
        if params > cfg.budget:  # rejected in microseconds: nothing built, nothing trained
            trial.set_user_attr("outcome", "over_budget")
            trial.set_user_attr("reason", f"{params:,} parameters > budget {cfg.budget:,}")
            return 0.0
        earlier = _previous(trial.study, trial.user_attrs["candidate_key"])
        if earlier is not None:
            trial.set_user_attr("outcome", "duplicate")
            trial.set_user_attr("reason", f"trains the same network and recipe as trial {earlier.number}")
            return earlier.value if earlier.value is not None else 0.0
        try:
            if not claim_training_slot(trial, cfg.trials):
                trial.set_user_attr("outcome", "surplus")
                trial.set_user_attr("reason", f"not trained: other workers had already trained {cfg.trials} trials")
                trial.study.stop()
                raise TrialFault("surplus")
            return _train_trial(trial, proxy, recipe, data, device, build)
        except KeyboardInterrupt:  # Ctrl+C or SIGTERM (nas.stopping): Optuna marks this trial FAIL
            requeue(trial)
            raise

    return objective


def requeue(trial: optuna.Trial) -> None:
    """Queue a stopped trial's candidate again, so the next worker trains it first."""
    trial.set_user_attr("outcome", "interrupted")
    trial.set_user_attr("reason", "worker stopped by Ctrl+C/SIGTERM: candidate queued again")
    trial.study.enqueue_trial(dict(trial.params), user_attrs={"requeued_from": trial.number})


def hash_recipe(recipe: Recipe) -> str:
    return short_hash(recipe.to_dict())


def _train_trial(trial: optuna.Trial, proxy: Arch, recipe: Recipe, data: SearchData, device: torch.device,
                 build: Builder) -> float:
    curve: list[list[float]] = []

    def on_eval(point: EvalPoint) -> None:
        with stopping.held():  # database writes
            curve.append([round(point.epoch, 4), point.val_acc])
            trial.set_user_attr("val_curve", curve)
            trial.set_user_attr("seconds", round(point.seconds, 3))  # so pruned trials show their cost too
            trial.report(point.val_acc, step=len(curve))
            prune = trial.should_prune()
            if prune:
                trial.set_user_attr("outcome", "pruned")
                trial.set_user_attr("reason", f"val_acc {point.val_acc:.4f} at epoch {point.epoch:g} below the pruner's rung")
        if prune:
            raise optuna.TrialPruned()

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
        trial.set_user_attr("outcome", "error")
        trial.set_user_attr("reason", f"{type(e).__name__}: {e}"[:500])
        raise TrialFault(str(e)) from e
    if oom:
        model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        trial.set_user_attr("outcome", "oom")
        trial.set_user_attr("reason", "CUDA out of memory: memory released, search continues")
        raise TrialFault("out of memory")
    trial.set_user_attr("seconds", round(result.seconds, 3))
    trial.set_user_attr("images_per_s", round(result.images_per_s, 1))
    trial.set_user_attr("train_loss_sum", result.train_loss_sum)
    if result.status != "ok":  # never a number that could become "best"
        trial.set_user_attr("outcome", "nonfinite")
        trial.set_user_attr("reason", "training loss became non-finite (NaN/inf): learning rate too high?")
        raise optuna.TrialPruned()
    trial.set_user_attr("outcome", "complete")
    return result.val_acc


# -- running ---------------------------------------------------------------------------------
def run_search(space: Space, cfg: SearchConfig, data: SearchData, device: torch.device,
               on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
               build: Builder = build_model, max_rejections: int = 20_000) -> optuna.Study:
    """Run trials until `cfg.trials` candidates have been trained in this study (resumed runs
    count what is already there), or the timeout passes."""
    study = open_study(cfg, space)
    rejected_in_a_row = 0

    def stop_when_done(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal rejected_in_a_row
        outcome = trial.user_attrs.get("outcome")
        rejected_in_a_row = rejected_in_a_row + 1 if outcome in ("over_budget", "invalid", "duplicate") else 0
        if on_trial is not None:
            on_trial(study, trial)
        if evaluated(study) >= cfg.trials or rejected_in_a_row >= max_rejections or stopping.pending():
            study.stop()

    if evaluated(study) >= cfg.trials:
        return study
    with stopping.held():  # a stop signal is raised only while a trial trains, or after Optuna's loop
        study.optimize(make_objective(space, cfg, data, device, build), timeout=cfg.timeout,
                       callbacks=[stop_when_done], catch=(TrialFault,), gc_after_trial=False)
    return study


# -- the final rung ---------------------------------------------------------------------------
def longer(recipe: Recipe, by: int, available: int) -> Recipe:
    """`recipe` trained `by` times longer: more distinct images while the split has them, then more epochs."""
    per_epoch = recipe.train_subset or available
    images = min(available, per_epoch * by)
    return dataclasses.replace(recipe, train_subset=0 if images == available else images,
                               epochs=max(1, round(recipe.epochs * by * per_epoch / images)))


def confirm_pool(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials the final rung trains longer: the best short score of each depth N, and the best seed
    design. Per depth, because the short schedule ranks depths wrongly (it favours shallow networks),
    and within one depth it ranks well enough; the seed design, so each search meets its baseline."""
    done = sorted((t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                   if t.user_attrs.get("outcome") == "complete"),
                  key=lambda t: (-(t.value or 0.0), t.user_attrs["params"], t.number))
    best: dict[Any, optuna.trial.FrozenTrial] = {}
    for t in done:
        best.setdefault(len(t.user_attrs["arch"]["blocks"]), t)
        if "seed_design" in t.user_attrs:
            best.setdefault("seed", t)
    return sorted({t.number: t for t in best.values()}.values(), key=lambda t: t.number)


def confirm(study: optuna.Study, cfg: SearchConfig, data: SearchData, device: torch.device,
            on_result: Callable[[optuna.trial.FrozenTrial, dict[str, Any]], None] | None = None,
            build: Builder = build_model, progress: bool = False) -> dict[int, dict[str, Any]]:
    """Train the confirm_pool CONFIRM_LONGER_BY times longer, same proxy, recipe and initial weights, and
    store each score as the study user attr `confirm.<trial>` (a resumed run skips those already there).
    Returns {trial number: record} for the whole pool."""
    stored = study.user_attrs  # one read: each access of study.user_attrs is a database query
    records: dict[int, dict[str, Any]] = {}
    for t in confirm_pool(study):
        key = f"{CONFIRM_PREFIX}{t.number}"
        record = stored.get(key)
        if record is None:
            recipe = longer(Recipe.from_dict(t.user_attrs["recipe"]), CONFIRM_LONGER_BY, len(data.train))
            with stopping.at_once():
                model = build(Arch.from_dict(t.user_attrs["arch"]).scaled(cfg.fidelity.width), recipe.init, recipe.seed)
                result = train(model, recipe, data.train, data.val, device, progress=progress)
            record = {"val_acc": result.val_acc if result.status == "ok" else None, "seconds": round(result.seconds, 1),
                      "epochs": recipe.epochs, "train_subset": recipe.train_subset or len(data.train)}
            with stopping.held():
                study.set_user_attr(key, record)
        records[t.number] = record
        if on_result is not None:
            on_result(t, record)
    return records


def over_budget_fraction(study: optuna.Study, window: int = 50) -> list[float]:
    """Share of proposals rejected for the budget in consecutive windows: it should fall."""
    outcomes = [t.user_attrs.get("outcome") for t in study.get_trials(deepcopy=False)]
    return [sum(o == "over_budget" for o in outcomes[i:i + window]) / len(outcomes[i:i + window])
            for i in range(0, len(outcomes), window)]


def per_trial_seconds(study: optuna.Study) -> float:
    times = [t.user_attrs["seconds"] for t in study.get_trials(deepcopy=False) if "seconds" in t.user_attrs]
    return sum(times) / len(times) if times else math.nan


def estimate_trial_seconds(space: Space, cfg: SearchConfig, data: SearchData, device: torch.device,
                           probes: int = 3, steps: int = 4) -> float:
    """Measured cost of one full trial: time a few training steps of random in-budget candidates
    at this fidelity and extrapolate (pruned trials cost less, so this is an upper estimate)."""
    rng = torch.Generator().manual_seed(cfg.seed)
    recipe = cfg.trial_recipe({})
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
        if count_params(arch) > cfg.budget:
            continue
        probe = dataclasses.replace(recipe, epochs=1, train_subset=min(len(data.train), recipe.batch_size * steps),
                                    evals_per_epoch=1)
        rates.append(train(build_model(arch.scaled(cfg.fidelity.width)), probe, data.train, None, device).images_per_s)
    if not rates:
        return math.nan
    rate = sum(rates) / len(rates)
    images = cfg.fidelity.epochs * (cfg.fidelity.train_subset or len(data.train))
    evals = cfg.fidelity.epochs * cfg.fidelity.evals_per_epoch * len(data.val)
    return images / rate + evals / (3 * rate)  # a forward pass costs about a third of a training step
