"""The Python API (nas.Study) on real data: a study made from Python works with every CLI command, the
class count follows the data, and a baseline retrains on the data its study searched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import nas
from nas.cli import app
from nas.record import OUTCOME, STUDY_BUDGET, STUDY_DATA, TRAINED

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "search_spaces" / "tiny.yaml"
FAST = {"epochs": 1, "train_subset": 0, "val_subset": 0, "width": 1.0}


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture(scope="module")
def cifar100_study(small_cifar100, tmp_path_factory) -> nas.Study:
    """A two-trial search of the tiny space (which fixes no class count) on 100-class data, made from Python."""
    study = nas.Study("api", tmp_path_factory.mktemp("results"))

    class Plans(nas.SearchHooks):
        plans: list = []

        def started(self, plan) -> None:
            self.plans.append(plan)

    result = study.search(budget=100_000, trials=2, space=TINY, data=str(small_cifar100), device="cpu",
                          val_size=100, fidelity=FAST, confirm=False, hooks=Plans())
    assert result.trained == 2
    # a Python caller gets the plan the CLI prints, its cost measured, without the internal Job
    (plan,) = Plans.plans
    assert (plan.space, plan.budget, plan.trials, plan.done, plan.device) == ("tiny", 100_000, 2, 0, "cpu")
    assert plan.seconds_per_trial > 0 and plan.minutes_left == pytest.approx(2 * plan.seconds_per_trial / 60)
    assert plan.per_depth and plan.depths == (2, 3) and plan.val_images == 100
    return study


def test_the_class_count_follows_the_data(cifar100_study):
    trained = [t for t in cifar100_study.optuna().trials if t.user_attrs.get(OUTCOME) in TRAINED]
    assert len(trained) == 2 and {t.user_attrs["arch"]["num_classes"] for t in trained} == {100}


def test_a_space_that_fixes_another_class_count_is_one_line_before_any_write(small_cifar100, tmp_path):
    space = tmp_path / "ten.yaml"
    space.write_text(TINY.read_text() + "num_classes: 10\n")
    r = cli("search", "--budget", "1e5", "--trials", "1", "--space", str(space), "--data", str(small_cifar100),
            "--results-dir", str(tmp_path / "results"), "--device", "cpu", "--val-size", "100", "--train-subset", "0")
    assert r.exit_code == 2 and "num_classes" in r.output and "100" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "results").exists()


def test_a_python_study_works_with_every_cli_command(cifar100_study):
    where = ["--study", "api", "--results-dir", str(cifar100_study.results_dir)]
    st = cifar100_study.optuna()
    assert st.user_attrs[STUDY_BUDGET] == 100_000 and st.user_attrs[STUDY_DATA].endswith("cifar100-small")
    board = json.loads(cli("leaderboard", *where, "--json").output)["leaderboard"]
    assert [row["trial"] for row in board] == [r["trial"] for r in cifar100_study.leaderboard()]
    shown = json.loads(cli("show", "best", *where, "--json").output)
    assert shown["trial"] == board[0]["trial"] and shown["score"] == board[0]["score"]
    r = cli("report", *where)
    assert r.exit_code == 0 and (cifar100_study.folder / "report.html").is_file()
    assert (cifar100_study.folder / "trials.csv").is_file()


def test_a_baseline_retrains_on_the_data_its_study_searched(cifar100_study):
    """examples/resnet10.json has 10 classes; on the study's 100-class data that is a one-line error
    (before this was fixed, the baseline silently trained on cifar10 instead)."""
    r = cli("retrain", "--arch", str(ROOT / "examples" / "resnet10.json"), "--study", "api",
            "--results-dir", str(cifar100_study.results_dir), "--epochs", "1", "--device", "cpu")
    assert r.exit_code == 2 and "100 classes" in r.output and "cifar100-small" in r.output
    assert not (cifar100_study.results_dir / "baselines").exists()  # nothing half-made left behind


def test_every_name_the_readme_example_calls_exists():
    """The README's Python API example (run by hand: about 2.5 minutes on 2 cores) calls only what exists."""
    import re

    readme = (ROOT / "README.md").read_text()
    example = re.search(r"## Python API.*?```python\n(.*?)```", readme, re.S).group(1)
    compile(example, "README.md", "exec")
    example = re.sub(r"#.*", "", example)  # comments name files, not calls
    assert {n for n in re.findall(r"\bnas\.(\w+)", example)} <= set(dir(nas))
    assert {n for n in re.findall(r"\bstudy\.(\w+)", example)} <= set(dir(nas.Study))


def test_the_readme_cites_only_result_files_a_clone_has():
    """It cited results/fidelity_fast.json and results/gpu/ for its measurements, which no clone has (results/ is
    not tracked): a cited result is a committed file, or the README says it is not committed. Paths with a
    placeholder (results/STUDY/..., <run>) say where a user's own command writes, and cite nothing."""
    import re
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout: nothing tells what a clone has")
    readme = (ROOT / "README.md").read_text()
    cited = re.findall(r"`(?:--out )?((?:benchmarks/)?results/[^`\s]*)`([^.;]*)", readme)
    assert len(cited) >= 4  # the README's measurements are cited at all
    for path, sentence in cited:
        if re.search(r"[A-Z<]", path):
            continue
        committed = path in tracked or any(f.startswith(path.rstrip("/") + "/") for f in tracked)
        assert committed or "not committed" in sentence, f"README cites {path}, which git does not track"


def test_a_mistyped_search_setting_names_the_valid_ones_before_any_work(tmp_path):
    import nas
    from nas.errors import NasError

    with pytest.raises(NasError, match=r"unknown setting\(s\) 'max_mac': valid settings are seed, .*max_macs"):
        nas.Study("typo", results_dir=tmp_path).search(budget=5e6, trials=1, max_mac="3e8")
    assert not (tmp_path / "typo").exists()


def test_nas_bench_is_a_library_call_too(small_cifar):
    r = nas.bench_architecture(nas.Arch(blocks=(1,), channels=(8,)), str(small_cifar), batch_size=32, steps=1,
                               rounds=1, device="cpu")
    assert r.precision in ("fp32", "bf16") and r.device == "cpu" and r.batch_size == 32
    assert r.images_per_s > 0 and r.baseline_images_per_s > 0 and 0 < r.peak_fraction


def test_a_python_search_prints_no_optuna_line_per_trial(small_cifar100, tmp_path):
    """The CLI silenced Optuna's INFO line per trial ("Trial 0 finished with value ... and parameters ..."), the
    Python API did not: now both are quiet, and the caller's own verbosity is back after the search."""
    import subprocess
    import sys

    script = (f"import nas, optuna\n"
              f"nas.Study('quiet', {str(tmp_path)!r}).search(budget=100_000, trials=1, space={str(TINY)!r}, "
              f"data={str(small_cifar100)!r}, device='cpu', val_size=100, fidelity={FAST!r}, confirm=False)\n"
              f"print('verbosity', optuna.logging.get_verbosity())\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Trial 0" not in r.stderr and "[I " not in r.stderr, r.stderr
    assert r.stdout.split()[-1] == "20"  # optuna.logging.INFO, Optuna's default, as the caller had it
