"""One study is one experiment (issue 27 A): a resume that would mix other settings is refused before anything is
written, atomically in the database; one SQLite file has one lock whatever path names it; --workers is bounded by
the machine; and workers die with their parent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from nas import artifacts
from nas.cli import app
from nas.errors import NasError
from nas.search import job
from nas.search.storage import exclusive

# search_args, outcomes, trained, tiny_space, pg_url, fast_heartbeat and wait_for_training are conftest fixtures


def _with(args: list[str], flag: str, value: str) -> list[str]:
    """`args` with `flag`'s value replaced, or the flag added."""
    if flag not in args:
        return [*args, flag, value]
    i = args.index(flag)
    return [*args[:i + 1], value, *args[i + 2:]]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith("study.db")}


def test_a_resume_with_other_settings_is_refused_naming_each_one_but_trials_and_timeout_may_change(
        small_cifar, tmp_path, search_args, outcomes, trained):
    """The first trials trained 1 epoch at width 1, the next 2 at width 0.5 with another seed and pruner, and one
    leaderboard ranked them together: now the resume is refused, naming every differing setting and its stored
    value, and writes nothing; more --trials and a --timeout resume it."""
    res, url = tmp_path / "res", artifacts.default_storage(tmp_path / "res", "s")
    first = CliRunner().invoke(app, search_args(small_cifar, res, "--no-confirm", trials=1))
    assert first.exit_code == 0, first.output
    files, before = _files(res / "s"), len(outcomes(url))
    other = search_args(small_cifar, res, "--no-confirm", trials=1)
    for flag, value in (("--epochs", "2"), ("--width", "0.5"), ("--seed", "3"), ("--pruner", "none"),
                        ("--train-subset", "256")):
        other = _with(other, flag, value)
    r = CliRunner().invoke(app, other)
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert "\n" not in line and "Traceback" not in line, line
    for named in ("--epochs 1, not 2", "--width 1, not 0.5", "--seed 0, not 3", "--pruner halving, not none",
                  "--train-subset 128, not 256", "use a new --study"):
        assert named in line, line
    assert _files(res / "s") == files and len(outcomes(url)) == before
    more = CliRunner().invoke(app, search_args(small_cifar, res, "--no-confirm", "--timeout", "600", trials=2))
    assert more.exit_code == 0, more.output
    assert len(trained(outcomes(url))) == 2


def test_workers_started_together_with_different_budgets_cannot_both_run(small_cifar, pg_url, tmp_path, tiny_space):
    """Two workers with --budget 50k and 40k both checked the fresh database (no study yet) and both ran: the same
    network was rejected by one and trained by the other. The settings are now claimed in one INSERT: the second
    worker reads the first one's and is refused before it writes anything."""
    common = dict(data=str(small_cifar), study="s", storage=pg_url, results_dir=tmp_path / "res", device="cpu",
                  fidelity={"epochs": 1, "train_subset": 128, "val_subset": 100, "width": 1.0}, val_size=100)
    wide, narrow = job.plan(tiny_space, 50_000, 2, **common), job.plan(tiny_space, 40_000, 2, **common)
    job.start(wide)
    files = _files(tmp_path / "res" / "s")
    with pytest.raises(NasError, match=r"--budget 50,000, not 40,000: use a new --study"):
        job.start(narrow)
    assert optuna.load_study(study_name="s", storage=pg_url).user_attrs["budget"] == 50_000
    assert _files(tmp_path / "res" / "s") == files


def test_another_space_on_an_existing_study_is_refused_before_anything_is_written(
        small_cifar, tmp_path, search_args, tiny_space, outcomes):
    """It crashed inside Optuna ("CategoricalDistribution does not support dynamic value space"), left a FAIL trial
    and overwrote config.json, space.yaml and the study's space attribute."""
    res, url = tmp_path / "res", artifacts.default_storage(tmp_path / "res", "s")
    first = CliRunner().invoke(app, search_args(small_cifar, res, "--no-confirm", trials=1))
    assert first.exit_code == 0, first.output
    files, trials = _files(res / "s"), len(outcomes(url))
    edited = yaml.safe_load(tiny_space.read_text())
    edited["channels"] = [8, 16]  # same name, other choices: another space
    other = tmp_path / "tiny.yaml"
    other.write_text(yaml.safe_dump(edited))
    r = CliRunner().invoke(app, _with(search_args(small_cifar, res, "--no-confirm", trials=2), "--space", str(other)))
    assert r.exit_code == 2, r.output
    assert "--space tiny (sha256 " in r.output and "use a new --study" in r.output and "Traceback" not in r.output
    assert _files(res / "s") == files and len(outcomes(url)) == trials
    assert optuna.load_study(study_name="s", storage=url).user_attrs["space"] == "tiny"


def test_a_symlink_to_a_held_sqlite_study_finds_its_lock(tmp_path):
    """Two paths to one study.db made two locks, and two processes trained one network twice."""
    real = tmp_path / "a" / "study.db"
    real.parent.mkdir()
    real.touch()
    (tmp_path / "b").mkdir()
    link = tmp_path / "b" / "study.db"
    link.symlink_to(real)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom nas.search.storage import exclusive\n"
                               f"with exclusive({'sqlite:///' + str(real)!r}):\n print('held', flush=True)\n"
                               " time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(NasError, match=f"pid {holder.pid} on host"):
            with exclusive(f"sqlite:///{link}"):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_more_workers_than_the_machine_can_run_are_refused_in_one_line_saying_why(small_cifar, tmp_path, search_args):
    """--workers 10000 attempted 10,000 process starts, each importing torch and loading the data."""
    cores = len(os.sched_getaffinity(0))
    r = CliRunner().invoke(app, search_args(small_cifar, tmp_path / "res", "--workers", "10000",
                                            "--storage", "postgresql://nas@127.0.0.1:9/nas"))
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert "\n" not in line and f"{cores} usable core(s)" in line and "GiB of available memory" in line, line
    assert not (tmp_path / "res").exists()


def _workers_of(parent: int) -> list[int]:
    """The worker processes `parent` spawned (multiprocessing's spawn_main; not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat, cmdline = (entry / "stat").read_text(), (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers in /proc")
def test_workers_stop_when_their_parent_is_killed(small_cifar, pg_url, tmp_path, search_args, fast_heartbeat,
                                                 wait_for_training):
    """kill -9 of the parent left its workers training and writing to the study with nobody to stop them."""
    args = search_args(small_cifar, tmp_path / "res", "--storage", pg_url, "--workers", "2", "--no-confirm",
                       "--pruner", "none", trials=100, epochs=50)
    with open(tmp_path / "out.txt", "w") as out:  # as a terminal: nothing the parent's death closes
        parent = subprocess.Popen([sys.executable, "-m", "nas", *args], cwd=tmp_path, stdout=out, stderr=out,
                                  env={**os.environ, **fast_heartbeat})
    workers: list[int] = []
    try:
        wait_for_training(pg_url, parent, timeout=240)
        workers = _workers_of(parent.pid)
        assert len(workers) == 2, workers
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 60
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_alive, workers)), "workers outlived their parent"
    finally:
        parent.kill()
        parent.wait()
        for pid in filter(_alive, workers):
            os.kill(pid, 9)
