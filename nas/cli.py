"""`nas` command line: thin commands that parse flags, build a config, call the library, print.

Every user error is a NasError printed as one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import inspect
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import numpy as np
import typer
import yaml
from rich.console import Console
from rich.table import Table

from nas.arch import BLOCK_TYPES, Arch
from nas.counting import breakdown, count_macs, count_params
from nas.errors import NasError
from nas.numbers import parse_count

app = typer.Typer(
    help="Neural architecture search for ResNet image classifiers under a parameter budget.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
# logs and pipes get wide lines (rich's 80-column default cut the leaderboard's architectures short)
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)


def command(fn: Callable) -> Callable:
    """Register a command whose NasErrors become one-line messages (exit 2)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NasError as e:
            err.print(f"[bold red]error:[/] {e}", markup=True, soft_wrap=True)
            raise typer.Exit(2) from None
    return app.command()(wrapper)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# -- architecture flags, shared by count / train / bench -------------------------------------
def _int_list(text: str | None, name: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x != "")
    except ValueError:
        raise NasError(f"--{name}={text!r} must be comma-separated integers, e.g. 2,2,2,2") from None


ARCH_FLAGS: dict[str, tuple[Any, Any]] = {  # parameter: (annotation, default)
    "arch_file": (Annotated[Optional[Path], typer.Argument(help="Architecture file (JSON or YAML, as in examples/); or give --blocks and --channels.", show_default=False)], None),
    "blocks": (Annotated[Optional[str], typer.Option(help="Blocks per residual layer B_i, e.g. 2,2,2,2.")], None),
    "channels": (Annotated[Optional[str], typer.Option(help="Output channels per layer C_i, e.g. 64,128,256,512.")], None),
    "kernels": (Annotated[Optional[str], typer.Option(help="Conv kernel F_i: one odd value for all layers or one per layer. (default: 3)")], None),
    "skip_kernels": (Annotated[Optional[str], typer.Option("--skip-kernels", help="Shortcut conv kernel K_i (odd). (default: 1)")], None),
    "pool": (Annotated[Optional[int], typer.Option(help="Average-pool kernel P. (default: global)")], None),
    "block": (Annotated[str, typer.Option(help=f"Block type: {' | '.join(BLOCK_TYPES)}.")], "basic"),
    "se": (Annotated[bool, typer.Option("--se", help="Add squeeze-and-excitation (reduction --se-ratio).")], False),
    "se_ratio": (Annotated[int, typer.Option("--se-ratio", help="SE reduction ratio, used with --se.")], 16),
    "groups": (Annotated[int, typer.Option(help="Groups in the KxK convs (ResNeXt cardinality).")], 1),
    "dropout": (Annotated[float, typer.Option(help="Dropout between a block's convs.")], 0.0),
    "classes": (Annotated[int, typer.Option("--classes", help="Number of classes.")], 10),
    "input_size": (Annotated[int, typer.Option("--input-size", help="Input image side in pixels.")], 32),
}


def read_arch_file(path: Path) -> Arch:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise NasError(f"cannot read architecture file {str(path)!r} ({e.strerror}): pass an existing file, e.g. examples/resnet18.json") from None
    except yaml.YAMLError as e:
        raise NasError(f"{path}: not valid JSON/YAML ({getattr(e, 'problem', e)})") from None
    try:
        return Arch.from_dict(data.get("arch", data) if isinstance(data, dict) else data)
    except NasError as e:
        raise NasError(f"{path}: {e}") from None
    except TypeError as e:
        raise NasError(f"{path}: {e}") from None


def arch_from_flags(arch_file: Path | None = None, **flags: Any) -> Arch:
    """An Arch from a file or from the ARCH_FLAGS (not both: a file is the whole architecture)."""
    f = {name: default for name, (_, default) in ARCH_FLAGS.items() if name != "arch_file"} | flags
    if arch_file is not None:
        given = [name for name, value in flags.items() if value != ARCH_FLAGS[name][1]]
        if given:
            raise NasError(f"give either an ARCH_FILE or flags, not both: {arch_file} is the whole architecture, "
                           f"so --{given[0].replace('_', '-')} would be ignored")
        return read_arch_file(arch_file)
    if f["blocks"] is None or f["channels"] is None:
        raise NasError("no architecture given: pass an ARCH_FILE, or --blocks and --channels (e.g. --blocks 2,2,2,2 --channels 64,128,256,512)")
    b = _int_list(f["blocks"], "blocks")
    ks = _int_list(f["kernels"], "kernels") or (3,)
    sk = _int_list(f["skip_kernels"], "skip-kernels") or (1,)
    n = len(b or ())
    return Arch(blocks=b, channels=_int_list(f["channels"], "channels"),
                kernels=ks * n if len(ks) == 1 else ks, skip_kernels=sk * n if len(sk) == 1 else sk,
                pool=f["pool"], block=f["block"], se_ratio=f["se_ratio"] if f["se"] else 0, groups=f["groups"],
                dropout=f["dropout"], num_classes=f["classes"], input_size=f["input_size"])


def arch_command(fn: Callable) -> Callable:
    """Register a command over one architecture: it gets ARCH_FILE and the --blocks/--channels/... flags
    (the same in count, train and bench) and is called with the `Arch` they describe."""
    own = inspect.signature(fn, eval_str=True)
    flags = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=a, default=d)
             for name, (a, d) in ARCH_FLAGS.items()]

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        return fn(arch_from_flags(**{name: kwargs.pop(name) for name in ARCH_FLAGS}), **kwargs)

    wrapper.__signature__ = own.replace(parameters=[*flags, *list(own.parameters.values())[1:]])  # for Typer
    return command(wrapper)


# -- count -----------------------------------------------------------------------------------
@arch_command
def count(
    arch: Arch,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Count parameters and MACs of one architecture, exactly, without building it."""
    rows = breakdown(arch)
    params, macs = count_params(arch), count_macs(arch)
    if as_json:
        print_json({"params": params, "macs": macs, "arch": arch.to_dict(), "id": arch.id,
                    "layers": [{"name": r.name, "params": r.params, "macs": r.macs, "output": r.output} for r in rows]})
        return
    table = Table(title=arch.describe(), title_justify="left")
    for col in ("stage", "output", "params", "MACs"):
        table.add_column(col, justify="left" if col in ("stage", "output") else "right")
    for r in rows:
        table.add_row(r.name, r.output, f"{r.params:,}", f"{r.macs:,}")
    table.add_section()
    table.add_row("total", "", f"[bold]{params:,}[/]", f"[bold]{macs:,}[/]")
    out.print(table)
    out.print(f"id {arch.id}: {params / 1e6:.3f}M parameters, {macs / 1e6:.1f}M MACs per image")


# -- space -----------------------------------------------------------------------------------
def _histogram(params: np.ndarray, budget: int | None, bins: int = 16) -> Table:
    table = Table(box=None, show_header=True, pad_edge=False)
    table.add_column("params", justify="right")
    table.add_column("share", justify="right")
    table.add_column("")
    if len(params) == 0:
        return table
    edges = np.unique(np.geomspace(max(params.min(), 1), params.max() + 1, bins + 1).astype(np.int64))
    counts, _ = np.histogram(params, edges)
    width = 40
    for lo, hi, c in zip(edges[:-1], edges[1:], counts):
        share = c / len(params)
        over = budget is not None and lo > budget
        bar = "█" * round(width * c / counts.max())
        table.add_row(f"{lo / 1e6:8.3f}M-{hi / 1e6:.3f}M", f"{100 * share:5.1f}%", f"[{'red' if over else 'green'}]{bar}[/]")
    return table


@command
def space(
    space_file: Annotated[Path, typer.Argument(help="Search-space YAML file, e.g. search_spaces/default.yaml.")],
    budget: Annotated[Optional[str], typer.Option(help="Parameter budget: 5e6, 5M, 4.5m, 5_000_000.")] = None,
    samples: Annotated[int, typer.Option(help="Candidates to sample when the space is too large to enumerate.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Size of a search space and how much of it fits a budget (exact where it can be enumerated)."""
    from nas.space import load_space
    from nas.survey import survey

    cap = parse_count(budget) if budget is not None else None
    if samples < 1:
        raise NasError(f"--samples={samples} must be >= 1")
    sp = load_space(space_file)
    s = survey(sp, samples=samples, seed=seed)
    fit = s.fits(cap) if cap is not None else None
    summary = {
        "space": sp.name, "size": s.size, "method": s.method, "evaluated": s.evaluated,
        "budget": cap, "fit_fraction": fit, "fit_count": round(fit * s.size) if fit is not None else None,
        "params_min": int(s.params.min()), "params_median": int(np.median(s.params)),
        "params_max": int(s.params.max()), "candidates_per_s": round(s.rate),
    }
    if as_json:
        print_json(summary)
        return
    how = "exactly, by enumeration" if s.method == "exact" else f"by sampling {s.evaluated:,} candidates uniformly"
    out.print(f"[bold]{sp.name}[/]: {s.size:,} valid architectures; counted {how} at {s.rate:,.0f} candidates/s")
    if cap is not None:
        approx = "" if s.method == "exact" else "~"
        out.print(f"budget {cap:,}: {approx}{summary['fit_count']:,} fit ({100 * fit:.1f}%)")
    out.print(f"parameters: min {summary['params_min']:,}, median {summary['params_median']:,}, max {summary['params_max']:,}")
    out.print(_histogram(s.params, cap))


# -- search ----------------------------------------------------------------------------------
ROOT_SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "default.yaml"
Study = Annotated[str, typer.Option(help="Study name: its folder under --results-dir and its name in the storage.")]
Storage = Annotated[Optional[str], typer.Option(help="Optuna storage URL (sqlite:///..., postgresql://...). (default: RESULTS/STUDY/study.db)")]
ResultsDir = Annotated[Path, typer.Option("--results-dir", help="Where study folders are written.")]
Data = Annotated[str, typer.Option(help="cifar10 | cifar100 (downloaded once), an ImageFolder directory with train/ and test/, or a .tar.gz of one.")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda (auto picks CUDA when available).")]


@command
def search(
    budget: Annotated[str, typer.Option(help="Parameter budget: 5e6, 5M, 4.5m, 5_000_000.")],
    trials: Annotated[int, typer.Option(help="Candidates to train (over-budget proposals are rejected apart and not counted).")] = 200,
    space_file: Annotated[Path, typer.Option("--space", help="Search-space YAML file.")] = ROOT_SPACE,
    data: Data = "cifar10",
    study: Study = "default",
    storage: Storage = None,
    results_dir: ResultsDir = Path("results"),
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per trial. (default: 4 on CPU, 10 on CUDA)")] = None,
    train_subset: Annotated[Optional[int], typer.Option("--train-subset", help="Training images per trial, 0 = all. (default: 5000 on CPU, all on CUDA)")] = None,
    val_subset: Annotated[Optional[int], typer.Option("--val-subset", help="Validation images scored per evaluation, 0 = all. (default: 2000 on CPU, all on CUDA)")] = None,
    width: Annotated[Optional[float], typer.Option(help="Channel multiplier for proxy training, (0, 1]. (default: 0.25 on CPU, 1 on CUDA)")] = None,
    evals_per_epoch: Annotated[Optional[int], typer.Option("--evals-per-epoch", help="Validation points per epoch reported to the pruner.")] = None,
    val_size: Annotated[int, typer.Option("--val-size", help="Images carved from the training split for validation.")] = 5000,
    seed: Annotated[int, typer.Option(help="Makes the sequence of sampled candidates reproducible.")] = 0,
    timeout: Annotated[Optional[float], typer.Option(help="Stop starting new trials after this many seconds.")] = None,
    pruner: Annotated[str, typer.Option(help="halving | hyperband | median | none.")] = "halving",
    sampler: Annotated[str, typer.Option(help="tpe | random.")] = "tpe",
    device: Device = "auto",
    workers: Annotated[int, typer.Option(help="Local worker processes on one study (needs --storage postgresql://...); CPU threads are shared out, one GPU each.")] = 1,
    confirm: Annotated[bool, typer.Option("--confirm/--no-confirm", help="Final rung once all trials are trained: the best of each depth N and the best seed design train 5x longer, and that score ranks the leaderboard.")] = True,
) -> None:
    """Search the space for the most accurate architecture within the parameter budget.

    The space file's seed designs are tried first; the short schedule then filters candidates and a
    final rung, 5x longer, picks the winner among the best of each depth and the best seed design.

    Re-running the same command resumes the study: finished trials are kept, nothing is trained twice.
    Many `nas search --storage postgresql://...` processes, on any machines, share one study.
    """
    from nas import artifacts
    from nas.results import leaderboard, trials_frame, write_trials_csv
    from nas.search import (CONFIRM_LONGER_BY, Fidelity, SEARCH_RECIPE, SearchConfig, default_fidelity, enqueue_seeds,
                            estimate_trial_seconds, evaluated, existing_budget, load_search_data, open_study, run_search,
                            storage_backend)
    from nas.stopping import stop_on_signals
    from nas.workers import check_concurrent_storage, cpu_threads, run_workers
    from nas.space import load_space
    from nas.survey import survey
    from nas.train import select_device
    from nas.live import SearchView

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the live view says what happens, trial faults included
    # 1. validate everything before anything is written
    cap = parse_count(budget)
    sp = load_space(space_file)
    dev = select_device(device)
    base = default_fidelity(dev)
    fid = Fidelity(epochs=base.epochs if epochs is None else epochs,
                   train_subset=base.train_subset if train_subset is None else train_subset,
                   val_subset=base.val_subset if val_subset is None else val_subset,
                   width=base.width if width is None else width,
                   evals_per_epoch=base.evals_per_epoch if evals_per_epoch is None else evals_per_epoch)
    artifacts.check_results_dir(results_dir)
    folder = artifacts.study_dir(results_dir, study)
    url = storage or artifacts.default_storage(results_dir, study)
    cfg = SearchConfig(budget=cap, trials=trials, study=study, storage=url, fidelity=fid, recipe=SEARCH_RECIPE,
                       seed=seed, val_size=val_size, timeout=timeout, pruner=pruner, sampler=sampler)
    check_concurrent_storage(storage_backend(url), artifacts.safe_url(url), workers)
    s = survey(sp, samples=20_000, seed=seed)
    if s.fits(cap) == 0:
        raise NasError(f"no candidate of {sp.name} fits the budget {cap:,} (smallest {'' if s.method == 'exact' else 'sampled '}"
                       f"has {int(s.params.min()):,} parameters): raise --budget or add smaller choices to the space")
    search_data = load_search_data(data, cfg)
    previous = existing_budget(cfg)  # connects to the database (a bad URL or password fails here) and writes nothing
    if previous is not None and previous != cap:
        raise NasError(f"study {study!r} was searched with budget {previous:,}, not {cap:,}: use a new --study name to search another budget")

    # 2. files and study (created once here, before any worker starts: field-notes)
    folder.mkdir(parents=True, exist_ok=True)
    artifacts.write_run_files(folder, {"command": "search", "space_file": space_file, "data": data, "device": str(dev),
                                       "workers": workers, "storage": artifacts.safe_url(url),
                                       "config": {**artifacts.as_jsonable(cfg), "storage": artifacts.safe_url(url)}},
                              space_file)
    st = open_study(cfg)
    st.set_user_attr("budget", cap)
    st.set_user_attr("space", sp.name)
    seeded = enqueue_seeds(st, sp, cap)

    # 3. what it will cost
    already = evaluated(st)
    per_trial = estimate_trial_seconds(sp, cfg, search_data, dev)
    remaining = max(trials - already, 0)
    out.print(f"[bold]nas search[/] {sp.name}: budget {cap:,} params, {trials} trials ({already} already done), "
              f"device {dev}, storage {artifacts.safe_url(url)}")
    out.print(f"fidelity: {fid.epochs} epochs x {fid.train_subset or len(search_data.train):,} images, width x{fid.width:g}, "
              f"{len(search_data.val):,} validation images, pruner {pruner}; ~{per_trial:.1f} s per full trial, "
              f"<= ~{remaining * per_trial / 60:.1f} min for {remaining} trials (pruning cuts this)")
    if seeded:
        out.print(f"seed designs tried first: {', '.join(seeded)}")
    if len(sp.layers) > 1 and sampler == "tpe":
        out.print(f"depths {', '.join(map(str, sp.layers))} take turns, and trials are pruned against their own depth "
                  f"(the short schedule ranks within a depth, not across)")
    if confirm:
        rung = len(sp.layers) + bool(sp.seeds)
        out.print(f"final rung: up to {rung} candidates (best of each depth, best seed design) trained {CONFIRM_LONGER_BY}x "
                  f"longer, ~{rung * CONFIRM_LONGER_BY * per_trial / 60:.1f} min")

    # 4. run: Ctrl+C and SIGTERM end the running trial as FAIL and queue its candidate again
    try:
        with SearchView(out, trials, already) as view, stop_on_signals() as stop:
            if workers == 1:
                st = run_search(sp, cfg, search_data, dev, on_trial=view.update)
            else:
                out.print(f"{workers} worker processes, {cpu_threads(workers)} CPU thread(s) each")
                run_workers(sp, cfg, data, dev, workers, stop, on_poll=_progress(st, view))
            if confirm and evaluated(st) >= trials:
                final_rung(st, cfg, search_data, dev)
            elif confirm:
                out.print(f"final rung skipped: {evaluated(st)}/{trials} trials trained; run the same command to finish")
    except KeyboardInterrupt:
        err.print(f"[bold red]stopped[/] by {signal.Signals(stop.signal or signal.SIGINT).name}: a trial stopped in "
                  f"training was recorded as failed and its candidate queued again; run the same command to resume",
                  markup=True, soft_wrap=True)
        raise typer.Exit(stop.exit_code) from None

    # 5. results
    frame = trials_frame(st)
    write_trials_csv(frame, folder / "trials.csv")
    from nas.retrain import refresh_report

    refresh_report(st, results_dir, EXAMPLES, frame)  # keeps retrained results and baselines on the page
    out.print(board_table(board_rows(leaderboard(frame, top=10), results_dir, study), study))
    out.print(f"{evaluated(st)}/{trials} candidates trained; files in {folder}/ (trials.csv, report.html, config.json)")


def final_rung(study, cfg, data, device) -> None:
    """Run the search's final rung, a line per candidate, then say whether the search beat the seed designs."""
    from nas.search import CONFIRM_LONGER_BY, confirm

    out.print(f"[bold]final rung[/]: training the best of each depth and the best seed design {CONFIRM_LONGER_BY}x longer")

    def show(trial, record) -> None:
        acc = "non-finite" if record["val_acc"] is None else f"{record['val_acc']:.2%}"
        who = trial.user_attrs.get("seed_design") or "found"
        out.print(f"  trial {trial.number} ({who}): {trial.value:.2%} short -> {acc} at {record['epochs']} epochs x "
                  f"{record['train_subset']:,} images ({record['seconds']:.0f} s)  {Arch.from_dict(trial.user_attrs['arch']).describe()}")

    records = confirm(study, cfg, data, device, on_result=show, progress=out.is_terminal)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    scored = [(r["val_acc"], by_number[n]) for n, r in records.items() if r["val_acc"] is not None]
    found = max(((a, t) for a, t in scored if "seed_design" not in t.user_attrs), default=None, key=lambda x: x[0])
    seed = max(((a, t) for a, t in scored if "seed_design" in t.user_attrs), default=None, key=lambda x: x[0])
    if found and seed:
        verdict = "beats" if found[0] > seed[0] else "does not beat"
        out.print(f"best found (trial {found[1].number}, {found[1].user_attrs['params']:,} params) {found[0]:.2%} {verdict} "
                  f"the best seed design {seed[1].user_attrs['seed_design']} ({seed[1].user_attrs['params']:,} params) "
                  f"{seed[0]:.2%} at {CONFIRM_LONGER_BY}x the search's schedule (validation, one initialisation each)")


def _progress(study, view) -> Callable[[], None]:
    """The live view for many workers: the parent polls the study and shows each newly finished trial."""
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def poll() -> None:
        for t in study.get_trials(deepcopy=False):
            if t.state.is_finished() and t.number not in seen:
                seen.add(t.number)
                view.update(study, t)
    return poll


# -- retrain / report / leaderboard / show (issue 5) ------------------------------------------
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
Examples = Annotated[Path, typer.Option(help="Folder of hand-designed baselines (*.json) shown in reports.")]
StudyData = Annotated[Optional[str], typer.Option(help="Data source (as in `nas search`). (default: the one the study searched, else cifar10)")]


def _study_data(results_dir: Path, study: str) -> str:
    """The --data the study was searched with (config.json), so a retrain uses the same dataset."""
    config = Path(results_dir) / study / "config.json"
    try:
        return str(json.loads(config.read_text()).get("data") or "cifar10")
    except (OSError, json.JSONDecodeError):
        return "cifar10"


def _refresh_report_if_study(study: str, storage: Optional[str], results_dir: Path, examples: Path) -> Optional[Path]:
    from nas.retrain import load_study, refresh_report

    try:
        st = load_study(study, storage, results_dir)
    except NasError:
        return None  # no such study: a baseline retrain stands on its own
    return refresh_report(st, results_dir, examples) if st.user_attrs.get("budget") else None


def _pm(mean: Optional[float], std: Optional[float]) -> str:
    if mean is None:
        return ""
    return f"{mean:.2%}" + (f" ± {std:.2%}" if std is not None else "")


@command
def retrain(
    target: Annotated[Optional[str], typer.Argument(help="'best' or a trial number. (default: best)", show_default=False)] = None,
    top: Annotated[Optional[int], typer.Option(help="Retrain the K best finished in-budget trials instead.")] = None,
    arch_file: Annotated[Optional[Path], typer.Option("--arch", help="Retrain an architecture file (e.g. examples/resnet10.json) under the same protocol; results go to RESULTS/baselines/NAME/.")] = None,
    study: Study = "default",
    storage: Storage = None,
    results_dir: ResultsDir = Path("results"),
    data: StudyData = None,
    seeds: Annotated[int, typer.Option(help="Repeat with seeds 0..N-1; reports give mean ± std.")] = 1,
    epochs: Annotated[Optional[int], typer.Option(help="Full-schedule epochs. (default: 200)")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate. (default: 0.1, or what the search sampled)")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per step. (default: 128)")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="sgd | adam | adamw | adagrad | adamax | adadelta. (default: sgd)")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="cosine | onecycle | step | plateau | constant. (default: cosine)")] = None,
    train_subset: Annotated[Optional[int], typer.Option("--train-subset", help="Train on a stratified subset of this many images (smoke runs). (default: all)")] = None,
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="Any other recipe field as key=value, repeatable: --set label_smoothing=0.1 --set lookahead=true.")] = None,
    val_size: Annotated[int, typer.Option("--val-size", help="Carve this many training images out for validation curves (0 = train on the whole split).")] = 0,
    device: Device = "auto",
    force: Annotated[bool, typer.Option(help="Retrain finished runs from scratch (deletes their files).")] = False,
    examples: Examples = EXAMPLES,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Retrain candidates with the full recipe on the whole training split; score each once on the test split.

    Training settings: the full default recipe (SGD 0.1, cosine, 200 epochs, ...), then what the
    search space's `train:` section sampled for the trial (or the file's "recipe"), then flags.
    Re-running the same command resumes: finished runs (metrics.json) are kept, interrupted ones
    continue from their last complete epoch. Runs: RESULTS/STUDY/retrain/ARCHID-PROTOCOL-seedK/.
    """
    import dataclasses

    from nas import retrain as rt
    from nas.artifacts import check_results_dir
    from nas.recipe import parse_overrides
    from nas.train import select_device

    # 1. validate everything before any data is read
    if arch_file is not None and (target is not None or top is not None):
        raise NasError("give either --arch FILE or a study target ('best', a trial number, --top K), not both")
    if target is not None and top is not None:
        raise NasError(f"give either TARGET={target!r} or --top {top}, not both")
    if seeds < 1:
        raise NasError(f"--seeds={seeds} must be >= 1")
    if val_size < 0:
        raise NasError(f"--val-size={val_size} must be >= 0 (0 = no validation carve-out)")
    check_results_dir(results_dir)
    flags = {k: v for k, v in {"epochs": epochs, "lr": lr, "batch_size": batch_size, "optimizer": optimizer,
                               "schedule": schedule, "train_subset": train_subset}.items() if v is not None}
    flags.update(parse_overrides(settings or []))
    if "seed" in flags:
        raise NasError("the seed is set by --seeds N (seeds 0..N-1), not --set seed=...")
    dev = select_device(device)
    if arch_file is not None:
        candidates = [rt.file_candidate(arch_file)]
        roots = [rt.baseline_root(results_dir, candidates[0].name)]
        source = data or "cifar10"
    else:
        st = rt.load_study(study, storage, results_dir)
        trials = rt.select_trials(st, target or "best", top)
        candidates = [rt.trial_candidate(t) for t in trials]
        candidates = [dataclasses.replace(c, source=f"study {study} {c.source}") for c in candidates]
        roots = [rt.retrain_root(results_dir, study)] * len(candidates)
        source = data or _study_data(results_dir, study)
    plans = []
    for c, root in zip(candidates, roots):
        for seed in range(seeds):
            recipe = rt.resolve_recipe(c, {**flags, "seed": seed})
            plans.append((c, recipe, rt.run_dir(root, c.arch, recipe, val_size, source)))

    # 2. train what is not finished yet (status lines on stderr, so --json stdout stays one object)
    rdata = rt.load_retrain_data(source, val_size)
    runs = []
    for c, recipe, folder in plans:
        ckpts = sorted((folder / rt.CHECKPOINTS).glob("ckpt-*.pt")) if folder.is_dir() and not force else []
        if (folder / rt.METRICS).is_file() and not force:
            state = "finished, kept"
        else:
            state = f"resuming after epoch {int(ckpts[-1].stem[5:])}" if ckpts else "starting"
        err.print(f"{c.name} seed {recipe.seed} ({c.arch.describe()}): {state}; {recipe.epochs} epochs, "
                  f"{recipe.optimizer} lr {recipe.lr:g} {recipe.schedule} -> {folder}")
        try:
            metrics = rt.retrain_one(c, recipe, rdata, dev, folder, force=force,
                                     progress=sys.stderr.isatty() and not as_json)
        except KeyboardInterrupt:
            err.print(f"interrupted: {folder} keeps its last complete epoch; re-run the same command to resume")
            raise typer.Exit(130) from None
        runs.append({**metrics, "dir": str(folder), "status": state})

    # 3. summary and report
    report = _refresh_report_if_study(study, storage, results_dir, examples)
    summary = rt.summarize(runs)
    if as_json:
        keys = ("name", "seed", "status", "test_acc", "params", "arch_id", "protocol", "search_val_acc", "wall_seconds", "dir")
        print_json({"runs": [{k: r.get(k) for k in keys} for r in runs], "summary": summary,
                    "report": str(report) if report else None})
        return
    table = Table(title="retrained (test split, evaluated once)", title_justify="left")
    for col in ("name", "test acc", "seeds", "search val acc", "params", "architecture"):
        table.add_column(col, justify="left" if col in ("name", "architecture") else "right")
    for e in summary:
        table.add_row(e["name"], _pm(e["test_acc"], e["test_acc_std"]), str(len(e["seeds"])),
                      _pm(e["val_acc"], None), f"{e['params']:,}", e["arch"])
    out.print(table)
    out.print(f"runs in {roots[0]}/" + (f"; report {report}" if report else ""))


@command
def report(
    study: Study = "default",
    storage: Storage = None,
    results_dir: ResultsDir = Path("results"),
    examples: Examples = EXAMPLES,
) -> None:
    """Write RESULTS/STUDY/report.html: the search, retrained candidates and the baselines (offline HTML)."""
    from nas.retrain import load_study, refresh_report

    path = refresh_report(load_study(study, storage, results_dir), results_dir, examples)
    out.print(f"report written to {path}")


def _retrained_by_trial(results_dir: Path, study: str) -> dict[int, dict]:
    from nas.retrain import finished_runs, retrain_root, summarize

    return {e["trial"]: e for e in summarize(finished_runs(retrain_root(results_dir, study))) if e["trial"] is not None}


@command
def leaderboard(
    study: Study = "default",
    storage: Storage = None,
    results_dir: ResultsDir = Path("results"),
    top: Annotated[int, typer.Option(help="Rows to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Best finished in-budget trials (final-rung score first, then the short one), with retrained test accuracy where it exists."""
    from nas.results import leaderboard as board_of, trials_frame
    from nas.retrain import load_study

    st = load_study(study, storage, results_dir)
    frame = trials_frame(st)
    board = board_of(frame, top=top)
    if board.empty:
        raise NasError(f"study {study!r} has no trial that completed within the budget ({len(frame)} trials): "
                       f"run `nas search --study {study}` longer")
    rows = board_rows(board, results_dir, study)
    if as_json:
        print_json({"study": study, "budget": st.user_attrs.get("budget"), "leaderboard": rows})
        return
    out.print(board_table(rows, study))


def board_rows(board, results_dir: Path, study: str) -> list[dict[str, Any]]:
    """Leaderboard rows as plain values, with retrained test accuracy where it exists."""
    retrained = _retrained_by_trial(results_dir, study)
    rows = []
    for _, r in board.iterrows():
        e = retrained.get(int(r["number"]), {})
        rows.append({"rank": int(r["rank"]), "trial": int(r["number"]), "val_acc": float(r["val_acc"]),
                     "confirm_acc": None if np.isnan(r["confirm_acc"]) else float(r["confirm_acc"]),
                     "seed_design": r["seed_design"] if isinstance(r["seed_design"], str) else None,
                     "params": int(r["params"]), "macs": int(r["macs"]), "arch_id": r["arch_id"],
                     "arch": Arch.from_dict(json.loads(r["arch_json"])).describe(),
                     "test_acc": e.get("test_acc"), "test_acc_std": e.get("test_acc_std")})
    return rows


def board_table(rows: list[dict[str, Any]], study: str) -> Table:
    table = Table(title=f"leaderboard of {study} (val acc: 5x = the search's final rung, short = its schedule; "
                        f"test acc: retrained)", title_justify="left")
    for col in ("rank", "trial", "val 5x", "val short", "test acc", "params", "MACs", "architecture"):
        table.add_column(col, justify="left" if col == "architecture" else "right")
    for r in rows:
        table.add_row(str(r["rank"]), str(r["trial"]), "" if r["confirm_acc"] is None else f"{r['confirm_acc']:.2%}",
                      f"{r['val_acc']:.2%}", _pm(r["test_acc"], r["test_acc_std"]), f"{r['params']:,}", f"{r['macs']:,}",
                      r["arch"] + (f" ({r['seed_design']})" if r["seed_design"] else ""))
    return table


@command
def show(
    trial: Annotated[str, typer.Argument(help="Trial number, or 'best'.")],
    study: Study = "default",
    storage: Storage = None,
    results_dir: ResultsDir = Path("results"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Everything recorded about one trial: outcome, architecture, sampled settings, curve, retrained results."""
    from nas.retrain import finished_runs, load_study, recipe_overrides, retrain_root, select_trials

    st = load_study(study, storage, results_dir)
    t = select_trials(st, trial)[0]
    a = t.user_attrs
    runs = [r for r in finished_runs(retrain_root(results_dir, study)) if r.get("trial") == t.number]
    facts = {
        "trial": t.number, "state": t.state.name, "outcome": a.get("outcome"), "reason": a.get("reason"),
        "val_acc": t.value, "params": a.get("params"), "macs": a.get("macs"), "arch_id": a.get("arch_id"),
        "arch": a.get("arch"), "sampled": dict(t.params), "retrain_settings": recipe_overrides(t.params),
        "search_recipe": a.get("recipe"), "val_curve": a.get("val_curve"), "seconds": a.get("seconds"),
        "retrained": [{k: r.get(k) for k in ("seed", "test_acc", "protocol", "wall_seconds", "dir")} for r in runs],
    }
    if as_json:
        print_json(facts)
        return
    table = Table(title=f"trial {t.number} of {study}", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    arch = Arch.from_dict(a["arch"]) if a.get("arch") else None
    for key, value in (("state", t.state.name), ("outcome", a.get("outcome")), ("reason", a.get("reason")),
                       ("val acc (search)", f"{t.value:.2%}" if t.value is not None and a.get("outcome") == "complete" else ""),
                       ("params", f"{a['params']:,}" if a.get("params") is not None else ""),
                       ("MACs", f"{a['macs']:,}" if a.get("macs") is not None else ""),
                       ("arch id", a.get("arch_id")), ("architecture", arch.describe() if arch else ""),
                       ("sampled", ", ".join(f"{k}={v}" for k, v in t.params.items())),
                       ("retrain settings", ", ".join(f"{k}={v}" for k, v in facts["retrain_settings"].items()) or "(defaults)"),
                       ("val curve", " ".join(f"{acc:.1%}@{ep:g}" for ep, acc in a.get("val_curve") or [])),
                       ("seconds", f"{a['seconds']:.1f}" if a.get("seconds") is not None else "")):
        table.add_row(key, "" if value is None else str(value))
    for r in runs:
        table.add_row(f"retrained seed {r['seed']}", f"test acc {r['test_acc']:.2%} ({r['dir']})")
    out.print(table)


# -- train / bench (issue 3) -----------------------------------------------------------------
def _model_for(arch: Arch, n_classes: int, init: str, seed: int):
    """Seeded build, so `nas train` runs with one seed are identical end to end."""
    from nas.model import build_model

    if arch.num_classes != n_classes:
        raise NasError(f"--classes {arch.num_classes} but the data has {n_classes} classes; pass --classes {n_classes}")
    return build_model(arch, init, seed)


@arch_command
def train(
    arch: Arch,
    data: Data = "cifar10",
    val_size: Annotated[int, typer.Option("--val-size", help="Training images held out for validation (stratified, seed 0); 0 = none.")] = 5000,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs. (default: 200)")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per step. (default: 128)")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate. (default: 0.1)")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto | fp32 | bf16 | fp16. (default: auto)")] = None,
    train_subset: Annotated[Optional[int], typer.Option("--train-subset", help="Train on a stratified subset of this many images. (default: all)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for init, data order and augmentation. (default: 0)")] = None,
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="Any recipe field as key=value, repeatable: --set schedule=onecycle --set lookahead=true.")] = None,
    checkpoint_dir: Annotated[Optional[Path], typer.Option("--checkpoint-dir", help="Save every epoch here; rerunning resumes from the latest.")] = None,
    eval_split: Annotated[str, typer.Option("--eval", help="val: report validation accuracy | test: also score once on the test split (final numbers only).")] = "val",
    device: Device = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Train one architecture with one recipe and report validation accuracy (test accuracy with --eval test)."""
    import dataclasses

    from nas.data import load_split, split_validation
    from nas.recipe import Recipe, parse_overrides
    from nas.train import select_device
    from nas.train import train as run_training

    flags = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr, "precision": precision,
                               "train_subset": train_subset, "seed": seed}.items() if v is not None}
    recipe = Recipe.from_dict({**parse_overrides(settings or []), **flags})
    if val_size < 0:
        raise NasError(f"--val-size={val_size} must be >= 0 (0 = no validation)")
    if eval_split not in ("val", "test"):
        raise NasError(f"--eval={eval_split!r} is unknown: choose val or test")
    dev = select_device(device)
    full = load_split(data, "train")
    train_set, val_set = split_validation(full, val_size) if val_size else (full, None)
    model = _model_for(arch, len(full.classes), recipe.init, recipe.seed)
    result = run_training(model, recipe, train_set, val_set, dev, checkpoint_dir=checkpoint_dir,
                          progress=sys.stderr.isatty() and not as_json)
    summary = {"status": result.status, "val_acc": result.val_acc, "seconds": result.seconds,
               "images_per_s": result.images_per_s, "images_seen": result.images_seen,
               "train_loss_sum": result.train_loss_sum, "params": count_params(arch), "arch": arch.to_dict(),
               "recipe": recipe.to_dict(), "device": str(dev),
               "history": [dataclasses.asdict(p) for p in result.history]}
    if eval_split == "test" and result.status == "ok":
        from nas.augment import channel_stats
        from nas.train import evaluate

        test_set = load_split(data, "test")
        summary["test_acc"], summary["test_loss"], summary["test_per_class"] = evaluate(
            model, test_set, dev, stats=channel_stats(train_set))
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"{arch.describe()} on {data} ({len(train_set):,} train, {len(val_set or ()):,} val)",
                  title_justify="left")
    for col in ("epoch", "train loss", "val loss", "val acc", "seconds"):
        table.add_column(col, justify="right")
    for p in result.history:
        table.add_row(f"{p.epoch:.2f}", f"{p.train_loss:.4f}", f"{p.val_loss:.4f}", f"{p.val_acc:.2%}", f"{p.seconds:.1f}")
    out.print(table)
    if result.status != "ok":
        raise NasError(f"training diverged (non-finite loss) after {result.images_seen:,} images with lr={recipe.lr:g}; "
                       f"lower --lr or add warm-up (--set warmup_epochs=1)")
    test = f"; test acc {summary['test_acc']:.2%} on {len(test_set):,} images" if eval_split == "test" else ""
    out.print(f"val acc {result.val_acc:.2%}{test}; {result.images_per_s:,.0f} images/s on {dev}; {result.seconds:.1f} s")


@arch_command
def bench(
    arch: Arch,
    data: Data = "cifar10",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step, both sides.")] = 128,
    steps: Annotated[int, typer.Option(help="Timed steps per round and side.")] = 10,
    rounds: Annotated[int, typer.Option(help="Alternating rounds; medians are reported.")] = 3,
    precision: Annotated[str, typer.Option(help="Engine precision: auto | fp32 | bf16 | fp16 (the standard recipe is always fp32).")] = "auto",
    device: Device = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Training images/s of this engine vs the standard recipe (PIL + DataLoader, fp32), and FLOP/s vs matmul peak."""
    import dataclasses

    from nas.bench import bench as run_bench
    from nas.data import load_split
    from nas.recipe import Recipe
    from nas.train import select_device

    recipe = Recipe(precision=precision)
    dev = select_device(device)
    train_set = load_split(data, "train")
    model = _model_for(arch, len(train_set.classes), recipe.init, recipe.seed)
    r = run_bench(model, train_set, dev, recipe, batch_size=batch_size, steps=steps, rounds=rounds)
    if as_json:
        print_json({**dataclasses.asdict(r), "arch": arch.to_dict(), "params": count_params(arch), "precision": precision})
        return
    table = Table(title=f"{arch.describe()} on {r.device}, batch {r.batch_size}, {r.rounds} rounds x {r.steps} steps",
                  title_justify="left")
    for col in ("pipeline", "images/s (median)", "rounds"):
        table.add_column(col, justify="left" if col == "pipeline" else "right")
    table.add_row(f"nas engine ({precision})", f"{r.images_per_s:,.1f}", " ".join(f"{x:.0f}" for x in r.engine_samples))
    table.add_row("standard recipe (fp32)", f"{r.baseline_images_per_s:,.1f}", " ".join(f"{x:.0f}" for x in r.baseline_samples))
    out.print(table)
    out.print(f"speedup {r.speedup:.2f}x; engine {r.achieved_flops / 1e9:,.1f} GFLOP/s = {r.peak_fraction:.0%} of the "
              f"measured matmul peak {r.peak_flops / 1e9:,.0f} GFLOP/s ({r.train_flops_per_image / 1e9:.2f} GFLOP per image)")
    out.print("[dim]timings on a shared machine are noisy: compare medians, and rerun when the machine is idle[/]")
