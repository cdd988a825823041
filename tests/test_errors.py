"""Faults of the environment are one line and exit 2, never a traceback, and cost nothing: a damaged study
file, an unreachable database or a refused password, a read-only or full disk, data that does not fit the
space, and a checkpoint that does not load. Everything here is real: corrupted SQLite files, a PostgreSQL
server, small tmpfs filesystems mounted for the test (skipped, with the reason, where mounting is not
permitted), and `nas` itself, in-process for the cheap read-only commands and as a process elsewhere."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def in_process(*args: str):
    """`nas ARGS` in this process (a subprocess pays seconds of imports): the cheap read-only commands."""
    from typer.testing import CliRunner

    from nas.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def one_line(r, *fragments: str) -> str:
    """The error line of a run that must fail with exit 2 and one `error:` line (notes such as "decoding ..."
    may come before it), no traceback; returned for further checks."""
    code = getattr(r, "returncode", getattr(r, "exit_code", None))
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and lines[-1] == errors[0], (code, r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes: "nothing written" means this does not change."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def searched(small_cifar, search_args, nas_cli, tmp_path_factory) -> Path:
    """A results folder holding study 's' of a real tiny `nas search` (3 trials, its report)."""
    results = tmp_path_factory.mktemp("searched")
    env = {"NAS_CACHE": str(tmp_path_factory.mktemp("cache"))}
    r = nas_cli(search_args(small_cifar, results / "res", "--no-confirm"), cwd=results, env=env)
    assert r.returncode == 0, r.stderr
    return results / "res"


@pytest.fixture
def results(searched, tmp_path) -> Path:
    """A copy of the searched results folder this test may damage."""
    return Path(shutil.copytree(searched, tmp_path / "res"))


@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs(size)`: a real filesystem of `size` (mount -t tmpfs), unmounted at the end; the test is skipped,
    with the reason, where this process may not mount one."""
    mounted: list[Path] = []

    def mount(size: str = "16m") -> Path:
        target = tmp_path / f"fs{len(mounted)}"
        target.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                           capture_output=True, text=True) if shutil.which("mount") else None
        if r is None or r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() if r else 'no mount command'}): the full and "
                        f"read-only disk tests need root (or CAP_SYS_ADMIN)")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill `folder`'s filesystem with one file until `leave` bytes are free."""
    st = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(bytes(max(st.f_bavail * st.f_frsize - leave, 0)))
    return filler


def read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)


def damage(db: Path, how: str) -> None:
    data = db.read_bytes()
    if how == "truncated":
        db.write_bytes(data[: len(data) // 2])
    elif how == "emptied":
        db.write_bytes(b"")
    else:  # one page of the trial tables overwritten, as a failing disk sector would
        db.write_bytes(data[:4096 * 8] + bytes(range(256)) * 16 + data[4096 * 9:])


# -- a damaged study.db ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["truncated", "emptied", "page"])
@pytest.mark.parametrize("command", [["leaderboard"], ["show", "best"], ["report"]])
def test_a_damaged_study_db_is_one_line_and_nothing_is_written(results, how, command):
    db = results / "s" / "study.db"
    damage(db, how)
    before = snapshot(results)
    line = one_line(in_process(*command, "--study", "s", "--results-dir", str(results)), f"{db.resolve()} is damaged")
    assert "restore it from a backup" in line and "move it away" in line
    assert snapshot(results) == before  # Optuna never created tables in the emptied file, no report written


def test_a_damaged_page_stops_a_resumed_search_before_it_writes(results, small_cifar, search_args, nas_cli):
    damage(results / "s" / "study.db", "page")
    before = snapshot(results)
    r = nas_cli(search_args(small_cifar, results, trials=4), cwd=results.parent)
    one_line(r, "study.db is damaged")
    assert snapshot(results) == before and "decoding" not in r.stderr  # found before the data was even read


# -- an unreachable database, a refused password ------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.mark.parametrize("fault", ["wrong password", "no server"])
@pytest.mark.parametrize("command", [["leaderboard"], ["show", "best"], ["report"], ["retrain", "best"]])
def test_an_unreachable_database_or_a_refused_password_is_one_line(pg_url, postgres_server, tmp_path, fault, command):
    url = pg_url.replace(postgres_server.password, "not-the-password")
    if fault == "no server":
        url = pg_url.replace(f":{postgres_server.port}/", f":{closed_port()}/")
    r = in_process(*command, "--storage", url, "--study", "s", "--results-dir", str(tmp_path / "res"))
    line = one_line(r, "cannot reach storage postgresql://", "check that the server runs and the URL, user and")
    assert ("password authentication failed" if fault == "wrong password" else "Connection refused") in line
    assert postgres_server.password not in r.stdout + r.stderr and "not-the-password" not in r.stdout + r.stderr
    assert not (tmp_path / "res").exists()


def test_a_refused_password_in_a_real_process(pg_url, postgres_server, tmp_path, nas_cli):
    url = pg_url.replace(postgres_server.password, "not-the-password")
    one_line(nas_cli(["leaderboard", "--storage", url, "--study", "s"], cwd=tmp_path), "password authentication failed")


# -- a read-only results folder -----------------------------------------------------------------------


def test_a_read_only_results_folder_is_one_line_before_any_work(searched, small_cifar, search_args, nas_cli, tmpfs):
    disk = tmpfs("16m")
    results = Path(shutil.copytree(searched, disk / "res"))
    read_only(disk)
    before = snapshot(results)
    runs = {"search": search_args(small_cifar, results, trials=4),
            "fresh search": search_args(small_cifar, disk / "new"),
            "retrain": ["retrain", "best", "--study", "s", "--results-dir", str(results), "--epochs", "1"],
            "report": ["report", "--study", "s", "--results-dir", str(results)]}
    for name, args in runs.items():
        r = nas_cli(args, cwd=disk.parent)
        one_line(r, "(Read-only file system): make it writable, or pass --results-dir a writable folder")
        assert "decoding" not in r.stderr and "epoch" not in r.stderr, name  # nothing read or trained first
    assert snapshot(results) == before


# -- a full disk --------------------------------------------------------------------------------------


def test_a_full_disk_mid_search_is_one_line_and_the_same_command_resumes(
        searched, small_cifar, search_args, nas_cli, tmpfs, fast_heartbeat):
    disk = tmpfs("16m")
    results = Path(shutil.copytree(searched, disk / "res"))
    args = search_args(small_cifar, results, "--no-confirm", trials=6)
    filler = fill(disk, leave=16 * 1024)  # config.json fits, the study's new trials do not
    one_line(nas_cli(args, cwd=disk.parent, env=fast_heartbeat), "no space left on device writing ",
             "free space and re-run the same command to resume")
    db = results / "s" / "study.db"
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert not list(results.rglob("*.tmp"))  # no half-written file
    filler.unlink()
    r = nas_cli(args, cwd=disk.parent, env=fast_heartbeat)
    assert r.returncode == 0, r.stderr
    assert "6/6 candidates trained" in r.stdout


def test_a_full_disk_writing_the_report_is_one_line_and_keeps_the_old_report(searched, tmpfs, nas_cli):
    disk = tmpfs("16m")
    moved = Path(shutil.copytree(searched, disk / "res"))
    report = moved / "s" / "report.html"
    old = report.read_bytes()
    filler = fill(disk, leave=1 << 20)  # the report takes ~5 MB (plotly inlined)
    args = ["report", "--study", "s", "--results-dir", str(moved)]
    line = one_line(nas_cli(args, cwd=disk.parent), f"no space left on device writing {report}")
    assert line.endswith("free space and re-run the same command to resume")
    assert report.read_bytes() == old and not list(moved.rglob("*.tmp"))
    filler.unlink()
    assert nas_cli(args, cwd=disk.parent).returncode == 0


def test_a_full_disk_keeps_the_last_checkpoint(tmpfs):
    import torch

    from nas.atomic import NoSpace
    from nas.engine.checkpoint import latest_checkpoint, save_checkpoint

    disk = tmpfs("1m")
    save_checkpoint({"w": torch.zeros(1000)}, disk / "ckpt", 1)
    fill(disk, leave=8 * 1024)
    with pytest.raises(NoSpace, match=r"no space left on device writing .*ckpt-00002\.pt: free space and re-run"):
        save_checkpoint({"w": torch.ones(100_000)}, disk / "ckpt", 2)
    assert sorted(p.name for p in (disk / "ckpt").iterdir()) == ["ckpt-00001.pt"]
    assert latest_checkpoint(disk / "ckpt")[0] == 1


# -- data that does not fit the space -------------------------------------------------------------------


def test_a_space_whose_input_size_is_not_the_data_s_is_one_line_before_any_write(
        small_cifar, search_args, nas_cli, tmp_path):
    space = tmp_path / "tiny64.yaml"
    space.write_text((ROOT / "search_spaces" / "tiny.yaml").read_text() + "input_size: 64\n")
    args = search_args(small_cifar, tmp_path / "res")
    args[args.index("--space") + 1] = str(space)
    one_line(nas_cli(args, cwd=tmp_path), "space 'tiny' has input_size: 64, in_channels: 3 but the data's images "
                                          "are 32x32 with 3 channels: set input_size: 32")
    assert not (tmp_path / "res").exists()


# -- a checkpoint that does not load ----------------------------------------------------------------------


class Planned(Exception):
    """Raised from `on_run` to learn a run's directory and recipe exactly as `nas retrain` plans them."""


def test_retrain_announces_the_epoch_it_really_resumes_from(results, small_cifar, nas_cli):
    """Checkpoints of epochs 2 and 3 of an unfinished run, the newest truncated: the run resumes after epoch
    2, and says so (it said 3, the newest file's name)."""
    import nas
    from nas.arch.model import build_model
    from nas.engine.data import load_split
    from nas.engine.train import select_device, train

    flags = {"epochs": 3, "train_subset": 200, "batch_size": 50}
    planned = []

    def plan_only(run) -> None:
        planned.append(run)
        raise Planned

    with pytest.raises(Planned):
        nas.Study("s", results).retrain("best", device="cpu", on_run=plan_only, **flags)
    [run] = planned
    model = build_model(run.candidate.arch, run.recipe.init, run.recipe.seed)
    train(model, run.recipe, load_split(str(small_cifar), "train"), None, select_device("cpu"),
          checkpoint_dir=run.directory / "checkpoints")  # the run's first 3 epochs, unfinished: no metrics.json
    newest = run.directory / "checkpoints" / "ckpt-00003.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    r = nas_cli(["retrain", "best", "--study", "s", "--results-dir", str(results), "--device", "cpu",
                 *(f"--{k.replace('_', '-')}={v}" for k, v in flags.items())], cwd=results.parent)
    assert r.returncode == 0, r.stderr
    assert "resuming after epoch 2;" in r.stderr and "resuming after epoch 3" not in r.stderr
    assert (run.directory / "metrics.json").is_file()
