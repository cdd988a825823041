"""nas.record: reading a trial, the one order of "best", and counting outcomes, on real Optuna studies in a
SQLite file (trials built with create_trial: controlled states, values and attributes, no training)."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from nas import record
from nas.record import Record, best, count_outcomes, final_key, ranked, records, trained

BUDGET = 50_000
LAYERS = CategoricalDistribution([2, 3, 4])


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def new_study(tmp_path: Path, name: str = "r") -> optuna.Study:
    return optuna.create_study(study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")


def trial(value: float | None = None, *, outcome: str | None = "complete", params: int | None = 1000,
          state: TrialState = TrialState.COMPLETE, curve: dict[int, float] | None = None,
          **attrs) -> optuna.trial.FrozenTrial:
    """A trial as the search records it: the short score as the value, attributes, the budget constraint."""
    user_attrs = {k: v for k, v in {record.OUTCOME: outcome, record.PARAMS: params}.items() if v is not None}
    return create_trial(state=state, value=value if state == TrialState.COMPLETE else None, params={"layers": 2},
                        distributions={"layers": LAYERS}, user_attrs={**user_attrs, **attrs},
                        intermediate_values=curve,
                        constraints={record.BUDGET_CONSTRAINT: float(params - BUDGET)} if params is not None else None)


def finals(study: optuna.Study, scores: dict[int, float]) -> None:
    """The final rung's record of some trials, as study attributes."""
    for number, acc in scores.items():
        study.set_user_attr(final_key(number), {"val_acc": acc, "seconds": 3.0, "epochs": 30, "train_subset": 0})


# ------------------------------------------------------------------------------------------ Record.of


def test_record_of_reads_every_field_the_search_writes(tmp_path):
    study = new_study(tmp_path)
    arch = {"blocks": [2, 2], "channels": [16, 32]}
    recipe = {"epochs": 4, "lr": 0.1}
    study.add_trial(create_trial(
        value=0.625, params={"layers": 2}, distributions={"layers": LAYERS},
        user_attrs={record.OUTCOME: "complete", record.REASON: "fine", record.ARCH: arch, record.ARCH_ID: "abc123",
                    record.PARAMS: 41_000, record.MACS: 9_000_000, record.RECIPE: recipe,
                    record.SEED_DESIGN: "resnet10", record.CURVE: [[0.5, 0.4], [1.0, 0.625]], record.SECONDS: 12.5},
        intermediate_values={1: 0.1}, constraints={record.BUDGET_CONSTRAINT: -9000.0}))
    finals(study, {0: 0.7})
    [r] = records(study)
    assert (r.number, r.state, r.outcome, r.reason) == (0, TrialState.COMPLETE, "complete", "fine")
    assert r.short_acc == 0.625 and r.final == {"val_acc": 0.7, "seconds": 3.0, "epochs": 30, "train_subset": 0}
    assert r.final_acc == 0.7 and r.score == 0.7  # the final rung's score ranks it
    assert (r.arch, r.arch_id, r.params, r.macs, r.recipe) == (arch, "abc123", 41_000, 9_000_000, recipe)
    assert (r.seed_design, r.seconds, r.sampled, r.over_budget_by) == ("resnet10", 12.5, {"layers": 2}, -9000.0)
    assert [list(p) for p in r.curve] == [[0.5, 0.4], [1.0, 0.625]]  # the stored curve, not the intermediate values
    assert r.depth == 2 and r.finished


def test_record_of_a_bare_trial_falls_back_to_states_and_intermediate_values(tmp_path):
    study = new_study(tmp_path)
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"layers": 3}, distributions={"layers": LAYERS},
                                 user_attrs={record.REASON: ""}, intermediate_values={2: 0.3, 1: 0.2}))
    study.add_trial(create_trial(state=TrialState.WAITING))
    study.add_trial(create_trial(state=TrialState.RUNNING))
    pruned, waiting, running = records(study)
    assert pruned.outcome == "pruned" and pruned.reason is None and pruned.short_acc is None
    assert [list(p) for p in pruned.curve] == [[1, 0.2], [2, 0.3]]  # sorted by step
    assert pruned.final is None and pruned.score is None and pruned.depth == 0 and pruned.over_budget_by is None
    assert (waiting.outcome, running.outcome) == ("queued", "running")  # no outcome yet: the state's word
    assert not (pruned.finished or waiting.finished or running.finished)


# -------------------------------------------------------------------------------------------- ranking


@pytest.fixture(scope="module")
def ranked_study(tmp_path_factory) -> optuna.Study:
    """Trials 0-7 are finished; 8-18 never rank, though most carry scores that would put them first (read only)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = new_study(tmp_path_factory.mktemp("ranked"))
    study.add_trials([
        trial(0.70, params=1000),  # 0: final 0.60
        trial(0.90, params=1000),  # 1
        trial(0.50, params=1000),  # 2: final 0.80, the best though its short score is the worst
        trial(0.90, params=500),  # 3: ties 1 on the short score, smaller
        trial(0.90, params=500),  # 4: ties 3 on everything but its number
        trial(0.75, params=1000),  # 5: final 0.60 like 0, better short score
        trial(0.70, params=900),  # 6: final 0.60 and short 0.70 like 0, smaller
        trial(0.95, params=1000),  # 7: a non-finite final score counts as none
        trial(state=TrialState.RUNNING, outcome="training"),  # 8
        trial(state=TrialState.WAITING, outcome=None),  # 9: queued
        trial(0.99, outcome="over_budget", params=BUDGET + 100),  # 10
        trial(0.99, params=BUDGET + 1),  # 11: says complete but is one parameter over: final 0.99 too
        trial(state=TrialState.PRUNED, outcome="pruned", curve={1: 0.99}),  # 12
        trial(state=TrialState.PRUNED, outcome="nonfinite"),  # 13
        trial(math.inf, outcome="complete"),  # 14: a non-finite short score
        trial(state=TrialState.FAIL, outcome="error", reason="RuntimeError: boom"),  # 15
        trial(0.99, params=None),  # 16: no parameter count
        trial(0.99, outcome="duplicate"),  # 17: an earlier trial's score, reused
        trial(state=TrialState.RUNNING, outcome=None),  # 18: running, no claim written yet
    ])
    finals(study, {0: 0.60, 2: 0.80, 5: 0.60, 6: 0.60, 7: math.nan, 11: 0.99, 12: 0.99})
    return study


def test_ranked_puts_final_rung_scores_first_then_short_scores_then_size_then_number(ranked_study):
    top = ranked(records(ranked_study))
    assert [r.number for r in top] == [2, 5, 6, 0, 7, 3, 4, 1]
    assert [r.score for r in top[:4]] == [0.80, 0.60, 0.60, 0.60]
    assert best(records(ranked_study)).number == 2


def test_short_only_ignores_the_final_rung(ranked_study):
    top = ranked(records(ranked_study), short_only=True)
    assert [r.number for r in top] == [7, 3, 4, 1, 5, 6, 0, 2]


def test_unfinished_over_budget_pruned_and_nonfinite_trials_never_rank(ranked_study):
    rs = records(ranked_study)
    assert {r.number for r in rs if not r.finished} == set(range(8, 19))
    assert max(r.number for r in ranked(rs)) == 7 and max(r.number for r in ranked(rs, short_only=True)) == 7
    assert best([r for r in rs if r.number >= 8]) is None


def test_ranked_is_stable_under_any_input_order(ranked_study):
    rs = records(ranked_study)
    assert [r.number for r in ranked(list(reversed(rs)))] == [r.number for r in ranked(rs)]


def test_rank_key_treats_a_missing_or_non_finite_final_alike():
    assert record.rank_key(None, 0.5, 10, 1) == record.rank_key(math.nan, 0.5, 10, 1)
    assert record.rank_key(0.1, 0.0, 10**9, 99) < record.rank_key(None, 1.0, 1, 0)  # any final beats no final


# ------------------------------------------------------------------------------------------- counting


def test_count_outcomes_and_trained_count_by_outcome(ranked_study):
    trials = ranked_study.get_trials()
    assert count_outcomes(trials) == {"complete": 11, "training": 1, "queued": 1, "over_budget": 1, "pruned": 1,
                                      "nonfinite": 1, "error": 1, "duplicate": 1, "running": 1}
    assert trained(trials) == 13  # complete, pruned and nonfinite: what --trials counts
    assert count_outcomes([]) == {} and trained([]) == 0


def test_best_is_none_without_a_finished_trial(tmp_path):
    study = new_study(tmp_path)
    assert best(records(study)) is None and ranked(records(study)) == []
    study.add_trials([trial(0.9, outcome="over_budget", params=BUDGET * 2), trial(state=TrialState.PRUNED,
                                                                                    outcome="pruned")])
    finals(study, {0: 0.99})
    assert best(records(study)) is None
    study.add_trial(trial(0.1, params=BUDGET))  # exactly on budget is within it
    assert best(records(study)).number == 2


def test_record_is_frozen():
    r = Record.of(trial(0.5), {})
    with pytest.raises(AttributeError):
        r.short_acc = 1.0  # type: ignore[misc]


def test_front_keeps_what_no_trial_beats_on_accuracy_and_every_cost(tmp_path):
    study = new_study(tmp_path)
    for value, params, macs in ((0.5, 1000, 90), (0.6, 2000, 10), (0.55, 3000, 5), (0.6, 2500, 50), (0.4, 500, 100)):
        study.add_trial(trial(value, params=params, **{record.MACS: macs}))
    rs = records(study)
    assert [r.params for r in record.front(rs)] == [500, 1000, 2000]  # 2,500 and 3,000 params buy nothing
    assert [r.params for r in record.front(rs, ("params", "macs"))] == [500, 1000, 2000, 3000]  # 3,000 has fewest MACs
    finals(study, {0: 0.7})  # one score type: the final rung's never mixes into the front (issue 28 item 8)
    assert [r.params for r in record.front(records(study))] == [500, 1000, 2000]


def test_hypervolume_is_the_dominated_share_of_the_box():
    assert record.hypervolume([]) == 0.0
    assert record.hypervolume([(0.0, 1.0)]) == 1.0
    assert record.hypervolume([(0.5, 0.5)]) == pytest.approx(0.25)
    assert record.hypervolume([(0.5, 0.5), (0.25, 0.25)]) == pytest.approx(0.25 * 0.75 + 0.25 * 0.5)
    assert record.hypervolume([(0.5, 0.5), (0.6, 0.4), (1.0, 0.9)]) == pytest.approx(0.25)  # dominated, at the bound
    assert record.hypervolume([(0.5, 0.55)], floor=0.1) == pytest.approx(0.5 * 0.45 / 0.9)
