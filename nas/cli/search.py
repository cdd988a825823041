"""`nas search`: flags in, nas.Study.search, what it found out (printing: nas.cli.search_output)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from nas.bundled import default_space
from nas.cli.app import (
    Data,
    Device,
    ResultsDir,
    Storage,
    command,
    err,
    exit_stopped,
    open_study,
    out,
)
from nas.cli.app import Study as StudyName
from nas.cli.results import print_board
from nas.numbers import parse_count
from nas.stopping import Stopped


@command
def search(
    budget: Annotated[str, typer.Option(help="Parameter budget: 5e6, 5M, 4.5m, 5_000_000.")],
    trials: Annotated[int, typer.Option(help="Candidates to train (over-budget proposals are rejected apart and not counted).")] = 200,
    space_file: Annotated[Optional[Path], typer.Option("--space", help="Search-space YAML file, or a bundled space's name (fast, tiny, cifar100, ...). (default: the bundled default)", show_default=False)] = None,
    data: Data = "cifar10",
    study: StudyName = "default",
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
    sampler: Annotated[str, typer.Option(help="tpe | random | grid (every combination of the space's listed choices that fits the bounds, counted and announced first; `train:` knobs must be lists).")] = "tpe",
    objectives: Annotated[str, typer.Option(help="accuracy, or accuracy with costs to minimise: accuracy,params | accuracy,macs | accuracy,params,macs (a multi-objective search of the front; no pruning).")] = "accuracy",
    max_macs: Annotated[Optional[str], typer.Option("--max-macs", help="Hard bound on multiply-accumulates per image, like the budget: 3e8, 300M. (default: none)", show_default=False)] = None,
    max_failures: Annotated[int, typer.Option("--max-failures", help="Stop when this many trials in a row fail (error, out of memory): exit 2 when nas refused a value inside them, else 1.")] = 10,
    device: Device = "auto",
    workers: Annotated[int, typer.Option(help="Local worker processes on one study (needs --storage postgresql://...); CPU threads are shared out, one GPU each.")] = 1,
    final_rung: Annotated[Optional[str], typer.Option("--final-rung", help="How the final rung trains: proxy (the trials' proxy, recipe and weights, 5x longer) | fast (the real network at full width with the fast protocol: hours per candidate on CPU, minutes on a GPU). (default: fast on CUDA, proxy on CPU)", show_default=False)] = None,
    confirm: Annotated[bool, typer.Option("--confirm/--no-confirm", help="Final rung once all trials are trained: the best of each depth N and the best seed design train 5x longer, and that score ranks the leaderboard.")] = True,
) -> None:
    """Search the space for the most accurate architecture within the parameter budget.

    The space file's seed designs are tried first; the short schedule then filters candidates and a
    final rung, 5x longer, picks the winner among the best of each depth and the best seed design.

    Re-running the same command resumes the study: finished trials are kept, nothing is trained twice.
    Many `nas search --storage postgresql://...` processes, on any machines, share one study.
    """
    cap, macs_cap = parse_count(budget), None if max_macs is None else parse_count(max_macs, "--max-macs")
    from nas.cli.search_output import PrintedSearch, print_verdict
    from nas.search import SearchFailed

    st = open_study(study, results_dir, storage)
    fidelity = {"epochs": epochs, "train_subset": train_subset, "val_subset": val_subset, "width": width,
                "evals_per_epoch": evals_per_epoch}
    try:
        result = st.search(cap, trials, space=space_file or default_space(), data=data, device=device,
                           workers=workers, confirm=confirm, fidelity=fidelity, hooks=PrintedSearch(confirm), seed=seed,
                           val_size=val_size, timeout=timeout, pruner=pruner, sampler=sampler, max_failures=max_failures,
                           objectives=objectives, max_macs=macs_cap, final_rung=final_rung)
    except Stopped as stop:
        raise exit_stopped(stop) from None
    except SearchFailed as e:  # `command` would exit 2: this one knows whether the input is at fault
        err.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    if confirm and result.trained < result.trials:
        out.print(f"final rung skipped: {result.trained}/{result.trials} trials trained; run the same command to finish")
    print_verdict(result.verdict)
    print_board(st.leaderboard(top=10), study)
    out.print(f"{result.trained}/{result.trials} candidates trained; files in {result.folder}/ (trials.csv, report.html, config.json)")
