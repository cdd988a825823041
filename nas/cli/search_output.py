"""What `nas search` prints: its plan, each trial as it finishes, the final rung and the verdict.

Apart from nas.cli.search (its flags) so that the command line loads torch and Optuna only when a search runs.
"""

from __future__ import annotations

import math
from typing import Any, ContextManager

import optuna

from nas.api import SearchHooks
from nas.arch import Arch
from nas.cli.app import out
from nas.live import SearchView
from nas.numbers import counted, duration
from nas.record import Record
from nas.search import CONFIRM_LONGER_BY
from nas.search.job import SearchPlan
from nas.search.rung import MAX_FRONT_RUNG


class PrintedSearch(SearchHooks):
    """The search as the terminal (or a log) shows it."""

    progress = True  # a bar on a terminal, a line per epoch in logs

    def __init__(self, confirm: bool) -> None:
        self.view: SearchView | None = None
        self.confirm = confirm

    def started(self, plan: SearchPlan) -> None:
        fid = plan.fidelity
        out.print(f"nas search {plan.space}: budget {plan.budget:,} params, {counted(plan.trials, 'trial')} "
                  f"({plan.done} already done), device {plan.device}, storage {plan.storage}")
        out.print(f"fidelity: {counted(fid.epochs, 'epoch')} x {counted(plan.train_images, 'image')}, width "
                  f"x{fid.width:g}, {counted(plan.val_images, 'validation image')}, pruner {plan.pruner}; {_cost(plan)}")
        if plan.base_recipe:
            out.print(f"base recipe: {plan.base_recipe}", soft_wrap=True)
        if plan.max_macs is not None:
            out.print(f"compute bound: at most {plan.max_macs:,} MACs per image, a hard constraint like the budget")
        if plan.grid is not None:
            out.print(f"{plan.grid}: trains {plan.trials:,}")
        if plan.seeded:
            out.print(f"seed designs tried first: {', '.join(plan.seeded)}")
        if plan.multi_objective:
            out.print(f"objectives: {', '.join(plan.objectives)} (a front: every trial trains the whole short "
                      f"schedule, as Optuna prunes no multi-objective study)")
        if plan.per_depth:
            pruned = "" if plan.multi_objective else ", and trials are pruned against their own depth"
            out.print(f"depths {', '.join(map(str, plan.depths))} take turns{pruned} (the short schedule ranks "
                      f"within a depth, not across)")
        if self.confirm:
            out.print(_rung_plan(plan))
        if plan.workers > 1:
            out.print(f"{plan.workers} worker processes, {plan.threads_per_worker} CPU thread(s) each")
        self.view = SearchView(out, plan.trials, plan.done)

    def running(self) -> ContextManager[Any]:
        return self.view

    def on_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.view.update(study, trial)

    def notice(self, message: str) -> None:
        out.print(message, soft_wrap=True)

    def rung_started(self, plan: SearchPlan) -> None:
        which = "the front" if plan.multi_objective else "the best of each depth"
        out.print(f"final rung: training {which} and the best seed design {_rung_words(plan.final_rung)}", style="bold")

    def on_rung(self, r: Record, result: dict[str, Any]) -> None:
        acc = "non-finite" if result["val_acc"] is None else f"{result['val_acc']:.2%}"
        out.print(f"  trial {r.number} ({r.seed_design or 'found'}): {r.short_acc:.2%} short -> {acc} at "
                  f"{counted(result['epochs'], 'epoch')} x {counted(result['train_subset'], 'image')} "
                  f"({result['seconds']:.0f} s)  "
                  f"{Arch.from_dict(r.arch).describe()}")


def _rung_words(final_rung: str) -> str:
    return "at full width with the fast protocol" if final_rung == "fast" else f"{CONFIRM_LONGER_BY}x longer"


def _cost(plan: SearchPlan) -> str:
    """What the trials left will cost, from the measured cost of one (NaN where neither trials nor a probe told)."""
    left = max(plan.trials - plan.done, 0)
    if left == 0:
        return "nothing left to train"
    if math.isnan(plan.seconds_per_trial):
        return f"{counted(left, 'trial')} to train"
    return (f"{duration(plan.seconds_per_trial)} per full trial, <= {duration(left * plan.seconds_per_trial)} for "
            f"{counted(left, 'trial')} (pruning cuts this)")


def _rung_plan(plan: SearchPlan) -> str:
    """What the final rung will train, and what that costs where it can be told from the trials' cost."""
    each = CONFIRM_LONGER_BY * plan.seconds_per_trial
    if plan.rung_size is None:
        pool, cost = f"the front of the short scores (at most {MAX_FRONT_RUNG}) and the best seed design", f"{duration(each)} each"
    else:
        pool = f"up to {counted(plan.rung_size, 'candidate')} (best of each depth, best seed design)"
        cost = duration(plan.rung_size * each)
    if plan.final_rung == "fast":
        cost = "minutes each on a GPU, hours each on a CPU"
    elif math.isnan(each):
        cost = "its cost told once trials have trained"
    return f"final rung: {pool} trained {_rung_words(plan.final_rung)}, {cost}"


def print_verdict(v: Any) -> None:
    if v is None or v.beats is None:
        return
    fast = (v.found.final or {}).get("protocol") == "fast"
    how = "at full width with the fast protocol" if fast else f"{CONFIRM_LONGER_BY}x the search's schedule"
    out.print(f"best found (trial {v.found.number}, {v.found.params:,} params) {v.found.final_acc:.2%} "
              f"{'beats' if v.beats else 'does not beat'} the best seed design {v.seed.seed_design} "
              f"({v.seed.params:,} params) {v.seed.final_acc:.2%} at {how} "
              f"(validation, one initialisation each)")
