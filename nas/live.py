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

from nas.arch import Arch
from nas.search import EVALUATED, count_outcomes, evaluated


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    done = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("outcome") == "complete"]
    return max(done, key=lambda t: t.value or 0.0, default=None)


def _describe(t: optuna.trial.FrozenTrial) -> str:
    return Arch.from_dict(t.user_attrs["arch"]).describe() if "arch" in t.user_attrs else "?"


def top_table(study: optuna.Study, k: int = 5) -> Table:
    done = sorted((t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("outcome") == "complete"),
                  key=lambda t: -(t.value or 0.0))[:k]
    table = Table(title=f"top {k}", title_justify="left")
    for col in ("trial", "val acc", "params", "architecture"):
        table.add_column(col, justify="right" if col != "architecture" else "left")
    for t in done:
        table.add_row(str(t.number), f"{t.value:.2%}", f"{t.user_attrs['params']:,}", _describe(t))
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
        done = evaluated(study)
        self.progress.update(self.task, completed=min(done, self.target))
        counts = count_outcomes(study)
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        best = _best(study)
        best_text = (f"best {best.value:.2%} (trial {best.number}, {best.user_attrs['params']:,} params): {_describe(best)}"
                     if best else "best: none yet")
        if self._live:
            self._live.update(Group(self.progress, summary, best_text, top_table(study)))
            return
        outcome = trial.user_attrs.get("outcome", trial.state.name.lower())
        value = f" val_acc={trial.value:.4f}" if trial.value is not None and outcome in EVALUATED else ""
        params = f" params={trial.user_attrs['params']:,}" if "params" in trial.user_attrs else ""
        self.console.print(f"trial {trial.number}: {outcome}{value}{params} | {done}/{self.target} trained | "
                           f"{summary} | {time.monotonic() - self.start:.0f}s", soft_wrap=True, highlight=False)
