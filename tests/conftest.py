"""Shared fixtures: the real CIFAR-10 copy in ../shared/data (skipped with a reason when absent), a
PostgreSQL server, and the `nas search` command-line helpers that several test modules use.

Test modules never import each other: what two of them share lives here, as fixtures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CIFAR_TARBALL = ROOT.parent / "shared" / "data" / "cifar10-png.tar.gz"
CIFAR100_TARBALL = ROOT.parent / "shared" / "data" / "cifar100-png.tar.gz"
TINY_SPACE = ROOT / "search_spaces" / "tiny.yaml"
FAST_HEARTBEAT = {"NAS_HEARTBEAT_INTERVAL": "1", "NAS_GRACE_PERIOD": "3"}  # a killed worker's trial is stale in 3 s


@pytest.fixture(scope="session")
def cifar_tarball() -> Path:
    if not CIFAR_TARBALL.exists():
        pytest.skip(f"the shared CIFAR-10 copy is missing at {CIFAR_TARBALL} (see ../shared/data/README.md)")
    return CIFAR_TARBALL


def extract_small_cifar(dest: Path, per_class: dict[str, int], tarball: Path = CIFAR_TARBALL, classes: int = 10) -> Path:
    """The first images per class and split of a real archive, as an ImageFolder tree."""
    import tarfile

    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for m in tar:
            parts = Path(m.name).parts
            if not m.isfile() or len(parts) < 4 or parts[-3] not in per_class:
                continue
            key = (parts[-3], parts[-2])
            if counts.get(key, 0) >= per_class[key[0]]:
                continue
            counts[key] = counts.get(key, 0) + 1
            out = dest / key[0] / key[1] / parts[-1]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(m).read())
            if len(counts) == classes * len(per_class) and all(counts[k] >= per_class[k[0]] for k in counts):
                break
    return dest


@pytest.fixture(scope="session")
def small_cifar(cifar_tarball, tmp_path_factory) -> Path:
    """600 training and 200 test images of the real CIFAR-10 copy: enough for tiny searches."""
    return extract_small_cifar(tmp_path_factory.mktemp("cifar") / "cifar10-small", {"train": 60, "test": 20})


@pytest.fixture(scope="session")
def cifar_folder(cifar_tarball, tmp_path_factory) -> Path:
    """300 training and 100 test images of the real CIFAR-10 copy (30 and 10 per class): tests count them."""
    return extract_small_cifar(tmp_path_factory.mktemp("cifar") / "cifar10-30-10", {"train": 30, "test": 10})


@pytest.fixture(scope="session")
def small_cifar100(tmp_path_factory) -> Path:
    """Four training images and one test image per class of the real CIFAR-100 copy (500 in all)."""
    if not CIFAR100_TARBALL.exists():
        pytest.skip(f"the shared CIFAR-100 copy is missing at {CIFAR100_TARBALL} (see ../shared/data/README.md)")
    return extract_small_cifar(tmp_path_factory.mktemp("cifar100") / "cifar100-small", {"train": 4, "test": 1},
                               CIFAR100_TARBALL, classes=100)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Decoded-image caches go to a per-session folder, never the user's ~/.cache."""
    monkeypatch.setenv("NAS_CACHE", str(tmp_path_factory.getbasetemp() / "nas-cache"))


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (tests/postgres.py), installed if missing."""
    import postgres  # tests/postgres.py: pytest puts this folder on sys.path

    try:
        server, stop = postgres.start()
    except (RuntimeError, FileNotFoundError) as e:
        pytest.skip(f"no PostgreSQL server for the multi-worker tests: {e}")
    yield server
    stop()


@pytest.fixture
def pg_url(postgres_server) -> str:
    """A fresh, empty database on the session's server, as a URL with a password in it."""
    return postgres_server.url(postgres_server.create_database())


@pytest.fixture
def handlers():
    """stop_on_signals keeps its handlers once a signal came (a second one exits): put pytest's back."""
    saved, hook = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}, sys.unraisablehook
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    sys.unraisablehook = hook


# -- `nas search` as a command ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_space() -> Path:
    """search_spaces/tiny.yaml: a space small enough to train on CPU in seconds."""
    return TINY_SPACE


@pytest.fixture(scope="session")
def fast_heartbeat() -> dict[str, str]:
    """Environment for worker processes: heartbeat every second, a silent trial is stale after 3 s."""
    return dict(FAST_HEARTBEAT)


@pytest.fixture(scope="session")
def search_args() -> Callable[..., list[str]]:
    """`search_args(data, results, *extra, trials=3, epochs=1)`: the arguments of a tiny `nas search`, study 's'."""

    def args(data: Path, results: Path, *extra: str, trials: int = 3, epochs: int = 1) -> list[str]:
        return ["search", "--budget", "50k", "--trials", str(trials), "--space", str(TINY_SPACE), "--data", str(data),
                "--epochs", str(epochs), "--train-subset", "128", "--val-subset", "100", "--val-size", "100",
                "--width", "1", "--results-dir", str(results), "--study", "s", *extra]

    return args


@pytest.fixture(scope="session")
def nas_cli() -> Callable[..., subprocess.CompletedProcess]:
    """`nas_cli(args, cwd, env=None, timeout=400)`: `python -m nas ARGS` in a real process, output captured."""

    def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 400) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nas", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})

    return run


@pytest.fixture(scope="session")
def benchmark_script() -> Callable[..., subprocess.CompletedProcess]:
    """`benchmark_script(name, *args, out=DIR)`: `python benchmarks/NAME.py ARGS --out DIR` in a real process, run
    from DIR's parent, output captured (the GPU scripts' dry runs)."""

    def run(name: str, *args: str, out: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args, "--out", str(out)],
                              capture_output=True, text=True, timeout=600, cwd=out.parent, check=False)

    return run


@pytest.fixture(scope="session")
def outcomes() -> Callable[..., list]:
    """`outcomes(url, study='s')`: every trial of a study in a storage, as Optuna holds it now."""
    import optuna

    def trials(url: str, study: str = "s") -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name=study, storage=url).get_trials()

    return trials


@pytest.fixture(scope="session")
def trained() -> Callable[[list], list]:
    """`trained(trials)`: the trials that spent training compute (what --trials counts)."""
    from nas.record import TRAINED

    def spent(trials: list) -> list:
        return [t for t in trials if t.user_attrs.get("outcome") in TRAINED]

    return spent


@pytest.fixture(scope="session")
def terminal() -> Callable[..., tuple[int, list[str]]]:
    """`terminal(argv, columns=80, env=None, timeout=120)`: `python ARGV` in a real pseudo-terminal `columns` wide,
    as a person's window is (COLUMNS unset: the program finds the width itself). Returns its exit code and what it
    wrote, line by line, with colours and cursor moves removed: a line longer than `columns` is one the window
    wraps (no terminal emulator is needed to see that)."""
    import fcntl
    import pty
    import re
    import select
    import struct
    import termios
    import time

    def run(argv: list[str], columns: int = 80, env: dict[str, str] | None = None,
            timeout: float = 120) -> tuple[int, list[str]]:
        pid, fd = pty.fork()
        if pid == 0:  # the child: its stdin/stdout/stderr are the terminal
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
            environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
            os.execve(sys.executable, [sys.executable, *argv], {**environ, "TERM": "xterm-256color", **(env or {})})
        chunks, deadline = [], time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if select.select([fd], [], [], 1)[0]:
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:  # EIO: the child closed the terminal
                        break
                    if not chunk:
                        break
                    chunks.append(chunk)
            else:
                os.kill(pid, signal.SIGKILL)
        finally:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", b"".join(chunks).decode(errors="replace"))
        # the terminal turns \n into \r\n; a bare \r redraws its line (a progress bar): what stays is after it
        return os.waitstatus_to_exitcode(status), [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]

    return run


# -- hostile input: bounded memory ----------------------------------------------------------------------


def _data_bytes() -> int:
    """This process's data segment now (VmData), what RLIMIT_DATA limits."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


@pytest.fixture
def memory_cap() -> Callable[[int], object]:
    """`with memory_cap(mib): ...` lets this process allocate at most `mib` MiB more (RLIMIT_DATA), so input
    that expands (a YAML alias bomb) fails the test with MemoryError instead of filling the shared machine."""
    import contextlib
    import resource

    if not Path("/proc/self/status").exists():
        pytest.skip("memory caps need Linux's /proc/self/status")

    @contextlib.contextmanager
    def cap(mib: int):
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = _data_bytes() + mib * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))

    return cap


@pytest.fixture(scope="session")
def nas_bounded() -> Callable[..., object]:
    """`nas_bounded(args, cwd, data_mib=1536, cpu_s=120)`: `python -m nas ARGS` in a real process whose data
    and CPU time are capped (a blow-up fails the test, it does not fill the machine). Returns returncode,
    stdout, stderr, peak_mib (its peak resident memory, from wait4) and seconds."""
    import resource
    import tempfile
    import time
    from types import SimpleNamespace

    def run(args: list[str], cwd: Path, data_mib: int = 1536, cpu_s: int = 120) -> SimpleNamespace:
        def limits() -> None:
            resource.setrlimit(resource.RLIMIT_DATA, (data_mib * 2**20, data_mib * 2**20))
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))

        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.monotonic()
            p = subprocess.Popen([sys.executable, "-m", "nas", *args], cwd=cwd, stdout=out, stderr=err,
                                 preexec_fn=limits)
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            seconds = time.monotonic() - start
            out.seek(0), err.seek(0)
            return SimpleNamespace(returncode=p.returncode, stdout=out.read().decode(errors="replace"),
                                   stderr=err.read().decode(errors="replace"), peak_mib=usage.ru_maxrss / 1024,
                                   seconds=seconds)

    return run


# -- `nas search` in the background: killed, stopped, raced (test_faults, test_search_faults) ----------------------


@pytest.fixture
def start_worker(fast_heartbeat):
    """`start_worker(args, cwd, env=None)`: `python -m nas ARGS` in the background, output piped, with the fast
    heartbeat unless `env` replaces it ({} keeps the defaults); still running at teardown, it is killed."""
    procs: list[subprocess.Popen] = []

    def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        extra = fast_heartbeat if env is None else env
        procs.append(subprocess.Popen([sys.executable, "-m", "nas", *args], cwd=cwd, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1", **extra}))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture
def wait_for_training(outcomes):
    """`wait_for_training(url, proc, timeout=120, outcome="training")`: the number of a RUNNING trial whose outcome
    says `outcome` now ("training": its claim is written just before it trains; "waiting": for a slot)."""
    import time

    import optuna
    import sqlalchemy.exc

    def wait(url: str, proc: subprocess.Popen, timeout: float = 120, outcome: str = "training") -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                for t in outcomes(url):
                    if t.state == optuna.trial.TrialState.RUNNING and t.user_attrs.get("outcome") == outcome:
                        return t.number
            except (KeyError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
                pass  # no study yet; a SQLite file whose tables the search is creating while this reads it
            time.sleep(0.2)
        raise AssertionError(f"no trial's outcome said {outcome!r} within {timeout} s")

    return wait
