"""The report's search figures as data (no browser): label placement, family colours, the protocol texts,
and the ranks chart's Kendall tau. tests/test_report.py draws them in a real browser."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from nas.arch.families import FAMILIES
from nas.report.figures import (
    _box,
    family_color,
    format_tau,
    latency_figure,
    place_labels,
    ranks_figure,
)
from nas.report.text import run_schedule, schedule
from nas.report.writeup import parallel_figure


def _boxes(points: list, positions: list[str]) -> list[tuple[float, float, float, float]]:
    return [_box(x, y, text, p, r) for (x, y, text, r), p in zip(points, positions)]


def test_labels_of_a_crowded_cluster_do_not_overlap() -> None:
    points = [(100 + 24 * i, 200 - 18 * i, f"candidate-{i}", 7.0) for i in range(5)]  # five points 30 px apart
    boxes = _boxes(points, place_labels(points))
    assert all(min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])
               for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_a_label_avoids_markers_and_the_plot_edge() -> None:
    # a point on the top edge with a marker just below it: not above (outside), not below (on the marker)
    position = place_labels([(300, 5, "best", 7.0)], obstacles=[(300, 25)], size=(600, 400))[0]
    x0, y0, x1, y1 = _box(300, 5, "best", position, 7.0)
    assert y0 >= 0 and not (x0 < 305 and x1 > 295 and y1 > 20)
    assert position not in ("top center", "bottom center")


def test_known_block_families_keep_their_colour_and_new_ones_get_a_spare() -> None:
    known = [family_color(f, ["basic"]) for f in FAMILIES]
    assert family_color("bottleneck", ["basic", "bottleneck"]) == family_color("bottleneck") == known[1]
    spares = {family_color(f, ["mobile", "wide"]) for f in ("mobile", "wide")}
    assert len(spares) == 2 and not spares & set(known)
    assert len(set(known)) == len(FAMILIES) >= 7  # basic ... convgroup, all distinct


@pytest.mark.parametrize(("args", "text"), [
    ((4, 5000, 0.25, "val"), "4 ep x 5,000 img, width x0.25, val"),
    ((200, 0, 1.0, "test", "retrain "), "retrain 200 ep x full split, full width, test"),
    ((None, None, None, "val"), "val"),
])
def test_every_score_names_its_protocol(args: tuple, text: str) -> None:
    assert schedule(*args) == text


def test_a_run_without_a_recipe_takes_its_epochs_from_its_curves() -> None:
    run = {"train_images": 45_000, "curves": [{"epoch": 1}, {"epoch": 30}]}
    assert run_schedule(run) == "retrain 30 ep x 45,000 img, full width, test"


def test_ranks_chart_titles_kendall_tau_of_the_two_scores() -> None:
    ranks = pd.DataFrame({"number": [1, 2, 3], "val_acc": [0.5, 0.6, 0.7], "confirm_acc": [0.8, 0.7, 0.6],
                          "short_rank": [3, 2, 1], "final_rank": [1, 2, 3], "depth": [2, 3, 4],
                          "seed_design": [None, "s", None]})
    fig = ranks_figure(ranks)
    assert "Kendall τ = -1.00" in fig.layout.title.text  # every pair swaps
    assert [t.text[0].split(" ·")[0] for t in fig.data] == ["trial 1 (N=2)", "s (N=3)", "trial 3 (N=4)"]
    assert format_tau(math.nan).startswith("undefined")


def test_latency_is_drawn_per_device_with_its_spread() -> None:
    runs = [{"name": n, "seed": 0, "test_acc": a, "device_name": d,
             "latency": [{"batch": 1, "median_ms": m, "p10_ms": m - 0.1, "p90_ms": m + 0.3}]}
            for n, a, d, m in (("a", 0.9, "gpu", 1.0), ("b", 0.8, "gpu", 2.0), ("c", 0.7, "cpu", 9.0))]
    fig = latency_figure(runs + [{"name": "old", "seed": 0, "test_acc": 0.5}])  # a run without latency: left out
    assert {t.name: len(t.x) for t in fig.data} == {"on cpu": 1, "on gpu": 2}
    assert list(fig.data[1].error_x.array) == pytest.approx([0.3, 0.3])


def test_the_compute_figure_draws_the_front_against_macs_and_names_the_seed_designs() -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from nas.arch import Arch
    from nas.report.figures import macs_figure
    from nas.report.tables import trials_frame

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    arch = Arch(blocks=(1, 1), channels=(8, 16)).to_dict()
    for acc, params, macs, seed in ((0.5, 1000, 90, None), (0.6, 2000, 10, "seed-a"), (0.55, 3000, 5, None),
                                    (0.4, 500, 100, None), (0.3, 400, 200, None)):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=acc, params={"layers": 2},
                                     distributions={"layers": CategoricalDistribution([2])},
                                     user_attrs={"outcome": "complete", "params": params, "macs": macs, "arch": arch,
                                                 **({"seed_design": seed} if seed else {})}))
    fig = macs_figure(trials_frame(study))
    front = next(t for t in fig.data if t.name.startswith("front"))
    assert list(front.x) == [5, 10] and list(front.y) == [0.55, 0.6]  # cheapest first; 90, 100, 200 MACs buy nothing
    seeds = next(t for t in fig.data if t.name == "seed designs")
    assert list(seeds.text) == ["seed-a"] and list(seeds.x) == [10]
    assert sum(len(t.x) for t in fig.data if t.legendgroup == "trials") == 4  # every trial but the seed design


def test_parallel_coordinates_label_a_missing_setting_as_none() -> None:
    """Global pooling (pool None) beside a number, and a knob only some trials use, broke the whole report under
    pandas 3, whose astype(str) keeps NaN: sorting 'nan' (a float) among strings raised TypeError."""
    frame = pd.DataFrame({"state": "COMPLETE", "outcome": "complete", "val_acc": [0.5, 0.6, 0.7],
                          "params": [1e5, 2e5, 3e5], "over_budget_by": -1.0, "sampled.pool": [None, 16, 4],
                          "sampled.se_placement": ["stem", None, "blocks"]})
    axes = {d["label"]: d for d in parallel_figure(frame).data[0].dimensions}
    assert list(axes["pool"]["ticktext"]) == ["(none)", "4", "16"]  # global pooling first, then by size
    assert list(axes["pool"]["values"]) == [0, 2, 1]
    assert list(axes["se_placement"]["ticktext"]) == ["(none)", "blocks", "stem"]
    assert list(axes["se_placement"]["values"]) == [2, 0, 1]


# ------------------------------------------------------------------ issue 28 item 8: figures a user can trust


def _study(rows: list[tuple], objectives: tuple[str, ...] = ("accuracy",), finals: dict | None = None):
    """An Optuna study as `nas search` leaves it: rows of (short acc, params, macs, seed design, outcome)."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from nas.arch import Arch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize"] + ["minimize"] * (len(objectives) - 1))
    study.set_user_attr("objectives", list(objectives))
    arch = Arch(blocks=(1, 1), channels=(8, 16)).to_dict()
    for acc, params, macs, seed, outcome in rows:
        pruned = outcome == "pruned"
        values = [acc, *(params if c == "params" else macs for c in objectives[1:])]
        study.add_trial(create_trial(
            state=TrialState.PRUNED if pruned else TrialState.COMPLETE, values=None if pruned else values,
            params={"layers": 2}, distributions={"layers": CategoricalDistribution([2])},
            intermediate_values={1: acc},
            user_attrs={"outcome": outcome, "params": params, "macs": macs, "arch": arch, "val_curve": [[1, acc]],
                        **({"seed_design": seed} if seed else {})},
            constraints={"params_over_budget": float(params - 5_000_000)}))
    for number, acc in (finals or {}).items():
        study.set_user_attr(f"confirm.{number}", {"val_acc": acc, "epochs": 20, "train_subset": 25000})
    return study


def _frame_of(study) -> pd.DataFrame:
    from nas.report.tables import trials_frame

    return trials_frame(study)


LOW = [(0.016, 1_000_000, 10**8, None, "complete"), (0.016, 2_000_000, 2 * 10**8, None, "complete")]


def test_accuracy_axes_fit_the_data_within_0_and_100_percent() -> None:
    """CIFAR-100's report drew two points at 1.6% on an axis from -50% to 100%."""
    from nas.report.figures import (
        history_figure,
        macs_figure,
        pareto_figure,
        rank_figure,
    )

    frame = _frame_of(_study(LOW))
    candidates = [{"name": n, "params": 10**6, "test_acc": 0.016, "val_acc": 0.016} for n in ("a", "b")]
    axes = [pareto_figure(frame, 5_000_000, [], []).layout.yaxis, macs_figure(frame).layout.yaxis,
            history_figure(frame).layout.yaxis, rank_figure(candidates).layout.xaxis, rank_figure(candidates).layout.yaxis]
    for axis in axes:
        lo, hi = axis.range
        assert 0.0 <= lo < 0.016 < hi <= 0.05, axis.title.text
    top = pareto_figure(_frame_of(_study([(0.999, 10**6, 10**8, None, "complete")])), 5_000_000, [], []).layout.yaxis
    assert top.range[1] <= 1.0


def test_labels_that_cannot_be_placed_cleanly_are_left_to_the_hover() -> None:
    """Seed labels sat on top of each other and were cut at the plot's edge: every label drawn is inside the plot
    and meets no other; one that has no free place is not drawn (its point's hover names it)."""
    size = (400.0, 300.0)
    points = [(395.0, 150.0 + i, f"seed-design-{i}", 7.0) for i in range(6)]  # a stack at the right edge
    positions = place_labels(points, size=size)
    drawn = [_box(x, y, t, p, r) for (x, y, t, r), p in zip(points, positions) if p is not None]
    assert drawn and None in positions
    assert all(b[0] >= 0 and b[1] >= 0 and b[2] <= size[0] and b[3] <= size[1] for b in drawn)
    assert all(min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])
               for i, a in enumerate(drawn) for b in drawn[i + 1:])


def test_size_only_baselines_share_one_labelled_row_and_a_trained_seed_keeps_its_score() -> None:
    """Baselines without an accuracy were drawn at arbitrary heights; a seed design the study trained (pruned)
    was drawn as "not trained"."""
    from nas.report.figures import pareto_figure

    frame = _frame_of(_study([(0.5, 10**6, 10**8, None, "complete"), (0.3, 2 * 10**6, 10**8, "wrn-16-4", "pruned")]))
    baselines = [{"name": n, "params": p, "test_acc": None}
                 for n, p in (("wrn-16-4", 2_772_020), ("resnet18", 11_173_962), ("resnet10", 4_903_242))]
    fig = pareto_figure(frame, 5_000_000, [], baselines)
    traces = {t.name: t for t in fig.data}
    size_only = traces["baselines, size only (not trained)"]
    assert sorted(size_only.text) == ["resnet10", "resnet18"] and set(size_only.y) <= {0.3, 0.75}
    assert fig.layout.yaxis2.domain[1] < fig.layout.yaxis.domain[0]  # a row of its own below the accuracy axis
    assert "size only" in fig.layout.yaxis2.title.text
    seeds = traces["seed designs, pruned (last score)"]
    assert list(seeds.text) == ["wrn-16-4"] and list(seeds.y) == [0.3]  # its last score, as trained


def test_the_best_ring_sits_on_the_score_that_ranks() -> None:
    """The ring marked the best trial at its short score while the leaderboard ranks it by the final rung's."""
    from nas import record
    from nas.report.figures import pareto_figure

    study = _study([(0.6, 10**6, 10**8, None, "complete"), (0.5, 2 * 10**6, 10**8, None, "complete")],
                   finals={0: 0.62, 1: 0.7})
    best = record.best(record.records(study))
    ring = next(t for t in pareto_figure(_frame_of(study), 5_000_000, [], []).data if t.name == "best trial")
    assert (list(ring.x), list(ring.y)) == ([best.params], [best.score]) == ([2 * 10**6], [0.7])
    assert "final rung" in ring.text[0]


def test_the_latency_log_axis_has_readable_ticks() -> None:
    runs = [{"name": n, "seed": 0, "test_acc": 0.9, "device_name": "cpu",
             "latency": [{"batch": 1, "median_ms": m, "p10_ms": m * 0.9, "p90_ms": m * 1.1}]}
            for n, m in (("a", 0.7), ("b", 3.0), ("c", 9.0))]
    axis = latency_figure(runs).layout.xaxis
    assert axis.type == "log"
    lo, hi = (10**v for v in axis.range)
    shown = [(v, t) for v, t in zip(axis.tickvals, axis.ticktext) if lo <= v <= hi]
    assert len(shown) >= 3 and all(t.endswith("ms") for _, t in shown)  # 1-2-5 ticks, each labelled


def test_kendall_tau_is_shown_from_three_pairs_only() -> None:
    from nas.report.page import _correlation_text

    ranks = pd.DataFrame({"number": [1, 2], "val_acc": [0.5, 0.6], "confirm_acc": [0.8, 0.7], "short_rank": [2, 1],
                          "final_rank": [1, 2], "depth": [2, 3], "seed_design": [None, None]})
    title = ranks_figure(ranks).layout.title.text
    assert "too few to rank" in title and "τ =" not in title
    text = _correlation_text([{"val_acc": 0.5, "test_acc": 0.8}, {"val_acc": 0.6, "test_acc": 0.7}])
    assert "too few to rank" in text and "τ =" not in text


def test_one_front_rule_on_the_short_score_for_the_cli_and_the_report() -> None:
    """The report drew a one-point front, `nas leaderboard --front` three (short and final-rung scores mixed)."""
    from nas import record
    from nas.report.figures import pareto_figure
    from nas.report.tables import pareto_front

    rows = [(0.50, 1_000_000, 900, None, "complete"), (0.60, 2_000_000, 100, None, "complete"),
            (0.55, 3_000_000, 50, None, "complete"), (0.58, 4_000_000, 500, None, "complete")]
    study = _study(rows, ("accuracy", "macs"), finals={3: 0.9})
    cli = [r.number for r in record.front(record.records(study), ("macs",))]
    table = list(pareto_front(_frame_of(study), ("macs",))["number"])
    drawn = next(t for t in pareto_figure(_frame_of(study), 5_000_000, [], [], costs=("macs",)).data
                 if t.name.startswith("Pareto front"))
    assert cli == table == [1, 2] and list(drawn.x) == [2_000_000, 3_000_000]
