"""What `nas search` prints: its plan, each trial as it finishes, the final rung and the verdict.

Apart from nas.cli.search (its flags) so that the command line loads torch and Optuna only when a search runs.
"""

from __future__ import annotations

import math
from typing import Any, ContextManager

import optuna

from nas.api import SearchHooks
from nas.arch import Arch
from nas.artifacts import safe_url
from nas.cli.app import out
from nas.live import SearchView
from nas.record import Record
from nas.search import (
    CONFIRM_LONGER_BY,
    Job,
    estimate_trial_seconds,
    measured_trial_seconds,
    trained,
)
from nas.search.rung import MAX_FRONT_RUNG
from nas.search.strategies import strategy


class PrintedSearch(SearchHooks):
    """The search as the terminal (or a log) shows it."""

    progress = True  # a bar on a terminal, a line per epoch in logs

    def __init__(self, confirm: bool) -> None:
        self.view: SearchView | None = None
        self.confirm = confirm

    def started(self, job: Job, study: optuna.Study, seeded: list[str]) -> None:
        cfg, fid = job.cfg, job.cfg.fidelity
        already, per_trial = trained(study), measured_trial_seconds(study)
        if math.isnan(per_trial):  # no trial has finished yet: time a few steps of random candidates
            per_trial = estimate_trial_seconds(job.space, cfg, job.data, job.device)
        remaining = max(cfg.trials - already, 0)
        out.print(f"nas search {job.space.name}: budget {cfg.budget:,} params, {cfg.trials} trials ({already} already "
                  f"done), device {job.device}, storage {safe_url(job.cfg.storage)}")
        out.print(f"fidelity: {fid.epochs} epochs x {fid.train_subset or len(job.data.train):,} images, width "
                  f"x{fid.width:g}, {len(job.data.val):,} validation images, pruner "
                  f"{'none (multi-objective)' if cfg.multi_objective else cfg.pruner}; ~{per_trial:.1f} s "
                  f"per full trial, <= ~{remaining * per_trial / 60:.1f} min for {remaining} trials (pruning cuts this)")
        if cfg.max_macs is not None:
            out.print(f"compute bound: at most {cfg.max_macs:,} MACs per image, a hard constraint like the budget")
        if job.grid is not None:
            out.print(f"{job.grid.summary()}: trains {cfg.trials:,}")
        if seeded:
            out.print(f"seed designs tried first: {', '.join(seeded)}")
        if cfg.multi_objective:
            out.print(f"objectives: {', '.join(cfg.objectives)} (a front: every trial trains the whole short "
                      f"schedule, as Optuna prunes no multi-objective study)")
        if len(job.space.layers) > 1 and strategy(cfg.sampler).per_depth:
            pruned = "" if cfg.multi_objective else ", and trials are pruned against their own depth"
            out.print(f"depths {', '.join(map(str, job.space.layers))} take turns{pruned} (the short schedule ranks "
                      f"within a depth, not across)")
        if self.confirm:
            out.print(_rung_plan(job, per_trial))
        if job.workers > 1:
            from nas.search.workers import cpu_threads

            out.print(f"{job.workers} worker processes, {cpu_threads(job.workers)} CPU thread(s) each")
        self.view = SearchView(out, cfg.trials, already)

    def running(self) -> ContextManager[Any]:
        return self.view

    def on_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.view.update(study, trial)

    def notice(self, message: str) -> None:
        out.print(message, soft_wrap=True)

    def rung_started(self, job: Job) -> None:
        which = "the front" if job.cfg.multi_objective else "the best of each depth"
        out.print(f"final rung: training {which} and the best seed design {_rung_words(job)}", style="bold")

    def on_rung(self, r: Record, result: dict[str, Any]) -> None:
        acc = "non-finite" if result["val_acc"] is None else f"{result['val_acc']:.2%}"
        out.print(f"  trial {r.number} ({r.seed_design or 'found'}): {r.short_acc:.2%} short -> {acc} at "
                  f"{result['epochs']} epochs x {result['train_subset']:,} images ({result['seconds']:.0f} s)  "
                  f"{Arch.from_dict(r.arch).describe()}")


def _rung_words(job: Job) -> str:
    return "at full width with the fast protocol" if job.cfg.final_rung == "fast" else f"{CONFIRM_LONGER_BY}x longer"


def _rung_plan(job: Job, per_trial: float) -> str:
    """What the final rung will train, and what that costs where it can be told from the trials' cost."""
    each = CONFIRM_LONGER_BY * per_trial / 60
    if job.rung_size is None:
        pool, cost = f"the front of the short scores (at most {MAX_FRONT_RUNG}) and the best seed design", f"~{each:.1f} min each"
    else:
        pool, cost = f"up to {job.rung_size} candidates (best of each depth, best seed design)", f"~{job.rung_size * each:.1f} min"
    if job.cfg.final_rung == "fast":
        cost = "minutes each on a GPU, hours each on a CPU"
    return f"final rung: {pool} trained {_rung_words(job)}, {cost}"


def print_verdict(v: Any) -> None:
    if v is None or v.beats is None:
        return
    fast = (v.found.final or {}).get("protocol") == "fast"
    how = "at full width with the fast protocol" if fast else f"{CONFIRM_LONGER_BY}x the search's schedule"
    out.print(f"best found (trial {v.found.number}, {v.found.params:,} params) {v.found.final_acc:.2%} "
              f"{'beats' if v.beats else 'does not beat'} the best seed design {v.seed.seed_design} "
              f"({v.seed.params:,} params) {v.seed.final_acc:.2%} at {how} "
              f"(validation, one initialisation each)")
