"""What a person watches during a search: a rich live panel on a terminal, one plain line per
trial elsewhere (CI, logs, pipes)."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager

import optuna
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from nas import record
from nas.arch import Arch


def _describe(r: record.Record) -> str:
    return Arch.from_dict(r.arch).describe() if r.arch else "?"


def top_table(records: list[record.Record], k: int = 5) -> Table:
    table = Table(title=f"top {k}", title_justify="left")
    for col in ("trial", "val acc", "params"):
        table.add_column(col, justify="right", no_wrap=True)  # numbers whole; the architecture wraps at words
    table.add_column("architecture")
    for r in record.ranked(records)[:k]:
        table.add_row(str(r.number), f"{r.score:.2%}", f"{r.params:,}", _describe(r))
    return table


class SearchView(AbstractContextManager):
    """Call `update(study, trial)` after every trial (it is the search's on_trial callback)."""

    def __init__(self, console: Console, target: int, already: int) -> None:
        self.console, self.target, self.start = console, target, time.monotonic()
        self.live = console.is_terminal
        self.progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("trials", total=target, completed=already)
        self._live = Live(self.progress, console=console, refresh_per_second=2) if self.live else None

    def __enter__(self) -> SearchView:
        if self._live:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live:
            self._live.__exit__(*exc)

    def update(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        done = record.trained(trials)
        self.progress.update(self.task, completed=min(done, self.target))
        summary = ", ".join(f"{k} {v}" for k, v in sorted(record.count_outcomes(trials).items()))
        records = [record.Record.of(t, {}) for t in trials]  # no final rung while trials train
        best = record.best(records)
        best_text = (f"best {best.score:.2%} (trial {best.number}, {best.params:,} params): {_describe(best)}"
                     if best else "best: none yet")
        if self._live:  # lines wrap at words: the CLI's console prints unwrapped, and the live panel crops
            lines = (Text(line, no_wrap=False, overflow="fold") for line in (summary, best_text))
            self._live.update(Group(self.progress, *lines, top_table(records)))
            return
        outcome = record.outcome_of(trial)
        value = f" val_acc={trial.values[0]:.4f}" if trial.values and outcome in record.TRAINED else ""
        params = f" params={trial.user_attrs[record.PARAMS]:,}" if record.PARAMS in trial.user_attrs else ""
        self.console.print(f"trial {trial.number}: {outcome}{value}{params} | {done}/{self.target} trained | "
                           f"{summary} | {time.monotonic() - self.start:.0f}s", soft_wrap=True, highlight=False)
