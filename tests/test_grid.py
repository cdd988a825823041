"""`--sampler grid`: the grid counted before training, and trained exactly, by one worker or many."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import optuna
import pytest
import yaml

from nas.arch.counting import count_params
from nas.arch.space import parse_space
from nas.engine.recipe import PROTOCOLS
from nas.errors import NasError
from nas.record import GRID_POINT
from nas.search import SEARCH_RECIPE, Fidelity, SearchConfig
from nas.search.grid import combinations, grid
from nas.search.strategies import check

RECIPE_GRID = {"name": "recipe-grid", "layers": [2], "blocks": [1], "channels": [[16], [32]],
               "train": {"optimizer": ["sgd", "adam", "rmsprop"], "lr": [0.01, 0.05, 0.2]}}


def config(**kw) -> SearchConfig:
    base = dict(budget=50_000, trials=100, study="g", storage="sqlite:///unused.db", sampler="grid",
                fidelity=Fidelity(epochs=1, train_subset=128, val_subset=100, width=1.0, evals_per_epoch=1),
                recipe=dataclasses.replace(SEARCH_RECIPE, batch_size=64))
    return SearchConfig(**{**base, **kw})


def test_the_grid_is_the_full_factorial_less_what_breaks_a_bound_or_trains_twice():
    space = parse_space({**RECIPE_GRID, "blocks": [1, 2], "channels": [[16, 64], [32]]})
    assert combinations(space) == 2 * 2 * 2 * 9  # blocks_1 x blocks_2 x channels_1 x (optimizer x lr)
    points = grid(space, config(budget=60_000))
    over = [p for p in points.points if count_params(space.arch(p)) > 60_000]
    assert not over and points.over_bounds > 0
    assert len(points.points) + points.over_bounds + points.impossible + points.same_proxy == combinations(space)
    close = parse_space({**RECIPE_GRID, "blocks": [1, 2], "channels": [[16, 20], [32]]})  # at width x0.1 both are 2
    assert grid(close, config(budget=60_000)).same_proxy == 0
    narrow = grid(close, config(budget=60_000, fidelity=Fidelity(1, 128, 100, 0.1, 1)))
    assert (len(narrow.points), narrow.same_proxy) == (36, 36)
    assert {(p["optimizer"], p["lr"]) for p in points.points} == {(o, lr) for o in ("sgd", "adam", "rmsprop")
                                                                   for lr in (0.01, 0.05, 0.2)}
    assert grid(space, config(budget=60_000, seed=1)).points != points.points  # shuffled by the seed
    assert sorted(map(str, grid(space, config(budget=60_000, seed=1)).points)) == sorted(map(str, points.points))


def test_a_grid_needs_listed_values_and_a_size_it_can_enumerate():
    with pytest.raises(NasError, match=r"lr as a range: list the values"):
        grid(parse_space({**RECIPE_GRID, "train": {"lr": {"low": 0.01, "high": 0.2}}}), config())
    huge = yaml.safe_load((Path(__file__).parents[1] / "search_spaces" / "default.yaml").read_text())
    with pytest.raises(NasError, match=r"combinations \(at most 200,000\): list fewer choices"):
        grid(parse_space(huge), config())
    with pytest.raises(NasError, match="--sampler grid cannot search a front .* drop --objectives"):
        check(config(objectives=("accuracy", "params")))


def test_a_grid_search_trains_exactly_the_grid_and_its_pivot_is_the_hand_computed_one(
        small_cifar, tmp_path, nas_cli):
    space_file = tmp_path / "grid.yaml"
    space_file.write_text(yaml.safe_dump(RECIPE_GRID))
    args = ["search", "--budget", "50k", "--trials", "20", "--space", str(space_file), "--data", str(small_cifar),
            "--epochs", "1", "--train-subset", "128", "--val-subset", "100", "--val-size", "100", "--width", "1",
            "--results-dir", str(tmp_path / "res"), "--study", "g", "--sampler", "grid", "--pruner", "none", "--no-confirm"]
    r = nas_cli(args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "grid: 9 points of 9 combinations: trains 9" in r.stdout
    study = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp_path / 'res' / 'g' / 'study.db'}")
    trained = [t for t in study.trials if t.user_attrs.get("outcome") == "complete"]
    assert len(study.trials) == 9 and len(trained) == 9
    assert sorted(t.user_attrs[GRID_POINT] for t in trained) == list(range(9))
    best: dict[tuple[str, float], float] = {}
    for t in trained:
        key = (t.params["optimizer"], t.params["lr"])
        best[key] = max(best.get(key, 0.0), t.value)
    shown = nas_cli(["leaderboard", "--results-dir", str(tmp_path / "res"), "--study", "g", "--pivot", "optimizer,lr",
                     "--json"], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    table = yaml.safe_load(shown.stdout)["best_val_acc"]
    assert {(o, float(lr)): v for o, row in table.items() for lr, v in row.items()} == best
    again = nas_cli(args, cwd=tmp_path)  # resuming a finished grid trains nothing more
    assert again.returncode == 0 and len(optuna.load_study(study_name="g", storage=study._storage).trials) == 9


def test_a_grid_listing_only_optimizer_and_lr_trains_the_reference_recipe_otherwise(small_cifar, tmp_path, nas_cli):
    """A recipe grid starts from a stated base: its sgd row is the reference protocol's plain SGD (cosine, no
    label smoothing), not the search recipe's Nesterov one-cycle; `train: base:` picks another protocol."""
    space = {**RECIPE_GRID, "train": {"optimizer": ["sgd", "adam"], "lr": [0.05]}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(space))
    r = nas_cli(["search", "--budget", "50k", "--space", str(tmp_path / "grid.yaml"), "--data", str(small_cifar),
                 "--epochs", "1", "--train-subset", "128", "--val-subset", "100", "--val-size", "100", "--width", "1",
                 "--results-dir", str(tmp_path / "res"), "--study", "g", "--sampler", "grid", "--pruner", "none",
                 "--no-confirm"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "base recipe: reference (optimizer sgd, lr 0.1, momentum 0.9, nesterov False" in r.stdout
    study = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp_path / 'res' / 'g' / 'study.db'}")
    recipes = {t.user_attrs["recipe"]["optimizer"]: t.user_attrs["recipe"] for t in study.trials
               if t.user_attrs.get("outcome") == "complete"}
    for name, recipe in recipes.items():  # all but what the fidelity sets: the reference protocol and the grid's row
        assert {**recipe, "epochs": 200, "train_subset": 0} == {**PROTOCOLS["reference"].to_dict(), "optimizer": name,
                                                                "lr": 0.05}
    assert sorted(recipes) == ["adam", "sgd"] and recipes["sgd"]["nesterov"] is False
    fast = parse_space({**space, "train": {**space["train"], "base": "fast"}})
    assert config().for_space(fast).recipe == PROTOCOLS["fast"] and config().base_name(fast) == "fast"
    assert config(sampler="tpe").for_space(parse_space(space)).recipe == config().recipe  # TPE: the search recipe
    with pytest.raises(NasError, match="train.base: 'quick' is not a protocol: choose one of reference, fast"):
        parse_space({**space, "train": {"base": "quick"}})


@pytest.mark.slow
def test_many_workers_share_one_grid_and_train_each_point_once(small_cifar, pg_url, tmp_path, nas_cli):
    space_file = tmp_path / "grid.yaml"
    space_file.write_text(yaml.safe_dump(RECIPE_GRID))
    r = nas_cli(["search", "--budget", "50k", "--space", str(space_file), "--data", str(small_cifar), "--epochs", "1",
                 "--train-subset", "128", "--val-subset", "100", "--val-size", "100", "--width", "1", "--results-dir",
                 str(tmp_path / "res"), "--study", "g", "--sampler", "grid", "--storage", pg_url, "--workers",
                 str(min(3, len(os.sched_getaffinity(0)))),  # bounded by the usable cores
                 "--no-confirm"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    trials = optuna.load_study(study_name="g", storage=pg_url).trials
    points = [t.user_attrs[GRID_POINT] for t in trials if t.user_attrs.get("outcome") == "complete"]
    assert sorted(points) == list(range(9))
