"""The trial record: what a search stores on each Optuna trial, and the one rule for "best".

The search is the only writer; results, the live view, retrain and the CLI read trials through
`Record`, so attribute names live here and nowhere else.

How Optuna's own tools see a `nas` study: a trial's value is its short-schedule validation accuracy
(the objective is named `val_acc_short`), which only filters candidates. The final rung trains the
best of each depth longer and stores that score as the study attribute `confirm.<trial>`; `nas`
ranks by it. So `optuna best-trial` and optuna-dashboard's "best" show the best short score, which
may not be `nas show best`; the study attribute `best_trial` names the trial `nas` ranks first.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


class Outcome(str, enum.Enum):
    """What became of a trial. While it runs it says TRAINING (or WAITING for a training slot)."""

    COMPLETE = "complete"  # trained to the end of the short schedule
    PRUNED = "pruned"  # stopped early by the pruner
    NONFINITE = "nonfinite"  # loss became NaN/inf: never a candidate for best
    OVER_BUDGET = "over_budget"  # counted, never built
    INVALID = "invalid"  # a combination the space allows but no network has
    DUPLICATE = "duplicate"  # same network and recipe as an earlier trial: its score is reused
    OOM = "oom"
    ERROR = "error"  # any other fault: recorded, the search goes on
    INTERRUPTED = "interrupted"  # Ctrl+C/SIGTERM: candidate queued again
    LOST = "lost"  # its worker died while it ran (kill -9, lost node): failed, candidate queued again
    SURPLUS = "surplus"  # not trained: --trials were trained or claimed (by queued trials) already
    TRAINING = "training"
    WAITING = "waiting"


TRAINED = frozenset({Outcome.COMPLETE.value, Outcome.PRUNED.value, Outcome.NONFINITE.value})  # count toward --trials
REJECTED = frozenset({Outcome.OVER_BUDGET.value, Outcome.INVALID.value, Outcome.DUPLICATE.value})  # no compute spent
FAILED = frozenset({Outcome.ERROR.value, Outcome.OOM.value})  # the trial's own fault: --max-failures in a row stop
_COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # a FAIL trial never counts, whatever its label says

# trial user attributes
OUTCOME, REASON = "outcome", "reason"
ARCH, ARCH_ID, PARAMS, MACS, RECIPE = "arch", "arch_id", "params", "macs", "recipe"
CANDIDATE_KEY = "candidate_key"  # proxy network + recipe: equal keys train the same thing
CURVE, SECONDS, IMAGES_PER_S, TRAIN_LOSS_SUM = "val_curve", "seconds", "images_per_s", "train_loss_sum"
PRECISION = "precision"  # what the recipe's precision resolved to on the trial's device (fp32, bf16, fp16)
SEED_DESIGN, REQUEUED_FROM = "seed_design", "requeued_from"
WORKER = "worker"  # {"host", "pid", "started", "machine"}: the process training it (nas.search.recovery)
BUDGET_CONSTRAINT = "params_over_budget"  # params - budget; feasible when <= 0
MACS_CONSTRAINT = "macs_over_bound"  # macs - --max-macs, where a search sets that bound
OBJECTIVE = "val_acc_short"
COST_NAMES = {"params": PARAMS, "macs": MACS}  # a multi-objective search's costs, as Optuna names its values

# study user attributes
STUDY_BUDGET, STUDY_SPACE, STUDY_DATA, STUDY_BEST = "budget", "space", "data", "best_trial"
STUDY_MAX_MACS, STUDY_OBJECTIVES, STUDY_GRID = "max_macs", "objectives", "grid_points"
STUDY_SETTINGS = "settings"  # {name: value}: what decides a score's meaning, fixed when the study is created
GRID_POINT = "grid_point"  # trial attribute: its index in the grid a `--sampler grid` study queued
FINAL_PREFIX = "confirm."  # "confirm.12" -> {"val_acc", "seconds", "epochs", "train_subset"}

_STATE_WORDS = {TrialState.RUNNING: "running", TrialState.WAITING: "queued"}
_LIVE = frozenset({Outcome.TRAINING.value, Outcome.WAITING.value})  # labels of a trial still running


def set_outcome(trial: optuna.Trial, outcome: Outcome, reason: str | None = None) -> None:
    trial.set_user_attr(OUTCOME, outcome.value)
    if reason is not None:
        trial.set_user_attr(REASON, reason)


def outcome_of(trial: FrozenTrial) -> str:
    """The recorded outcome, or the trial's state for one that recorded none (queued, running).

    A label is written before Optuna records the state, so a worker killed in between leaves a FAIL
    trial labelled "training" or even "complete": that trial was lost. And a queued trial is queued,
    whatever label it inherited from the trial it retries."""
    label = trial.user_attrs.get(OUTCOME)
    if trial.state == TrialState.WAITING:
        return _STATE_WORDS[TrialState.WAITING]
    if trial.state == TrialState.FAIL and (label in TRAINED or label in _LIVE):
        return Outcome.LOST.value
    return label or _STATE_WORDS.get(trial.state, trial.state.name.lower())


def count_outcomes(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials:
        counts[outcome_of(t)] = counts.get(outcome_of(t), 0) + 1
    return counts


def counts_as_trained(trial: FrozenTrial) -> bool:
    """Whether a trial counts toward `--trials`: trained, and recorded so by Optuna's state. The label alone
    is not enough: a worker killed after labelling its trial "pruned" leaves it FAIL, and its retry runs."""
    return trial.state in _COUNTED_STATES and trial.user_attrs.get(OUTCOME) in TRAINED


def trained(trials: Iterable[FrozenTrial]) -> int:
    """Trials that spent training compute: what `--trials` counts."""
    return sum(counts_as_trained(t) for t in trials)


def carried_attrs(trial: FrozenTrial) -> dict[str, Any]:
    """What a queued re-run of `trial` inherits: which trial it re-runs, and its seed design's name (a seed
    design stays one). Nothing else: its outcome, curve and worker belong to the run that stopped."""
    seed = trial.user_attrs.get(SEED_DESIGN)
    return {REQUEUED_FROM: trial.number, **({SEED_DESIGN: seed} if seed else {})}


def objectives_of(study: optuna.Study) -> tuple[str, ...]:
    """What the study searched for: ("accuracy",), or accuracy and the costs of a multi-objective search."""
    return tuple(study.user_attrs.get(STUDY_OBJECTIVES) or ("accuracy",))


def final_key(number: int) -> str:
    return f"{FINAL_PREFIX}{number}"


def rank_key(final_acc: float | None, short_acc: float, params: int, number: int) -> tuple[float, float, int, int]:
    """The one order of finished trials: the final rung's score first (trials it trained come first), then
    the short score; ties go to the smaller model, then the earlier trial."""
    final = -final_acc if final_acc is not None and math.isfinite(final_acc) else math.inf
    return final, -short_acc, params, number


@dataclass(frozen=True)
class Record:
    """One trial as the search recorded it."""

    number: int
    state: TrialState
    outcome: str
    reason: str | None
    short_acc: float | None  # the trial's value: short-schedule validation accuracy
    final: Mapping[str, Any] | None  # the final rung's record, where it trained this trial
    arch: Mapping[str, Any] | None
    arch_id: str | None
    params: int | None
    macs: int | None
    recipe: Mapping[str, Any] | None
    seed_design: str | None
    curve: Sequence[Sequence[float]]
    seconds: float | None
    sampled: Mapping[str, Any]  # trial.params as the sampler drew them
    over_budget_by: float | None  # > 0 when over the budget or the MACs bound (the larger overshoot)

    @classmethod
    def of(cls, t: FrozenTrial, study_attrs: Mapping[str, Any]) -> Record:
        a = t.user_attrs
        return cls(number=t.number, state=t.state, outcome=outcome_of(t), reason=a.get(REASON) or None,
                   short_acc=t.values[0] if t.state == TrialState.COMPLETE and t.values else None,
                   final=study_attrs.get(final_key(t.number)), arch=a.get(ARCH), arch_id=a.get(ARCH_ID),
                   params=a.get(PARAMS), macs=a.get(MACS), recipe=a.get(RECIPE), seed_design=a.get(SEED_DESIGN),
                   curve=a.get(CURVE) or [list(kv) for kv in sorted(t.intermediate_values.items())], seconds=a.get(SECONDS), sampled=dict(t.params),
                   over_budget_by=max((t.constraints[k] for k in (BUDGET_CONSTRAINT, MACS_CONSTRAINT)
                                       if k in t.constraints), default=None))

    @property
    def final_acc(self) -> float | None:
        return self.final.get("val_acc") if self.final else None

    @property
    def score(self) -> float | None:
        """The score that ranks this trial: the final rung's where it ran, else the short one."""
        return self.final_acc if self.final_acc is not None else self.short_acc

    @property
    def finished(self) -> bool:
        """Trained to the end within the budget with a finite score: the only fair comparison."""
        return (self.state == TrialState.COMPLETE and self.outcome == Outcome.COMPLETE.value
                and self.short_acc is not None and math.isfinite(self.short_acc) and self.params is not None
                and not (self.over_budget_by or 0) > 0)

    @property
    def depth(self) -> int:
        return len(self.arch["blocks"]) if self.arch else 0


def records(study: optuna.Study) -> list[Record]:
    """Every trial of the study as a Record (one read of the study's attributes)."""
    attrs = study.user_attrs
    return [Record.of(t, attrs) for t in study.get_trials(deepcopy=False)]


def ranked(rs: Iterable[Record], *, short_only: bool = False) -> list[Record]:
    """Finished trials, best first; `short_only` ranks by the short score alone (what chose the final rung)."""
    done = [r for r in rs if r.finished]
    return sorted(done, key=lambda r: rank_key(None if short_only else r.final_acc, r.short_acc or 0.0,
                                               r.params or 0, r.number))


def best(rs: Iterable[Record]) -> Record | None:
    top = ranked(rs)
    return top[0] if top else None


def nondominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point beats on every coordinate at once (smaller is better; equal points
    are all kept): the one Pareto rule, for records (front) and for tables (nas.report.tables.pareto_front)."""
    def beaten(p: Sequence[float]) -> bool:
        return any(all(a <= b for a, b in zip(q, p)) and tuple(q) != tuple(p) for q in points)
    return [i for i, p in enumerate(points) if not beaten(p)]


def front(rs: Iterable[Record], costs: Sequence[str] = ("params",)) -> list[Record]:
    """The finished trials no other beats on accuracy and every cost at once (ties kept), by `costs` ("params",
    "macs"): what a multi-objective search searches for, what `nas leaderboard --front` lists and what the report
    draws (nas.report.tables.pareto_front, the same rule on the trials table). Accuracy is the short score, the
    one every finished trial has: the final rung's, where it ran, would compare trials trained for different
    lengths. The front is always on the short score."""
    done = [r for r in rs if r.finished]
    points = [(-(r.short_acc or 0.0), *(getattr(r, COST_NAMES[c]) or 0 for c in costs)) for r in done]
    return sorted((done[i] for i in nondominated(points)), key=lambda r: (r.params or 0, r.number))


def hypervolume(points: Iterable[tuple[float, float]], floor: float = 0.0) -> float:
    """Share of the box [floor, 1] accuracy x [0, 1] cost that `points` (cost as a fraction of its bound,
    accuracy) dominate; 1 = a network of no cost at 100%. One number for how good a front is, comparable
    between searches with the same bound and floor."""
    area, best = 0.0, floor
    for x, acc in sorted(points):  # cheapest first: each point adds the strip above the best of the cheaper ones
        if x < 1 and acc > best:
            area += (1 - x) * (acc - best)
            best = acc
    return area / (1 - floor)
