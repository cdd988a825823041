"""Multi-objective search (`--objectives`) and the compute bound (`--max-macs`), on real CIFAR-10 images."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml

import nas.search.objective
from nas import Arch, count_params
from nas.api import Study
from nas.arch.bounds import Bounds
from nas.arch.counting import count_macs
from nas.arch.model import build_model
from nas.arch.space import load_space, parse_space
from nas.engine.data import ImageSet
from nas.engine.train import TrainResult
from nas.errors import NasError
from nas.record import MACS_CONSTRAINT, front, records
from nas.search import (
    SEARCH_RECIPE,
    Fidelity,
    SearchConfig,
    SearchData,
    confirm_pool,
    run_search,
)
from nas.search.job import check_resumed

ROOT = Path(__file__).resolve().parents[1]


def config(tmp_path: Path, **kw) -> SearchConfig:
    base = dict(budget=50_000, trials=3, study="t", storage=f"sqlite:///{tmp_path / 'study.db'}",
                fidelity=Fidelity(epochs=1, train_subset=128, val_subset=100, width=1.0, evals_per_epoch=1),
                recipe=dataclasses.replace(SEARCH_RECIPE, batch_size=64), val_size=100, seed=0)
    return SearchConfig(**{**base, **kw})


def test_candidates_over_the_macs_bound_are_never_built(tmp_path, monkeypatch):
    """`--budget 5e6 --max-macs 3e8` over the default space: every built network is within both bounds, and
    every one over either was rejected before anything was built (training replaced by a cheap score)."""
    def scored(model, recipe, train_set, val_set, device, on_eval=None, **kw):
        return TrainResult("ok", (), 0.5 + 0.04 * math.log(sum(x.numel() for x in model.parameters())), 0.0, 0.0, 0, 0.0, "fp32")

    built: list[Arch] = []

    def recording_build(arch: Arch, init: str, seed: int) -> torch.nn.Module:
        built.append(arch)
        return build_model(arch, init, seed)

    monkeypatch.setattr(nas.search.objective, "train", scored)
    blank = ImageSet(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), ("x",))
    cfg = config(tmp_path, budget=5_000_000, max_macs=300_000_000, trials=40, fidelity=Fidelity(1, 0, 0, 1.0, 1))
    study = run_search(load_space(ROOT / "search_spaces" / "default.yaml"), cfg, SearchData(blank, blank),
                       torch.device("cpu"), build=recording_build)
    assert len(built) == 40
    assert all(count_params(a) <= 5_000_000 and count_macs(a) <= 300_000_000 for a in built)
    over_macs = [t for t in study.trials if t.user_attrs.get("outcome") == "over_budget" and "MACs" in t.user_attrs["reason"]]
    assert over_macs, "the MACs bound should reject part of this space"
    assert all(t.constraints[MACS_CONSTRAINT] > 0 for t in over_macs)
    assert not {t.user_attrs["arch_id"] for t in over_macs} & {a.id for a in built}


def test_a_multi_objective_search_trains_every_trial_and_its_rung_trains_the_front(small_cifar, tmp_path):
    cfg = config(tmp_path, budget=60_000, trials=6, objectives=("accuracy", "params"), pruner="halving")
    study = run_search(load_space(ROOT / "search_spaces" / "tiny.yaml"), cfg,
                       nas.search.load_search_data(str(small_cifar), cfg), torch.device("cpu"))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    trained = [t for t in study.trials if t.user_attrs.get("outcome") in ("complete", "pruned")]
    assert len(trained) == 6 and all(t.user_attrs["outcome"] == "complete" for t in trained)  # no pruning
    assert all(t.values[1] == t.user_attrs["params"] for t in trained)
    study.set_user_attr("objectives", ["accuracy", "params"])  # what `nas search` writes when it starts
    on_front = front(records(study), ("params",))
    assert on_front and {r.number for r in confirm_pool(study)} == {r.number for r in on_front}
    for r in on_front:  # none beaten on both at once
        assert not any(o.short_acc >= r.short_acc and o.params <= r.params and (o.short_acc, o.params) != (r.short_acc, r.params)
                       for o in records(study) if o.finished)


def test_the_cli_searches_the_front_and_shows_it(small_cifar, tmp_path, nas_cli, search_args):
    r = nas_cli(search_args(small_cifar, tmp_path / "res", "--objectives", "accuracy,params,macs", "--max-macs", "4M",
                            "--no-confirm", trials=4), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "objectives: accuracy, params, macs" in r.stdout and "at most 4,000,000 MACs" in r.stdout
    rows = Study("s", tmp_path / "res").leaderboard(front=True)
    assert rows and all(row["front"] and row["macs"] <= 4_000_000 for row in rows)
    assert [row["params"] for row in rows] == sorted(row["params"] for row in rows)
    bad = nas_cli(search_args(small_cifar, tmp_path / "res", "--objectives", "params,accuracy"), cwd=tmp_path)
    assert bad.returncode == 2 and "must start with accuracy" in bad.stderr


def test_a_study_resumes_only_with_its_own_bounds_and_objectives(tmp_path):
    stored = {"budget": 50_000, "max_macs": None, "objectives": ["accuracy"]}
    check_resumed(config(tmp_path), stored)
    check_resumed(config(tmp_path), {"budget": 50_000})  # a study from before the MACs bound and objectives
    with pytest.raises(NasError, match=r"--max-macs none, not 1,000,000: use a new --study"):
        check_resumed(config(tmp_path, max_macs=1_000_000), stored)
    with pytest.raises(NasError, match=r"--objectives accuracy, not accuracy,macs"):
        check_resumed(config(tmp_path, objectives=("accuracy", "macs")), stored)


@pytest.mark.parametrize("objectives, message", [(("accuracy", "latency"), "list distinct objectives from accuracy, params, macs"),
                                                 (("accuracy", "params", "params"), "distinct"), ((), "distinct")])
def test_bad_objectives_name_the_choices(tmp_path, objectives, message):
    with pytest.raises(NasError, match=message):
        config(tmp_path, objectives=objectives)
    with pytest.raises(NasError, match="--max-macs=0 must be >= 1"):
        config(tmp_path, max_macs=0)


def test_the_space_survey_counts_what_fits_both_bounds():
    from nas.arch.survey import survey

    raw = yaml.safe_load((ROOT / "search_spaces" / "tiny.yaml").read_text())
    s = survey(parse_space(raw), samples=1000, seed=0)
    assert 0 < s.fits(Bounds(60_000, 3_000_000)) < s.fits(Bounds(60_000)) <= 1
    assert s.fits(Bounds(60_000, 10**12)) == s.fits(Bounds(60_000))


def test_a_macs_bound_no_candidate_meets_is_refused_before_anything_is_written(small_cifar, tmp_path, search_args):
    from typer.testing import CliRunner

    from nas.cli import app

    r = CliRunner().invoke(app, search_args(small_cifar, tmp_path / "res", "--max-macs", "1000"))
    assert r.exit_code == 2 and "fits both the budget 50,000 and --max-macs 1,000" in r.output
    assert "raise --max-macs" in r.output and not (tmp_path / "res" / "s").exists()
