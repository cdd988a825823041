"""Result tables from a real Optuna study in a real SQLite file, no plotting involved."""

from __future__ import annotations

import math
import random
from pathlib import Path

import optuna
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

from nas.errors import NasError
from nas.report.tables import (
    best_so_far,
    depth_history,
    final_rung_ranks,
    finished_in_budget,
    leaderboard,
    pareto_front,
    pivot,
    rank_correlation,
    read_trials_csv,
    trials_frame,
    write_trials_csv,
)

BUDGET = 5_000_000
DISTRIBUTIONS = {
    "layers": IntDistribution(1, 4),
    "width": CategoricalDistribution([16, 32, 64]),
    "lr": FloatDistribution(1e-3, 1.0, log=True),
}
RECIPE = {"epochs": 3, "batch_size": 128, "optimizer": {"name": "sgd", "lr": 0.1, "nesterov": True}}


def _arch(blocks: list[int], width: int, pool: int | None = None) -> dict:
    return {
        "blocks": blocks,
        "channels": [width * 2**i for i in range(len(blocks))],
        "kernels": [3] * len(blocks),
        "skip_kernels": [1] * len(blocks),
        "pool": pool,
        "block": "basic",
        "se_ratio": 0,
        "groups": 1,
        "dropout": 0.0,
        "num_classes": 10,
        "input_size": 32,
        "in_channels": 3,
    }


def _add(
    study: optuna.Study,
    *,
    params: int,
    acc: float | None,
    outcome: str = "complete",
    state: TrialState = TrialState.COMPLETE,
    blocks: tuple[int, ...] = (2, 2),
    width: int = 16,
    pool: int | None = None,
    reason: str = "",
    curve: list[list[float]] | None = None,
    intermediate: dict[int, float] | None = None,
) -> None:
    arch = _arch(list(blocks), width, pool)
    if curve is None and acc is not None and state == TrialState.COMPLETE:
        curve = [[1, acc / 2], [2, acc * 0.9], [3, acc]]
    study.add_trial(
        create_trial(
            state=state,
            value=acc if state == TrialState.COMPLETE else None,
            params={"layers": len(blocks), "width": width, "lr": 0.05},
            distributions=DISTRIBUTIONS,
            user_attrs={
                "arch": arch,
                "arch_id": f"a{params:x}",
                "params": params,
                "macs": params * 40,
                "recipe": RECIPE,
                "val_curve": curve or [],
                "outcome": outcome,
                "reason": reason,
            },
            intermediate_values=intermediate,
            constraints={"params_over_budget": float(params - BUDGET)},
        )
    )


@pytest.fixture()
def study(tmp_path: Path) -> optuna.Study:
    """A study in a SQLite file, as `nas search` leaves it, with every outcome present."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize"
    )
    _add(study, params=1_000_000, acc=0.80, blocks=(2, 2, 2, 2), width=64, pool=4)
    _add(study, params=2_000_000, acc=0.85, blocks=(1, 1, 1))
    _add(study, params=3_000_000, acc=0.84)  # dominated by trial 1
    _add(study, params=6_000_000, acc=0.0, outcome="over_budget", reason="6.0M params > 5.0M budget")
    _add(
        study, params=1_500_000, acc=None, outcome="pruned", state=TrialState.PRUNED,
        reason="below median at epoch 2", intermediate={1: 0.3, 2: 0.4},
    )  # fmt: skip
    _add(study, params=2_000_000, acc=0.85, outcome="duplicate", reason="same arch as trial 1")
    _add(study, params=2_500_000, acc=None, outcome="nonfinite", state=TrialState.PRUNED, reason="loss became nan")  # as the search records it
    _add(study, params=4_000_000, acc=0.90)
    return optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}")


def test_every_trial_is_one_readable_row(study: optuna.Study) -> None:
    frame = trials_frame(study)

    assert list(frame["number"]) == list(range(8))
    assert list(frame["state"]) == ["COMPLETE"] * 4 + ["PRUNED", "COMPLETE", "PRUNED", "COMPLETE"]
    assert list(frame["outcome"]) == [
        "complete", "complete", "complete", "over_budget", "pruned", "duplicate", "nonfinite", "complete"
    ]  # fmt: skip
    first = frame.iloc[0]
    assert (first["blocks"], first["channels"], first["kernels"], first["pool"]) == (
        "2-2-2-2", "64-128-256-512", "3-3-3-3", "4"
    )  # fmt: skip
    assert frame.loc[1, "pool"] == "global"
    assert (first["params"], first["macs"], first["val_acc"]) == (1_000_000, 40_000_000, 0.80)
    assert first["recipe.optimizer.lr"] == 0.1 and first["sampled.width"] == 64
    assert frame.loc[3, "over_budget_by"] == 1_000_000 and frame.loc[3, "reason"] == "6.0M params > 5.0M budget"
    assert math.isnan(frame.loc[4, "val_acc"]) and math.isnan(frame.loc[6, "val_acc"])
    assert [c for c in frame.columns if c.startswith("val_acc_ep")] == ["val_acc_ep1", "val_acc_ep2", "val_acc_ep3"]
    assert (frame.loc[4, "val_acc_ep1"], frame.loc[4, "val_acc_ep2"]) == (0.3, 0.4)  # from trial.report
    assert math.isnan(frame.loc[4, "val_acc_ep3"])
    assert frame["duration_s"].notna().all() and frame["datetime_start"].notna().all()
    assert frame.loc[0, "arch_json"].startswith('{"block": "basic", "blocks": [2, 2, 2, 2]')


def test_only_complete_in_budget_unique_trials_count_as_finished(study: optuna.Study) -> None:
    frame = trials_frame(study)
    assert list(frame.loc[finished_in_budget(frame), "number"]) == [0, 1, 2, 7]


def test_pareto_front_of_the_study(study: optuna.Study) -> None:
    front = pareto_front(trials_frame(study))
    assert list(front["number"]) == [0, 1, 7]


def test_an_empty_study_gives_empty_tables(tmp_path: Path) -> None:
    frame = trials_frame(optuna.create_study(storage=f"sqlite:///{tmp_path / 'e.db'}", direction="maximize"))
    assert frame.empty and "val_acc" in frame.columns
    assert pareto_front(frame).empty and leaderboard(frame).empty and best_so_far(frame).empty


def test_multi_objective_studies_are_refused() -> None:
    with pytest.raises(NasError, match="2 objectives"):
        trials_frame(optuna.create_study(directions=["maximize", "minimize"]))


def _brute_force_front(points: list[tuple[int, int, float]]) -> set[int]:
    """Numbers of points no other point dominates, by the definition."""
    return {
        n
        for n, p, a in points
        if not any(p2 <= p and a2 >= a and (p2 < p or a2 > a) for _, p2, a2 in points)
    }


def test_pareto_front_matches_brute_force_on_a_random_sqlite_study(tmp_path: Path) -> None:
    rng = random.Random(7)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}", direction="maximize")
    finished = []
    for number in range(60):
        params = rng.choice(range(500_000, 7_000_000, 250_000))  # coarse grid: many ties
        acc = rng.choice([0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9])
        outcome = rng.choice(["complete"] * 4 + ["pruned", "duplicate"])
        if outcome == "pruned":
            _add(study, params=params, acc=None, outcome=outcome, state=TrialState.PRUNED)
            continue
        if params > BUDGET:
            outcome = "over_budget"
        _add(study, params=params, acc=acc, outcome=outcome)
        if outcome == "complete":
            finished.append((number, params, acc))

    front = pareto_front(trials_frame(study))

    assert set(front["number"]) == _brute_force_front(finished)
    assert list(front["params"]) == sorted(front["params"])


points_strategy = st.lists(
    st.tuples(st.integers(1, 8), st.sampled_from([0.1, 0.2, 0.3, 0.4, float("nan")])), max_size=25
)


@given(points_strategy)
def test_pareto_front_matches_brute_force_on_any_points(points: list[tuple[int, float]]) -> None:
    frame = pd.DataFrame(
        {
            "number": range(len(points)),
            "state": "COMPLETE",
            "outcome": "complete",
            "params": [p for p, _ in points],
            "val_acc": [a for _, a in points],
            "over_budget_by": [p - 6 for p, _ in points],  # params > 6 are over budget
        }
    )
    feasible = [(n, p, a) for n, (p, a) in enumerate(points) if p <= 6 and not math.isnan(a)]
    assert set(pareto_front(frame)["number"]) == _brute_force_front(feasible)


def test_leaderboard_ranks_finished_trials_best_first(study: optuna.Study) -> None:
    board = leaderboard(trials_frame(study), top=3)
    assert list(board["rank"]) == [1, 2, 3]
    assert list(board["number"]) == [7, 1, 2]
    with pytest.raises(NasError, match="top=0"):
        leaderboard(trials_frame(study), top=0)


def test_best_so_far_is_the_running_maximum(study: optuna.Study) -> None:
    history = best_so_far(trials_frame(study))
    assert list(history["number"]) == [0, 1, 2, 7]
    assert list(history["best"]) == [0.80, 0.85, 0.85, 0.90]


def test_csv_round_trip_keeps_every_value(study: optuna.Study, tmp_path: Path) -> None:
    frame = trials_frame(study)
    path = write_trials_csv(frame, tmp_path / "out" / "trials.csv")

    back = read_trials_csv(path)

    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert back.loc[0, "blocks"] == "2-2-2-2"


def test_single_layer_knobs_stay_text_through_csv(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    _add(study, params=100, acc=0.5, blocks=(3,))
    path = write_trials_csv(trials_frame(study), tmp_path / "trials.csv")
    assert read_trials_csv(path).loc[0, "blocks"] == "3"


def test_missing_csv_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="absent.csv does not exist"):
        read_trials_csv(tmp_path / "absent.csv")


def test_rank_correlation_matches_published_values() -> None:
    tau, _ = rank_correlation([12, 2, 1, 12, 2], [1, 4, 7, 1, 0])  # SciPy's kendalltau example
    _, rho = rank_correlation([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])  # SciPy's spearmanr example
    assert tau == pytest.approx(-0.47140452079103173)
    assert rho == pytest.approx(0.8207826816681233)


def test_rank_correlation_extremes_and_degenerate_input() -> None:
    assert rank_correlation([1, 2, 3], [10, 20, 30]) == pytest.approx((1.0, 1.0))
    assert rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx((-1.0, -1.0))
    assert all(math.isnan(v) for v in rank_correlation([1, 1, 1], [1, 2, 3]))
    with pytest.raises(NasError, match="at least 2 pairs"):
        rank_correlation([1], [1])
    with pytest.raises(NasError, match="equally long"):
        rank_correlation([1, 2], [1, 2, 3])
    with pytest.raises(NasError, match="finite"):
        rank_correlation([1, float("nan")], [1, 2])


scores = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=30)


@given(scores)
def test_rank_correlation_is_bounded_symmetric_and_rank_invariant(pairs: list[tuple[int, int]]) -> None:
    x, y = [a for a, _ in pairs], [b for _, b in pairs]
    tau, rho = rank_correlation(x, y)
    assert rank_correlation(y, x) == pytest.approx((tau, rho), nan_ok=True)
    assert rank_correlation([v**3 + 7 for v in x], y) == pytest.approx((tau, rho), nan_ok=True)
    for v in (tau, rho):
        assert math.isnan(v) or -1 - 1e-12 <= v <= 1 + 1e-12


def test_pivot_equals_the_hand_computed_table(tmp_path: Path) -> None:
    """A 2 x 2 grid (optimizer x lr) with a repeated cell and trials that must not count."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="p", storage=f"sqlite:///{tmp_path / 'p.db'}", direction="maximize")
    grid = {"optimizer": CategoricalDistribution(["sgd", "adam"]), "lr": CategoricalDistribution([0.1, 0.01])}
    rows = [("sgd", 0.1, 0.80, "complete"), ("sgd", 0.1, 0.82, "complete"), ("sgd", 0.01, 0.70, "complete"),
            ("adam", 0.1, 0.60, "complete"), ("adam", 0.01, 0.95, "pruned"), ("adam", 0.01, 0.75, "complete")]
    for optimizer, lr, acc, outcome in rows:
        study.add_trial(create_trial(
            state=TrialState.COMPLETE if outcome == "complete" else TrialState.PRUNED,
            value=acc if outcome == "complete" else None, params={"optimizer": optimizer, "lr": lr},
            distributions=grid, constraints={"params_over_budget": -1.0},
            user_attrs={"arch": _arch([1, 1], 16), "params": 1000, "outcome": outcome,
                        "recipe": {"optimizer": optimizer, "lr": lr}}))
    table = pivot(trials_frame(study), "optimizer", "lr")
    assert table.loc["sgd", 0.1] == 0.82 and table.loc["sgd", 0.01] == 0.70  # the best of a cell's trials
    assert table.loc["adam", 0.1] == 0.60 and table.loc["adam", 0.01] == 0.75  # the pruned 0.95 never counts
    with pytest.raises(NasError, match="--pivot setting 'momentum' is not in this study: choose from .*optimizer"):
        pivot(trials_frame(study), "optimizer", "momentum")


def test_depth_history_keeps_each_depths_running_best_and_its_pruned_trials(study: optuna.Study) -> None:
    history = depth_history(trials_frame(study))
    # finished in budget: 0 (4 layers), 1 (3), 2 and 7 (2); pruned: 4 (2 layers, last score 0.4)
    assert history[["number", "depth", "outcome"]].values.tolist() == [
        [2, 2, "complete"], [4, 2, "pruned"], [7, 2, "complete"], [1, 3, "complete"], [0, 4, "complete"]]
    assert history["score"].tolist() == [0.84, 0.4, 0.90, 0.85, 0.80]
    assert history["best"].tolist() == [0.84, 0.84, 0.90, 0.85, 0.80]  # a pruned trial never sets the best


def test_final_rung_ranks_rank_the_trials_it_trained_at_both_schedules(study: optuna.Study) -> None:
    for number, final in ((0, 0.95), (1, 0.91), (7, 0.93)):  # short scores 0.80, 0.85, 0.90
        study.set_user_attr(f"confirm.{number}", {"val_acc": final, "epochs": 15, "train_subset": 9000})
    ranks = final_rung_ranks(trials_frame(study))
    assert ranks[["number", "short_rank", "final_rank", "depth"]].values.tolist() == [
        [0, 3, 1, 4], [1, 2, 3, 3], [7, 1, 2, 2]]
    assert ranks[["confirm_epochs", "confirm_images"]].values.tolist() == [[15, 9000]] * 3
