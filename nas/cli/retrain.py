"""`nas retrain`: the full schedule for chosen trials or an architecture file, scored once on test."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from nas.cli.app import (
    Device,
    Json,
    Protocol,
    ResultsDir,
    Storage,
    command,
    err,
    exit_stopped,
    open_study,
    out,
    pm,
    print_json,
)
from nas.cli.app import Study as StudyName
from nas.cli.results import Examples
from nas.engine.recipe import parse_overrides
from nas.numbers import counted
from nas.stopping import Stopped

StudyData = Annotated[Optional[str], typer.Option(help="Data source (as in `nas search`). (default: the data the study searched, else cifar10)")]


@command
def retrain(
    target: Annotated[Optional[str], typer.Argument(help="'best' or a trial number. (default: best)", show_default=False)] = None,
    top: Annotated[Optional[int], typer.Option(help="Retrain the K best finished in-budget trials instead.")] = None,
    arch_file: Annotated[Optional[Path], typer.Option("--arch", help="Retrain an architecture file, or a bundled example by name (e.g. resnet10), under the same protocol, on the study's data; results go to RESULTS/baselines/NAME/.")] = None,
    study: StudyName = "default",
    storage: Storage = None,
    results_dir: ResultsDir = Path("results"),
    data: StudyData = None,
    seeds: Annotated[int, typer.Option(help="Repeat with seeds 0..N-1; reports give mean ± std.")] = 1,
    protocol: Protocol = "reference",
    epochs: Annotated[Optional[int], typer.Option(help="Full-schedule epochs. (default: the protocol's)")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate. (default: the protocol's, or what the search sampled)")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per step. (default: the protocol's)")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="sgd | adam | adamw | adagrad | adamax | adadelta. (default: sgd)")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="cosine | onecycle | step | plateau | constant. (default: cosine)")] = None,
    train_subset: Annotated[Optional[int], typer.Option("--train-subset", help="Train on a stratified subset of this many images (smoke runs). (default: all)")] = None,
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="Any other recipe field as key=value, repeatable: --set label_smoothing=0.1 --set lookahead=true.")] = None,
    val_size: Annotated[int, typer.Option("--val-size", help="Carve this many training images out for validation curves (0 = train on the whole split).")] = 0,
    device: Device = "auto",
    force: Annotated[bool, typer.Option("--force", help="Retrain finished runs from scratch (deletes their files).")] = False,
    examples: Examples = None,
    as_json: Json = False,
) -> None:
    """Retrain candidates with the full recipe on the whole training split; score each once on the test split.

    Training settings: the protocol's recipe (reference: SGD 0.1, cosine, 200 epochs, ...), then what
    the search space's `train:` section sampled for the trial (or the file's "recipe"), then flags.
    Re-running the same command resumes: finished runs (metrics.json) are kept, interrupted ones
    continue from their last complete epoch. Runs: RESULTS/STUDY/retrain/ARCHID-PROTOCOL-seedK/.
    """
    from nas import retrain as rt
    from nas.runs import summarize

    flags = {k: v for k, v in {"epochs": epochs, "lr": lr, "batch_size": batch_size, "optimizer": optimizer,
                               "schedule": schedule, "train_subset": train_subset}.items() if v is not None}
    st = open_study(study, results_dir, storage)

    def announce(run: rt.Run) -> None:  # on stderr, so --json stdout stays one object
        r = run.recipe
        state = "finished, kept" if run.state == "finished" and not force else run.state
        err.print(f"{run.candidate.name} seed {r.seed} ({run.candidate.arch.describe()}): {state}; {counted(r.epochs, 'epoch')}, "
                  f"{r.optimizer} lr {r.lr:g} {r.schedule} -> {run.directory}", soft_wrap=True)

    try:
        runs = st.retrain(target, top=top, arch_file=arch_file, seeds=seeds, data=data, val_size=val_size,
                          device=device, force=force, progress=True, on_run=announce, examples=examples, protocol=protocol,
                          **{**flags, **parse_overrides(settings or [])})
    except Stopped as stop:
        raise exit_stopped(stop) from None
    summary = summarize(runs)
    if as_json:
        keys = ("name", "seed", "test_acc", "params", "arch_id", "protocol", "search_val_acc", "wall_seconds", "dir")
        print_json({"runs": [{k: r.get(k) for k in keys} for r in runs], "summary": summary})
        return
    table = Table(title="retrained (test split, evaluated once)", title_justify="left")
    for col in ("name", "test acc", "seeds", "search score", "params", "architecture"):
        table.add_column(col, justify="left" if col in ("name", "architecture") else "right")
    for e in summary:
        table.add_row(e["name"], pm(e["test_acc"], e["test_acc_std"]), str(len(e["seeds"])), pm(e["val_acc"], None),
                      f"{e['params']:,}", e["arch"])
    out.print(table)
    out.print(f"runs in {Path(runs[0]['dir']).parent}/" if runs else "no runs")
