"""A whole search as `nas search` and `nas.Study.search` run it: everything is validated first (`plan`,
which writes nothing), then the study and its files are made (`start`), then trials train (`run`),
then the final rung decides (`final_rung`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
import torch

from nas import artifacts, record
from nas.arch.bounds import Bounds
from nas.arch.space import Space, load_space
from nas.arch.survey import survey
from nas.engine.data import check_image_shape
from nas.engine.train import select_device
from nas.errors import NasError
from nas.record import Record
from nas.search.config import Fidelity, SearchConfig, default_fidelity, default_rung
from nas.search.grid import Grid
from nas.search.loop import (
    SearchFailed,
    estimate_trial_seconds,
    measured_trial_seconds,
    run_search,
    trained,
)
from nas.search.objective import SearchData, check_batch_size, load_search_data
from nas.search.recovery import Say, quiet
from nas.search.rung import Verdict, confirm, confirm_pool, verdict
from nas.search.storage import claim_study_attr, exclusive, existing_attrs, open_study
from nas.search.strategies import check, strategy
from nas.search.workers import check_concurrent_storage, cpu_threads, run_workers
from nas.stopping import Stop


@dataclass(frozen=True)
class Job:
    """A validated search: nothing has been written yet."""

    space: Space
    space_file: Path
    cfg: SearchConfig
    data: SearchData
    source: str  # the --data the search reads
    device: torch.device
    results_dir: Path
    workers: int = 1
    grid: Grid | None = None  # `--sampler grid`: every point, counted before the study starts
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # fixed_settings: what a resume must match

    @property
    def rung_size(self) -> int | None:
        """Candidates the final rung trains; None for a multi-objective search (the front's size is found)."""
        return None if self.cfg.multi_objective else len(self.space.layers) + bool(self.space.seeds)

    @property
    def folder(self) -> Path:
        return artifacts.study_dir(self.results_dir, self.cfg.study)


def plan(space_file: Path, budget: int, trials: int, data: str = "cifar10", study: str = "default",
         storage: str | None = None, results_dir: Path = Path("results"), device: str = "auto", workers: int = 1,
         fidelity: dict[str, Any] | None = None, **settings: Any) -> Job:
    """Check every input, load the data and reach the database, writing nothing: a bad value costs nothing.
    `fidelity` holds epochs/train_subset/val_subset/width/evals_per_epoch (None = the device's default);
    `settings` are SearchConfig fields (seed, val_size, timeout, pruner, sampler)."""
    space = load_space(space_file)
    dev = select_device(device)
    artifacts.check_results_dir(results_dir)
    url = storage or artifacts.default_storage(results_dir, study)
    cfg = SearchConfig(budget=budget, trials=trials, study=study, storage=url,
                       fidelity=default_fidelity(dev, **(fidelity or {})),
                       **{"final_rung": default_rung(dev), **{k: v for k, v in settings.items() if v is not None}})
    check(cfg)  # the sampler and pruner are registered entries, and the strategy can search what is asked
    check_concurrent_storage(artifacts.storage_backend(url), artifacts.safe_url(url), workers)
    s = survey(space, samples=20_000, seed=cfg.seed)
    if s.fits(Bounds(budget)) == 0:
        raise NasError(f"no candidate of {space.name} fits the budget {budget:,} (smallest "
                       f"{'' if s.method == 'exact' else 'sampled '}has {int(s.params.min()):,} parameters): "
                       f"raise --budget or add smaller choices to the space")
    if cfg.max_macs is not None and s.fits(cfg.bounds) == 0:
        raise NasError(f"no {'' if s.method == 'exact' else 'sampled '}candidate of {space.name} fits both the budget "
                       f"{budget:,} and --max-macs {cfg.max_macs:,} (fewest MACs: {int(s.macs.min()):,}): raise "
                       f"--max-macs or add narrower choices to the space")
    space.check_train(cfg.trial_recipe({}))  # e.g. a warm-up longer than the trials' epochs
    search_data = load_search_data(data, cfg)
    check_batch_size(space, cfg, len(search_data.train))
    space = space.for_data(len(search_data.train.classes))
    check_image_shape(search_data.train, space.input_size, space.in_channels, f"space {space.name!r}")
    settings = fixed_settings(cfg, space)
    check_resumed(cfg, existing_attrs(cfg), settings)  # connects to the database (a bad URL or password fails here)
    queue = strategy(cfg.sampler).points
    points = queue(space, cfg) if queue else None
    if points is not None:
        if not points.points:
            raise NasError(f"{points.summary()}: no point of the grid fits; raise --budget or list smaller choices")
        cfg = dataclasses.replace(cfg, trials=min(cfg.trials, len(points.points)))
    return Job(space, Path(space_file), cfg, search_data, str(data), dev, Path(results_dir), workers, points, settings)


@dataclass(frozen=True)
class SearchPlan:
    """What a search is about to do and what it will cost, as plain values: the CLI prints it, and a Python
    caller gets it from SearchHooks.started (and `rung_started`) without reaching into the Job."""

    space: str
    depths: tuple[int, ...]
    budget: int
    max_macs: int | None
    trials: int
    done: int  # trials a resumed study has trained already
    device: str
    storage: str  # the URL with its password masked
    fidelity: Fidelity
    train_images: int  # per trial epoch
    val_images: int
    sampler: str
    pruner: str
    per_depth: bool  # depths take turns, each with its own sampler, and are pruned apart
    objectives: tuple[str, ...]
    grid: str | None  # a queued strategy's count of its points
    seeded: tuple[str, ...]  # seed designs tried first
    seconds_per_trial: float  # measured on the study's finished trials, else timed on a few steps; NaN if neither
    final_rung: str  # RUNGS: how the final rung trains
    rung_size: int | None  # candidates the final rung trains; None: the front's size, found at the end
    workers: int
    threads_per_worker: int
    base_recipe: str = ""  # the recipe trials start from, named and spelled out (SearchConfig.describe_base)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def minutes_left(self) -> float:
        """An upper estimate of the search's remaining minutes (pruning cuts it)."""
        return max(self.trials - self.done, 0) * self.seconds_per_trial / 60


def describe(job: Job, study: optuna.Study, seeded: list[str]) -> SearchPlan:
    """The plan of `job` on `study` (opened by `start`), its cost measured: from the study's finished trials when
    it has some, else by timing a few training steps of random in-budget candidates here."""
    cfg = job.cfg
    per_trial = measured_trial_seconds(study)
    if math.isnan(per_trial):
        per_trial = estimate_trial_seconds(job.space, cfg, job.data, job.device)
    return SearchPlan(
        space=job.space.name, depths=job.space.layers, budget=cfg.budget, max_macs=cfg.max_macs, trials=cfg.trials,
        done=trained(study), device=str(job.device), storage=artifacts.safe_url(cfg.storage), fidelity=cfg.fidelity,
        train_images=cfg.fidelity.train_subset or len(job.data.train), val_images=len(job.data.val),
        sampler=cfg.sampler, pruner="none (multi-objective)" if cfg.multi_objective else cfg.pruner,
        per_depth=strategy(cfg.sampler).per_depth and len(job.space.layers) > 1, objectives=cfg.objectives,
        grid=job.grid.summary() if job.grid else None, seeded=tuple(seeded), seconds_per_trial=per_trial,
        final_rung=cfg.final_rung, rung_size=job.rung_size, workers=job.workers,
        threads_per_worker=cpu_threads(job.workers), base_recipe=cfg.describe_base(job.space))


def fixed_settings(cfg: SearchConfig, space: Space) -> dict[str, Any]:
    """What decides the meaning of a study's scores, as JSON values: fixed when the study is created, since trials
    trained for 1 epoch at width 0.25 and for 3 at width 1 cannot be ranked together. Only --trials and --timeout
    (how long to search) may change. The space is named by its choices (not its seed designs, which only start a new
    study), so an edited space file is another space; fields left at their defaults are not hashed, so a field a
    later version adds does not make every older study's space another one."""
    f = cfg.fidelity
    choices = {field.name: getattr(space, field.name) for field in dataclasses.fields(space)
               if field.name not in ("name", "seeds") and getattr(space, field.name) != field.default}
    space_json = json.dumps(artifacts.as_jsonable(choices), sort_keys=True, default=str)
    return {"budget": cfg.budget, "max_macs": cfg.max_macs, "objectives": list(cfg.objectives),
            "epochs": f.epochs, "train_subset": f.train_subset, "val_subset": f.val_subset, "width": f.width,
            "evals_per_epoch": f.evals_per_epoch, "pruner": cfg.pruner, "sampler": cfg.sampler, "seed": cfg.seed,
            "val_size": cfg.val_size, "space": f"{space.name} (sha256 {hashlib.sha256(space_json.encode()).hexdigest()[:12]})",
            **{f"recipe.{k}": v for k, v in artifacts.as_jsonable(cfg.recipe).items()}}


def check_resumed(cfg: SearchConfig, stored: dict[str, Any] | None, settings: dict[str, Any] | None = None) -> None:
    """A study resumed with other `settings` (fixed_settings) would rank incomparable scores together: refused
    with one line naming each setting that differs and the study's own value. A study from before the settings
    were stored has its budget, MACs bound and objectives checked; a setting the study never stored is not."""
    if not stored:
        return
    legacy = {"budget": stored.get(record.STUDY_BUDGET, cfg.budget), "max_macs": stored.get(record.STUDY_MAX_MACS),
              "objectives": stored.get(record.STUDY_OBJECTIVES, ["accuracy"])}
    before = {**legacy, **stored.get(record.STUDY_SETTINGS, {})}
    now = {"budget": cfg.budget, "max_macs": cfg.max_macs, "objectives": list(cfg.objectives), **(settings or {})}
    differ = [f"{_flag(k)} {_shown(before[k])}, not {_shown(v)}" for k, v in now.items() if k in before and before[k] != v]
    if differ:
        raise NasError(f"study {cfg.study!r} was searched with {'; '.join(differ)}: use a new --study name to search "
                       f"with other settings (only --trials and --timeout may change on a resume)")


def _flag(key: str) -> str:
    return key.replace(".", " ") if key.startswith("recipe.") else "--" + key.replace("_", "-")


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def hold(job: Job) -> AbstractContextManager[None]:
    """Hold the study for this process while it searches (a SQLite study serves one process: storage.exclusive)."""
    return exclusive(job.cfg.storage)


def start(job: Job) -> tuple[optuna.Study, list[str]]:
    """Write the study's files and open (or resume) its study; a new study queues the space's seed designs
    that fit the budget first. Returns the study and the names queued."""
    study = open_study(job.cfg)
    # plan() refused a differing resume already; a worker started at the same time with other settings is refused
    # here, atomically in the database, before it writes anything
    check_resumed(job.cfg, {record.STUDY_SETTINGS: claim_study_attr(job.cfg.storage, job.cfg.study,
                                                                    record.STUDY_SETTINGS, job.settings)}, job.settings)
    url = artifacts.safe_url(job.cfg.storage)
    artifacts.write_run_files(job.folder, {"command": "search", "space_file": job.space_file, "data": job.source,
                                           "device": str(job.device), "workers": job.workers, "storage": url,
                                           "config": {**artifacts.as_jsonable(job.cfg), "storage": url}},
                              job.space_file)
    for key, value in ((record.STUDY_BUDGET, job.cfg.budget), (record.STUDY_SPACE, job.space.name),
                       (record.STUDY_DATA, job.source), (record.STUDY_MAX_MACS, job.cfg.max_macs),
                       (record.STUDY_OBJECTIVES, list(job.cfg.objectives))):
        study.set_user_attr(key, value)
    if job.grid is not None:
        return study, enqueue_grid(study, job.grid)
    return study, enqueue_seeds(study, job.space, job.cfg)


def enqueue_grid(study: optuna.Study, points: Grid) -> list[str]:
    """Queue every point of a new study's grid (a resumed study's queue holds what is left of it)."""
    if not study.get_trials(deepcopy=False):
        study.set_user_attr(record.STUDY_GRID, len(points.points))
        for i, values in enumerate(points.points):
            study.enqueue_trial(values, user_attrs={record.GRID_POINT: i})
    return []


def enqueue_seeds(study: optuna.Study, space: Space, cfg: SearchConfig) -> list[str]:
    """Queue the space's seed designs that fit the bounds as a new study's first trials (names returned):
    the sampler starts from known-good networks, and every search is measured against them."""
    if study.get_trials(deepcopy=False):
        return []
    fitting = [(name, arch) for name, arch in space.seeds if cfg.bounds.fits(arch)]
    for name, arch in fitting:
        study.enqueue_trial(space.values(arch), user_attrs={record.SEED_DESIGN: name})
    return [name for name, _ in fitting]


def run(job: Job, study: optuna.Study, stop: Stop,
        on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
        say: Say = quiet) -> optuna.Study:
    """Train until the study holds `trials` trained candidates: in this process, or in `workers` processes.
    `say` hears what a waiting worker waits for and which dead workers' trials were failed (each worker
    process prints its own)."""
    if job.workers == 1:
        return run_search(job.space, job.cfg, job.data, job.device, on_trial=on_trial, say=say)
    run_workers(job.space, job.cfg, job.source, job.device, job.workers, stop,
                on_poll=None if on_trial is None else _poller(study, on_trial))
    return study


def _poller(study: optuna.Study, on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None]) -> Callable[[], None]:
    """For many workers: the parent polls the study and reports each newly finished trial."""
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def poll() -> None:
        for t in study.get_trials(deepcopy=False):
            if t.state.is_finished() and t.number not in seen:
                seen.add(t.number)
                on_trial(study, t)
    return poll


def final_rung(job: Job, study: optuna.Study, on_result: Callable[[Record, dict[str, Any]], None] | None = None,
               progress: bool = False) -> Verdict | None:
    """Train the final rung once every trial has trained; None when the search has not finished yet."""
    if trained(study) < job.cfg.trials:
        return None
    confirm(study, job.cfg, job.data, job.device, on_result=on_result, progress=progress)
    return verdict(study)



def nothing_usable(study: optuna.Study) -> SearchFailed | None:
    """A search whose trained trials all ended without a finite short score (diverged, or all pruned) has
    nothing to rank: say so, with the last one's reason, rather than show an empty leaderboard."""
    if record.best(record.records(study)) is not None:
        return None
    spent = [t for t in study.get_trials(deepcopy=False) if record.counts_as_trained(t)]
    counts = ", ".join(f"{k} {v}" for k, v in sorted(record.count_outcomes(spent).items()))
    last = spent[-1].user_attrs.get(record.REASON, "no reason recorded") if spent else "no trial trained"
    return SearchFailed(f"nothing usable found: none of the {len(spent)} trained trials finished with a finite "
                        f"score ({counts or 'none trained'}); the last: {last}: change the space's train: settings "
                        f"and search again under a new --study")


def interrupted(study: optuna.Study | None) -> set[int]:
    """The trials a stop signal has interrupted so far (compared before and after a run: what it stopped)."""
    return set() if study is None else {t.number for t in study.get_trials(deepcopy=False)
                                        if t.user_attrs.get(record.OUTCOME) == record.Outcome.INTERRUPTED.value}


def stopped_detail(study: optuna.Study | None, before: set[int], in_rung: bool) -> str:
    """What a stop signal left behind, as it is: during the trials, the trials it interrupted and where their
    candidates were queued; during the final rung, which longer trainings are kept (nothing is queued: the
    rung resumes with the training it stopped)."""
    if study is None:
        return "nothing had started yet"
    if in_rung:
        stored, pool = study.user_attrs, confirm_pool(study)
        kept = sum(record.final_key(r.number) in stored for r in pool)
        return (f"the final rung stopped with {kept} of {len(pool)} longer trainings done and kept; nothing was "
                f"queued again: it goes on with the next one")
    stopped = sorted(interrupted(study) - before)
    if not stopped:
        return "no trial was training, so none was stopped or queued again"
    queued = {t.user_attrs.get(record.REQUEUED_FROM): t.number
              for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))}
    return "; ".join(f"trial {n} was stopped in training and recorded as failed, its candidate queued again as "
                     f"trial {queued[n]}" if n in queued else f"trial {n} was stopped in training and recorded as "
                     f"failed" for n in stopped)
