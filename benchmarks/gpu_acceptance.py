"""GPU acceptance (issue 15): every CUDA path of `nas` run and measured on one GPU, in one short run.

Why: nearly every user runs `nas` on a GPU, and its CUDA paths (device selection, resident uint8
data, on-device augmentation, bf16/fp16 autocast with GradScaler, CUDA RNG state in checkpoints,
out-of-memory release, the CUDA fidelity) were written on machines without one. This script runs
each of them once, on the GPU, and records what happened: one named check each, in this order.

    device          select_device("auto") is cuda; name, memory, versions, bf16 support, bf16 matmul peak
    resume          2 epochs straight vs 1 epoch + resume from its checkpoint: identical losses and weights
                    (bf16 autocast and fp16 with its GradScaler; dropout, so the CUDA RNG state matters)
    bf16_autocast   a short training in bf16 autocast: finite losses
    fp16_autocast   the same in fp16 with GradScaler (skipped on CPU: "no CUDA")
    oom_trial       a search trial that runs out of GPU memory is recorded as "oom", its memory is
                    released, and the next trial trains
    resident_data   the training set is copied to the device once: host-to-device bytes per step
                    (profiler, 2 epochs minus 1) stay under 1% of one uint8 batch
    bench_resnet18  `nas bench` on ResNet-18 (2,2,2,2 x 64..512): engine vs standard recipe images/s,
    bench_narrow    and on the narrow layout (16..128): FLOP/s against the measured bf16 matmul peak
    search          `nas search` at the CUDA fidelity (full width, whole split or a subset and epochs
                    fitted to the time left, bounded by --timeout), its final rung (on CUDA the fast
                    protocol at full width, whatever the trials' schedule) and report, end to end
    retrain_winner  `nas retrain best --protocol fast` of that search, and `nas retrain --arch` of SE [4,4,3]
    retrain_se      (examples/efficient-resnet-se.json), the fast protocol's 16 epochs or as many as the
                    time left allows, scored on the test split

Everything the CLI does runs as `python -m nas ...` subprocesses (the command line is the stable
surface); the engine checks call nas.engine.train, nas.arch.model and nas.search in this process.

Time: --budget-s (default 540) bounds the whole run, so it fits a 10-minute GPU command with time
to spare for installing wheels. The engine checks and benches have fixed small sizes (most of their time
goes to decoding CIFAR-10 once and to `nas bench`; summary.json records each one's seconds); the search gets 60% of
what is left (its final rung's cost estimated first, the trials sized to the rest), the two
retrains share the remainder, and each sizes its schedule from training images/s measured here
just before it. A stage that overruns its share is stopped (SIGTERM, then kill) and fails, and the
later stages still run. `--only search,retrain_winner` reruns what failed, in less time.

Output: --out DIR gets summary.json (rewritten after every check, so a killed run leaves one) and
log.txt (every command and its output); scratch files go to DIR/work (emptied at start) and the
decoded-image cache to DIR/cache. Exit code 0 when no check failed, 1 otherwise, 2 for bad flags.
summary.json: {schema, script, dry_run, started, elapsed_s, budget_s, data, device, versions, passed,
failed: [names], checks: [{name, status: passed|failed|skipped, reason, seconds, figures: {...}}]}.

--dry-run runs every check on CPU at tiny sizes (a few hundred images carved from --data, the
tiny search space, one epoch), so tests/test_gpu_acceptance.py keeps the script from rotting
while no GPU is at hand; CUDA-only parts are skipped with the reason "no CUDA".

Nothing is downloaded at run time: --data must be a local ImageFolder directory or .tar.gz.

How to run it on a GPU machine that has Python 3.12 and torch but no internet, optuna, plotly
or SQLAlchemy (its image has numpy, pandas, rich, typer, pyyaml, safetensors, tqdm, packaging,
typing-extensions, MarkupSafe, pillow and torchvision). Here, in the repository root, once:

    echo /.whl/ >> .git/info/exclude && echo /.data/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl optuna==5.0.0 alembic==1.20.1 colorlog==6.12.0 Mako==1.4.3 SQLAlchemy==2.1.9 \\
        plotly==7.1.0 narwhals==2.29.0
    mkdir -p .data && cp ../shared/data/cifar10-png.tar.gz .data/

All of these are pure-Python wheels (py3-none-any) except SQLAlchemy, whose compiled wheel must
be the cp312 manylinux one: hence --python-version 3.12 --only-binary=:all: and the platforms
(about 16 MB of wheels and 20 MB of data, inside the 64 MiB a call may carry). Then on the GPU
machine, carrying .whl and .data:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \\
      && export PYTHONPATH=/tmp/site || exit
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_acceptance.py --data .data/cifar10-png.tar.gz --out /tmp/acc
    rc=$?; cp /tmp/acc/summary.json /tmp/acc/log.txt $OUT/; exit $rc
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs as a plain file, with or without `pip install -e .`

import torch  # noqa: E402

from nas import record  # noqa: E402
from nas.arch import Arch  # noqa: E402
from nas.arch.counting import count_macs, count_params  # noqa: E402
from nas.arch.model import build_model  # noqa: E402
from nas.engine.bench import matmul_peak_flops  # noqa: E402
from nas.engine.data import ImageSet, load_split, split_validation  # noqa: E402
from nas.engine.precision import resolve_precision  # noqa: E402
from nas.engine.recipe import Recipe, protocol  # noqa: E402
from nas.engine.train import select_device, train  # noqa: E402

SCHEMA = 1
CHECKS = ("device", "resume", "bf16_autocast", "fp16_autocast", "oom_trial", "resident_data", "bench_resnet18",
          "bench_narrow", "search", "retrain_winner", "retrain_se")
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-png.tar.gz"
SE_FILE = ROOT / "examples" / "efficient-resnet-se.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RESERVE_S = 10.0  # kept back for the summary and the last process to exit
MIN_STAGE_S = 30.0  # a `nas` stage given less than this fails at once instead of being cut short
CLI_OVERHEAD_S = 25.0  # one `nas` process: imports, the cached split, CUDA start, test scoring, files, report
STOP_GRACE_S = 20.0  # after SIGTERM, how long a stopped `nas` process may take to record its state
RUNG_OVERHEAD_S = 5.0  # one final-rung candidate beyond its training: model build, cuDNN warm-up, TTA scoring
SEARCH_SHARE = 0.6  # of the time left: the search trains its trials and the final rung; the retrains share the rest

log = logging.getLogger("gpu_acceptance")


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and the CPU dry run."""

    device: str
    engine_arch: Arch  # the network of the engine checks (resume, autocast, resident data, OOM memory)
    batch: int  # images per step in the engine checks
    steps: int  # optimiser steps per epoch in the engine checks
    val_images: int  # validation images carved from the training split for the engine checks
    matmul_n: int  # side of the square bf16 matmul that measures the peak
    oom_fidelity: tuple[int, int, int]  # (train images, validation carve-out, validation images scored)
    bench: dict[str, tuple[int, ...]]  # check name -> channels of the 2,2,2,2 network
    bench_flags: tuple[str, ...]
    space: Path
    budget: str
    trials: int
    search_val_size: int  # --val-size: images carved from the training split for the search's validation
    search_flags: tuple[str, ...]  # fidelity flags other than --epochs and --train-subset
    rate_steps: int  # steps timed when measuring a network's images/s
    retrain_batch: int
    search_caps: tuple[int, int] | None  # dry run: (epochs, train images) instead of the time-fitted ones
    retrain_caps: tuple[int, int] | None
    carve: dict[str, int] | None  # dry run: images per class and split carved from --data


GPU = Sizes(
    device="cuda", engine_arch=Arch(blocks=(2, 2, 2, 2), channels=(16, 32, 64, 128), dropout=0.1), batch=128,
    steps=40, val_images=1000, matmul_n=8192, oom_fidelity=(10_000, 1000, 1000),
    bench={"bench_resnet18": (64, 128, 256, 512), "bench_narrow": (16, 32, 64, 128)},
    bench_flags=("--steps", "50", "--rounds", "3"), space=ROOT / "search_spaces" / "default.yaml", budget="5e6",
    trials=8, search_val_size=5000, search_flags=(), rate_steps=30, retrain_batch=256, search_caps=None,
    retrain_caps=None, carve=None)

DRY = Sizes(
    device="cpu", engine_arch=Arch(blocks=(1, 1), channels=(8, 16), dropout=0.1), batch=32, steps=4,
    val_images=100, matmul_n=256, oom_fidelity=(128, 100, 100),
    bench={"bench_resnet18": (16, 32, 64, 128), "bench_narrow": (4, 8, 16, 32)},
    bench_flags=("--batch-size", "16", "--steps", "1", "--rounds", "1"),
    space=ROOT / "search_spaces" / "tiny.yaml", budget="50k", trials=3, search_val_size=100,
    search_flags=("--val-subset", "100", "--width", "1"), rate_steps=1, retrain_batch=16, search_caps=(1, 128),
    retrain_caps=(1, 32), carve={"train": 60, "test": 10})


class Skip(Exception):
    """The check does not apply here; its message is the reason."""


class Fail(Exception):
    """The check ran and found a fault; its message is the reason."""


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
# the run: checks, clock, files


class Acceptance:
    def __init__(self, args: argparse.Namespace) -> None:
        self.sizes = DRY if args.dry_run else GPU
        self.dry = args.dry_run
        self.out: Path = args.out
        self.work = self.out / "work"
        self.source: Path = args.data
        self.data = str(args.data)  # what `--data` the nas commands get (the carved folder in a dry run)
        self.budget_s: float = args.budget_s
        self.only: set[str] = {"device", *args.only} if args.only else set()  # empty: every check
        self.started = time.perf_counter()
        self.started_at = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        self.checks: list[Check] = []
        self.device = torch.device("cpu")
        self._split: tuple[ImageSet, ImageSet] | None = None

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def share(self, fraction: float) -> float:
        """`fraction` of the time left after the reserve: a later stage gets what an earlier one left."""
        seconds = fraction * (self.left() - RESERVE_S)
        require(seconds >= MIN_STAGE_S, f"only {max(seconds, 0):.0f} s of --budget-s {self.budget_s:g} left for "
                                        f"this stage, which needs {MIN_STAGE_S:.0f}: raise --budget-s")
        return seconds

    def run(self, name: str, fn: Callable[[dict[str, Any]], None]) -> Check:
        """Run one check: `fn` fills its figures as it goes (kept on failure) and raises Skip or Fail."""
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
        except Exception as e:  # a crash is this check's failure; the next checks still run
            check.status, check.reason = "failed", f"{type(e).__name__}: {e}"[:1000]
            log.error("%s", traceback.format_exc())
        check.seconds = round(time.perf_counter() - t, 2)
        log.info("%s: %s in %.1f s%s\n  figures: %s", name, check.status.upper(), check.seconds,
                 f" ({check.reason})" if check.reason else "", json.dumps(clean(check.figures)))
        self.write_summary()
        return check

    def skip_rest(self, reason: str) -> None:
        for name in CHECKS:
            if name not in {c.name for c in self.checks}:
                self.checks.append(Check(name, "skipped", reason))
        self.write_summary()

    def write_summary(self) -> None:
        failed = [c.name for c in self.checks if c.status == "failed"]
        summary = {
            "schema": SCHEMA, "script": "benchmarks/gpu_acceptance.py", "dry_run": self.dry,
            "started": self.started_at, "elapsed_s": round(time.perf_counter() - self.started, 1),
            "budget_s": self.budget_s, "data": str(self.source), "device": str(self.device),
            "versions": versions(), "passed": not failed, "failed": failed,
            "checks": [dataclasses.asdict(c) for c in self.checks],
        }
        tmp = self.out / "summary.json.tmp"
        tmp.write_text(json.dumps(clean(summary), indent=2) + "\n")
        os.replace(tmp, self.out / "summary.json")

    # -- shared pieces ---------------------------------------------------------------------------

    def split(self) -> tuple[ImageSet, ImageSet]:
        """The training split less a small validation set, loaded once for the engine checks."""
        if self._split is None:
            t = time.perf_counter()
            self._split = split_validation(load_split(self.data, "train"), self.sizes.val_images)
            log.info("training split loaded in %.1f s: %d + %d validation images", time.perf_counter() - t,
                     len(self._split[0]), len(self._split[1]))
        return self._split

    def rate(self, arch: Arch, recipe: Recipe) -> float:
        """Training images/s of `arch` in this engine: a short train(), on a GPU after a warm-up one
        that lets cuDNN pick its kernels and the allocator fill its cache."""
        r = dataclasses.replace(recipe, epochs=1, train_subset=recipe.batch_size * self.sizes.rate_steps,
                                evals_per_epoch=1, warmup_epochs=0.0)
        model = build_model(arch, r.init, r.seed)
        if self.device.type == "cuda":
            train(model, dataclasses.replace(r, train_subset=recipe.batch_size * 2), self.split()[0], None, self.device)
        return train(model, r, self.split()[0], None, self.device).images_per_s

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
# the checks


def check_device(run: Acceptance, fig: dict[str, Any]) -> None:
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Crash(Exception):
    """Stops a run inside its second epoch, after the first epoch's checkpoint was written."""


def check_resume(run: Acceptance, fig: dict[str, Any]) -> None:
    """Resume is exact when 1 epoch + resume gives what 2 epochs straight give, bit for bit. cuDNN is
    made deterministic for it; a second straight run (the control) tells a resume fault apart from
    a GPU that is not reproducible at all."""
    s = run.sizes
    train_set, val_set = run.split()
    precisions = ("auto", "fp16") if run.device.type == "cuda" else ("auto",)
    was = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        for precision in precisions:
            r = Recipe(epochs=2, batch_size=s.batch, train_subset=s.batch * s.steps, precision=precision, lr=0.05)

            def straight() -> tuple[torch.nn.Module, Any]:
                model = build_model(s.engine_arch, r.init, r.seed)
                return model, train(model, r, train_set, val_set, run.device)

            whole_net, whole = straight()
            control_net, control = straight()
            ckpt = run.work / f"resume-{precision}"

            def crash_in_epoch_two(point: Any) -> None:
                if point.epoch > 1:
                    raise Crash

            try:
                train(build_model(s.engine_arch, r.init, r.seed), r, train_set, val_set, run.device,
                      on_eval=crash_in_epoch_two, checkpoint_dir=ckpt)
            except Crash:
                pass
            torch.manual_seed(123)  # the resumed run must not depend on the caller's RNG
            resumed_net = build_model(s.engine_arch, r.init, seed=99)  # its weights come from the checkpoint
            resumed = train(resumed_net, r, train_set, val_set, run.device, checkpoint_dir=ckpt)
            fig[precision] = {
                "autocast": str(resolve_precision(precision, run.device)[0]),
                "losses": [p.train_loss for p in whole.history],
                "resumed_losses": [p.train_loss for p in resumed.history],
                "val_acc": whole.val_acc,
                "identical": same_run(whole, resumed) and max_diff(whole_net, resumed_net) == 0.0,
                "max_weight_diff": max_diff(whole_net, resumed_net),
                "control_identical": same_run(whole, control) and max_diff(whole_net, control_net) == 0.0,
            }
    finally:
        torch.backends.cudnn.deterministic = was
    bad = [p for p in precisions if not fig[p]["identical"]]
    require(not bad, f"resumed run differs from the straight run in {', '.join(bad)}"
                     + ("" if all(fig[p]["control_identical"] for p in bad) else
                        " (two straight runs differ too: the GPU run is not reproducible even without resume)"))


def same_run(a: Any, b: Any) -> bool:
    """Same evaluation points (epoch, losses, accuracy), wall times aside."""
    def key(result: Any) -> list[tuple]:
        return [(p.epoch, p.train_loss, p.val_loss, p.val_acc) for p in result.history]
    return a.status == b.status and key(a) == key(b) and a.train_loss_sum == b.train_loss_sum


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Largest absolute difference over every parameter and buffer (BatchNorm statistics too)."""
    return max(float((x.double() - y.double()).abs().max()) if x.numel() else 0.0
               for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def check_autocast(run: Acceptance, fig: dict[str, Any], precision: str) -> None:
    if precision == "fp16" and run.device.type != "cuda":
        raise Skip("no CUDA: fp16 autocast with GradScaler is a CUDA-only path")
    s = run.sizes
    train_set, val_set = run.split()
    dtype, scaler = resolve_precision(precision, run.device)
    fig.update(autocast=str(dtype), grad_scaler=scaler)
    r = Recipe(epochs=1, batch_size=s.batch, train_subset=s.batch * s.steps, precision=precision,
               evals_per_epoch=2)
    result = train(build_model(s.engine_arch, r.init, r.seed), r, train_set, val_set, run.device)
    losses = [v for p in result.history for v in (p.train_loss, p.val_loss)]
    fig.update(status=result.status, losses=losses, val_acc=result.val_acc,
               images_per_s=round(result.images_per_s, 1))
    require(result.status == "ok" and all(math.isfinite(v) for v in losses),
            f"{precision} training gave status {result.status!r}, losses {losses}")


def check_oom(run: Acceptance, fig: dict[str, Any]) -> None:
    """The first trial's network exhausts the GPU's memory mid-forward (a real CUDA allocation of more
    than the card holds; on CPU a raised torch.OutOfMemoryError). The search must record it as
    "oom", release its memory, and train the next trials."""
    import optuna

    from nas.arch.space import load_space
    from nas.search import (
        SEARCH_RECIPE,
        Fidelity,
        SearchConfig,
        load_search_data,
        run_search,
    )

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    s = run.sizes
    images, val_size, val_subset = s.oom_fidelity
    cfg = SearchConfig(budget=50_000, trials=2, study="oom", storage=f"sqlite:///{run.work / 'oom.db'}",
                       fidelity=Fidelity(epochs=1, train_subset=images, val_subset=val_subset, width=1.0,
                                         evals_per_epoch=1),
                       recipe=dataclasses.replace(SEARCH_RECIPE, batch_size=s.batch), val_size=val_size, seed=0,
                       pruner="none")
    data = load_search_data(run.data, cfg)
    cuda = run.device.type == "cuda"
    allocated: list[int] = []  # bytes held on the GPU as each trial's network is built

    def exhaust(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if not cuda:
            raise torch.OutOfMemoryError("out of memory (raised by the dry run: no CUDA)")
        total = torch.cuda.get_device_properties(output.device).total_memory
        torch.empty(total + 2**30, dtype=torch.uint8, device=output.device)  # more than the card: OutOfMemoryError

    def build(arch: Arch, init: str, seed: int) -> torch.nn.Module:
        allocated.append(torch.cuda.memory_allocated() if cuda else 0)
        model = build_model(arch, init, seed)
        if len(allocated) == 1:
            model.register_forward_hook(exhaust)
        return model

    study = run_search(load_space(ROOT / "search_spaces" / "tiny.yaml"), cfg, data, run.device, build=build)
    built = [t for t in study.trials if t.user_attrs.get(record.OUTCOME) not in record.REJECTED]
    outcomes = [t.user_attrs.get("outcome") for t in built]
    fig.update(outcomes=outcomes, oom_reason=built[0].user_attrs.get("reason") if built else None,
               real_cuda_oom=cuda, trial_train_images=images)
    if cuda and len(allocated) > 1:
        fig.update(allocated_before_mib=round(allocated[0] / 2**20, 2),
                   allocated_after_mib=round(allocated[1] / 2**20, 2))
    require(outcomes[:1] == ["oom"], f"the out-of-memory trial was recorded as {outcomes[:1]}, not ['oom']")
    require(any(o in ("complete", "pruned") for o in outcomes[1:]), f"no trial trained after the OOM: {outcomes}")
    if cuda:
        leak = allocated[1] - allocated[0]
        require(leak <= 8 * 2**20, f"{leak / 2**20:.1f} MiB still allocated on the GPU after the OOM trial")


def check_resident(run: Acceptance, fig: dict[str, Any]) -> None:
    """Host-to-device copies of 2 epochs minus those of 1 epoch, per step: the one-off upload of the
    data and the model cancels, what is left is what every step copies. Counted by the profiler
    (CUDA memcpy events), so nothing the engine does can hide from it."""
    s = run.sizes
    train_set, _ = run.split()
    r = Recipe(epochs=1, batch_size=s.batch, train_subset=s.batch * s.steps)
    one = profiled_copies(run, r, train_set)
    two = profiled_copies(run, dataclasses.replace(r, epochs=2), train_set)
    batch_bytes = s.batch * train_set.images[0].numel()  # one uint8 batch
    fig.update(steps_per_epoch=s.steps, batch_bytes=batch_bytes, upload_bytes=one["h2d_bytes"],
               h2d_bytes_per_step=(two["h2d_bytes"] - one["h2d_bytes"]) / s.steps,
               h2d_copies_per_step=(two["h2d"] - one["h2d"]) / s.steps,
               d2h_copies_per_step=(two["d2h"] - one["d2h"]) / s.steps)
    if run.device.type == "cuda":  # the upload of the data itself must show, or the trace was misread
        require(one["h2d_bytes"] >= r.train_subset * train_set.images[0].numel(),
                f"the profiler's trace shows {one['h2d_bytes']:,} bytes copied to the device, less than the "
                f"training images themselves: memcpy events not found (categories: {one['categories']})")
    else:
        fig["note"] = "CPU: there is no host-to-device copy to count"
    require(fig["h2d_bytes_per_step"] < batch_bytes / 100,
            f"{fig['h2d_bytes_per_step']:,.0f} bytes copied to the device per step (a uint8 batch is "
            f"{batch_bytes:,}): the training data is not resident")


def profiled_copies(run: Acceptance, recipe: Recipe, train_set: ImageSet) -> dict[str, Any]:
    """Host-to-device copies (count, bytes) and device-to-host copies of one train() call."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CUDA if run.device.type == "cuda" else ProfilerActivity.CPU]
    model = build_model(run.sizes.engine_arch, recipe.init, recipe.seed)
    with profile(activities=activities) as prof:
        train(model, recipe, train_set, None, run.device)
        sync(run.device)
    trace = run.work / "trace.json"
    prof.export_chrome_trace(str(trace))
    events = json.loads(trace.read_text()).get("traceEvents", [])
    trace.unlink()
    copies = [e for e in events if e.get("cat") == "gpu_memcpy"]
    h2d = [e for e in copies if "HtoD" in e.get("name", "")]
    return {"h2d": len(h2d), "h2d_bytes": sum(e.get("args", {}).get("bytes", 0) for e in h2d),
            "d2h": sum("DtoH" in e.get("name", "") for e in copies),
            "categories": sorted({str(e.get("cat")) for e in events})}


def check_bench(run: Acceptance, fig: dict[str, Any], name: str) -> None:
    s = run.sizes
    channels = ",".join(map(str, s.bench[name]))
    fig["layout"] = f"2,2,2,2 x {channels}"
    obj, _ = run.nas_json(["bench", "--blocks", "2,2,2,2", "--channels", channels, "--data", run.data,
                           "--device", s.device, *s.bench_flags, "--json"], timeout=min(120.0, run.share(0.5)))
    keys = ("images_per_s", "baseline_images_per_s", "speedup", "train_flops_per_image", "achieved_flops",
            "peak_flops", "peak_fraction", "batch_size", "steps", "rounds", "params", "engine_samples",
            "baseline_samples")
    fig.update({k: obj.get(k) for k in keys})
    numbers = [obj.get(k) for k in ("images_per_s", "baseline_images_per_s", "achieved_flops", "peak_flops")]
    require(all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in numbers),
            f"`nas bench` reported non-positive figures: {numbers}")


def schedule(seconds: float, images_per_s: float, split_images: int, max_epochs: int,
             min_images: int) -> tuple[int, int]:
    """(epochs, train images per epoch, 0 = the whole split) that fill `seconds` at `images_per_s`:
    whole epochs of the split while one fits (at most `max_epochs`), else one epoch of a subset."""
    images = max(0.0, seconds) * images_per_s
    if images >= split_images:
        return min(max_epochs, int(images // split_images)), 0
    return 1, min(split_images, max(min_images, int(images) // 1000 * 1000))


def check_search(run: Acceptance, fig: dict[str, Any], study: str) -> None:
    """A short search: the seed designs, then one trial of each depth, then the final rung, sized from
    the measured images/s of SE [4,4,3], the heaviest seed design, to fit SEARCH_SHARE of the time left."""
    from nas.arch.space import load_space
    from nas.search import CONFIRM_LONGER_BY, CUDA_FIDELITY, SEARCH_RECIPE
    from nas.search.config import default_rung

    s = run.sizes
    allot = run.share(SEARCH_SHARE)
    probe = se_arch() if not run.dry else s.engine_arch
    rate = run.rate(probe, SEARCH_RECIPE)
    rung = min(s.trials, len(load_space(s.space).layers) + 1)  # the best of each depth and the best seed design
    split_images = sum(map(len, run.split())) - s.search_val_size
    if default_rung(run.device) == "fast":  # the rung retrains each candidate whole with the fast protocol
        fast = protocol("fast")
        rung_s = rung * (fast.epochs * split_images / run.rate(probe, fast) + RUNG_OVERHEAD_S)
        units = s.trials
    else:  # the proxy rung: each candidate's trial schedule, CONFIRM_LONGER_BY times longer
        rung_s, units = 0.0, s.trials + CONFIRM_LONGER_BY * rung
    trials_s = (allot - CLI_OVERHEAD_S - rung_s) * 0.8
    fig.update(allot_s=round(allot), probe_images_per_s=round(rate, 1), final_rung_estimate_s=round(rung_s))
    require(trials_s > 0, f"the final rung alone needs ~{rung_s:.0f} s ({rung} candidates) of the {allot:.0f} s "
                          f"this stage has: raise --budget-s")
    epochs, subset = schedule(trials_s / units, rate, split_images, CUDA_FIDELITY.epochs,
                              min_images=10 * SEARCH_RECIPE.batch_size)
    fig.update(planned_epochs=epochs, planned_train_subset=subset)
    if s.search_caps:
        epochs, subset = s.search_caps
    timeout = round(trials_s / 0.8 + CLI_OVERHEAD_S)  # no new trial after this: the final rung gets the rest
    results = run.work / "results"
    fig.update(epochs=epochs, train_subset=subset, trials=s.trials, timeout_s=timeout)
    started = datetime.datetime.now()
    proc = run.nas(["search", "--budget", s.budget, "--trials", str(s.trials), "--space", str(s.space),
                    "--data", run.data, "--study", study, "--results-dir", str(results), "--device", s.device,
                    "--epochs", str(epochs), "--train-subset", str(subset), "--val-size", str(s.search_val_size),
                    "--timeout", str(timeout), *s.search_flags], timeout=allot)
    finished = datetime.datetime.now()
    fig["wall_s"] = proc.seconds
    folder = results / study
    trials = read_trials(folder / "trials.csv")
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    trained = sum(counts.get(o, 0) for o in record.TRAINED)
    fig.update(outcomes=counts, trained=trained)
    spans = [(datetime.datetime.fromisoformat(t["datetime_start"]), float(t["duration_s"] or 0)) for t in trials
             if t.get("datetime_start")]
    if spans:
        first = min(start for start, _ in spans)
        last = max(start + datetime.timedelta(seconds=d) for start, d in spans)
        trial_phase = (last - first).total_seconds()
        fig.update(trial_phase_s=round(trial_phase, 1), startup_s=round((first - started).total_seconds(), 1),
                   final_rung_and_report_s=round((finished - last).total_seconds(), 1),
                   trials_per_minute=round(trained / trial_phase * 60, 2) if trial_phase > 0 else None)
    require(proc.rc == 0 and not proc.timed_out, proc.why())
    require(trained == s.trials, f"{trained} of {s.trials} trials trained (the --timeout came first?)")
    report = folder / "report.html"
    fig["report_bytes"] = report.stat().st_size if report.is_file() else 0
    board, _ = run.nas_json(["leaderboard", "--study", study, "--results-dir", str(results), "--json"], timeout=60)
    rows = board.get("leaderboard", [])
    fig["final_rung"] = [{k: r.get(k) for k in ("trial", "confirm_acc", "val_acc", "seed_design", "params", "arch")}
                         for r in rows if r.get("confirm_acc") is not None]
    fig["winner"] = rows[0] if rows else None
    require(bool(fig["final_rung"]), "no trial has a final-rung score: the final rung did not run")
    require(fig["report_bytes"] > 0, f"{report} was not written")


def read_trials(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def se_arch() -> Arch:
    return Arch.from_dict(json.loads(SE_FILE.read_text())["arch"])


def check_retrain(run: Acceptance, fig: dict[str, Any], target: list[str], arch: Arch, fraction: float) -> None:
    """`nas retrain --protocol fast`, for its whole schedule or as much of it as `fraction` of the time left
    allows, scored on the test split (with flip TTA: two forward passes, each ~1/3 of a training step)."""
    s = run.sizes
    allot = run.share(fraction)
    recipe = protocol("fast").updated({"batch_size": s.retrain_batch})
    rate = run.rate(arch, recipe)
    split_images = sum(map(len, run.split()))
    test_images = len(load_split(run.data, "test"))
    seconds = (allot - CLI_OVERHEAD_S - 2 * test_images / (3 * rate)) * 0.85
    epochs, subset = schedule(seconds, rate, split_images, max_epochs=recipe.epochs, min_images=10 * s.retrain_batch)
    fig.update(arch=arch.describe(), params=count_params(arch), macs=count_macs(arch), allot_s=round(allot),
               measured_images_per_s=round(rate, 1), planned_epochs=epochs, planned_train_subset=subset)
    if s.retrain_caps:
        epochs, subset = s.retrain_caps
    fig.update(epochs=epochs, train_subset=subset)
    flags = ["--protocol", "fast", "--epochs", str(epochs), "--batch-size", str(s.retrain_batch), "--device", s.device,
             "--results-dir", str(run.work / "results"), "--json"]
    if subset:
        flags += ["--train-subset", str(subset)]
    obj, proc = run.nas_json(["retrain", *target, *flags], timeout=allot)
    runs = obj.get("runs") or [{}]
    fig.update(test_acc=runs[0].get("test_acc"), wall_s=runs[0].get("wall_seconds"), process_s=proc.seconds)
    acc = fig["test_acc"]
    require(isinstance(acc, float) and 0.0 <= acc <= 1.0, f"no test accuracy in the retrain's output: {runs[0]}")


def check_retrain_winner(run: Acceptance, fig: dict[str, Any], study: str) -> None:
    try:
        best, _ = run.nas_json(["show", "best", "--study", study, "--results-dir", str(run.work / "results"),
                                "--json"], timeout=60)
    except Fail as e:
        raise Skip(f"the search left no winner to retrain ({e})") from None
    fig["trial"] = best.get("trial")
    check_retrain(run, fig, ["best", "--study", study], Arch.from_dict(best["arch"]), fraction=0.5)


def check_retrain_se(run: Acceptance, fig: dict[str, Any]) -> None:
    check_retrain(run, fig, ["--arch", str(SE_FILE), "--data", run.data], se_arch(), fraction=1.0)


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
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="See the module docstring for carrying wheels to a GPU machine.")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="local ImageFolder tree or .tar.gz of CIFAR-10 (default: ../shared/data/cifar10-png.tar.gz "
                         "beside the repository)")
    ap.add_argument("--out", type=Path, required=True, help="folder for summary.json, log.txt and scratch files")
    ap.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of the whole run (default 540)")
    ap.add_argument("--only", type=lambda v: [n.strip() for n in v.split(",") if n.strip()], metavar="CHECK,...",
                    help="run only these checks (device always runs): a rerun of what failed, in less time; "
                         "retrain_winner needs search in the same run")
    ap.add_argument("--dry-run", action="store_true",
                    help="every check on CPU at tiny sizes (the test suite runs this)")
    args = ap.parse_args(argv)
    if not args.data.exists():
        ap.error(f"--data {args.data} does not exist: pass a local copy of CIFAR-10 (a .tar.gz or ImageFolder "
                 f"tree); this script never downloads")
    unknown = sorted(set(args.only or ()) - set(CHECKS))
    if unknown:
        ap.error(f"--only {','.join(unknown)}: no such check; choose from {', '.join(CHECKS)}")
    if args.budget_s < 60:
        ap.error(f"--budget-s {args.budget_s:g} is too short: give at least 60 s")
    args.data = args.data.resolve()
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "work", ignore_errors=True)  # a fresh study and retrains every run
    (args.out / "work").mkdir()
    os.environ.setdefault("NAS_CACHE", str(args.out / "cache"))  # decoded images, shared with the nas commands
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.FileHandler(args.out / "log.txt", mode="w"), logging.StreamHandler()])
    run = Acceptance(args)
    log.info("gpu_acceptance %s: data %s, budget %.0f s, versions %s", "dry run" if args.dry_run else "GPU run",
             args.data, args.budget_s, versions())
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
    if not args.dry_run and run.device.type != "cuda":
        run.skip_rest("no CUDA GPU: torch sees none (use --dry-run to exercise the checks on CPU)")
        return 1
    run.run("resume", lambda fig: check_resume(run, fig))
    run.run("bf16_autocast", lambda fig: check_autocast(run, fig, "bf16"))
    run.run("fp16_autocast", lambda fig: check_autocast(run, fig, "fp16"))
    run.run("oom_trial", lambda fig: check_oom(run, fig))
    run.run("resident_data", lambda fig: check_resident(run, fig))
    gc.collect()
    if run.device.type == "cuda":
        torch.cuda.empty_cache()  # the nas processes get the whole card
    run.run("bench_resnet18", lambda fig: check_bench(run, fig, "bench_resnet18"))
    run.run("bench_narrow", lambda fig: check_bench(run, fig, "bench_narrow"))
    study = "acceptance"
    run.run("search", lambda fig: check_search(run, fig, study))
    run.run("retrain_winner", lambda fig: check_retrain_winner(run, fig, study))
    run.run("retrain_se", lambda fig: check_retrain_se(run, fig))
    failed = [c.name for c in run.checks if c.status == "failed"]
    log.info("%s in %.0f s of %.0f: %s", "FAILED" if failed else "PASSED", time.perf_counter() - run.started,
             args.budget_s, ", ".join(failed) or "every check passed or was skipped with a reason")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
