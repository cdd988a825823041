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
    retrain_se      (examples/efficient-resnet-se.json), the fast protocol's epochs or as many as the
                    time left allows, scored on the test split

Everything the CLI does runs as `python -m nas ...` subprocesses (the command line is the stable
surface); the engine checks call nas.engine.train, nas.arch.model and nas.search in this process. The
clock, the subprocesses, the summary and the sizing of the search and the retrains are
benchmarks/gpu_stages.py's, shared with benchmarks/gpu_window.py.

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

import dataclasses
import datetime
import gc
import json
import math
import sys
from dataclasses import dataclass
from typing import Any

import torch
from gpu_stages import (  # benchmarks/ is on sys.path when this file runs (or the tests put it there)
    CLI_OVERHEAD_S,
    ROOT,
    SE_FILE,
    Fail,
    Sizes,
    Skip,
    StagedRun,
    checked,
    fast_rung_seconds,
    file_arch,
    parser,
    protocol_recipe,
    require,
    retrain,
    schedule,
    search_figures,
    start,
)

from nas import record
from nas.arch import Arch
from nas.arch.model import build_model
from nas.engine.data import ImageSet
from nas.engine.precision import resolve_precision
from nas.engine.recipe import Recipe
from nas.engine.train import train

CHECKS = ("device", "resume", "bf16_autocast", "fp16_autocast", "oom_trial", "resident_data", "bench_resnet18",
          "bench_narrow", "search", "retrain_winner", "retrain_se")
SEARCH_SHARE = 0.6  # of the time left: the search trains its trials and the final rung; the retrains share the rest


@dataclass(frozen=True)
class AcceptanceSizes(Sizes):
    """The engine checks' and benches' sizes, beside the stages gpu_window.py has too."""

    engine_arch: Arch  # the network of the engine checks (resume, autocast, resident data, OOM memory)
    batch: int  # images per step in the engine checks
    steps: int  # optimiser steps per epoch in the engine checks
    oom_fidelity: tuple[int, int, int]  # (train images, validation carve-out, validation images scored)
    bench: dict[str, tuple[int, ...]]  # check name -> channels of the 2,2,2,2 network
    bench_flags: tuple[str, ...]


GPU = AcceptanceSizes(
    device="cuda", engine_arch=Arch(blocks=(2, 2, 2, 2), channels=(16, 32, 64, 128), dropout=0.1), batch=128,
    steps=40, val_images=1000, matmul_n=8192, oom_fidelity=(10_000, 1000, 1000),
    bench={"bench_resnet18": (64, 128, 256, 512), "bench_narrow": (16, 32, 64, 128)},
    bench_flags=("--steps", "50", "--rounds", "3"), space=ROOT / "search_spaces" / "default.yaml", budget="5e6",
    trials=8, search_val_size=5000, search_flags=(), rate_steps=30, retrain_batch=None, search_caps=None,
    retrain_caps=None, carve=None)

DRY = AcceptanceSizes(
    device="cpu", engine_arch=Arch(blocks=(1, 1), channels=(8, 16), dropout=0.1), batch=32, steps=4,
    val_images=100, matmul_n=256, oom_fidelity=(128, 100, 100),
    bench={"bench_resnet18": (16, 32, 64, 128), "bench_narrow": (4, 8, 16, 32)},
    bench_flags=("--batch-size", "16", "--steps", "1", "--rounds", "1"),
    space=ROOT / "search_spaces" / "tiny.yaml", budget="50k", trials=3, search_val_size=100,
    search_flags=("--val-subset", "100", "--width", "1"), rate_steps=1, retrain_batch=16, search_caps=(1, 128),
    retrain_caps=(1, 32), carve={"train": 60, "test": 10})


class Acceptance(StagedRun):
    script = "benchmarks/gpu_acceptance.py"
    names = CHECKS
    key = "checks"
    sizes: AcceptanceSizes


# ---------------------------------------------------------------------------------------------
# the checks


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




def check_search(run: Acceptance, fig: dict[str, Any], study: str) -> None:
    """A short search: the seed designs, then one trial of each depth, then the final rung, sized from
    the measured images/s of SE [4,4,3], the heaviest seed design, to fit SEARCH_SHARE of the time left."""
    from nas.arch.space import load_space
    from nas.search import CONFIRM_LONGER_BY, CUDA_FIDELITY, SEARCH_RECIPE
    from nas.search.config import default_rung

    s = run.sizes
    allot = run.share(SEARCH_SHARE)
    probe = file_arch(SE_FILE) if not run.dry else s.engine_arch
    rate = run.rate(probe, SEARCH_RECIPE)
    split_images = sum(map(len, run.split())) - s.search_val_size
    if default_rung(run.device) == "fast":  # the rung retrains each candidate whole with the fast protocol
        _, rung_s = fast_rung_seconds(run, probe, s.space, s.trials, split_images)
        units = s.trials
    else:  # the proxy rung: each candidate's trial schedule, CONFIRM_LONGER_BY times longer
        rung = min(s.trials, len(load_space(s.space).layers) + 1)  # the best of each depth and the best seed design
        rung_s, units = 0.0, s.trials + CONFIRM_LONGER_BY * rung
    trials_s = (allot - CLI_OVERHEAD_S - rung_s) * 0.8
    fig.update(allot_s=round(allot), probe_images_per_s=round(rate, 1), final_rung_estimate_s=round(rung_s))
    require(trials_s > 0, f"the final rung alone needs ~{rung_s:.0f} s of the {allot:.0f} s this stage has: raise "
                          f"--budget-s")
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
    search_figures(run, fig, proc, results, study, started, datetime.datetime.now())
    require(fig["trained"] == s.trials, f"{fig['trained']} of {s.trials} trials trained (the --timeout came first?)")
    require(bool(fig["final_rung"]), "no trial has a final-rung score: the final rung did not run")
    require(fig["report_bytes"] > 0, f"{results / study / 'report.html'} was not written")


def check_retrain(run: Acceptance, fig: dict[str, Any], target: list[str], arch: Arch, fraction: float) -> None:
    """`nas retrain --protocol fast`, for its whole schedule or as much of it as `fraction` of the time left
    allows, scored on the test split."""
    obj = retrain(run, fig, target, [arch], run.share(fraction), protocol_recipe(run, "fast"))
    network, first = fig["networks"][0], obj["runs"][0]
    fig.update(arch=network["arch"], params=network["params"], macs=network["macs"],
               measured_images_per_s=network["images_per_s"], test_acc=first.get("test_acc"),
               wall_s=first.get("wall_seconds"))


def check_retrain_winner(run: Acceptance, fig: dict[str, Any], study: str) -> None:
    try:
        best, _ = run.nas_json(["show", "best", "--study", study, "--results-dir", str(run.work / "results"),
                                "--json"], timeout=60)
    except Fail as e:
        raise Skip(f"the search left no winner to retrain ({e})") from None
    fig["trial"] = best.get("trial")
    check_retrain(run, fig, ["best", "--study", study], Arch.from_dict(best["arch"]), fraction=0.5)


def check_retrain_se(run: Acceptance, fig: dict[str, Any]) -> None:
    check_retrain(run, fig, ["--arch", str(SE_FILE), "--data", run.data], file_arch(SE_FILE), fraction=1.0)


# ---------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--only", type=lambda v: [n.strip() for n in v.split(",") if n.strip()], metavar="CHECK,...",
                    help="run only these checks (device always runs): a rerun of what failed, in less time; "
                         "retrain_winner needs search in the same run")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(CHECKS))
    if unknown:
        ap.error(f"--only {','.join(unknown)}: no such check; choose from {', '.join(CHECKS)}")
    args = checked(ap, args)
    run = Acceptance(args, DRY if args.dry_run else GPU)
    code = start(run, args)
    if code is not None:
        return code
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
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
