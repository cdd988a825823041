"""The default search spaces and example architectures ship inside the package (nas/bundled.py).

A regular `pip install .` (not -e) once carried only the Python modules, so `nas search` looked for
site-packages/search_spaces/default.yaml and stopped. The wheel test builds the package as a user's
pip does, installs it into a folder of its own and runs it from a directory outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import nas.bundled
from nas.arch.space import load_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.json"))


def test_a_checkout_reads_the_top_level_files_themselves():
    """One source of truth: the package's folders are links to the files users read and copy."""
    assert nas.bundled.default_space() == ROOT / "search_spaces" / "default.yaml"
    assert nas.bundled.examples_dir() == ROOT / "examples"
    for name in ("search_spaces", "examples"):
        assert (ROOT / "nas" / name).is_symlink() and (ROOT / "nas" / name).resolve() == ROOT / name
    assert load_space(nas.bundled.default_space())
    assert sorted(p.name for p in nas.bundled.examples_dir().glob("*.json")) == EXAMPLES


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from a copy of the source (the build writes build/ and *.egg-info next to
    pyproject.toml: not in the repository). Offline: no index, no build isolation."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("nas", "search_spaces", "examples"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=junk)  # keep nas/<data> as links
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp / "dist"), str(src)])
    (found,) = (tmp / "dist").glob("nas-*.whl")
    return found


def test_the_wheel_carries_every_module_space_and_example(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert {f"nas/search_spaces/{n}" for n in SPACES} <= names, sorted(names)
        assert {f"nas/examples/{n}" for n in EXAMPLES} <= names, sorted(names)
        assert z.read("nas/search_spaces/default.yaml") == (ROOT / "search_spaces" / "default.yaml").read_bytes()
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "nas").rglob("*.py")}
    assert modules <= names, sorted(modules - names)  # subpackages (nas/search/...) are found too


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """The wheel installed into a folder of its own: (site, a working folder outside the repository, the
    environment that puts the installed package ahead of the checkout's editable install)."""
    tmp = tmp_path_factory.mktemp("installed")
    site, outside = tmp / "site", tmp / "elsewhere"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)])
    outside.mkdir()
    return site, outside, {**os.environ, "PYTHONPATH": str(site)}


def test_an_installed_wheel_runs_outside_the_repository(wheel, installed):
    site, outside, env = installed
    check = (
        "import importlib.metadata, sys; from pathlib import Path\n"
        "import nas, nas.bundled, nas.arch.space\n"
        f"site = Path({str(site)!r}).resolve()\n"
        "assert Path(nas.__file__).resolve().is_relative_to(site), nas.__file__\n"
        "space = nas.bundled.default_space()\n"
        "assert space.resolve().is_relative_to(site) and space.is_file(), space\n"
        "nas.arch.space.load_space(space)\n"
        "assert nas.bundled.examples_dir().resolve().is_relative_to(site)\n"
        "print(sorted(p.name for p in nas.bundled.examples_dir().glob('*.json')))\n"
        "print(importlib.metadata.version('nas'))\n"
    )
    r = _run([sys.executable, "-c", check], cwd=outside, env=env)
    examples, version = r.stdout.splitlines()[-2:]
    assert examples == str(EXAMPLES)
    assert wheel.name.startswith(f"nas-{version}-")
    r = _run([sys.executable, "-m", "nas", "space", str(site / "nas" / "search_spaces" / "default.yaml"),
              "--budget", "5e6"], cwd=outside, env=env)
    assert "valid architectures" in r.stdout, r.stdout


def test_an_installed_wheel_reaches_its_examples_and_spaces_by_name(installed):
    """Installed from a wheel, `nas count resnet10` and `nas count examples/resnet10.json` found no file (the
    working folder has no examples/), and the error suggested examples/resnet18.json, which was not there either:
    a bundled name now reaches the package's own file, and an error lists only names that exist."""
    import json

    site, outside, env = installed
    resnet10 = json.loads((ROOT / "examples" / "resnet10.json").read_text())
    for given in ("resnet10", "resnet10.json", "examples/resnet10.json"):
        r = _run([sys.executable, "-m", "nas", "count", given, "--json"], cwd=outside, env=env)
        assert json.loads(r.stdout)["arch"]["channels"] == resnet10["arch"]["channels"], given
    r = _run([sys.executable, "-m", "nas", "space", "tiny", "--budget", "5e6"], cwd=outside, env=env)
    assert "tiny:" in r.stdout and "valid architectures" in r.stdout
    for args, folder in ((["count", "resnet-10"], "examples"), (["space", "search_spaces/tiny-ish.yaml"], "search_spaces")):
        bad = subprocess.run([sys.executable, "-m", "nas", *args], cwd=outside, env=env, capture_output=True,
                             text=True, timeout=120)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        named = bad.stderr.strip().rsplit(": ", 1)[-1].split(", ")
        there = sorted(p.stem for p in (site / "nas" / folder).iterdir() if p.suffix in (".json", ".yaml"))
        assert named == there, bad.stderr  # every name it suggests is a file the package has, and no path
        assert args[1] in bad.stderr and "examples/resnet18.json" not in bad.stderr
