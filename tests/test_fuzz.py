"""Hostile input: generated space files and `nas search` flags. Every one ends in a clean non-zero
exit with a message, never a traceback, and never a write to the results directory.

Most run in process (CliRunner, load_space) to keep thousands of cases within seconds; a few run
as real subprocesses, as users run them. Every command points --data at a missing folder, so even
a generated input that happens to be valid stops (at data loading) before anything is written."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nas.cli import app
from nas.errors import NasError
from nas.space import load_space

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "search_spaces" / "tiny.yaml").read_text())
FLAGS = ("--budget", "--trials", "--epochs", "--train-subset", "--val-subset", "--width", "--evals-per-epoch",
         "--val-size", "--seed", "--timeout", "--pruner", "--sampler", "--device", "--workers", "--storage",
         "--study", "--space")

junk_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
numbers = st.one_of(st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True))
values = st.one_of(junk_text, numbers.map(str), st.sampled_from(["", "-1", "0", "nan", "inf", "1e400", "5M5", "0x10",
                                                                  "sqlite://", "postgresql://u:pw@/", "cuda:7", "../.."]))
yaml_values = st.recursive(st.one_of(st.none(), st.booleans(), numbers, junk_text),
                           lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(junk_text, inner, max_size=3)),
                           max_leaves=8)


def base_args(results: Path, missing_data: Path) -> list[str]:
    return ["search", "--budget", "50k", "--trials", "2", "--space", str(ROOT / "search_spaces" / "tiny.yaml"),
            "--data", str(missing_data), "--epochs", "1", "--results-dir", str(results), "--study", "s"]


def assert_clean_refusal(result, results: Path) -> None:
    text = result.output
    assert result.exit_code != 0, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in text and ("error" in text.lower()), text
    assert not results.exists(), f"wrote {list(results.rglob('*'))}"


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(changes=st.lists(st.tuples(st.sampled_from(FLAGS), values), min_size=1, max_size=3))
def test_generated_search_flags_are_refused_cleanly(changes):
    with tempfile.TemporaryDirectory() as tmp:
        results, args = Path(tmp) / "res", base_args(Path(tmp) / "res", Path(tmp) / "no-data")
        for flag, value in changes:
            args += [flag, value]
        assert_clean_refusal(CliRunner().invoke(app, args), results)


space_files = st.one_of(
    st.builds(lambda k, v: {**TINY, k: v}, st.sampled_from(sorted(set(TINY) | {"train", "se_ratio", "groups", "x"})), yaml_values),
    st.dictionaries(junk_text, yaml_values, max_size=4),
    yaml_values,
)


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(content=st.one_of(space_files.map(lambda d: yaml.safe_dump(d, allow_unicode=True)), junk_text))
def test_generated_space_files_load_or_fail_with_a_message(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "space.yaml"
        path.write_text(content)
        try:
            load_space(path)
        except NasError as e:
            assert str(e).strip()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(content=space_files.map(lambda d: yaml.safe_dump(d, allow_unicode=True)))
def test_generated_space_files_through_the_cli_write_nothing(content):
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "space.yaml"
        space.write_text(content)
        results = Path(tmp) / "res"
        args = base_args(results, Path(tmp) / "no-data") + ["--space", str(space)]
        assert_clean_refusal(CliRunner().invoke(app, args), results)


@pytest.mark.parametrize("flag, value", [("--budget", "lots"), ("--width", "nan"), ("--storage", "mysql+nodriver://u:pw@h/db"),
                                         ("--workers", "0")])
def test_bad_flags_as_real_processes_exit_2_with_one_line(tmp_path, flag, value):
    args = base_args(tmp_path / "res", tmp_path / "no-data") + [flag, value]
    r = subprocess.run([sys.executable, "-m", "nas", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and "pw@" not in r.stderr and not (tmp_path / "res").exists()
