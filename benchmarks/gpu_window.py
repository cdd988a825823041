"""One GPU window, the whole truth (issue 25): the main command at full width and the full-width table, in one run.

Why: on CUDA the search trains every trial at full width, so a GPU run answers what the CPU cannot:
does the search's winner beat the seed designs at full width, on test data? GPU time comes in short
windows (at most 10 minutes a command), so the whole job must fit one command. In this order:

    device             the GPU's name, memory, bf16 support and bf16 matmul peak
    search             the README's main command on CIFAR-10 with the GPU defaults: `nas search --budget 5e6
                       --trials 200` at the CUDA fidelity (10 epochs of the whole split, full width) and its
                       final rung (the fast protocol at full width), bounded by --timeout so it fits its share.
                       When 200 trials cannot fit, the figures say how many did and the measured trials/min
    retrain_top3       `nas retrain --top 3 --protocol fast`
    table_found        the full-width table, two initialisations each (`--seeds 2`), scored on the test split:
    table_se443        the search's winner, SE [4,4,3] (examples/efficient-resnet-se.json), [5,4,3]
    table_543          (examples/residual-network-design.json), ResNet-10 (examples/resnet10.json), ResNet
    table_resnet10     [1,1,1,1] x [32,64,128,256] (written to a file here) with the fast protocol, and the
    table_resnet1111   airbench-class network (examples/airbench94.json) with its own `--protocol airbench`
    table_airbench94

Sizing, from speed measured here as benchmarks/gpu_acceptance.py does (both use gpu_stages.py): the
search gets half the time left, more when its final rung (estimated from SE [4,4,3]'s measured images/s
with the fast protocol) and three trials need it, at most 3/4; its --timeout stops new trials so that
the trial started last and the rung (one candidate per trial trained, at most one per depth and the
seed design) still fit. The retrains then share what is left: every one trains the same fraction of
its protocol's schedule (whole epochs while one fits, else a subset of one epoch), the fraction that the
time left gives all of them at the images/s measured here for each network, or as many of them as keep
it at 10% or more (the others fail in their turn, saying so). No table row trains more of its schedule
than the first row, so the rows compare like with like. Each stage's figures record its epochs and
training images; the first `nas retrain` measures the per-process overhead the later ones are sized with.

Output: --out DIR gets summary.json (rewritten after every stage, so a killed run leaves one) and log.txt
(every command and its output); scratch files go to DIR/work (emptied at start), decoded images to
DIR/cache. summary.json: {schema, script, dry_run, started, elapsed_s, budget_s, data, device,
versions, gpu, search: {command, trials, trained, all_trials_fit, trials_per_minute,
trial_minutes_for_all (the trials' minutes at that rate), minutes, winner},
top3: [...], table: [{stage, network, protocol, params, epochs, train_subset, test_acc: [per seed],
mean, std, status}], passed, failed, stages: [{name, status, reason, seconds, figures}]}. Exit code 0
when no stage failed, 1 otherwise, 2 for bad flags.

--dry-run runs the same stages on CPU at toy sizes, so tests/test_gpu_window.py keeps the script from
rotting while no GPU is at hand: a few hundred images carved from --data, the tiny space, 3 trials of
one epoch, the proxy final rung (the fast protocol's batch outnumbers the images), every retrain one
epoch of 32 images, the table's networks at width x0.25 (at full width their test scoring and latency
alone cost minutes on CPU).

On a GPU machine without internet: carry the wheels and the data exactly as gpu_acceptance.py's
docstring says, then

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \\
      && export PYTHONPATH=/tmp/site || exit
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_window.py --budget-s 540 --data .data/cifar10-png.tar.gz --out /tmp/win
    rc=$?; cp /tmp/win/summary.json /tmp/win/log.txt $OUT/; exit $rc
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gpu_stages import (  # benchmarks/ is on sys.path when this file runs (or the tests put it there)
    RESERVE_S,
    ROOT,
    SE_FILE,
    Fail,
    Sizes,
    Skip,
    StagedRun,
    checked,
    fast_rung_seconds,
    file_arch,
    leaderboard,
    parser,
    protocol_recipe,
    require,
    retrain,
    retrain_cost,
    search_figures,
    start,
)

from nas.arch import Arch
from nas.engine.recipe import Recipe

EXAMPLES = ROOT / "examples"
SEARCH_SHARE = 0.5  # of the time left, when the final rung and two trials fit in it
MAX_SEARCH_SHARE = 0.75  # what the search may take when they do not: the retrains need the rest
MIN_TRIALS = 2  # trials the search's share must hold beside its final rung
SEEDS = 2  # initialisations per network in the table
TOP = 3  # `nas retrain --top`
MARGIN = 0.85  # of the time a retrain is given, what its training is planned to fill
MIN_FRACTION = 0.1  # of its protocol's schedule, the least a retrain trains: less would say little about the network
STUDY = "window"


@dataclass(frozen=True)
class Network:
    """A row of the full-width table: the search's winner (no file, no arch), an example file, or an
    architecture the script writes to a file (no example holds it)."""

    stage: str
    label: str
    file: Path | None = None
    arch: Arch | None = None
    protocol: str = "fast"


TABLE = (
    Network("table_found", "found by this search"),
    Network("table_se443", "SE [4,4,3]", SE_FILE),
    Network("table_543", "[5,4,3]", EXAMPLES / "residual-network-design.json"),
    Network("table_resnet10", "ResNet-10", EXAMPLES / "resnet10.json"),
    Network("table_resnet1111", "ResNet [1,1,1,1] x 32..256", arch=Arch(blocks=(1, 1, 1, 1), channels=(32, 64, 128, 256))),
    Network("table_airbench94", "airbench94", EXAMPLES / "airbench94.json", protocol="airbench"),
)
STAGES = ("device", "search", "retrain_top3", *(n.stage for n in TABLE))

GPU = Sizes(
    device="cuda", val_images=1000, matmul_n=8192, rate_steps=30, space=ROOT / "search_spaces" / "default.yaml",
    budget="5e6", trials=200, search_val_size=5000, search_flags=(), search_caps=None, retrain_batch=None,
    retrain_caps=None, carve=None)

DRY_SPACE = ROOT / "search_spaces" / "tiny.yaml"
DRY = Sizes(
    device="cpu", val_images=100, matmul_n=256, rate_steps=1, space=DRY_SPACE, budget="50k", trials=3,
    search_val_size=100, search_caps=(1, 128), retrain_batch=16, retrain_caps=(1, 32), carve={"train": 60, "test": 10},
    search_flags=("--space", str(DRY_SPACE), "--val-size", "100", "--val-subset", "100", "--width", "1", "--epochs",
                  "1", "--train-subset", "128"))  # the CPU's proxy rung: the fast one's batch is more than the images
DRY_PROBE = Arch(blocks=(1, 1), channels=(8, 16))  # stands in for SE [4,4,3] where the dry run sizes the search
DRY_WIDTH = 0.25  # the dry run's table trains its networks this narrow: full width costs minutes per row on CPU


@dataclass(frozen=True)
class Plan:
    """A retrain stage as the sizing sees it."""

    stage: str
    target: list[str]  # what follows `nas retrain`
    archs: list[Arch]
    recipe: Recipe
    protocol: str
    seeds: int


class Window(StagedRun):
    script = "benchmarks/gpu_window.py"
    names = STAGES
    key = "stages"

    def __init__(self, args: argparse.Namespace, sizes: Sizes) -> None:
        super().__init__(args, sizes)
        self.table_fraction: float | None = None  # of each protocol's schedule, fixed by the table's first row
        self._leaders: list[Arch] | None = None

    def leaders(self) -> list[Arch]:
        """The search's finished trials, best first (what --top and `best` retrain); empty without a search."""
        if self._leaders is None:
            rows = self.figures("search").get("leaders")
            if rows is None:  # the search stage failed before its leaderboard: ask once more
                try:
                    rows = [r["arch_json"] for r in leaderboard(self, self.work / "results", STUDY)]
                except Fail:
                    rows = []
            self._leaders = [Arch.from_dict(a) for a in rows]
        return self._leaders

    def plan(self, stage: str) -> Plan | None:
        """What a retrain stage trains; None when it has nothing to train (no search winner)."""
        leaders = self.leaders()
        if stage == "retrain_top3":
            return Plan(stage, ["--top", str(TOP), "--study", STUDY], leaders[:TOP], protocol_recipe(self, "fast"),
                        "fast", 1) if leaders else None
        net = next(n for n in TABLE if n.stage == stage)
        if net.file is None and net.arch is None:
            return Plan(stage, ["best", "--study", STUDY], leaders[:1], protocol_recipe(self, net.protocol),
                        net.protocol, SEEDS) if leaders else None
        if net.file is not None and not net.file.exists():
            return None
        path = net.file
        if path is None or self.dry:  # no example holds it, or the dry run's narrow copy
            name = json.loads(path.read_text()).get("name") if path else net.stage.removeprefix("table_")
            arch = net.arch or file_arch(net.file)
            path = self.work / f"{net.stage}.json"
            path.write_text(json.dumps({"name": name, "note": net.label,
                                        "arch": (arch.scaled(DRY_WIDTH) if self.dry else arch).to_dict()}) + "\n")
        return Plan(stage, ["--arch", str(path), "--data", self.data], [file_arch(path)],
                    protocol_recipe(self, net.protocol), net.protocol, SEEDS)

    def allot(self, plan: Plan, fig: dict[str, Any]) -> float:
        """Seconds for `plan`'s stage: its fixed costs and the fraction of its whole schedule that the time left
        gives it and the retrains after it, as many of those as keep the fraction at MIN_FRACTION or more (the
        last ones are planned out when time is short, and fail for it in their turn). The table's rows share the
        first row's fraction, which only falls (when time runs short)."""
        later = [p for p in (self.plan(name) for name in STAGES[STAGES.index(plan.stage) + 1:]) if p is not None]
        costs = [retrain_cost(self, p.archs, p.recipe, p.seeds) for p in (plan, *later)]
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # the probes' memory: the nas process gets the whole card
        available = self.left() - RESERVE_S
        fraction, planned = schedule_fraction(available, costs)
        if plan.stage.startswith("table_"):
            fraction = min(fraction, self.table_fraction or 1.0)
            self.table_fraction = self.table_fraction or fraction
        fig.update(schedule_fraction=round(fraction, 4), retrains_planned=planned, retrains_left=len(costs))
        require(fraction >= MIN_FRACTION, f"only {max(available, 0):.0f} s of --budget-s {self.budget_s:g} left: "
                                          f"this retrain needs ~{costs[0][0]:.0f} s beside training and would train "
                                          f"{max(fraction, 0):.0%} of its schedule, under {MIN_FRACTION:.0%}: raise "
                                          f"--budget-s")
        return min(available, costs[0][0] + fraction * costs[0][1] / MARGIN)

    def headline(self) -> dict[str, Any]:
        search = self.figures("search")
        top = self.figures("retrain_top3")
        return {
            "gpu": self.figures("device").get("name"),
            "search": {k: search.get(k) for k in ("command", "trials", "trained", "all_trials_fit", "trials_per_minute",
                                                   "trial_minutes_for_all", "minutes", "winner")},
            "top3": [{k: r.get(k) for k in ("name", "test_acc")} for r in top.get("runs", [])],
            "table": [self.row(n) for n in TABLE],
        }

    def row(self, net: Network) -> dict[str, Any]:
        check = next((c for c in self.checks if c.name == net.stage), None)
        fig = check.figures if check else {}
        networks = fig.get("networks") or [{}]
        return {"stage": net.stage, "network": net.label, "protocol": net.protocol,
                "params": networks[0].get("params"), "epochs": fig.get("epochs"),
                "train_subset": fig.get("train_subset"), "test_acc": fig.get("test_accs"), "mean": fig.get("mean"),
                "std": fig.get("std"), "status": check.status if check else "pending"}


# ---------------------------------------------------------------------------------------------
# the stages


def stage_search(run: Window, fig: dict[str, Any]) -> None:
    """`nas search --budget 5e6 --trials 200` with the GPU's defaults, bounded by --timeout: see the docstring."""
    from nas.search import CUDA_FIDELITY, SEARCH_RECIPE

    s = run.sizes
    probe = DRY_PROBE if run.dry else file_arch(SE_FILE)  # the heaviest seed design
    split_images = sum(map(len, run.split())) - s.search_val_size
    epochs, subset = s.search_caps or (CUDA_FIDELITY.epochs, CUDA_FIDELITY.train_subset)
    trial_s = epochs * (subset or split_images) / run.rate(probe, SEARCH_RECIPE)  # one trial the pruner lets run
    candidates, rung_s = fast_rung_seconds(run, probe, s.space, s.trials, split_images)
    per_candidate = rung_s / candidates
    need = run.cli_overhead_s + (1 + MIN_TRIALS) * trial_s + min(candidates, 1 + MIN_TRIALS) * per_candidate
    available = run.left() - RESERVE_S
    allot = run.share(min(max(SEARCH_SHARE, need / available), MAX_SEARCH_SHARE))
    timeout, reserved = search_timeout(allot, run.cli_overhead_s, trial_s, candidates, per_candidate)
    fig.update(allot_s=round(allot), trial_estimate_s=round(trial_s, 1), final_rung_candidates=candidates,
               final_rung_reserved=reserved, final_rung_estimate_s=round(reserved * per_candidate),
               timeout_s=round(timeout), trials=s.trials)
    require(timeout >= trial_s, f"the final rung (~{per_candidate:.0f} s a candidate) and one trial (~{trial_s:.0f} s) "
                                f"do not fit the {allot:.0f} s the search can have: raise --budget-s")
    results = run.work / "results"
    args = ["search", "--budget", s.budget, "--trials", str(s.trials), "--data", run.data, "--study", STUDY,
            "--results-dir", str(results), "--device", s.device, "--timeout", str(round(timeout)), *s.search_flags]
    fig["command"] = "nas " + " ".join(args)
    started = datetime.datetime.now()
    proc = run.nas(args, timeout=allot)
    search_figures(run, fig, proc, results, STUDY, started, datetime.datetime.now())
    rate = fig.get("trials_per_minute")
    fig.update(all_trials_fit=fig["trained"] >= s.trials, minutes=round(proc.seconds / 60, 2),
               trial_minutes_for_all=round(s.trials / rate, 1) if rate else None)  # at the measured trials/min
    require(bool(fig["final_rung"]), "no trial has a final-rung score: the final rung did not run")
    require(fig["report_bytes"] > 0, f"{results / STUDY / 'report.html'} was not written")


def schedule_fraction(available: float, costs: list[tuple[float, float]]) -> tuple[float, int]:
    """(fraction of the whole schedule, retrains planned): the fraction every one of the first k retrains (their
    (fixed, whole-schedule) seconds in `costs`) can train in `available` seconds, for the largest k that keeps it
    at MIN_FRACTION or more (k = 1 when none does)."""
    for k in range(len(costs), 0, -1):
        fixed, whole = sum(c[0] for c in costs[:k]), sum(c[1] for c in costs[:k])
        fraction = min(1.0, MARGIN * (available - fixed) / whole)
        if fraction >= MIN_FRACTION:
            break
    return fraction, k


def search_timeout(allot: float, overhead: float, trial_s: float, candidates: int,
                   per_candidate: float) -> tuple[float, int]:
    """(--timeout, final-rung candidates reserved for): the longest --timeout after which the trial that started
    last and the final rung still fit `allot`. The rung trains the best of each depth and the best seed design, so
    at most one candidate per trial trained: it needs room for as many as the trials that fit can give."""
    for reserved in range(1, candidates + 1):
        timeout = allot - overhead - trial_s - reserved * per_candidate
        if min(candidates, max(0, int(timeout // trial_s)) + 1) <= reserved:
            break
    return timeout, reserved


def stage_retrain(run: Window, fig: dict[str, Any], stage: str) -> None:
    """A retrain stage: `nas retrain --top 3`, or one row of the table, sized by Window.allot."""
    plan = run.plan(stage)
    if plan is None:
        net = next((n for n in TABLE if n.stage == stage), None)
        raise Skip("the search left no finished trial to retrain" if net is None or net.file is None
                   else f"{net.file.relative_to(ROOT)} does not exist")
    obj = retrain(run, fig, plan.target, plan.archs, run.allot(plan, fig), plan.recipe, plan.protocol, plan.seeds)
    if stage.startswith("table_"):  # one network, SEEDS initialisations
        accs = [r["test_acc"] for r in obj["runs"]]
        fig.update(test_accs=accs, mean=statistics.fmean(accs), std=statistics.stdev(accs) if len(accs) > 1 else None)


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    args = checked(ap, ap.parse_args(argv))
    run = Window(args, DRY if args.dry_run else GPU)
    code = start(run, args)
    if code is not None:
        return code
    run.run("search", lambda fig: stage_search(run, fig))
    for stage in STAGES[2:]:
        run.run(stage, lambda fig, stage=stage: stage_retrain(run, fig, stage))
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
