"""Hostile input: generated space files and `nas search` flags. Every one ends in a clean non-zero
exit with a message, never a traceback, and never a write to the results directory.

Most run in process (CliRunner, load_space) to keep thousands of cases within seconds; a few run
as real subprocesses, as users run them. Every command points --data at a missing folder, so even
a generated input that happens to be valid stops (at data loading) before anything is written."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nas.arch import Arch
from nas.arch.archfile import ENTRIES
from nas.arch.space import KEYS, MAX_LISTED, load_space
from nas.cli import app
from nas.errors import NasError

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "search_spaces" / "tiny.yaml").read_text())
FLAGS = ("--budget", "--trials", "--epochs", "--train-subset", "--val-subset", "--width", "--evals-per-epoch",
         "--val-size", "--seed", "--timeout", "--pruner", "--sampler", "--device", "--workers", "--storage",
         "--study", "--space")

junk_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
numbers = st.one_of(st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True))
values = st.one_of(junk_text, numbers.map(str), st.sampled_from(["", "-1", "0", "nan", "inf", "1e400", "5M5", "0x10",
                                                                  "sqlite://", "postgresql://u:pw@/", "cuda:7", "../..",
                                                                  "[bold]x[/]", "[postgres]", "/tmp/x"]))
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


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
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


# -- aliases and markup in every field (issue 16): bounded memory, bounded messages, nothing written --------------
# Each document is a YAML mapping: a base that loads, markup-like strings in some fields, and in one field a chain
# of anchors, each list holding `width` aliases of the one before (width**levels leaves: up to 387 million).

MARKUP = ["[bold]x[/]", "[postgres]", "[/]", "[red]", "[link=file:///etc/passwd]x[/link]", "\x1b[31mred", "%s%n",
          "{0}", "../../x", "/tmp/x", "*a", "&a", "<<", "~"]
leaves = st.one_of(st.sampled_from(MARKUP), st.integers(-3, 70), junk_text, st.sampled_from([0.5, True, None]))
field_values = st.one_of(leaves, st.lists(leaves, max_size=3))
SPACE_FIELDS = KEYS
ARCH_FIELDS = (*ENTRIES, *(f.name for f in dataclasses.fields(Arch)))


def alias_chain(levels: int, width: int, items: list[str]) -> str:
    """`&x0 [items]`, then each level `&xI [the level before, *xI-1, ...]` with `width` lists in all."""
    text = f"&x0 [{', '.join(items)}]"
    for i in range(1, levels):
        text = f"&x{i} [{', '.join([text] + [f'*x{i - 1}'] * (width - 1))}]"
    return text


@st.composite
def hostile_documents(draw, base: dict, fields: tuple[str, ...]) -> str:
    doc = {k: json.dumps(v) for k, v in base.items()}  # JSON is YAML, and quotes any string safely
    for field in draw(st.lists(st.sampled_from(fields), max_size=4)):
        doc[field] = json.dumps(draw(field_values))
    items = [json.dumps(v) for v in draw(st.lists(leaves, min_size=1, max_size=3))]
    doc[draw(st.sampled_from(fields))] = alias_chain(draw(st.integers(1, 9)), draw(st.integers(1, 9)), items)
    return "".join(f"{json.dumps(k)}: {v}\n" for k, v in doc.items())


set_values = st.one_of(field_values.map(json.dumps), st.builds(
    alias_chain, st.integers(1, 9), st.integers(1, 9), st.lists(leaves.map(json.dumps), min_size=1, max_size=3)))


def assert_bounded_message(message: str, max_lines: int = 1) -> None:
    """One line (a space file: one line, or its problem count and up to 10 of them), none of them long."""
    lines = message.splitlines()
    assert 1 <= len(lines) <= max_lines and all(len(line) < 600 for line in lines), message[:3000]


def check_space_text(text: str, memory_cap) -> None:
    with tempfile.TemporaryDirectory() as tmp, memory_cap(256):
        path = Path(tmp) / "space.yaml"
        path.write_text(text)
        try:
            load_space(path)
        except NasError as e:
            assert_bounded_message(str(e), 1 + MAX_LISTED + 1)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=hostile_documents(TINY, SPACE_FIELDS))
def test_space_files_with_aliases_and_markup_load_or_fail_in_bounds(text, memory_cap):
    check_space_text(text, memory_cap)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=hostile_documents(TINY, SPACE_FIELDS))
def test_space_files_with_aliases_and_markup_at_length(text, memory_cap):
    check_space_text(text, memory_cap)


def check_commands(space: str, arch: str, setting: tuple[str, str], memory_cap) -> None:
    """`nas space`, `nas search`, `nas count` and `nas retrain --set` on one generated case each: exit 0 where
    the input is valid (space, count), else exit 2 with a bounded message; never a write. The cap allows for
    `nas space` surveying a valid 64-layer space (~450 MB), far below what one expanded bomb takes."""
    with tempfile.TemporaryDirectory() as tmp, memory_cap(1024):
        tmp = Path(tmp)
        (tmp / "space.yaml").write_text(space)
        (tmp / "arch.yaml").write_text(arch)
        results, missing = tmp / "res", tmp / "no-data"
        for args, max_lines in ((["space", str(tmp / "space.yaml"), "--budget", "50k"], 12),
                                (base_args(results, missing) + ["--space", str(tmp / "space.yaml")], 12),
                                (["count", str(tmp / "arch.yaml")], 1),
                                (["retrain", "--arch", str(ROOT / "examples" / "resnet10.json"), "--set", "=".join(setting),
                                  "--data", str(missing), "--results-dir", str(results)], 1)):
            r = CliRunner().invoke(app, args)
            assert r.exit_code in ((0, 2) if args[0] in ("space", "count") else (2,)), (args, r.output[-2000:], r.exception)
            if r.exit_code == 2:
                assert r.output.startswith("error: ") and "Traceback" not in r.output, r.output[-2000:]
                assert_bounded_message(r.output, max_lines)
            assert sorted(p.name for p in tmp.iterdir()) == ["arch.yaml", "space.yaml"], list(tmp.rglob("*"))


commands = dict(space=hostile_documents(TINY, SPACE_FIELDS),
                arch=hostile_documents({"name": "x", "blocks": [1], "channels": [8]}, ARCH_FIELDS),
                setting=st.tuples(st.sampled_from(["lr", "epochs", "optimizer", "nesterov", "seed"]), set_values))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(**commands)
def test_aliases_and_markup_through_every_command_are_bounded_and_write_nothing(space, arch, setting, memory_cap):
    check_commands(space, arch, setting, memory_cap)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(**commands)
def test_aliases_and_markup_through_every_command_at_length(space, arch, setting, memory_cap):
    check_commands(space, arch, setting, memory_cap)
