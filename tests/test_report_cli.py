"""`nas report`, `nas leaderboard`, `nas show` and their errors, on studies built directly with Optuna
(controlled outcomes, no training: the retrained and baseline results are metrics.json files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from nas.arch import Arch
from nas.arch.counting import count_macs, count_params
from nas.record import BUDGET_CONSTRAINT

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 50_000


def nas_cli(*args: str):
    """In-process (a subprocess pays ~5 s of imports per call); `test_errors_in_a_real_process` checks the real thing."""
    from typer.testing import CliRunner

    from nas.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    result.returncode = result.exit_code
    return result


def _trial(arch: Arch, outcome: str, value: float | None, state: TrialState = TrialState.COMPLETE, lr: float = 0.1,
           budget: int = BUDGET, **attrs):
    params = count_params(arch)
    return create_trial(
        state=state, value=value if state == TrialState.COMPLETE else None,
        params={"layers": arch.num_layers, "lr": lr},
        distributions={"layers": CategoricalDistribution([2, 3, 4]), "lr": FloatDistribution(0.01, 0.5, log=True)},
        user_attrs={"arch": arch.to_dict(), "arch_id": arch.id, "params": params, "macs": count_macs(arch),
                    "recipe": {"epochs": 4, "lr": lr}, "outcome": outcome, "val_curve": [[1, value or 0.0]], **attrs},
        constraints={BUDGET_CONSTRAINT: float(params - budget)},
    )


def _study(results: Path, name: str, trials: list, budget: int = BUDGET) -> optuna.Study:
    (results / name).mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{results / name / 'study.db'}", direction="maximize")
    study.set_user_attr("budget", budget)
    study.add_trials(trials)
    return study


def _finished_run(folder: Path, **metrics) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"protocol": "p1", "seed": 0, "macs": 1, "arch": "N=2", **metrics}))


SMALL, MID, BIG = Arch(blocks=(1, 1), channels=(8, 16)), Arch(blocks=(1, 1), channels=(16, 32)), Arch(blocks=(2, 2), channels=(64, 64))
RESNET10 = Arch.from_dict(json.loads((ROOT / "examples" / "resnet10.json").read_text())["arch"])
# what a 5M search finds: long descriptions, params and MACs in the millions
WIDE = (RESNET10, Arch(blocks=(2, 2, 2), channels=(64, 128, 256), block="bottleneck", se_ratio=4, groups=2, dropout=0.1),
        Arch(blocks=(1, 1, 1, 1), channels=(32, 64, 128, 256)))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = tmp_path_factory.mktemp("results")
    _study(root, "s", [_trial(SMALL, "complete", 0.50), _trial(BIG, "over_budget", 0.0),
                       _trial(MID, "complete", 0.60, lr=0.05), _trial(SMALL, "pruned", None, TrialState.PRUNED)])
    _study(root, "empty", [_trial(BIG, "over_budget", 0.0), _trial(SMALL, "pruned", None, TrialState.PRUNED)])
    _finished_run(root / "s" / "retrain" / f"{MID.id}-p1-seed0", name="trial-2", trial=2, search_val_acc=0.60,
                  arch_id=MID.id, params=count_params(MID), test_acc=0.71)
    resnet10 = RESNET10
    _finished_run(root / "baselines" / "resnet10" / f"{resnet10.id}-p1-seed0", name="resnet10", trial=None,
                  search_val_acc=None, arch_id=resnet10.id, params=count_params(resnet10), test_acc=0.8123)
    return root


def test_report_writes_html_with_retrained_results_and_baselines(results):
    r = nas_cli("report", "--study", "s", "--results-dir", str(results))
    assert r.returncode == 0, r.stderr
    page = (results / "s" / "report.html").read_text()
    assert 'id="final"' in page and "trial-2" in page and "71.00%" in page
    assert "resnet10" in page and "81.23%" in page  # a trained baseline with its accuracy
    assert "resnet18" in page and "11,173,962" in page  # an untrained baseline: params only


def test_report_static_png_writes_every_figure_as_a_valid_png(results):
    from nas.errors import NasError
    from nas.report.static import check

    try:
        check("png")
    except NasError as e:
        pytest.skip(str(e))
    r = nas_cli("report", "--study", "s", "--results-dir", str(results), "--static", "png")
    assert r.returncode == 0, r.stderr
    assert "figures in" in r.stdout
    page = (results / "s" / "report.html").read_text()
    pngs = sorted((results / "s" / "figures").glob("*.png"))
    assert {"pareto.png", "history.png"} <= {p.name for p in pngs}
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        assert int.from_bytes(data[16:20], "big") == 2400  # the page's 1200 px at scale 2
        assert f'id="{png.stem}"' in page  # one file per figure of the page, named by its div id


def test_leaderboard_ranks_finished_in_budget_trials_with_test_accuracy(results):
    r = nas_cli("leaderboard", "--study", "s", "--results-dir", str(results), "--json")
    assert r.returncode == 0, r.stderr
    board = json.loads(r.stdout)
    assert board["budget"] == BUDGET
    assert [(row["trial"], row["val_acc"], row["test_acc"]) for row in board["leaderboard"]] == [(2, 0.6, 0.71), (0, 0.5, None)]
    table = nas_cli("leaderboard", "--study", "s", "--results-dir", str(results))
    assert table.returncode == 0 and "60.00%" in table.stdout and "71.00%" in table.stdout and "50.00%" in table.stdout


@pytest.mark.parametrize("columns", [80, 200])
def test_the_leaderboard_fits_the_terminal_it_prints_in(tmp_path, terminal, columns):
    """In 80 columns (a terminal's default) it cut the params to `4,903,2…` and each architecture to one token per
    line: now numbers are whole, each architecture is one line (in the table where the width allows, else under
    it by rank) and no line is wider than the window, in a real pseudo-terminal."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study(tmp_path, "wide", [_trial(a, "complete", 0.9 - i / 100, budget=5_000_000,
                                             **({"seed_design": "resnet10"} if i == 0 else {}))
                                      for i, a in enumerate(WIDE)], budget=5_000_000)
    study.set_user_attr("confirm.0", {"val_acc": 0.93, "epochs": 20, "train_subset": 5000, "seconds": 1})
    for seed, acc in enumerate((0.9312, 0.9354)):
        _finished_run(tmp_path / "wide" / "retrain" / f"{RESNET10.id}-p1-seed{seed}", name="trial-0", trial=0,
                      seed=seed, arch_id=RESNET10.id, params=count_params(RESNET10), test_acc=acc)
    code, lines = terminal(["-m", "nas", "leaderboard", "--study", "wide", "--results-dir", str(tmp_path)], columns)
    assert code == 0, "\n".join(lines)
    from rich.cells import cell_len

    assert max(map(cell_len, lines)) <= columns, "\n".join(lines)
    assert "…" not in "\n".join(lines)
    assert any("93.33% ± 0.30%" in line for line in lines)  # retrained, two seeds
    for arch in WIDE:
        params, macs = f"{count_params(arch):,}", f"{count_macs(arch) / 1e6:,.1f}M"
        assert any(params in line and macs in line for line in lines), (params, macs, "\n".join(lines))
        described = [line for line in lines if arch.describe() in line]
        assert len(described) == 1, (arch.describe(), "\n".join(lines))
        assert (params in described[0]) == (columns == 200)  # in its row where it fits, else in the key below
    assert any(RESNET10.describe() + " (resnet10)" in line for line in lines)  # the seed design it came from


def test_a_recipe_grid_s_leaderboard_shows_the_settings_its_rows_differ_in(tmp_path):
    """A grid over recipes trains one network nine ways: the board showed nine identical rows (same network, same
    params), not the optimizer and learning rate that told them apart. Settings every row shares stay out."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid = [("sgd", 0.05), ("adam", 0.001), ("sgd", 0.2), ("adam", 0.01)]
    distributions = {"optimizer": CategoricalDistribution(["sgd", "adam"]),
                     "lr": CategoricalDistribution([0.001, 0.01, 0.05, 0.2]), "batch_size": CategoricalDistribution([64])}
    params = count_params(MID)
    _study(tmp_path, "grid", [create_trial(
        state=TrialState.COMPLETE, value=0.5 + i / 100, params={"optimizer": opt, "lr": lr, "batch_size": 64},
        distributions=distributions, user_attrs={"arch": MID.to_dict(), "params": params, "macs": count_macs(MID),
                                                 "outcome": "complete"},
        constraints={BUDGET_CONSTRAINT: float(params - BUDGET)}) for i, (opt, lr) in enumerate(grid)])
    r = nas_cli("leaderboard", "--study", "grid", "--results-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if "rank" in line)
    assert "optimizer" in header and "lr" in header and "batch_size" not in header  # 64 everywhere: no column
    rows = [line.split("│")[1:-1] for line in r.stdout.splitlines() if MID.describe() in line]
    shown = [(cells[3].strip(), cells[2].strip()) for cells in rows]  # rank, trial, lr, optimizer (by name)
    assert shown == [(opt, f"{lr:g}") for opt, lr in reversed(grid)], r.stdout  # best (the last trial) first


def test_leaderboard_pivot_prints_the_best_score_per_pair_of_settings(results):
    r = nas_cli("leaderboard", "--study", "s", "--results-dir", str(results), "--pivot", "layers,lr", "--json")
    assert r.returncode == 0, r.stderr
    table = json.loads(r.stdout)
    assert table["rows"] == "layers" and table["columns"] == "lr"
    cells = [v for row in table["best_val_acc"].values() for v in row.values() if v is not None]
    assert max(cells) == 0.6  # the leaderboard's best short score sits in its cell
    shown = nas_cli("leaderboard", "--study", "s", "--results-dir", str(results), "--pivot", "layers,lr")
    assert shown.returncode == 0 and "60.00%" in shown.stdout and "layers (rows) x lr (columns)" in shown.stdout
    bad = nas_cli("leaderboard", "--study", "s", "--results-dir", str(results), "--pivot", "layers")
    assert bad.returncode == 2 and "must name two settings" in bad.stderr


def test_show_prints_one_trial(results):
    r = nas_cli("show", "2", "--study", "s", "--results-dir", str(results), "--json")
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    assert facts["outcome"] == "complete" and facts["params"] == count_params(MID)
    assert facts["retrain_settings"] == {"lr": 0.05} and facts["retrained"][0]["test_acc"] == 0.71
    table = nas_cli("show", "best", "--study", "s", "--results-dir", str(results))
    assert table.returncode == 0 and MID.describe() in table.stdout and "lr=0.05" in table.stdout
    over = nas_cli("show", "1", "--study", "s", "--results-dir", str(results))
    assert over.returncode == 0 and "over_budget" in over.stdout


@pytest.mark.parametrize("args, fragment", [
    (["show", "99", "--study", "s"], "trial 99 is not in study 's'"),
    (["retrain", "99", "--study", "s"], "trial 99 is not in study 's'"),
    (["retrain", "7x", "--study", "s"], "must be 'best' or a trial number"),
    (["retrain", "best", "--study", "empty"], "no trial that completed within the budget"),
    (["retrain", "--top", "0", "--study", "s"], "--top=0 must be >= 1"),
    (["leaderboard", "--study", "empty"], "no trial that completed within the budget"),
    (["leaderboard", "--study", "missing"], "no study 'missing'"),
    (["report", "--study", "missing"], "no study 'missing'"),
    (["report", "--study", "s", "--static", "jpg"], "--static='jpg' is not a static format: choose one of png, svg"),
    (["retrain", "--study", "missing"], "no study 'missing'"),
    (["retrain", "best", "--arch", "examples/resnet10.json"], "not both"),
    (["retrain", "--set", "lr"], "must be key=value"),
    (["retrain", "--arch", "examples/resnet10.json", "--set", "seed=3"], "--seeds N"),
    (["retrain", "--arch", "examples/nope.json"], "cannot read architecture file"),
])
def test_bad_input_exits_2_with_one_line(results, args, fragment):
    r = nas_cli(*args, "--results-dir", str(results))
    assert r.returncode == 2, r.stdout + r.stderr
    assert fragment in r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (results / "missing").exists()  # a missing study is never created as an empty file


@pytest.mark.parametrize("args, fragment", [
    (["show", "99", "--study", "s"], "trial 99 is not in study 's'"),
    (["leaderboard", "--study", "missing"], "no study 'missing'"),
])
def test_errors_in_a_real_process(results, args, fragment):
    r = subprocess.run([sys.executable, "-m", "nas", *args, "--results-dir", str(results)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["leaderboard", "--study", "s"], ["show", "best", "--study", "s"]])
def test_reading_a_study_in_a_real_process_never_loads_torch(results, args):
    """Reading results while a search runs took 2.8 s, most of it importing torch that nothing used: 1 s now."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "nas", *args, "--results-dir", str(results)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "71.00%" in r.stdout  # the retrained run's test accuracy: the finished runs were read
    loaded = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "nas.api" in loaded and "torch" not in loaded
