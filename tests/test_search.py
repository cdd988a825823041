"""nas search: real tiny searches on real CIFAR-10 images."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml

import nas.engine.data
import nas.search
import nas.search.objective
import nas.search.rung
from nas import Arch, count_params
from nas.arch.model import build_model
from nas.arch.space import load_space, parse_space
from nas.engine.data import ImageSet
from nas.engine.recipe import Recipe
from nas.engine.train import TrainResult
from nas.record import BUDGET_CONSTRAINT
from nas.report.tables import leaderboard, trials_frame
from nas.retrain import select_trials
from nas.search import (
    SEARCH_RECIPE,
    Fidelity,
    SearchConfig,
    SearchData,
    confirm,
    confirm_pool,
    enqueue_seeds,
    load_search_data,
    longer,
    open_study,
    over_budget_fraction,
    run_search,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "search_spaces" / "tiny.yaml"


def config(tmp_path: Path, **kw) -> SearchConfig:
    base = dict(budget=50_000, trials=3, study="t", storage=f"sqlite:///{tmp_path / 'study.db'}",
                fidelity=Fidelity(epochs=1, train_subset=128, val_subset=100, width=1.0, evals_per_epoch=1),
                recipe=dataclasses.replace(SEARCH_RECIPE, batch_size=64), val_size=100, seed=0)
    return SearchConfig(**{**base, **kw})


def nas_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def trained_count(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from trial_user_attributes where key='outcome' and "
                           "value_json in ('\"complete\"', '\"pruned\"', '\"nonfinite\"')").fetchone()[0]


def test_tiny_search_end_to_end_then_resume_without_retraining(small_cifar, tmp_path):
    args = ["search", "--budget", "50k", "--trials", "3", "--space", str(TINY), "--data", str(small_cifar),
            "--epochs", "2", "--train-subset", "256", "--val-subset", "100", "--val-size", "100", "--width", "1",
            "--results-dir", str(tmp_path / "res"), "--study", "tiny", "--seed", "1"]
    first = nas_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "res" / "tiny"
    for name in ("study.db", "trials.csv", "config.json", "space.yaml", "report.html"):
        assert (folder / name).exists(), name
    assert trained_count(folder / "study.db") == 3
    assert "leaderboard" in first.stdout
    config = json.loads((folder / "config.json").read_text())
    assert config["config"]["budget"] == 50_000 and config["versions"]["optuna"] == optuna.__version__
    with sqlite3.connect(folder / "study.db") as con:
        before = con.execute("select count(*) from trials").fetchone()[0]

    again = nas_cli(*args, cwd=tmp_path)  # the same command: resumes, trains nothing
    assert again.returncode == 0, again.stderr
    assert "3 already done" in again.stdout
    with sqlite3.connect(folder / "study.db") as con:
        assert con.execute("select count(*) from trials").fetchone()[0] == before

    more = nas_cli(*[a if a != "3" else "5" for a in args], cwd=tmp_path)  # asks for more: continues
    assert more.returncode == 0, more.stderr
    assert trained_count(folder / "study.db") == 5
    with sqlite3.connect(folder / "study.db") as con:
        numbers = [n for (n,) in con.execute("select number from trials order by number")]
    assert numbers == list(range(len(numbers)))


def test_over_budget_candidates_are_never_built(small_cifar, tmp_path):
    space = load_space(TINY)
    cfg = config(tmp_path, budget=30_000, trials=6)
    built: list[Arch] = []

    def recording_build(arch: Arch, init: str, seed: int) -> torch.nn.Module:
        built.append(arch)
        return build_model(arch, init, seed)

    study = run_search(space, cfg, load_search_data(str(small_cifar), cfg), torch.device("cpu"), build=recording_build)
    rejected = [t for t in study.trials if t.user_attrs.get("outcome") == "over_budget"]
    assert rejected, "the budget should reject part of this space"
    assert built and all(count_params(a) <= cfg.budget for a in built)
    assert not {Arch.from_dict(t.user_attrs["arch"]).id for t in rejected} & {a.id for a in built}
    assert all(t.constraints[BUDGET_CONSTRAINT] > 0 for t in rejected)
    assert all(t.value == 0.0 and "> budget" in t.user_attrs["reason"] for t in rejected)


@pytest.mark.slow  # 60 trials per sampler: a measurement of the sampler more than a check
def test_over_budget_proposals_vanish_after_start_up_and_are_rarer_than_random(tmp_path, monkeypatch):
    """The sampler's side only: training is replaced by a deterministic score (bigger is better,
    as in real searches, which pushes proposals towards the budget edge). The space lets every layer
    take every width, so about half of it is over 5M parameters."""
    def scored(model, recipe, train_set, val_set, device, on_eval=None, **kw):
        p = sum(x.numel() for x in model.parameters())
        return TrainResult("ok", (), 0.5 + 0.04 * math.log(p), 0.0, 0.0, 0, 0.0, "fp32")

    monkeypatch.setattr(nas.search.objective, "train", scored)
    blank = ImageSet(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), ("x",))
    raw = yaml.safe_load((ROOT / "search_spaces" / "default.yaml").read_text())
    wide = parse_space({**raw, "channels": [16, 32, 48, 64, 96, 128, 192, 256, 384, 512]})
    share, curve = {}, []
    for sampler in ("tpe", "random"):
        cfg = config(tmp_path, study=sampler, sampler=sampler, budget=5_000_000, trials=60,
                     fidelity=Fidelity(1, 0, 0, 1.0, 1))
        study = run_search(wide, cfg, SearchData(blank, blank), torch.device("cpu"))
        outcomes = [t.user_attrs["outcome"] for t in study.trials]
        share[sampler] = outcomes.count("over_budget") / len(outcomes)
        assert outcomes.count("complete") == 60
        curve = curve or over_budget_fraction(study, window=20)
    assert share["tpe"] < share["random"], share
    start, later = curve[:2], curve[2:]  # after the random start-up (10 trials per depth), they all but vanish
    assert max(start) > 0 and later and max(later) <= 0.05, curve


def test_search_never_reads_the_test_split(small_cifar, tmp_path, monkeypatch):
    real = nas.engine.data.load_split
    calls = []

    def guarded(source, split, cache_dir=None):
        calls.append(split)
        if split != "train":
            raise AssertionError(f"the search read the {split!r} split")
        return real(source, split, cache_dir)

    monkeypatch.setattr(nas.engine.data, "load_split", guarded)
    monkeypatch.setattr(nas.search.objective, "load_split", guarded)
    cfg = config(tmp_path, trials=2)
    run_search(load_space(TINY), cfg, load_search_data(str(small_cifar), cfg), torch.device("cpu"))
    assert calls == ["train"]


def test_validation_images_are_disjoint_from_training_images(small_cifar, tmp_path):
    cfg = config(tmp_path)
    d = load_search_data(str(small_cifar), cfg)
    train = {bytes(x.numpy().tobytes()) for x in d.train.images}
    assert not any(bytes(x.numpy().tobytes()) in train for x in d.val.images)
    assert len(d.val) == 100


def test_same_seed_proposes_the_same_candidates(small_cifar, tmp_path):
    data = None
    sequences = []
    for run in range(2):
        cfg = config(tmp_path / str(run), trials=3, seed=7)
        (tmp_path / str(run)).mkdir()
        data = data or load_search_data(str(small_cifar), cfg)
        study = run_search(load_space(TINY), cfg, data, torch.device("cpu"))
        sequences.append([t.params for t in study.trials])
    assert sequences[0] == sequences[1]


def test_duplicates_are_not_trained_twice(small_cifar, tmp_path):
    space = load_space(TINY)
    cfg = config(tmp_path, trials=2)
    data = load_search_data(str(small_cifar), cfg)
    study = run_search(space, cfg, data, torch.device("cpu"))
    first = next(t for t in study.trials if t.user_attrs.get("outcome") == "complete")
    study.enqueue_trial(first.params)  # propose the very same candidate again
    built = []
    study.optimize(nas.search.make_objective(space, cfg, data, torch.device("cpu"),
                                             build=lambda a, i, s: built.append(a) or build_model(a, i, s)), n_trials=1)
    last = study.trials[-1]
    assert last.user_attrs["outcome"] == "duplicate" and last.value == first.value and built == []


def test_candidates_that_share_a_proxy_are_trained_once(small_cifar, tmp_path):
    """At width x0.05 layer widths 8 and 16 both become 1 channel: the same network is trained."""
    space = load_space(TINY)
    cfg = config(tmp_path, trials=1, fidelity=Fidelity(epochs=1, train_subset=128, val_subset=100, width=0.05,
                                                       evals_per_epoch=1))
    data = load_search_data(str(small_cifar), cfg)
    study = run_search(space, cfg, data, torch.device("cpu"))
    first = next(t for t in study.trials if t.user_attrs.get("outcome") == "complete")
    wider = {**first.params, "channels_1": 16 if first.params["channels_1"] == 8 else 8}
    assert Arch.from_dict(first.user_attrs["arch"]).scaled(0.05) == space.arch(wider).scaled(0.05)
    study.enqueue_trial(wider)
    built = []
    study.optimize(nas.search.make_objective(space, cfg, data, torch.device("cpu"),
                                             build=lambda a, i, s: built.append(a) or build_model(a, i, s)), n_trials=1)
    last = study.trials[-1]
    assert last.params == wider and last.user_attrs["arch_id"] != first.user_attrs["arch_id"]
    assert last.user_attrs["outcome"] == "duplicate" and last.value == first.value and built == []


def test_a_trial_s_score_depends_only_on_its_candidate_and_recipe(small_cifar, tmp_path):
    """The initial weights were once drawn from whatever RNG state earlier trials left behind."""
    space = load_space(TINY)
    scores = []
    for run in range(2):
        cfg = config(tmp_path / str(run), trials=1)
        (tmp_path / str(run)).mkdir()
        if run:
            open_study(cfg, space).enqueue_trial(first.params)
        torch.rand(1000 * (run + 1))  # a different random history before the trial
        study = run_search(space, cfg, load_search_data(str(small_cifar), cfg), torch.device("cpu"))
        first = next(t for t in study.trials if t.user_attrs.get("outcome") == "complete")
        scores.append((first.params, first.user_attrs["val_curve"]))
    assert scores[0] == scores[1]


def seeded_tiny(budget: int):
    """The tiny space with two seed designs: one within `budget`, one over it."""
    raw = yaml.safe_load(TINY.read_text())
    small, big = {"name": "small", "blocks": [1, 1], "channels": [8, 16]}, {"name": "big", "blocks": [2, 2, 2], "channels": [32] * 3}
    space = parse_space({**raw, "seeds": [small, big]})
    assert count_params(space.seeds[0][1]) <= budget < count_params(space.seeds[1][1])
    return space


def test_seed_designs_within_budget_are_tried_first_and_only_once(small_cifar, tmp_path):
    space, cfg = seeded_tiny(30_000), config(tmp_path, budget=30_000, trials=2)
    study = open_study(cfg, space)
    assert enqueue_seeds(study, space, cfg) == ["small"]
    study = run_search(space, cfg, load_search_data(str(small_cifar), cfg), torch.device("cpu"))
    first = study.trials[0]
    assert first.user_attrs["seed_design"] == "small" and first.user_attrs["outcome"] == "complete"
    assert Arch.from_dict(first.user_attrs["arch"]) == space.seeds[0][1]
    assert [t.user_attrs.get("seed_design") for t in study.trials[1:]] == [None] * (len(study.trials) - 1)
    assert enqueue_seeds(study, space, cfg) == []  # a resumed study is not seeded again


def test_longer_means_more_distinct_images_then_more_epochs():
    r = Recipe(epochs=4, train_subset=5000)
    assert (longer(r, 5, 45_000).epochs, longer(r, 5, 45_000).train_subset) == (4, 25_000)
    assert (longer(r, 5, 20_000).epochs, longer(r, 5, 20_000).train_subset) == (5, 0)  # 0 = the whole split
    assert (longer(Recipe(epochs=10, train_subset=0), 5, 45_000).epochs, longer(Recipe(epochs=10), 5, 45_000).train_subset) == (50, 0)


def test_final_rung_trains_the_best_of_each_depth_and_the_best_seed_longer_once(small_cifar, tmp_path):
    space = seeded_tiny(30_000)
    cfg = config(tmp_path, budget=30_000, trials=8, fidelity=Fidelity(epochs=1, train_subset=64, val_subset=100,
                                                                      width=1.0, evals_per_epoch=1), pruner="none")
    data = load_search_data(str(small_cifar), cfg)
    study = open_study(cfg, space)
    enqueue_seeds(study, space, cfg)
    study = run_search(space, cfg, data, torch.device("cpu"))
    done = [t for t in study.trials if t.user_attrs.get("outcome") == "complete"]
    pool = confirm_pool(study)
    depth = lambda t: len(t.user_attrs["arch"]["blocks"])  # noqa: E731
    for n in {depth(t) for t in done}:  # the best short score of every depth is in the pool
        assert max((t for t in done if depth(t) == n), key=lambda t: t.value).value in [r.short_acc for r in pool if r.depth == n]
    assert any(r.seed_design == "small" for r in pool)
    assert len(pool) <= len(space.layers) + 1

    built: list[Arch] = []
    build = lambda a, i, s: built.append(a) or build_model(a, i, s)  # noqa: E731
    records = confirm(study, cfg, data, torch.device("cpu"), build=build)
    assert sorted(records) == [t.number for t in pool] and len(built) == len(pool)
    assert all(r["epochs"] * r["train_subset"] == 5 * 64 for r in records.values())  # 5x the images of a trial
    assert confirm(study, cfg, data, torch.device("cpu"), build=build) == records and len(built) == len(pool)  # resumed

    board = leaderboard(trials_frame(study), top=len(done))
    confirmed = board[board["confirm_acc"].notna()]
    assert list(confirmed["number"]) == list(board["number"][:len(pool)])  # confirmed trials rank first, by that score
    assert list(confirmed["confirm_acc"]) == sorted(confirmed["confirm_acc"], reverse=True)
    assert select_trials(study, "best")[0].number == int(confirmed["number"].iloc[0])



def test_the_fast_final_rung_trains_the_real_network_with_the_fast_protocol(small_cifar, tmp_path, monkeypatch):
    from nas.engine.recipe import protocol
    from nas.search.rung import rung_recipe

    space = load_space(TINY)
    cfg = config(tmp_path, budget=30_000, trials=2, pruner="none",
                 fidelity=Fidelity(epochs=1, train_subset=64, val_subset=100, width=0.5, evals_per_epoch=1))
    data = load_search_data(str(small_cifar), cfg)
    study = run_search(space, cfg, data, torch.device("cpu"))
    fast = dataclasses.replace(cfg, final_rung="fast")
    pool = confirm_pool(study)
    recipe, width = rung_recipe(pool[0], fast, len(data.train))
    assert width == 1.0 and recipe == protocol("fast").updated({"seed": cfg.seed})
    short = dataclasses.replace(protocol("fast"), epochs=1, batch_size=100)  # every trick, one epoch, 500 images
    built: list[Arch] = []
    build = lambda a, i, s: built.append(a) or build_model(a, i, s)  # noqa: E731
    monkeypatch.setattr(nas.search.rung, "protocol", lambda name: short)
    results = confirm(study, fast, data, torch.device("cpu"), build=build)
    assert [a.channels for a in built] == [tuple(r.arch["channels"]) for r in pool]  # full width, not the proxy
    assert all(r["protocol"] == "fast" and r["width"] == 1.0 and r["train_subset"] == len(data.train) for r in results.values())
    with pytest.raises(Exception, match="--final-rung='slow' is unknown: choose one of proxy, fast"):
        dataclasses.replace(cfg, final_rung="slow")

def test_pruning_compares_a_trial_only_with_its_own_depth():
    """Three two-layer trials at 90% after one epoch, then a three-layer one at 30%: plain successive
    halving prunes it against the shallow ones, the search's pruner lets it continue."""
    layers = optuna.distributions.CategoricalDistribution([2, 3])
    verdicts = {}
    for name, pruner in (("plain", optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)),
                         ("same depth", nas.search.SameDepthPruner(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)))):
        study = optuna.create_study(direction="maximize", pruner=pruner)
        for depth, acc in ((2, 0.9), (2, 0.9), (2, 0.9), (3, 0.3)):
            study.enqueue_trial({"layers": depth})
            trial = study.ask({"layers": layers})
            trial.report(acc, step=1)
            verdicts[name] = trial.should_prune()
            study.tell(trial, acc)
    assert verdicts == {"plain": True, "same depth": False}


def test_every_depth_gets_its_share_of_trials(tmp_path, monkeypatch):
    """Scores that favour shallow networks (as the short schedule does): TPE alone would spend the
    study on two layers; the search rotates depths, so each gets a quarter of the proposals."""
    def shallow_first(model, recipe, train_set, val_set, device, on_eval=None, **kw):
        depth = len(model.layers)
        return TrainResult("ok", (), 1.0 - 0.1 * depth, 0.0, 0.0, 0, 0.0, "fp32")

    monkeypatch.setattr(nas.search.objective, "train", shallow_first)
    blank = ImageSet(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), ("x",))
    space = load_space(ROOT / "search_spaces" / "default.yaml")
    cfg = config(tmp_path, budget=5_000_000, trials=40, fidelity=Fidelity(1, 0, 0, 1.0, 1))
    study = run_search(space, cfg, SearchData(blank, blank), torch.device("cpu"))
    proposed = [t.params["layers"] for t in study.trials]
    trained = [t.params["layers"] for t in study.trials if t.user_attrs["outcome"] == "complete"]
    assert max(proposed.count(n) for n in space.layers) - min(proposed.count(n) for n in space.layers) <= 1
    assert all(trained.count(n) >= 6 for n in space.layers), trained  # start-up rejections (deep, random) take the rest


def test_a_family_s_own_knobs_are_sampled_only_for_that_family():
    """Conditional in Optuna: a basic block's trial has no width_per_group, a trial without SE no se_placement,
    so each family's TPE model sees only the trials that used its knobs."""
    from nas.search.objective import suggest

    space = load_space(ROOT / "search_spaces" / "cifar100.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for block in space.block:
        for se_ratio in space.se_ratio:
            study.enqueue_trial({"layers": 3, "block": block, "se_ratio": se_ratio, "groups": 1})
            trial = study.ask()
            values, _ = suggest(trial, space)
            assert ("width_per_group" in trial.params) == (block in ("resnext", "res2net")), block
            assert ("se_placement" in trial.params) == bool(se_ratio), (block, se_ratio)
            assert space.values(space.arch(values)).keys() <= trial.params.keys() | {"layers"}
            study.tell(trial, 0.5)


def test_a_resumed_search_states_its_measured_trial_cost_without_timing_probes(small_cifar, tmp_path, monkeypatch,
                                                                                search_args):
    """Resuming used to time probe trainings first (seconds before anything ran) though the study held the real cost."""
    from typer.testing import CliRunner

    import nas.search.job
    from nas.cli import app

    args = search_args(small_cifar, tmp_path / "res", "--no-confirm", "--pruner", "none", trials=1)
    assert CliRunner().invoke(app, args).exit_code == 0
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'res' / 's' / 'study.db'}")
    measured = nas.search.measured_trial_seconds(study)
    assert measured == next(t.user_attrs["seconds"] for t in study.trials if t.user_attrs.get("outcome") == "complete")

    def no_probes(*args, **kwargs):
        raise AssertionError("timed probe trainings on resume")

    monkeypatch.setattr(nas.search.job, "estimate_trial_seconds", no_probes)
    again = CliRunner().invoke(app, [*args[:args.index("--trials") + 1], "2", *args[args.index("--trials") + 2:]])
    assert again.exit_code == 0, again.output
    assert f"~{measured:.1f} s per full trial" in again.output and "1 already done" in again.output


def test_the_cost_probe_times_only_candidates_inside_both_bounds(tmp_path, monkeypatch):
    """The trial-cost estimate trains a few random candidates briefly: each must fit --max-macs as well as the
    budget (the probe once checked parameters only, so a compute-bounded search timed networks it never trains)."""
    import nas.search.loop as loop
    from nas.arch.counting import count_macs

    built: list[Arch] = []

    def record_build(arch, *args, **kwargs):
        built.append(arch)
        return build_model(arch, *args, **kwargs)

    def timed(model, recipe, train_set, val_set, device, **kw):
        return TrainResult("ok", (), 0.5, 0.0, 100.0, 0, 0.0, "fp32")

    monkeypatch.setattr(loop, "build_model", record_build)
    monkeypatch.setattr(loop, "train", timed)
    blank = ImageSet(torch.zeros(8, 3, 32, 32, dtype=torch.uint8), torch.zeros(8, dtype=torch.long), ("x",))
    space = load_space(ROOT / "search_spaces" / "default.yaml")
    cfg = config(tmp_path, budget=5_000_000, max_macs=150_000_000, fidelity=Fidelity(1, 0, 0, 1.0, 1))
    seconds = loop.estimate_trial_seconds(space, cfg, SearchData(blank, blank), torch.device("cpu"), probes=8)
    assert math.isfinite(seconds) and len(built) == 8
    assert all(count_params(a) <= 5_000_000 and count_macs(a) <= 150_000_000 for a in built), \
        [(count_params(a), count_macs(a)) for a in built]
