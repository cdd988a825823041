"""nas.live: the search's view, one plain line per trial in logs and a live panel on a terminal. A real Optuna
study in SQLite gets its trials one at a time (create_trial, no training) and the view updates after each, as
the search's on_trial callback does; rich writes to a StringIO."""

from __future__ import annotations

import io
import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from nas.arch import Arch
from nas.arch.counting import count_params
from nas.live import SearchView, top_table
from nas.record import BUDGET_CONSTRAINT, Record

BUDGET = 50_000
SMALL, MID, BIG = (Arch(blocks=(1, 1), channels=(8, 16)), Arch(blocks=(1, 1), channels=(16, 32)),
                   Arch(blocks=(2, 2), channels=(64, 64)))
# (arch, outcome, state, short score): what the search records, one trial after another
TRIALS = [(SMALL, "complete", TrialState.COMPLETE, 0.5), (BIG, "over_budget", TrialState.COMPLETE, 0.0),
          (MID, "complete", TrialState.COMPLETE, 0.625), (SMALL, "pruned", TrialState.PRUNED, None),
          (MID, "nonfinite", TrialState.PRUNED, None)]
TARGET = 4


def _trial(arch: Arch, outcome: str, state: TrialState, value: float | None) -> optuna.trial.FrozenTrial:
    params = count_params(arch)
    return create_trial(state=state, value=value, params={"layers": 2},
                        distributions={"layers": CategoricalDistribution([2, 3])},
                        user_attrs={"arch": arch.to_dict(), "params": params, "outcome": outcome},
                        intermediate_values={1: 0.3} if state == TrialState.PRUNED else None,
                        constraints={BUDGET_CONSTRAINT: float(params - BUDGET)})


def watch(tmp_path: Path, console: Console) -> int:
    """Run the view over a study as the search would; the number of updates."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="live", storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    with SearchView(console, target=TARGET, already=0) as view:
        for spec in TRIALS:
            study.add_trial(_trial(*spec))
            view.update(study, study.get_trials()[-1])
    return len(TRIALS)


def test_in_a_log_every_trial_is_one_plain_line(tmp_path):
    buf = io.StringIO()
    updates = watch(tmp_path, Console(file=buf, force_terminal=False, width=80))
    lines = buf.getvalue().splitlines()
    assert len(lines) == updates  # one line each, never wrapped at the console width
    assert "\x1b[" not in buf.getvalue()  # no colour or cursor codes in a log
    expected = [
        f"trial 0: complete val_acc=0.5000 params={count_params(SMALL):,} | 1/{TARGET} trained | complete 1",
        f"trial 1: over_budget params={count_params(BIG):,} | 1/{TARGET} trained | complete 1, over_budget 1",
        f"trial 2: complete val_acc=0.6250 params={count_params(MID):,} | 2/{TARGET} trained | complete 2, "
        "over_budget 1",
        f"trial 3: pruned params={count_params(SMALL):,} | 3/{TARGET} trained | complete 2, over_budget 1, pruned 1",
        f"trial 4: nonfinite params={count_params(MID):,} | 4/{TARGET} trained | complete 2, nonfinite 1, "
        "over_budget 1, pruned 1",
    ]
    for line, start in zip(lines, expected):
        assert re.fullmatch(re.escape(start) + r" \| \d+s", line), (line, start)


def test_on_a_terminal_the_panel_shows_the_top_table_and_no_per_trial_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")  # not a dumb terminal: rich draws the live panel
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=200, color_system=None)
    watch(tmp_path, console)
    out = buf.getvalue()
    assert not re.search(r"trial \d+: \w+", out)  # the panel replaces the log lines
    assert "top 5" in out and MID.describe() in out and SMALL.describe() in out  # the finished ones, ranked
    assert BIG.describe() not in out  # over budget: never in the table
    assert f"best 62.50% (trial 2, {count_params(MID):,} params): {MID.describe()}" in out
    assert f"4/{TARGET}" in out  # the progress bar's count of trained trials
    last = out[out.rindex("top 5"):]  # the panel as the search left it: MID (62.5%) above SMALL (50%)
    assert MID.describe() in last and last.index(MID.describe()) < last.index(SMALL.describe())


def test_top_table_ranks_and_limits_to_k(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    study.add_trials([_trial(SMALL, "complete", TrialState.COMPLETE, 0.1 * (i + 1)) for i in range(4)])
    table = top_table([Record.of(t, {}) for t in study.get_trials()], k=2)
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(table)
    rows = [line for line in buf.getvalue().splitlines() if SMALL.describe() in line]
    assert table.row_count == 2 and len(rows) == 2
    assert "40.00%" in rows[0] and "30.00%" in rows[1] and "3 " in rows[0].split("│")[1]


@pytest.mark.parametrize("force_terminal", [False, True])
def test_an_empty_study_says_so(tmp_path, monkeypatch, force_terminal):
    monkeypatch.setenv("TERM", "xterm-256color")
    buf = io.StringIO()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="e", storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    study.add_trial(_trial(BIG, "over_budget", TrialState.COMPLETE, 0.0))
    with SearchView(Console(file=buf, force_terminal=force_terminal, width=200, color_system=None), 3, 0) as view:
        view.update(study, study.get_trials()[-1])
    out = buf.getvalue()
    if force_terminal:
        assert "best: none yet" in out and "0/3" in out
    else:
        assert re.fullmatch(r"trial 0: over_budget params=302,666 \| 0/3 trained \| over_budget 1 \| \d+s\n", out)


LIVE_SCRIPT = """
import sys, optuna
from optuna.trial import TrialState, create_trial
from nas.arch import Arch
from nas.arch.counting import count_params
from nas.cli.app import out
from nas.live import SearchView

optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(direction="maximize")
with SearchView(out, target=3, already=0) as view:
    for arch in ({archs}):
        params = count_params(arch)
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.8 - len(study.trials) / 100, user_attrs={{
            "arch": arch.to_dict(), "params": params, "outcome": "complete"}},
            constraints={{"params_over_budget": params - 5_000_000.0}}))
        view.update(study, study.trials[-1])
"""


def test_on_an_80_column_terminal_the_best_line_wraps_whole(tmp_path, terminal):
    """The best line was cut at the window's edge, mid-architecture and with no ellipsis (the CLI's console does not
    wrap what it prints, and the live panel crops): in a real 80-column pseudo-terminal, with the console `nas
    search` prints on, the panel as the search leaves it holds the whole line and the top table, none wider."""
    archs = (Arch(blocks=(2, 1, 1, 1), channels=(64, 128, 256, 512), block="bottleneck", se_ratio=4, groups=2,
                  dropout=0.1), Arch(blocks=(1, 1, 1, 1), channels=(32, 64, 128, 256)))
    script = tmp_path / "live.py"
    script.write_text(LIVE_SCRIPT.format(archs=", ".join(f"Arch.from_dict({a.to_dict()!r})" for a in archs)))
    code, lines = terminal([str(script)], columns=80)
    assert code == 0, "\n".join(lines)
    from rich.cells import cell_len

    assert max(map(cell_len, lines)) <= 80, "\n".join(lines)
    last = max(i for i, line in enumerate(lines) if line.startswith("best "))
    panel = " ".join(" ".join(lines[last:]).split())  # the last frame, its wrapped lines joined
    best = f"best 80.00% (trial 0, {count_params(archs[0]):,} params): {archs[0].describe()} top 5"
    assert best in panel, "\n".join(lines[last:])
