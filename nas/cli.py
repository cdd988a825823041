"""`nas` command line: thin commands that parse flags, build a config, call the library, print.

Every user error is a NasError printed as one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
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
out = Console(highlight=False, soft_wrap=True)
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


ArchFile = Annotated[Optional[Path], typer.Argument(help="Architecture file (JSON or YAML, as in examples/); or give --blocks and --channels.", show_default=False)]
Blocks = Annotated[Optional[str], typer.Option(help="Blocks per residual layer B_i, e.g. 2,2,2,2.")]
Channels = Annotated[Optional[str], typer.Option(help="Output channels per layer C_i, e.g. 64,128,256,512.")]
Kernels = Annotated[Optional[str], typer.Option(help="Conv kernel F_i: one odd value for all layers or one per layer. (default: 3)")]
SkipKernels = Annotated[Optional[str], typer.Option("--skip-kernels", help="Shortcut conv kernel K_i (odd). (default: 1)")]
Pool = Annotated[Optional[int], typer.Option(help="Average-pool kernel P. (default: global)")]
Block = Annotated[str, typer.Option(help=f"Block type: {' | '.join(BLOCK_TYPES)}.")]
Se = Annotated[bool, typer.Option("--se", help="Add squeeze-and-excitation (reduction --se-ratio).")]
SeRatio = Annotated[int, typer.Option("--se-ratio", help="SE reduction ratio, used with --se.")]
Groups = Annotated[int, typer.Option(help="Groups in the KxK convs (ResNeXt cardinality).")]
Dropout = Annotated[float, typer.Option(help="Dropout between a block's convs.")]
Classes = Annotated[int, typer.Option("--classes", help="Number of classes.")]
InputSize = Annotated[int, typer.Option("--input-size", help="Input image side in pixels.")]


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


def arch_from_flags(arch_file: Path | None, blocks: str | None, channels: str | None, kernels: str | None,
                    skip_kernels: str | None, pool: int | None, block: str, se: bool, se_ratio: int,
                    groups: int, dropout: float, classes: int, input_size: int) -> Arch:
    """An Arch from a file or from flags (not both: a file is the whole architecture)."""
    flags_given = any(v is not None for v in (blocks, channels, kernels, skip_kernels, pool))
    if arch_file is not None:
        if flags_given:
            raise NasError("give either an ARCH_FILE or --blocks/--channels/..., not both")
        return read_arch_file(arch_file)
    if blocks is None or channels is None:
        raise NasError("no architecture given: pass an ARCH_FILE, or --blocks and --channels (e.g. --blocks 2,2,2,2 --channels 64,128,256,512)")
    b = _int_list(blocks, "blocks")
    ks = _int_list(kernels, "kernels") or (3,)
    sk = _int_list(skip_kernels, "skip-kernels") or (1,)
    n = len(b or ())
    return Arch(blocks=b, channels=_int_list(channels, "channels"),
                kernels=ks * n if len(ks) == 1 else ks, skip_kernels=sk * n if len(sk) == 1 else sk,
                pool=pool, block=block, se_ratio=se_ratio if se else 0, groups=groups, dropout=dropout,
                num_classes=classes, input_size=input_size)


# -- count -----------------------------------------------------------------------------------
@command
def count(
    arch_file: ArchFile = None, blocks: Blocks = None, channels: Channels = None, kernels: Kernels = None,
    skip_kernels: SkipKernels = None, pool: Pool = None, block: Block = "basic", se: Se = False,
    se_ratio: SeRatio = 16, groups: Groups = 1, dropout: Dropout = 0.0, classes: Classes = 10,
    input_size: InputSize = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Count parameters and MACs of one architecture, exactly, without building it."""
    arch = arch_from_flags(arch_file, blocks, channels, kernels, skip_kernels, pool, block, se, se_ratio,
                           groups, dropout, classes, input_size)
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
) -> None:
    """Search the space for the most accurate architecture within the parameter budget.

    Re-running the same command resumes the study: finished trials are kept, nothing is trained twice.
    """
    from nas import artifacts
    from nas.results import leaderboard, trials_frame, write_trials_csv
    from nas.search import (Fidelity, SEARCH_RECIPE, SearchConfig, default_fidelity, estimate_trial_seconds,
                            evaluated, load_search_data, run_search)
    from nas.space import load_space
    from nas.survey import survey
    from nas.train import select_device
    from nas.live import SearchView

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the live view says what happens
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
    s = survey(sp, samples=20_000, seed=seed)
    if s.fits(cap) == 0:
        raise NasError(f"no candidate of {sp.name} fits the budget {cap:,} (smallest {'' if s.method == 'exact' else 'sampled '}"
                       f"has {int(s.params.min()):,} parameters): raise --budget or add smaller choices to the space")
    search_data = load_search_data(data, cfg)

    # 2. files and study
    if storage is None:
        folder.mkdir(parents=True, exist_ok=True)
    artifacts.write_run_files(folder, {"command": "search", "space_file": space_file, "data": data, "device": str(dev),
                                       "storage": artifacts.safe_url(url), "config": {**artifacts.as_jsonable(cfg), "storage": artifacts.safe_url(url)}},
                              space_file)
    from nas.search import open_study
    st = open_study(cfg)
    previous = st.user_attrs.get("budget")
    if previous is not None and previous != cap:
        raise NasError(f"study {study!r} was searched with budget {previous:,}, not {cap:,}: use a new --study name to search another budget")
    st.set_user_attr("budget", cap)
    st.set_user_attr("space", sp.name)

    # 3. what it will cost
    already = evaluated(st)
    per_trial = estimate_trial_seconds(sp, cfg, search_data, dev)
    remaining = max(trials - already, 0)
    out.print(f"[bold]nas search[/] {sp.name}: budget {cap:,} params, {trials} trials ({already} already done), "
              f"device {dev}, storage {artifacts.safe_url(url)}")
    out.print(f"fidelity: {fid.epochs} epochs x {fid.train_subset or len(search_data.train):,} images, width x{fid.width:g}, "
              f"{len(search_data.val):,} validation images, pruner {pruner}; ~{per_trial:.1f} s per full trial, "
              f"<= ~{remaining * per_trial / 60:.1f} min for {remaining} trials (pruning cuts this)")

    # 4. run
    with SearchView(out, trials, already) as view:
        st = run_search(sp, cfg, search_data, dev, on_trial=view.update)

    # 5. results
    frame = trials_frame(st)
    write_trials_csv(frame, folder / "trials.csv")
    write_search_report(frame, folder, cap, study)
    board = leaderboard(frame, top=10)
    print_leaderboard(board)
    out.print(f"{evaluated(st)}/{trials} candidates trained; files in {folder}/ (trials.csv, report.html, config.json)")


def write_search_report(frame, folder: Path, budget: int, study: str) -> None:
    from nas.report import write_report

    write_report(frame, folder / "report.html", budget=budget, title=f"nas study {study}")


def print_leaderboard(board) -> None:
    table = Table(title="leaderboard (validation accuracy, short schedule)", title_justify="left")
    for col in ("trial", "val acc", "params", "MACs", "architecture"):
        table.add_column(col, justify="left" if col == "architecture" else "right")
    for _, r in board.iterrows():
        table.add_row(str(r["number"]), f"{r['val_acc']:.2%}", f"{int(r['params']):,}", f"{int(r['macs']):,}",
                      f"B={r['blocks']} C={r['channels']} F={r['kernels']} K={r['skip_kernels']} P={r['pool']} {r['block']}"
                      + (f" se{r['se_ratio']}" if r['se_ratio'] else ""))
    out.print(table)
