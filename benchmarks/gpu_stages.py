"""The machinery of a timed GPU run in named stages, shared by gpu_acceptance.py and gpu_window.py.

Why: GPU time comes in short windows, so a run must fit one wall-clock budget, size each stage from
training speed measured on the spot, keep going when one stage fails, and leave a summary.json
(rewritten after every stage, so a killed run leaves one) and a log.txt that hold every figure. Both
scripts run the CLI as `python -m nas ...` subprocesses (the command line is the stable surface),
stopped with SIGTERM, then kill, when they overrun their share.

A stage is a function filling its figures; it raises Skip (does not apply here) or Fail (a fault found),
and any other exception fails it too. `--dry-run` runs the same stages on CPU at toy sizes, on a few
hundred images carved from --data, so the tests keep the scripts from rotting while no GPU is at hand.
Nothing is downloaded: --data must be a local ImageFolder directory or .tar.gz.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs as a plain file, with or without `pip install -e .`

import torch

from nas.arch import Arch
from nas.arch.counting import count_macs, count_params
from nas.arch.model import build_model
from nas.engine.bench import matmul_peak_flops
from nas.engine.data import ImageSet, load_split, split_validation
from nas.engine.precision import resolve_precision
from nas.engine.recipe import Recipe, protocol
from nas.engine.train import select_device, train

SCHEMA = 1
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-png.tar.gz"
SE_FILE = ROOT / "examples" / "efficient-resnet-se.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RESERVE_S = 10.0  # kept back for the summary and the last process to exit
MIN_STAGE_S = 30.0  # a `nas` stage given less than this fails at once instead of being cut short
CLI_OVERHEAD_S = 25.0  # one `nas` process: imports, the cached split, CUDA start, test scoring, files, report
STOP_GRACE_S = 20.0  # after SIGTERM, how long a stopped `nas` process may take to record its state
RUN_OVERHEAD_S = 5.0  # one training run beyond its training: model build, cuDNN warm-up, scoring, files
TTA_PASSES = {0: 1, 1: 2, 2: 6}  # forward passes per test image at each Recipe.tta_level

log = logging.getLogger("gpu_stages")


@dataclass(frozen=True)
class Sizes:
    """What differs between the GPU run and the CPU dry run, in the stages both scripts have."""

    device: str
    val_images: int  # validation images carved from the training split loaded in this process
    matmul_n: int  # side of the square bf16 matmul that measures the peak
    rate_steps: int  # steps timed when measuring a network's images/s
    space: Path
    budget: str
    trials: int
    search_val_size: int  # --val-size: images carved from the training split for the search's validation
    search_flags: tuple[str, ...]  # fidelity flags other than --epochs and --train-subset
    search_caps: tuple[int, int] | None  # dry run: (epochs, train images) instead of the time-fitted ones
    retrain_batch: int | None  # --batch-size of the retrains (None: the protocol's)
    retrain_caps: tuple[int, int] | None  # dry run: (epochs, train images) instead of the time-fitted ones
    carve: dict[str, int] | None  # dry run: images per class and split carved from --data


class Skip(Exception):
    """The stage does not apply here; its message is the reason."""


class Fail(Exception):
    """The stage ran and found a fault; its message is the reason."""


def require(ok: bool, reason: str) -> None:
    if not ok:
        raise Fail(reason)


@dataclass
class Check:
    name: str
    status: str = "pending"  # passed | failed | skipped
    reason: str | None = None
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Proc:
    """A finished `nas` subprocess."""

    args: list[str]
    rc: int
    out: str
    err: str
    seconds: float
    timed_out: bool

    def why(self) -> str:
        if self.timed_out:
            return f"`nas {self.args[0]}` stopped after {self.seconds:.0f} s, its share of --budget-s"
        last = next((line for line in reversed(self.err.strip().splitlines()) if line.strip()), "")
        return f"`nas {self.args[0]}` exited {self.rc}: {last}"


# ---------------------------------------------------------------------------------------------
# the run: stages, clock, files


class StagedRun:
    """One run of named stages (`names`, in order) against --budget-s; summary.json lists them under `key`."""

    script = ""  # the script's path from the repository root, for the summary
    names: tuple[str, ...] = ()
    key = "checks"

    def __init__(self, args: argparse.Namespace, sizes: Sizes) -> None:
        self.sizes = sizes
        self.dry: bool = args.dry_run
        self.out: Path = args.out
        self.work = self.out / "work"
        self.source: Path = args.data
        self.data = str(args.data)  # what `--data` the nas commands get (the carved folder in a dry run)
        self.budget_s: float = args.budget_s
        self.only: set[str] = {"device", *args.only} if getattr(args, "only", None) else set()  # empty: all
        self.started = time.perf_counter()
        self.started_at = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        self.checks: list[Check] = []
        self.device = torch.device("cpu")
        self._split: tuple[ImageSet, ImageSet] | None = None
        self._test_images: int | None = None
        self._rates: dict[tuple[str, str], float] = {}
        self.cli_overhead_s = CLI_OVERHEAD_S  # corrected by what each `nas retrain` process measured

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def share(self, fraction: float) -> float:
        """`fraction` of the time left after the reserve: a later stage gets what an earlier one left."""
        seconds = fraction * (self.left() - RESERVE_S)
        require(seconds >= MIN_STAGE_S, f"only {max(seconds, 0):.0f} s of --budget-s {self.budget_s:g} left for "
                                        f"this stage, which needs {MIN_STAGE_S:.0f}: raise --budget-s")
        return seconds

    def run(self, name: str, fn: Callable[[dict[str, Any]], None]) -> Check:
        """Run one stage: `fn` fills its figures as it goes (kept on failure) and raises Skip or Fail."""
        check = Check(name)
        self.checks.append(check)
        if self.only and name not in self.only:
            check.status, check.reason = "skipped", "not named in --only"
            self.write_summary()
            return check
        log.info("== %s (%.0f s of --budget-s left)", name, self.left())
        t = time.perf_counter()
        try:
            fn(check.figures)
            check.status = "passed"
        except Skip as e:
            check.status, check.reason = "skipped", str(e)
        except Fail as e:
            check.status, check.reason = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - a crash is this stage's failure; the next stages still run
            check.status, check.reason = "failed", f"{type(e).__name__}: {e}"[:1000]
            log.error("%s", traceback.format_exc())
        check.seconds = round(time.perf_counter() - t, 2)
        log.info("%s: %s in %.1f s%s\n  figures: %s", name, check.status.upper(), check.seconds,
                 f" ({check.reason})" if check.reason else "", json.dumps(clean(check.figures)))
        self.write_summary()
        return check

    def skip_rest(self, reason: str) -> None:
        for name in self.names:
            if name not in {c.name for c in self.checks}:
                self.checks.append(Check(name, "skipped", reason))
        self.write_summary()

    def figures(self, name: str) -> dict[str, Any]:
        """The figures of a stage that ran (empty when it did not)."""
        return next((c.figures for c in self.checks if c.name == name), {})

    def headline(self) -> dict[str, Any]:
        """Summary fields beside the stages: what a reader of the run wants first."""
        return {}

    def write_summary(self) -> None:
        failed = [c.name for c in self.checks if c.status == "failed"]
        summary = {
            "schema": SCHEMA, "script": self.script, "dry_run": self.dry,
            "started": self.started_at, "elapsed_s": round(time.perf_counter() - self.started, 1),
            "budget_s": self.budget_s, "data": str(self.source), "device": str(self.device),
            "versions": versions(), **self.headline(), "passed": not failed, "failed": failed,
            self.key: [dataclasses.asdict(c) for c in self.checks],
        }
        tmp = self.out / "summary.json.tmp"
        tmp.write_text(json.dumps(clean(summary), indent=2) + "\n")
        os.replace(tmp, self.out / "summary.json")

    def finish(self) -> int:
        """Log the verdict; the exit code: 0 when no stage failed, else 1."""
        failed = [c.name for c in self.checks if c.status == "failed"]
        log.info("%s in %.0f s of %.0f: %s", "FAILED" if failed else "PASSED", time.perf_counter() - self.started,
                 self.budget_s, ", ".join(failed) or "every stage passed or was skipped with a reason")
        return 1 if failed else 0

    # -- shared pieces ---------------------------------------------------------------------------

    def split(self) -> tuple[ImageSet, ImageSet]:
        """The training split less a small validation set, loaded once for the probes in this process."""
        if self._split is None:
            t = time.perf_counter()
            self._split = split_validation(load_split(self.data, "train"), self.sizes.val_images)
            log.info("training split loaded in %.1f s: %d + %d validation images", time.perf_counter() - t,
                     len(self._split[0]), len(self._split[1]))
        return self._split

    def test_images(self) -> int:
        if self._test_images is None:
            self._test_images = len(load_split(self.data, "test"))
        return self._test_images

    def rate(self, arch: Arch, recipe: Recipe) -> float:
        """Training images/s of `arch` in this engine: a short train(), on a GPU after a warm-up one
        that lets cuDNN pick its kernels and the allocator fill its cache. Measured once per network and recipe."""
        key = (arch.to_json(), json.dumps(recipe.to_dict(), sort_keys=True))
        if key not in self._rates:
            r = dataclasses.replace(recipe, epochs=1, train_subset=recipe.batch_size * self.sizes.rate_steps,
                                    evals_per_epoch=1, warmup_epochs=0.0)
            model = build_model(arch, r.init, r.seed)
            if self.device.type == "cuda":
                train(model, dataclasses.replace(r, train_subset=recipe.batch_size * 2), self.split()[0], None,
                      self.device)
            self._rates[key] = train(model, r, self.split()[0], None, self.device).images_per_s
        return self._rates[key]

    def nas(self, args: list[str], timeout: float) -> Proc:
        """`python -m nas ARGS` from the repository root, stopped (SIGTERM, then kill) after `timeout` s."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log.info("$ nas %s   (limit %.0f s)", " ".join(args), timeout)
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "nas", *args], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        timed_out = False
        try:
            out, err = proc.communicate(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGTERM)  # nas stops at a safe point and records the trial
            try:
                out, err = proc.communicate(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
        result = Proc(args, proc.returncode, out, err, round(time.perf_counter() - t, 1), timed_out)
        log.info("exit %s after %.1f s\n--- stdout\n%s\n--- stderr\n%s", result.rc, result.seconds,
                 out.rstrip(), err.rstrip())
        return result

    def nas_json(self, args: list[str], timeout: float) -> tuple[dict[str, Any], Proc]:
        """A `nas ... --json` command's object; Fail with its error line when it failed."""
        proc = self.nas(args, timeout)
        require(proc.rc == 0 and not proc.timed_out, proc.why())
        try:
            obj, _ = json.JSONDecoder().raw_decode(proc.out[proc.out.index("{"):])
        except ValueError as e:
            raise Fail(f"`nas {args[0]} --json` printed no JSON object ({e})") from None
        return obj, proc


# ---------------------------------------------------------------------------------------------
# stages both scripts run


def check_device(run: StagedRun, fig: dict[str, Any]) -> None:
    """select_device("auto") is cuda; the GPU's name, memory, bf16 support and bf16 matmul peak."""
    auto = select_device("auto")
    fig["auto"] = str(auto)
    fig["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        fig.update(name=props.name, capability=f"{props.major}.{props.minor}",
                   multiprocessors=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1),
                   devices=torch.cuda.device_count(), bf16_supported=torch.cuda.is_bf16_supported())
    fig["precision_auto"] = str(resolve_precision("auto", run.device)[0])
    if run.dry:
        require(auto.type == ("cuda" if torch.cuda.is_available() else "cpu"), f"select_device('auto') gave {auto}")
    else:
        require(auto.type == "cuda", f"select_device('auto') gave {auto}: torch sees no CUDA GPU")
    peak = matmul_peak_flops(run.device, torch.bfloat16, run.sizes.matmul_n, reps=10)
    fig["bf16_matmul_peak_tflops"] = round(peak / 1e12, 3)


def schedule(seconds: float, images_per_s: float, split_images: int, max_epochs: int,
             min_images: int) -> tuple[int, int]:
    """(epochs, train images per epoch, 0 = the whole split) that fill `seconds` at `images_per_s`:
    whole epochs of the split while one fits (at most `max_epochs`), else one epoch of a subset."""
    images = max(0.0, seconds) * images_per_s
    if images >= split_images:
        return min(max_epochs, int(images // split_images)), 0
    return 1, min(split_images, max(min_images, int(images) // 1000 * 1000))


def fast_rung_seconds(run: StagedRun, probe: Arch, space: Path, trials: int, split_images: int) -> tuple[int, float]:
    """(candidates, seconds) of a final rung that retrains each candidate whole with the fast protocol, as it does
    on CUDA: the best of each depth and the best seed design, each at `probe`'s measured images/s."""
    from nas.arch.space import load_space

    candidates = min(trials, len(load_space(space).layers) + 1)
    fast = protocol_recipe(run, "fast")
    return candidates, candidates * (fast.epochs * split_images / run.rate(probe, fast) + RUN_OVERHEAD_S)


def search_figures(run: StagedRun, fig: dict[str, Any], proc: Proc, results: Path, study: str,
                   started: datetime.datetime, finished: datetime.datetime) -> None:
    """What a finished `nas search` did, from its trials.csv and leaderboard: outcomes, trials trained,
    trials per minute, the startup and final-rung time, the final rung's scores and the winner."""
    from nas import record

    fig["wall_s"] = proc.seconds
    folder = results / study
    trials = read_trials(folder / "trials.csv")
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    fig.update(outcomes=counts, trained=sum(counts.get(o, 0) for o in record.TRAINED))
    spans = [(datetime.datetime.fromisoformat(t["datetime_start"]), float(t["duration_s"] or 0)) for t in trials
             if t.get("datetime_start")]
    if spans:
        first = min(start for start, _ in spans)
        last = max(start + datetime.timedelta(seconds=d) for start, d in spans)
        trial_phase = (last - first).total_seconds()
        fig.update(trial_phase_s=round(trial_phase, 1), startup_s=round((first - started).total_seconds(), 1),
                   final_rung_and_report_s=round((finished - last).total_seconds(), 1),
                   trials_per_minute=round(fig["trained"] / trial_phase * 60, 2) if trial_phase > 0 else None)
    require(proc.rc == 0 and not proc.timed_out, proc.why())
    report = folder / "report.html"
    fig["report_bytes"] = report.stat().st_size if report.is_file() else 0
    rows = leaderboard(run, results, study)
    fig["final_rung"] = [{k: r.get(k) for k in ("trial", "confirm_acc", "val_acc", "seed_design", "params", "arch")}
                         for r in rows if r.get("confirm_acc") is not None]
    fig["winner"] = {k: v for k, v in rows[0].items() if k != "arch_json"} if rows else None
    fig["leaders"] = [r["arch_json"] for r in rows]  # best first: what `nas retrain best` and `--top K` train


def leaderboard(run: StagedRun, results: Path, study: str) -> list[dict[str, Any]]:
    """`nas leaderboard --json`'s rows, best first, each with its trial's architecture as a dict (`arch_json`,
    from trials.csv: the leaderboard shows it as a line of text)."""
    board, _ = run.nas_json(["leaderboard", "--study", study, "--results-dir", str(results), "--json"], timeout=60)
    archs = {t["number"]: t.get("arch_json") for t in read_trials(results / study / "trials.csv")}
    return [{**r, "arch_json": json.loads(archs[str(r.get("trial"))])} for r in board.get("leaderboard", [])
            if archs.get(str(r.get("trial")))]


def retrain_cost(run: StagedRun, archs: list[Arch], recipe: Recipe, seeds: int = 1) -> tuple[float, float]:
    """(fixed, training) seconds of `nas retrain` of `archs` with `recipe`, `seeds` runs each, at the images/s
    measured here: the process beside training (start, each run's set-up, test scoring with the recipe's TTA
    passes, a forward pass ~1/3 of a step), and the recipe's whole schedule on the training split."""
    per_image = seeds * sum(1 / run.rate(arch, recipe) for arch in archs)  # seconds for one image of every run
    split_images = sum(map(len, run.split()))
    scoring = TTA_PASSES[recipe.tta_level] * run.test_images() * per_image / 3
    return (run.cli_overhead_s + seeds * len(archs) * RUN_OVERHEAD_S + scoring,
            recipe.epochs * split_images * per_image)


def retrain(run: StagedRun, fig: dict[str, Any], target: list[str], archs: list[Arch], allot: float,
            recipe: Recipe, protocol_name: str = "fast", seeds: int = 1) -> dict[str, Any]:
    """`nas retrain TARGET --protocol P --seeds S`, for its whole schedule or as much of it as `allot` seconds
    allow (85% of what its fixed costs leave), scored on the test split; its --json object. `recipe` is the
    protocol's at the batch size the command gets."""
    s = run.sizes
    fixed, whole = retrain_cost(run, archs, recipe, seeds)
    split_images = sum(map(len, run.split()))
    epochs, subset = schedule((allot - fixed) * 0.85, recipe.epochs * split_images / whole, split_images,
                              max_epochs=recipe.epochs, min_images=10 * recipe.batch_size)
    fig.update(protocol=protocol_name, seeds=seeds, allot_s=round(allot), fixed_estimate_s=round(fixed, 1),
               whole_schedule_estimate_s=round(whole, 1),
               networks=[{"arch": a.describe(), "params": count_params(a), "macs": count_macs(a),
                          "images_per_s": round(run.rate(a, recipe), 1)} for a in archs],
               planned_epochs=epochs, planned_train_subset=subset)
    if s.retrain_caps:
        epochs, subset = s.retrain_caps
    fig.update(epochs=epochs, train_subset=subset)
    flags = ["--protocol", protocol_name, "--epochs", str(epochs), "--seeds", str(seeds), "--device", s.device,
             "--results-dir", str(run.work / "results"), "--json"]
    if s.retrain_batch:
        flags += ["--batch-size", str(s.retrain_batch)]
    if subset:
        flags += ["--train-subset", str(subset)]
    obj, proc = run.nas_json(["retrain", *target, *flags], timeout=allot)
    runs = obj.get("runs") or []
    measured = proc.seconds - sum(r.get("wall_seconds") or 0 for r in runs)
    run.cli_overhead_s = max(5.0, run.cli_overhead_s + measured - fixed)  # the next estimates start from this
    fig.update(runs=[{k: r.get(k) for k in ("name", "seed", "test_acc", "wall_seconds")} for r in runs],
               process_s=proc.seconds, fixed_measured_s=round(measured, 1))
    accs = [r.get("test_acc") for r in runs]
    require(len(runs) == seeds * len(archs) and all(isinstance(a, float) and 0.0 <= a <= 1.0 for a in accs),
            f"expected {seeds * len(archs)} runs with a test accuracy in the retrain's output, got {accs}")
    return obj


def protocol_recipe(run: StagedRun, name: str) -> Recipe:
    """A protocol's recipe at the batch size the retrains get."""
    recipe = protocol(name)
    return recipe.updated({"batch_size": run.sizes.retrain_batch}) if run.sizes.retrain_batch else recipe


def read_trials(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def file_arch(path: Path) -> Arch:
    """The architecture of an examples/*.json file."""
    return Arch.from_dict(json.loads(path.read_text())["arch"])


# ---------------------------------------------------------------------------------------------
# data, versions, JSON


def carve(source: Path, dest: Path, per_class: dict[str, int]) -> Path:
    """The first `per_class[split]` images of each class and split of an ImageFolder tree or .tar.gz,
    copied to `dest` as an ImageFolder tree: the dry run's few hundred images."""
    taken: dict[tuple[str, str], int] = {}
    for split, label, name, read in image_files(source):
        key = (split, label)
        if split in per_class and taken.get(key, 0) < per_class[split]:
            taken[key] = taken.get(key, 0) + 1
            target = dest / split / label / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(read())
    if not taken:
        raise ValueError(f"no images in {source}: --data must be an ImageFolder tree (train/, test/) or a .tar.gz "
                         f"of one")
    return dest


def image_files(source: Path) -> Iterator[tuple[str, str, str, Callable[[], bytes]]]:
    """(split, class, file name, reader of its bytes) of every image under source/<split>/<class>/."""
    if source.is_dir():
        for path in sorted(source.glob("*/*/*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield path.parts[-3], path.parts[-2], path.name, path.read_bytes
        return
    with tarfile.open(source, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 3 and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                yield parts[-3], parts[-2], parts[-1], lambda m=member: tar.extractfile(m).read()


def versions() -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            **{name: version(name) for name in ("optuna", "sqlalchemy", "plotly", "pandas", "typer", "rich")}}


def clean(obj: Any) -> Any:
    """JSON-safe: NaN and infinities become null, tuples lists, anything else odd its text."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


# ---------------------------------------------------------------------------------------------
# command line and start


def parser(doc: str) -> argparse.ArgumentParser:
    """The flags every staged run takes: --data, --out, --budget-s, --dry-run."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 epilog="See benchmarks/gpu_acceptance.py's docstring for carrying wheels and data "
                                        "to a GPU machine.")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="local ImageFolder tree or .tar.gz of CIFAR-10 (default: ../shared/data/cifar10-png.tar.gz "
                         "beside the repository)")
    ap.add_argument("--out", type=Path, required=True, help="folder for summary.json, log.txt and scratch files")
    ap.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of the whole run (default 540)")
    ap.add_argument("--dry-run", action="store_true",
                    help="every stage on CPU at tiny sizes (the test suite runs this)")
    return ap


def checked(ap: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """The common flags validated (exit 2 with one line naming the bad value and the fix), paths made absolute."""
    if not args.data.exists():
        ap.error(f"--data {args.data} does not exist: pass a local copy of CIFAR-10 (a .tar.gz or ImageFolder "
                 f"tree); this script never downloads")
    if args.budget_s < 60:
        ap.error(f"--budget-s {args.budget_s:g} is too short: give at least 60 s")
    args.data = args.data.resolve()
    args.out = args.out.resolve()
    return args


def start(run: StagedRun, args: argparse.Namespace) -> int | None:
    """Fresh scratch folder, the image cache, the log; the dry run's carved data or the GPU run's device; then the
    device stage. An exit code when nothing more can run (2: --data cannot be carved; 1: a GPU run without CUDA,
    the other stages skipped saying why), else None."""
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run.work, ignore_errors=True)  # a fresh study and retrains every run
    run.work.mkdir()
    os.environ.setdefault("NAS_CACHE", str(args.out / "cache"))  # decoded images, shared with the nas commands
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.FileHandler(args.out / "log.txt", mode="w"), logging.StreamHandler()])
    log.info("%s %s: data %s, budget %.0f s, versions %s", Path(run.script).stem,
             "dry run" if args.dry_run else "GPU run", args.data, args.budget_s, versions())
    if args.dry_run:
        # tiny tensors: one thread is fastest, and other processes on a shared machine cannot stall it
        os.environ["OMP_NUM_THREADS"] = "1"  # the nas processes
        torch.set_num_threads(1)
        try:
            run.data = str(carve(args.data, run.work / "data", run.sizes.carve or {}))
        except (ValueError, OSError, tarfile.TarError) as e:
            log.error("error: %s", e)
            return 2
    else:
        run.device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    run.run("device", lambda fig: check_device(run, fig))
    if not run.dry and run.device.type != "cuda":
        run.skip_rest("no CUDA GPU: torch sees none (use --dry-run to exercise the stages on CPU)")
        return 1
    return None
