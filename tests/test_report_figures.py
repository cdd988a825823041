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
