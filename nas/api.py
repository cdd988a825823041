"""The Python API, which the `nas` command line itself calls: a study by name, and every stage on it.

    import nas
    study = nas.Study("r5m")                                   # results/r5m/, storage results/r5m/study.db
    study.search(budget=5e6, trials=200, data="cifar10")       # resumes when run again
    study.leaderboard()                                        # rows, best first (final rung's score first)
    study.retrain("best", epochs=30)                           # full-width retraining, scored once on test
    study.report()                                             # results/r5m/report.html
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, ContextManager

import optuna

from nas import artifacts, record
from nas import retrain as rt
from nas.arch import Arch
from nas.bundled import default_space, example_file, examples_dir, space_file
from nas.engine.recipe import protocol as recipe_protocol
from nas.errors import NasError
from nas.numbers import parse_count
from nas.record import Record
from nas.runs import baseline_root, finished_runs, retrain_root, summarize
from nas.stopping import Stopped, stop_on_signals

if TYPE_CHECKING:  # torch loads with a search or a training: reading a study (leaderboard, show, report) needs none
    import pandas
    import torch

    from nas.engine.bench import BenchResult
    from nas.search import Verdict
    from nas.search.job import SearchPlan


class SearchHooks:
    """What a caller sees of a search while it runs; silent by default (the CLI prints)."""

    progress = False  # progress bars for the final rung's trainings

    def started(self, plan: SearchPlan) -> None:
        """The search is about to train: what it will do and its measured cost per trial."""

    def running(self) -> ContextManager[Any]:
        return contextlib.nullcontext()

    def on_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None: ...

    def notice(self, message: str) -> None:
        """One line worth telling: what a trial waits for, a dead worker's trial failed and queued again."""

    def rung_started(self, plan: SearchPlan) -> None: ...

    def on_rung(self, r: Record, result: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class SearchResult:
    """A search that reached its end: `trained` of `trials` candidates (fewer after --timeout), and at least one
    usable (a search that found none raises nas.search.SearchFailed instead)."""

    study: optuna.Study
    trained: int
    trials: int
    verdict: Verdict | None  # None when the final rung did not run
    folder: Path


def _faults(writes: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """For Study methods: a storage or disk fault (unreachable server, wrong password, damaged, read-only
    or full disk) is one NasError line naming it and the fix, never a traceback. A method that writes
    first checks that it can (study folder writable, disk not full, an existing SQLite file intact), so
    such a fault costs nothing: no data decoded, no epoch trained, nothing written."""
    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def guarded(self: Study, *args: Any, **kwargs: Any) -> Any:
            if writes:
                artifacts.check_results_dir(self.results_dir)
                artifacts.check_writable(self.folder)
                artifacts.check_sqlite(self.url)
            with artifacts.storage_faults(self.url):
                return method(self, *args, **kwargs)
        return guarded
    return wrap


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs a line per trial at INFO; the search tells what happens through its hooks and the study's records,
    so a Python caller sees what the CLI shows, and gets its own verbosity back after."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def _search_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """SearchConfig fields from what a person writes: max_macs as a count ("3e8"), objectives as "a,b" or a list.
    A key that is no setting is named with the valid ones, not passed on to fail as a bare TypeError."""
    valid = ("seed", "val_size", "timeout", "pruner", "sampler", "max_failures", "max_macs", "objectives", "final_rung")
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise NasError(f"Study.search() got unknown setting(s) {', '.join(map(repr, unknown))}: valid settings are "
                       f"{', '.join(valid)} (and budget, trials, space, data, device, workers, confirm, fidelity, hooks)")
    given = dict(settings)
    if given.get("max_macs") is not None and not isinstance(given["max_macs"], int):
        given["max_macs"] = parse_count(str(given["max_macs"]), "max_macs")
    if isinstance(given.get("objectives"), str):
        given["objectives"] = given["objectives"].split(",")
    if given.get("objectives") is not None:
        given["objectives"] = tuple(str(o).strip() for o in given["objectives"])
    return given


@dataclass(frozen=True)
class Study:
    """A search study by name and where it lives; every command works on one."""

    name: str = "default"
    results_dir: Path = field(default=Path("results"))
    storage: str | None = None  # Optuna storage URL; default RESULTS/NAME/study.db

    def __post_init__(self) -> None:
        artifacts.check_study_name(self.name)  # NAME becomes RESULTS/NAME/: refused before anything runs or connects

    @property
    def folder(self) -> Path:
        return artifacts.study_dir(self.results_dir, self.name)

    @property
    def url(self) -> str:
        """The storage URL the study lives in (with its password: print `artifacts.safe_url(url)`)."""
        return self.storage or artifacts.default_storage(self.results_dir, self.name)

    @_faults(writes=True)
    def search(self, budget: int | float | str, trials: int = 200, *, space: str | Path | None = None,
               data: str = "cifar10", device: str = "auto", workers: int = 1, confirm: bool = True,
               fidelity: dict[str, Any] | None = None, hooks: SearchHooks | None = None, **settings: Any) -> SearchResult:
        """Search `space` (default: the bundled default space) for the most accurate network within `budget`
        parameters. Re-running resumes. `fidelity`: epochs, train_subset, val_subset, width, evals_per_epoch;
        `settings`: seed, val_size, timeout, pruner, sampler ("tpe", "random", "grid"), max_failures, max_macs (a
        second hard bound, e.g. "3e8"), objectives ("accuracy,params", "accuracy,macs" or all three: a
        multi-objective search of the front). Ctrl+C/SIGTERM raise
        nas.stopping.Stopped once the study is safe to resume; nas.search.SearchFailed (a NasError with an
        `exit_code`) says why a search cannot reach `trials` or found nothing usable. A SQLite study serves
        one process: a second one is refused."""
        from nas.search import job as search_job
        from nas.search.loop import SearchFailed

        hooks = hooks or SearchHooks()
        cap = budget if isinstance(budget, int) else parse_count(str(budget))
        job = search_job.plan(space_file(space) if space else default_space(), cap, trials, data, self.name, self.storage,
                              self.results_dir, device, workers, fidelity, **_search_settings(settings))
        trials = job.cfg.trials  # a grid trains at most its points
        with _quiet_optuna(), search_job.hold(job), stop_on_signals() as stop:
            study, before, in_rung, verdict, failed = None, set(), False, None, None
            try:
                study, seeded = search_job.start(job)
                before = search_job.interrupted(study)
                plan = search_job.describe(job, study, seeded)
                hooks.started(plan)
                with hooks.running():
                    study = search_job.run(job, study, stop, on_trial=hooks.on_trial, say=hooks.notice)
                failed = search_job.nothing_usable(study) if search_job.trained(study) >= trials else None
                if confirm and failed is None and search_job.trained(study) >= trials:
                    in_rung = True
                    hooks.rung_started(plan)
                    verdict = search_job.final_rung(job, study, hooks.on_rung, progress=hooks.progress)
            except KeyboardInterrupt:
                raise Stopped(stop.signal, search_job.stopped_detail(study, before, in_rung)) from None
            except SearchFailed as e:
                failed = e
            self._write_results(study)  # a failed search's trials.csv holds every trial's reason
        if failed is not None:
            raise failed
        return SearchResult(study, search_job.trained(study), trials, verdict, job.folder)

    def _write_results(self, study: optuna.Study) -> None:
        from nas.report.page import write_study_report
        from nas.report.tables import trials_frame, write_trials_csv

        frame = trials_frame(study)
        write_trials_csv(frame, self.folder / "trials.csv")
        write_study_report(study, self.results_dir, examples_dir(), frame)

    @_faults()
    def optuna(self) -> optuna.Study:
        """The Optuna study itself (read it with Optuna's own tools; see nas.record for what they see)."""
        return artifacts.load_study(self.name, self.storage, self.results_dir)

    @_faults()
    def records(self) -> list[Record]:
        return record.records(self.optuna())

    @_faults()
    def leaderboard(self, top: int = 10, *, front: bool = False) -> list[dict[str, Any]]:
        """The best finished in-budget trials, best first, with retrained test accuracy where it exists; `front`:
        the Pareto front instead (accuracy against the study's costs: parameters, or --objectives' costs), by size.
        Each row says whether it is on the front."""
        if top < 1:
            raise NasError(f"--top={top} must be >= 1")
        study = self.optuna()
        rs = record.records(study)
        on_front = record.front(rs, record.objectives_of(study)[1:] or ("params",))
        shown = on_front if front else record.ranked(rs)[:top]
        retrained = {e["trial"]: e for e in self.retrained() if e["trial"] is not None}
        numbers = {r.number for r in on_front}
        return [{"rank": i, "trial": r.number, "score": r.score, "val_acc": r.short_acc, "confirm_acc": r.final_acc,
                 "seed_design": r.seed_design, "params": r.params, "macs": r.macs, "arch_id": r.arch_id,
                 "arch": Arch.from_dict(r.arch).describe(), "front": r.number in numbers,
                 "settings": rt.recipe_overrides(r.sampled),  # the training settings the search drew, if any
                 "test_acc": retrained.get(r.number, {}).get("test_acc"),
                 "test_acc_std": retrained.get(r.number, {}).get("test_acc_std")} for i, r in enumerate(shown, 1)]

    def pivot(self, rows: str, columns: str) -> pandas.DataFrame:
        """Best short-schedule validation accuracy for every pair of two settings (a pandas table), e.g.
        pivot("optimizer", "lr") after a grid over recipes."""
        from nas.report.tables import pivot, trials_frame

        return pivot(trials_frame(self.optuna()), rows, columns)

    def retrained(self) -> list[dict[str, Any]]:
        """This study's finished retrain runs, one entry per (architecture, protocol), seeds averaged."""
        return summarize(finished_runs(retrain_root(self.results_dir, self.name)))

    @_faults()
    def budget(self) -> int | None:
        """The parameter budget the study was searched with (None for a study `nas search` did not make)."""
        return self.optuna().user_attrs.get(record.STUDY_BUDGET)

    @_faults()
    def trial(self, which: str | int) -> dict[str, Any]:
        """Everything recorded about one trial ('best' or a number), the score that ranks it first."""
        r = rt.select_trials(self.optuna(), which)[0]
        runs = [x for x in finished_runs(retrain_root(self.results_dir, self.name)) if x.get("trial") == r.number]
        return {"trial": r.number, "state": r.state.name, "outcome": r.outcome, "reason": r.reason,
                "score": r.score, "val_acc": r.short_acc, "final_rung": dict(r.final) if r.final else None,
                "seed_design": r.seed_design, "params": r.params, "macs": r.macs, "arch_id": r.arch_id,
                "arch": r.arch, "sampled": dict(r.sampled), "retrain_settings": rt.recipe_overrides(r.sampled),
                "search_recipe": r.recipe, "val_curve": r.curve, "seconds": r.seconds,
                "retrained": [{k: x.get(k) for k in ("seed", "test_acc", "protocol", "wall_seconds", "dir")} for x in runs]}

    @_faults(writes=True)
    def retrain(self, target: str | int | None = None, *, top: int | None = None, arch_file: str | Path | None = None,
                seeds: int = 1, data: str | None = None, val_size: int = 0, device: str = "auto", force: bool = False,
                progress: bool = False, on_run: Callable[[rt.Run], None] | None = None,
                examples: str | Path | None = None, protocol: str = "reference", **recipe: Any) -> list[dict[str, Any]]:
        """Retrain trials ('best', a number, or the `top` best) or an architecture file (a baseline, under
        RESULTS/baselines/NAME) with a protocol's recipe (nas.engine.recipe.PROTOCOLS), `recipe` overriding it;
        each scored once on test.
        Data: `data`, else the data this study searched. Re-running resumes. Returns each run's metrics.
        Ctrl+C/SIGTERM (a preempted job) raise nas.stopping.Stopped; each run keeps its last complete epoch."""
        runs, source = self._plan_retrain(target, top, arch_file, seeds, data, val_size, protocol, recipe)
        rdata = rt.load_retrain_data(source, val_size)
        dev = _device(device)
        results = []
        with stop_on_signals() as stop:
            try:
                for run in runs:
                    if on_run is not None:
                        on_run(run)
                    metrics = rt.retrain_one(run.candidate, run.recipe, rdata, dev, run.directory, force=force,
                                             progress=progress)
                    results.append({**metrics, "dir": str(run.directory)})
            except KeyboardInterrupt:
                raise Stopped(stop.signal, "each run keeps its last complete epoch") from None
        self._refresh_report(examples)
        return results

    def _plan_retrain(self, target: str | int | None, top: int | None, arch_file: str | Path | None, seeds: int,
                      data: str | None, val_size: int, protocol: str,
                      recipe: dict[str, Any]) -> tuple[list[rt.Run], str]:
        if arch_file is not None and (target is not None or top is not None):
            raise NasError("give either --arch FILE or a study target ('best', a trial number, --top K), not both")
        if target is not None and top is not None:
            raise NasError(f"give either TARGET={target!r} or --top {top}, not both")
        if val_size < 0:
            raise NasError(f"--val-size={val_size} must be >= 0 (0 = no validation carve-out)")
        artifacts.check_results_dir(self.results_dir)
        study = self._existing()
        source = data or (artifacts.study_data(study, self.results_dir) if study else None) or "cifar10"
        if arch_file is not None:
            candidates = [rt.file_candidate(example_file(arch_file))]
            roots = [baseline_root(self.results_dir, candidates[0].name)]
        else:
            study = study or self.optuna()  # raises the one-line "no study" error
            candidates = [rt.trial_candidate(r) for r in rt.select_trials(study, target or "best", top)]
            roots = [retrain_root(self.results_dir, self.name)] * len(candidates)
        return rt.plan_runs(candidates, roots, recipe, seeds, val_size, source, recipe_protocol(protocol)), source

    def _existing(self) -> optuna.Study | None:
        try:
            return self.optuna()
        except artifacts.NoStudy:
            return None  # a baseline retrain stands on its own; a damaged or unreachable storage is an error

    def _refresh_report(self, examples: str | Path | None = None) -> Path | None:
        study = self._existing()
        return self.report(examples) if study is not None and study.user_attrs.get(record.STUDY_BUDGET) else None

    @_faults(writes=True)
    def report(self, examples: str | Path | None = None, static: str | None = None) -> Path:
        """Write RESULTS/NAME/report.html: the search, retrained candidates and the baselines (offline HTML);
        `static` ("png" or "svg") also writes each figure to figures/NAME.png beside it (needs nas[figures])."""
        from nas.report.page import write_study_report

        return write_study_report(self.optuna(), self.results_dir, Path(examples) if examples else examples_dir(),
                                  static=static)


def train_architecture(arch: Arch, data: str = "cifar10", *, val_size: int = 5000, test: bool = False,
                       device: str = "auto", checkpoint_dir: str | Path | None = None, progress: bool = False,
                       protocol: str = "reference", **recipe: Any) -> dict[str, Any]:
    """Train one architecture with one recipe (`recipe`: Recipe fields over the protocol's) on the
    training split less `val_size` validation images; `test` also scores it once on the test split.
    Returns the summary `nas train --json` prints (status, val_acc, seconds, params, history, ...)."""
    import dataclasses

    from nas.arch.bounds import check_buildable
    from nas.arch.counting import count_params
    from nas.arch.model import build_for_data
    from nas.engine.augment import channel_stats
    from nas.engine.data import (
        check_image_shape,
        check_same_classes,
        load_split,
        split_validation,
    )
    from nas.engine.train import evaluate, train

    r = recipe_protocol(protocol).updated(recipe)
    if val_size < 0:
        raise NasError(f"--val-size={val_size} must be >= 0 (0 = no validation)")
    check_buildable(arch)
    dev = _device(device)
    full = load_split(data, "train")
    test_set = load_split(data, "test") if test else None  # before training: its classes must be the same
    if test_set is not None:
        check_same_classes(full, test_set, data)
    check_image_shape(full, arch.input_size, arch.in_channels, "the architecture")
    train_set, val_set = split_validation(full, val_size) if val_size else (full, None)
    model = build_for_data(arch, len(full.classes), r.init, r.seed)  # seeded: one seed, one result
    result = train(model, r, train_set, val_set, dev, checkpoint_dir=checkpoint_dir, progress=progress)
    summary = {"status": result.status, "val_acc": result.val_acc, "seconds": result.seconds,
               "images_per_s": result.images_per_s, "images_seen": result.images_seen,
               "train_loss_sum": result.train_loss_sum, "precision": result.precision, "params": count_params(arch), "arch": arch.to_dict(),
               "protocol": protocol, "epochs": r.epochs, "recipe": r.to_dict(), "device": str(dev),
               "train_images": r.train_subset or len(train_set),  # what each epoch trains on, as a retrain run says
               "val_images": len(val_set or ()), "history": [dataclasses.asdict(p) for p in result.history]}
    if test_set is not None and result.status == "ok":
        e = evaluate(model, test_set, dev, tta=r.tta_level, stats=channel_stats(train_set))
        summary.update(test_acc=e.acc, test_loss=e.loss, test_per_class=e.per_class, test_confusion=e.confusion)
        summary["test_images"] = len(test_set)
    return summary


def bench_architecture(arch: Arch, data: str = "cifar10", *, batch_size: int = 128, steps: int = 10, rounds: int = 3,
                       precision: str = "auto", device: str = "auto") -> BenchResult:
    """Training images/s of this engine against the standard recipe (PIL + DataLoader, fp32) on `arch`, with the
    precision it resolved to and its share of the device's measured peak: what `nas bench` prints."""
    from nas.arch.bounds import check_buildable
    from nas.arch.model import build_for_data
    from nas.engine.bench import bench
    from nas.engine.data import load_split
    from nas.engine.recipe import Recipe

    recipe = Recipe(precision=precision)
    check_buildable(arch)
    train_set = load_split(data, "train")
    model = build_for_data(arch, len(train_set.classes), recipe.init, recipe.seed)
    return bench(model, train_set, _device(device), recipe, batch_size=batch_size, steps=steps, rounds=rounds)


def _device(name: str) -> torch.device:
    from nas.engine.train import select_device

    return select_device(name)


__all__ = ["SearchHooks", "SearchResult", "Study", "train_architecture"]
