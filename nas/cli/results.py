"""What a search found: `nas leaderboard`, `nas show`, `nas report`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Group, RenderableType
from rich.table import Table

from nas.arch import Arch
from nas.bundled import examples_dir
from nas.cli.app import (
    Json,
    ResultsDir,
    Storage,
    command,
    open_study,
    out,
    pm,
    print_json,
)
from nas.cli.app import Study as StudyName
from nas.errors import NasError
from nas.numbers import counted

if TYPE_CHECKING:
    import nas.api

Examples = Annotated[Optional[Path], typer.Option(help="Folder of hand-designed baselines (*.json) shown in reports. (default: the bundled examples/)", show_default=False)]


Static = Annotated[Optional[str], typer.Option(help="Also write every figure as png or svg to STUDY/figures/NAME.png, for papers (needs kaleido: pip install 'kaleido>=1').", show_default=False)]


@command
def report(study: StudyName = "default", storage: Storage = None, results_dir: ResultsDir = Path("results"),
           examples: Examples = None, static: Static = None) -> None:
    """Write RESULTS/STUDY/report.html: the search, retrained candidates and the baselines (offline HTML)."""
    path = open_study(study, results_dir, storage).report(examples or examples_dir(), static=static)
    out.print(f"report written to {path}" + (f"; figures in {path.parent / 'figures'}/ ({static})" if static else ""))


@command
def leaderboard(
    study: StudyName = "default",
    storage: Storage = None,
    results_dir: ResultsDir = Path("results"),
    top: Annotated[int, typer.Option(help="Rows to show.")] = 10,
    pivot: Annotated[Optional[str], typer.Option(help="Two settings, e.g. optimizer,lr: the best short-schedule validation accuracy for each pair, as a table.", show_default=False)] = None,
    front: Annotated[bool, typer.Option("--front", help="The Pareto front instead of the top: short-schedule accuracy (the score every trial has) against parameters (or the --objectives' costs of a multi-objective search), smallest first; the report draws the same front.")] = False,
    as_json: Json = False,
) -> None:
    """Best finished in-budget trials (final-rung score first, then the short one), with retrained test accuracy where it exists; * marks the Pareto front."""
    st = open_study(study, results_dir, storage)
    if pivot is not None:
        return _print_pivot(st, pivot, as_json)
    rows = st.leaderboard(top, front=front)
    if not rows:
        raise NasError(f"study {study!r} has no trial that completed within the budget ({len(st.records())} trials): "
                       f"run `nas search --study {study}` longer")
    if as_json:
        print_json({"study": study, "budget": st.budget(), "leaderboard": rows})
        return
    print_board(rows, study)


def _print_pivot(st: nas.api.Study, settings: str, as_json: bool) -> None:
    names = [s.strip() for s in settings.split(",")]
    if len(names) != 2 or not all(names):
        raise NasError(f"--pivot={settings!r} must name two settings, e.g. --pivot optimizer,lr")
    table = st.pivot(*names)
    if as_json:
        print_json({"rows": names[0], "columns": names[1], "best_val_acc": {
            str(r): {str(c): (None if v != v else v) for c, v in row.items()} for r, row in table.iterrows()}})
        return
    shown = Table(title=f"best short-schedule val acc of {st.name}: {names[0]} (rows) x {names[1]} (columns)",
                  title_justify="left")
    shown.add_column(names[0])
    for c in table.columns:
        shown.add_column(str(c), justify="right")
    for r, row in table.iterrows():
        shown.add_row(str(r), *("" if v != v else f"{v:.2%}" for v in row))
    out.print(shown)


# what each column means, said in the title when the column is shown
_LEGEND = {"val 5x": "val 5x: the search's final rung", "val short": "val short: its short schedule",
           "test acc": "test acc: retrained"}


def _setting(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def print_board(rows: list[dict[str, Any]], study: str) -> None:
    """The leaderboard on stdout, fitted to its width (the title wraps too: soft wrap would leave it to the window)."""
    out.print(board_table(rows, study, out.width), soft_wrap=False)


def board_table(rows: list[dict[str, Any]], study: str, width: int) -> RenderableType:
    """The leaderboard within `width` columns. Numbers never wrap or shorten; each architecture stays one line, in
    its row where the table then fits, else in a key under the table by rank (a narrow column of its own cut it to
    one token per line). Columns no row fills are left out; the training settings the rows differ in are shown."""
    drawn = sorted({k for r in rows for k in r["settings"]})  # a grid over recipes: one network, nine rows
    varied = [k for k in drawn if len({repr(r["settings"].get(k)) for r in rows}) > 1]
    cells = {
        "rank": [str(r["rank"]) for r in rows],
        "trial": [f"{r['trial']}{'*' if r['front'] else ''}" for r in rows],
        **{k: [_setting(r["settings"].get(k)) for r in rows] for k in varied},
        "val 5x": ["" if r["confirm_acc"] is None else f"{r['confirm_acc']:.2%}" for r in rows],
        "val short": [f"{r['val_acc']:.2%}" for r in rows],
        "test acc": [pm(r["test_acc"], r["test_acc_std"]) for r in rows],
        "params": [f"{r['params']:,}" for r in rows],
        "MACs": ["" if r["macs"] is None else f"{r['macs'] / 1e6:,.1f}M" for r in rows],
    }
    shown = {name: values for name, values in cells.items() if any(values)}
    archs = [r["arch"] + (f" ({r['seed_design']})" if r["seed_design"] else "") for r in rows]
    title = "; ".join([_LEGEND[c] for c in shown if c in _LEGEND] + ["* on the Pareto front"])

    def table(with_arch: bool) -> Table:
        t = Table(title=f"leaderboard of {study} ({title})", title_justify="left")
        for name in shown:
            t.add_column(name, justify="left" if name in varied else "right", no_wrap=True)
        if with_arch:
            t.add_column("architecture", no_wrap=True)
        for i, arch in enumerate(archs):
            t.add_row(*(values[i] for values in shown.values()), *([arch] if with_arch else []))
        return t

    inline = table(with_arch=True)
    if out.measure(inline, options=out.options.update_width(10**6)).maximum <= width:
        return inline
    key = Table.grid(padding=(0, 1))
    key.add_column(justify="right", no_wrap=True)
    key.add_column()  # wraps at spaces, under itself, only where one architecture is wider than the window
    for rank, arch in zip(cells["rank"], archs):
        key.add_row(rank, arch)
    return Group(table(with_arch=False), "architecture by rank:", key)


@command
def show(
    trial: Annotated[str, typer.Argument(help="Trial number, or 'best'.")],
    study: StudyName = "default",
    storage: Storage = None,
    results_dir: ResultsDir = Path("results"),
    as_json: Json = False,
) -> None:
    """Everything recorded about one trial: outcome, the score that ranks it, architecture, sampled settings, curve, retrained results."""
    facts = open_study(study, results_dir, storage).trial(trial)
    if as_json:
        print_json(facts)
        return
    table = Table(title=f"trial {facts['trial']} of {study}", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in _shown(facts):
        table.add_row(key, "" if value is None else str(value))
    for r in facts["retrained"]:
        table.add_row(f"retrained seed {r['seed']}", f"test acc {r['test_acc']:.2%} ({r['dir']})")
    out.print(table)


def _shown(f: dict[str, Any]) -> list[tuple[str, Any]]:
    """The rows of `nas show`, the deciding score first."""
    final, short = f["final_rung"], f["val_acc"] if f["outcome"] == "complete" else None
    return [("state", f["state"]), ("outcome", f["outcome"]), ("reason", f["reason"]),
            ("seed design", f["seed_design"]),
            ("val acc, final rung", f"{final['val_acc']:.2%} ({counted(final['epochs'], 'epoch')} x "
                                    f"{counted(final['train_subset'], 'image')}): ranks this trial"
                                    if final and final.get("val_acc") is not None else ""),
            ("val acc, short", f"{short:.2%}" + ("" if final else ": ranks this trial") if short is not None else ""),
            ("params", f"{f['params']:,}" if f["params"] is not None else ""),
            ("MACs", f"{f['macs']:,}" if f["macs"] is not None else ""),
            ("arch id", f["arch_id"]), ("architecture", Arch.from_dict(f["arch"]).describe() if f["arch"] else ""),
            ("sampled", ", ".join(f"{k}={v}" for k, v in f["sampled"].items())),
            ("retrain settings", ", ".join(f"{k}={v}" for k, v in f["retrain_settings"].items()) or "(defaults)"),
            ("val curve", " ".join(f"{acc:.1%}@{ep:g}" for ep, acc in f["val_curve"] or [])),
            ("seconds", f"{f['seconds']:.1f}" if f["seconds"] is not None else "")]
