"""Every registered sampler (strategy) and pruner passes one shared behaviour test; a new one is one entry.

Optuna's pattern (tests/samplers_tests runs every sampler): the checks read the registries, so an entry added
in nas/search/strategies.py, or by a test as below, is covered without touching this file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
import yaml

import nas
from nas.arch.counting import count_params
from nas.arch.space import load_space, parse_space
from nas.errors import NasError
from nas.record import GRID_POINT
from nas.search import SEARCH_RECIPE, Fidelity, SearchConfig
from nas.search.objective import suggest
from nas.search.sampling import CandidateSampler, DepthView, tpe
from nas.search.strategies import (
    PRUNERS,
    STRATEGIES,
    Pruner,
    Strategy,
    check,
    make_pruner,
    make_sampler,
    strategy,
)

SMALL = {"name": "small", "layers": [2], "blocks": [1, 2], "channels": [8, 16], "kernels": [3, 5]}  # 64 points

def config(tmp_path: Path, **kw) -> SearchConfig:
    base = dict(budget=50_000, trials=4, study="t", storage=f"sqlite:///{tmp_path / 'study.db'}",
                fidelity=Fidelity(epochs=2, train_subset=128, val_subset=100, width=1.0, evals_per_epoch=1),
                recipe=dataclasses.replace(SEARCH_RECIPE, batch_size=64), val_size=100, seed=0)
    return SearchConfig(**{**base, **kw})


def searches_within_the_space_and_the_bounds(name: str, small_cifar: Path, tmp_path: Path) -> None:
    """A real short search (the API's, as a user runs it) with strategy `name`: every trained trial is a candidate
    of the space under the budget, and a queued strategy trains its own points, none other."""
    space_file = tmp_path / "small.yaml"
    tmp_path.mkdir(exist_ok=True)
    space_file.write_text(yaml.safe_dump(SMALL))
    space = load_space(space_file)
    result = nas.Study("s", tmp_path).search(
        30_000, trials=4, space=space_file, data=str(small_cifar), device="cpu", confirm=False, sampler=name,
        pruner="none", val_size=100, seed=0, fidelity={"epochs": 1, "train_subset": 256, "val_subset": 100, "width": 1.0})
    done = [t for t in result.study.trials if t.user_attrs.get("outcome") == "complete"]
    assert len(done) == result.trained == 4  # the grid has more points than that
    for t in done:
        arch = space.arch(t.params)
        assert space.contains(arch) and count_params(arch) <= 30_000
        assert (GRID_POINT in t.user_attrs) == (STRATEGIES[name].points is not None)


def proposes_the_same_candidates_for_the_same_seed(name: str, tmp_path: Path) -> None:
    """Two studies with the same seed propose the same candidates, one with another seed does not (no training:
    each proposal is scored by a made-up function of its knobs)."""
    space = parse_space(SMALL)

    def proposals(seed: int) -> list[dict]:
        cfg = config(tmp_path, sampler=name, seed=seed)
        study = optuna.create_study(direction="maximize", sampler=make_sampler(cfg, space))
        if STRATEGIES[name].points:
            for point in STRATEGIES[name].points(space, cfg).points[:12]:
                study.enqueue_trial(point)
        for _ in range(12):
            t = study.ask()
            values, _ = suggest(t, space)
            study.tell(t, sum(v for k, v in values.items() if k.startswith("channels")) % 7)
        return [t.params for t in study.trials]

    assert proposals(0) == proposals(0) != proposals(1)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_registered_strategy_searches_within_the_space_and_the_bounds(name, small_cifar, tmp_path):
    searches_within_the_space_and_the_bounds(name, small_cifar, tmp_path)
    proposes_the_same_candidates_for_the_same_seed(name, tmp_path)


def prunes_a_hopeless_trial_and_never_the_best(name: str, tmp_path: Path, study_name: str = "pruning") -> None:
    """Thirty finished trials of one depth climb 0.5 -> 0.9 (enough that each of Hyperband's brackets holds some);
    new trials at 0.1 at every step are pruned (unless the pruner prunes nothing), one at 0.99 never is. The study's
    name is fixed: Hyperband puts trials in brackets by a CRC of it, and its last bracket stops nothing early."""
    cfg = config(tmp_path, pruner=name, fidelity=Fidelity(epochs=9, train_subset=0, val_subset=0, width=1.0,
                                                          evals_per_epoch=1))
    pruner = make_pruner(cfg)
    study = optuna.create_study(study_name=study_name, direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(30):
        t = study.ask({"layers": optuna.distributions.CategoricalDistribution([2])})
        for step in range(1, 10):
            t.report(0.5 + 0.04 * step + 0.001 * i, step)
        study.tell(t, 0.9)

    def pruned_at(score: float) -> int | None:
        t = study.ask({"layers": optuna.distributions.CategoricalDistribution([2])})
        for step in range(1, 10):
            t.report(score, step)
            if t.should_prune():
                study.tell(t, state=optuna.trial.TrialState.PRUNED)
                return step
        study.tell(t, score)
        return None

    assert pruned_at(0.99) is None
    hopeless = [pruned_at(0.1) for _ in range(12)]  # Hyperband's last bracket stops nothing early: some land there
    assert any(hopeless) or isinstance(pruner, optuna.pruners.NopPruner)


@pytest.mark.parametrize("name", list(PRUNERS))
def test_every_registered_pruner_prunes_a_hopeless_trial_and_never_the_best(name, tmp_path):
    prunes_a_hopeless_trial_and_never_the_best(name, tmp_path)


def test_a_sampler_and_a_pruner_added_as_one_entry_each_pass_the_shared_tests(monkeypatch, small_cifar, tmp_path):
    monkeypatch.setitem(STRATEGIES, "nsga2", Strategy("nsga2", "NSGA-II (a test entry)",
                                                      lambda cfg, space: optuna.samplers.NSGAIISampler(seed=cfg.sampler_seed)))
    monkeypatch.setitem(PRUNERS, "percentile", Pruner("percentile", "below the 25th percentile (a test entry)",
                                                      lambda cfg: optuna.pruners.PercentilePruner(25.0, n_startup_trials=5)))
    searches_within_the_space_and_the_bounds("nsga2", small_cifar, tmp_path / "s")
    proposes_the_same_candidates_for_the_same_seed("nsga2", tmp_path / "s")
    prunes_a_hopeless_trial_and_never_the_best("percentile", tmp_path / "p")


def test_unknown_names_and_a_front_from_a_strategy_that_cannot_search_one_are_refused(tmp_path):
    with pytest.raises(NasError, match="--sampler='bayes' is unknown: choose one of tpe, random, grid"):
        check(config(tmp_path, sampler="bayes"))
    with pytest.raises(NasError, match="--pruner='asha' is unknown: choose one of halving, hyperband, median, none"):
        check(config(tmp_path, pruner="asha"))
    with pytest.raises(NasError, match="--sampler grid cannot search a front"):
        check(config(tmp_path, sampler="grid", objectives=("accuracy", "params")))
    assert strategy("tpe").per_depth and strategy("tpe").multi_objective


def test_each_depth_s_tpe_sees_only_its_own_depth_s_trials():
    """DepthView filters what TPE reads through Study._get_trials, which Optuna's TPE calls (no public hook
    exists): if an Optuna upgrade read trials another way, each depth would learn from the other's trials and
    this test would fail. Depth 1 scores high x, depth 2 low x; each depth's proposals follow its own."""
    sampler = CandidateSampler(tpe, (1, 2), fits=lambda params: None)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    dist = {"layers": optuna.distributions.CategoricalDistribution([1, 2]), "x": optuna.distributions.FloatDistribution(0, 1)}
    for i in range(60):
        n, x = 1 + i % 2, (i * 0.618) % 1
        study.add_trial(optuna.trial.create_trial(params={"layers": n, "x": x}, distributions=dist,
                                                  value=x if n == 1 else 1 - x))
    proposed: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(20):
        t = study.ask()
        n, x = t.suggest_categorical("layers", [1, 2]), t.suggest_float("x", 0, 1)
        proposed[n].append(x)
        study.tell(t, x if n == 1 else 1 - x)
    assert sum(proposed[1]) / 10 > 0.7 and sum(proposed[2]) / 10 < 0.3
    view = DepthView(study, 2)
    assert {t.params["layers"] for t in view._get_trials(deepcopy=False)} == {2}
    assert len(view.get_trials()) == len(study.trials) // 2
