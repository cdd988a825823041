"""The search: an Optuna study that maximises validation accuracy under a hard parameter budget.

    config     what a search is asked to do (budget, trials, fidelity, base recipe)
    sampling   which candidates are proposed and which are stopped early (per-depth TPE, pruners)
    storage    where the study lives (SQLite, PostgreSQL), created safely by racing workers
    recovery   dead workers: their trials failed and queued again, and what a waiting worker waits for
    objective  one trial: count, reject or train, and record the outcome (nas.record)
    loop       one worker's trials until the study holds --trials trained candidates
    workers    many worker processes on one study
    rung       the final rung: the best of each depth trained longer decides the winner
    job        the whole search as `nas search` runs it: plan, start, run, final rung
"""

from nas.search.config import (
                               CONFIRM_LONGER_BY,
                               CPU_FIDELITY,
                               CUDA_FIDELITY,
                               SEARCH_RECIPE,
                               Fidelity,
                               SearchConfig,
                               default_fidelity,
)
from nas.search.job import Job, enqueue_seeds, final_rung, plan, run, start
from nas.search.loop import (
                               SearchFailed,
                               estimate_trial_seconds,
                               measured_trial_seconds,
                               over_budget_fraction,
                               run_search,
                               trained,
)
from nas.search.objective import SearchData, load_search_data, make_objective
from nas.search.rung import Verdict, confirm, confirm_pool, longer, verdict
from nas.search.sampling import CandidateSampler, SameDepthPruner
from nas.search.storage import open_study

__all__ = ["CONFIRM_LONGER_BY", "CPU_FIDELITY", "CUDA_FIDELITY", "SEARCH_RECIPE", "CandidateSampler", "Fidelity", "Job",
           "SameDepthPruner", "SearchConfig", "SearchData", "SearchFailed", "Verdict", "confirm", "confirm_pool", "default_fidelity",
           "enqueue_seeds", "estimate_trial_seconds", "measured_trial_seconds", "final_rung", "load_search_data", "longer", "make_objective",
           "open_study", "over_budget_fraction", "plan", "run", "run_search", "start", "trained", "verdict"]
