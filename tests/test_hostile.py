"""Hostile input (issue 16, items 4-6): YAML alias bombs and oversized values, credentials in storage URLs,
and names that would write outside --results-dir. Real processes with real memory and CPU caps, a real
PostgreSQL server, real files: each test failed before its fix."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from postgres import PASSWORD
from typer.testing import CliRunner

from nas import Study
from nas.arch.archfile import read_arch_file
from nas.arch.space import load_space
from nas.artifacts import folder_name, inside, safe_url
from nas.cli import app
from nas.engine.recipe import Recipe, parse_overrides
from nas.errors import NasError

ROOT = Path(__file__).resolve().parents[1]
TINY_ARCH = "arch: {blocks: [1], channels: [8]}\n"


def bomb(levels: int = 9, width: int = 9, flow: bool = False) -> str:
    """A "billion laughs": `levels` anchors, each list holding `width` aliases of the one before (width**levels
    leaves; the defaults, 375 bytes, expand to 387 million strings)."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "{" + ", ".join(lines) + "}" if flow else "\n".join(lines) + "\n"


def one_line_error(text: str) -> bool:
    return text.startswith("error: ") and text.count("\n") == 1 and "Traceback" not in text


# ----------------------------------------------------------------------------- item 4: alias bombs, big values


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bombs")
    (folder / "space.yaml").write_text(bomb() + "layers: *l8\nblocks: [1]\nchannels: [8]\n")
    (folder / "arch.yaml").write_text(bomb() + "arch: {blocks: *l8, channels: [8]}\n")
    return folder


@pytest.fixture(scope="module")
def baseline_mib(nas_bounded, tmp_path_factory) -> float:
    """Peak memory of a command that reads a valid space file: importing torch is most of it."""
    r = nas_bounded(["space", str(ROOT / "search_spaces" / "tiny.yaml"), "--budget", "50k"], tmp_path_factory.mktemp("ok"))
    assert r.returncode == 0, r.stderr
    return r.peak_mib


@pytest.mark.parametrize("command", ["space", "search", "count", "retrain --set"])
def test_an_alias_bomb_is_one_line_and_exit_2_in_bounded_memory_and_time(command, bombs, baseline_mib, nas_bounded,
                                                                         tmp_path):
    args = {"space": ["space", str(bombs / "space.yaml"), "--budget", "5e6"],
            "search": ["search", "--space", str(bombs / "space.yaml"), "--budget", "50k", "--data", str(tmp_path / "none"),
                       "--results-dir", str(tmp_path / "res")],
            "count": ["count", str(bombs / "arch.yaml")],
            "retrain --set": ["retrain", "--arch", str(ROOT / "examples" / "resnet10.json"), "--set",
                              f"lr={bomb(flow=True)}", "--data", str(tmp_path / "none"), "--results-dir",
                              str(tmp_path / "res")]}[command]
    r = nas_bounded(args, tmp_path)
    assert r.returncode == 2 and one_line_error(r.stderr), (r.returncode, r.stderr[-2000:])
    assert "aliases (*name) expand it to more than" in r.stderr
    assert r.peak_mib < baseline_mib + 64, (r.peak_mib, baseline_mib)  # before: 1.5 GB in 15 s, and growing
    assert r.seconds < 60 and not (tmp_path / "res").exists()


@pytest.mark.parametrize("read", [
    lambda folder: load_space(folder / "space.yaml"),
    lambda folder: read_arch_file(folder / "arch.yaml"),
    lambda folder: parse_overrides([f"lr={bomb(flow=True)}"]),
], ids=["space file", "architecture file", "--set"])
def test_every_reader_refuses_an_alias_bomb_within_a_memory_cap(read, bombs, memory_cap):
    with memory_cap(256), pytest.raises(NasError) as e:
        read(bombs)
    assert "aliases (*name) expand it" in str(e.value) and "\n" not in str(e.value)


def test_aliases_within_the_bound_still_load(tmp_path):
    """Sharing one list between layers is what aliases are for; only expansion beyond the bound is refused."""
    f = tmp_path / "space.yaml"
    f.write_text("layers: [2]\nblocks: [1]\nchannels: [&w [8, 16], *w]\ntrain: {lr: &lr 0.1, warmup_epochs: 0}\n")
    assert load_space(f).channels == ((8, 16), (8, 16))


@pytest.mark.parametrize("content, fragment", [
    ("layers: " + "[" * 3000 + "]" * 3000, "nested more than 32 levels deep at line 1"),  # was a RecursionError
    ("layers: [" + "9" * 5000 + "]\nblocks: [1]\nchannels: [8]\n", "a value cannot be read"),  # was a ValueError
    ("# padding\n" * 10_000, "larger than 64 KiB"),
    ("layers: [" + ", ".join(["1"] * 12_000) + "]\n", "more than 10,000 values"),
    (b"layers: [1]\nblocks: [\xff]\n", "not valid YAML"),
])
def test_oversized_deep_or_unreadable_files_are_one_line_errors(tmp_path, memory_cap, content, fragment):
    f = tmp_path / "space.yaml"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with memory_cap(256), pytest.raises(NasError) as e:
        load_space(f)
    assert fragment in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 400


def test_an_endless_file_is_read_no_further_than_the_limit(memory_cap):
    with memory_cap(256), pytest.raises(NasError, match="larger than 64 KiB"):
        read_arch_file("/dev/zero")  # was: read_text() until memory ran out


@pytest.mark.parametrize("write, read", [
    (lambda v: f"layers: [1]\nblocks: [1]\nchannels: [8]\nblock: [{v}]\n", load_space),
    (lambda v: f"arch: {{blocks: [{v}], channels: [8]}}\n", read_arch_file),
    (lambda v: f"arch: {{blocks: [1, 1], channels: [{v}]}}\n", read_arch_file),  # found by the fuzz run
    (None, lambda text: Recipe.from_dict(parse_overrides([f"lr={text}"]))),
], ids=["space file", "architecture file", "layer count mismatch", "--set"])
def test_an_error_shows_a_huge_value_cut_short(tmp_path, write, read):
    value = "x" * 50_000
    if write is not None:
        (tmp_path / "f.yaml").write_text(write(value))
    with pytest.raises(NasError) as e:
        read(tmp_path / "f.yaml") if write is not None else read(value)
    message = str(e.value)
    assert "xxx..." in message and len(message) < 600 and "\n" not in message, message[:1000]


def test_a_space_with_thousands_of_bad_values_lists_the_first_ten(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text(f"layers: [{', '.join(str(-i) for i in range(3000))}]\nblocks: [1]\nchannels: [8]\n")
    with pytest.raises(NasError) as e:
        load_space(f)
    lines = str(e.value).splitlines()
    assert lines[0].endswith("3000 problem(s) in the space file:") and len(lines) == 12
    assert lines[-1] == "  ... and 2990 more"


def test_markup_in_a_value_is_printed_as_written(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("layers: [1]\nblocks: [1]\nchannels: [8]\nblock: ['[bold]x[/]', '[postgres]']\n")
    r = CliRunner().invoke(app, ["space", str(f), "--budget", "50k"])
    assert r.exit_code == 2 and "'[bold]x[/]' is not a block type" in r.output and "'[postgres]'" in r.output


# ----------------------------------------------------------------------------- item 5: credentials in URLs


@pytest.mark.parametrize("url, shown", [
    ("postgresql://h/db?password=S3CR3T&user=u", "postgresql://h/db?password=***&user=u"),
    ("postgresql://u@h/db?sslpassword=S3CR3T&application_name=nas", "postgresql://u@h/db?application_name=nas&sslpassword=***"),
    ("postgresql://u:pw@/db?host=/run/pg&password=S3CR3T&password=S3CR3T2", "postgresql://u:***@/db?host=%2Frun%2Fpg&password=***&password=***"),
    ("mysql+pymysql://u@h/db?passwd=S3CR3T&charset=utf8mb4", "mysql+pymysql://u@h/db?charset=utf8mb4&passwd=***"),
    ("mysql+mysqlconnector://u@h/db?password1=S3CR3T", "mysql+mysqlconnector://u@h/db?password1=***"),
    ("mssql+pyodbc:///?odbc_connect=DRIVER%3D%7BODBC%7D%3BPWD%3DS3CR3T", "mssql+pyodbc:///?odbc_connect=***"),
    ("mssql+pyodbc://u@dsn?PWD=S3CR3T", "mssql+pyodbc://u@dsn?PWD=***"),
    ("oracle+oracledb://u@h/db?wallet_password=S3CR3T", "oracle+oracledb://u@h/db?wallet_password=***"),
    ("postgresql://u:S3CR3T%40x@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://u:S3:CR3T@h/db", "postgresql://u:***@h/db"),
])
def test_safe_url_masks_every_credential_form_sqlalchemy_accepts(url, shown):
    assert safe_url(url) == shown and "S3CR3T" not in safe_url(url) and "CR3T" not in safe_url(url)


@pytest.mark.parametrize("url", ["postgresql://u:S3@CR3T@h/db", "postgresql://u:S3@C/R3T@h/db",
                                 "postgresql://u:S3CR3T@h:port/db", "u:S3CR3T@h/db"])
def test_safe_url_of_a_url_that_does_not_parse_shows_only_its_scheme(url):
    shown = safe_url(url)
    assert "CR3T" not in shown and "S3" not in shown and "@" not in shown.split("(")[0], shown
    assert shown.startswith(("postgresql://... (rest hidden", "... (rest hidden")), shown


def test_an_unencoded_at_in_a_password_never_reaches_the_drivers_message():
    from nas.search.storage import make_storage

    with pytest.raises(NasError) as e:
        make_storage("postgresql://nas:Zq@Wx9@127.0.0.1:9/db?connect_timeout=2")
    assert "Wx9" not in str(e.value) and "%40" in str(e.value)


def test_a_wrong_password_in_the_query_string_is_never_printed(small_cifar, postgres_server, tmp_path, search_args):
    s = postgres_server
    url = f"postgresql://{s.user}@{s.host}:{s.port}/postgres?password=Wr0ng-Qs-77&connect_timeout=5"
    r = CliRunner().invoke(app, search_args(small_cifar, tmp_path / "res", "--storage", url))
    assert r.exit_code == 2 and "cannot open storage" in r.output and "password=***" in r.output, r.output
    assert "Wr0ng-Qs-77" not in r.output and not (tmp_path / "res").exists()


def test_a_password_in_the_query_string_reaches_no_output_and_no_file(small_cifar, postgres_server, tmp_path, search_args):
    s = postgres_server
    url = f"postgresql://{s.user}@{s.host}:{s.port}/{s.create_database()}?password={PASSWORD}"
    r = CliRunner().invoke(app, search_args(small_cifar, tmp_path / "res", "--storage", url, "--no-confirm", trials=1))
    assert r.exit_code == 0, r.output
    files = [p for p in (tmp_path / "res").rglob("*") if p.is_file()]
    assert PASSWORD not in r.output and not [p for p in files if PASSWORD in p.read_text(errors="replace")]
    assert json.loads((tmp_path / "res" / "s" / "config.json").read_text())["storage"].endswith("?password=***")


# ----------------------------------------------------------------------------- item 6: writes outside --results-dir


@pytest.mark.parametrize("name", ["../escape", "/tmp/escape", "a/b", "", ".", "..", "[bold]x[/]", "x" * 101, "a\nb"])
def test_unsafe_study_names_are_refused_in_one_line(name, tmp_path):
    with pytest.raises(NasError) as e:
        Study(name, results_dir=tmp_path / "res")
    assert str(e.value).startswith("--study ") and "\n" not in str(e.value) and "e.g. --study r5m" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_search_named_dotdot_writes_nothing_anywhere(small_cifar, tmp_path, search_args):
    args = search_args(small_cifar, tmp_path / "res") + ["--study", "../escape"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and one_line_error(r.output) and "--study '../escape'" in r.output, r.output
    assert list(tmp_path.iterdir()) == []  # before: tmp/escape/config.json, space.yaml, study.db, a search


@pytest.mark.parametrize("name", ["../../escaped", "ABSOLUTE", "[bold]x[/]"])
def test_an_architecture_files_name_never_leaves_the_results_dir(name, cifar_folder, tmp_path):
    name = str(tmp_path / "escaped-abs") if name == "ABSOLUTE" else name
    (tmp_path / "work").mkdir()
    arch = tmp_path / "work" / "evil.json"
    arch.write_text(json.dumps({"name": name, "arch": {"blocks": [1], "channels": [8]}}))
    results = tmp_path / "work" / "res" / "inner"
    r = CliRunner().invoke(app, ["retrain", "--arch", str(arch), "--data", str(cifar_folder), "--epochs", "1",
                                 "--train-subset", "64", "--batch-size", "32", "--device", "cpu", "--results-dir",
                                 str(results), "--json"])
    assert r.exit_code == 0, r.output
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != arch]
    assert written and [p for p in written if results not in p.parents] == []  # before: res/escaped, tmp/escaped-abs
    (run,) = (results / "baselines" / folder_name(name)).glob("*/metrics.json")
    assert json.loads(run.read_text())["name"] == name  # reports still show the name as written


def test_folder_names_are_kept_when_safe_and_never_shared_when_made_safe():
    assert folder_name("resnet10") == "resnet10" and folder_name("ResNet-18.v2_a") == "ResNet-18.v2_a"
    made = {folder_name(n) for n in ("a/b", "a:b", "a b", "../a_b", "..", "/", "a_b")}
    assert len(made) == 7 and all(n.strip(".") and "/" not in n and n == folder_name(n) for n in made)


def test_inside_refuses_every_path_that_leaves_the_results_dir(tmp_path):
    res = tmp_path / "res"
    assert inside(res, res / "s" / "report.html") == res / "s" / "report.html"
    for outside in (res / ".." / "x", Path("/tmp/x"), res, tmp_path / "res2" / "x", res / "s" / ".." / ".." / "x"):
        with pytest.raises(NasError, match="is not inside --results-dir"):
            inside(res, outside)


def test_a_train_section_with_millions_of_combinations_is_refused_at_once(tmp_path):
    """3.5 KB of choices on coupled fields: every combination was checked, for hours."""
    f = tmp_path / "space.yaml"
    epochs, warmup = list(range(1, 400)), [i / 10 for i in range(400)]
    f.write_text(f"layers: [1]\nblocks: [1]\nchannels: [8]\ntrain: {{epochs: {epochs}, warmup_epochs: {warmup}, "
                 f"momentum: [0.1, 0.5, 0.9]}}\n")
    def too_slow(*_):
        raise TimeoutError("still checking combinations after 30 s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(30)  # before the fix this ran for hours: fail instead
    try:
        with pytest.raises(NasError, match=r"give 478,800 combinations of choices, more than 10,000 to check"):
            load_space(f)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
