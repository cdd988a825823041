"""Does a search's winner beat the hand-designed seed designs? A report on test data, never a selection.

The search picks its winner on validation images, with one set of initial weights per candidate, so
its margin over the seed designs is partly selected noise. This trains the winner (the leaderboard's
first, i.e. the final rung's best) and every seed design the study tried again at the final rung's
schedule (the search's proxy width, 5x its training), with --inits initial weights and data orders
each, and scores every run on the validation images the search used and on the 10,000 test images
it never read.

Run: python benchmarks/beat_seeds.py --study NAME [--inits 2] [--seeds all|rung] [--results-dir results]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import optuna
import torch

from nas import Arch, count_params
from nas.arch.model import build_model
from nas.artifacts import default_storage
from nas.engine.augment import channel_stats
from nas.engine.data import load_split
from nas.engine.recipe import Recipe
from nas.engine.train import evaluate, train
from nas.record import records
from nas.retrain import select_trials
from nas.search import (
    CONFIRM_LONGER_BY,
    SEARCH_RECIPE,
    Fidelity,
    SearchConfig,
    load_search_data,
    longer,
)

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", required=True)
    ap.add_argument("--results-dir", type=Path, default=ROOT / "results")
    ap.add_argument("--inits", type=int, default=2, help="initial weights (and data orders) per design")
    ap.add_argument("--seeds", choices=("all", "rung"), default="all",
                    help="every seed design the study tried, or only those its final rung trained (the best one)")
    args = ap.parse_args()
    folder = args.results_dir / args.study
    run = json.loads((folder / "config.json").read_text())
    conf = run["config"]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=args.study, storage=default_storage(args.results_dir, args.study))
    fid = Fidelity(**conf["fidelity"])
    cfg = SearchConfig(budget=conf["budget"], trials=1, study="beat-seeds", storage="sqlite://", fidelity=fid,
                       recipe=SEARCH_RECIPE, val_size=conf["val_size"])
    data = load_search_data(run["data"], cfg)
    test = load_split(run["data"], "test")
    stats = channel_stats(data.train)  # what training normalises with

    winner = select_trials(study, "best")[0]
    seeds = [r for r in records(study) if r.seed_design and r.recipe and (args.seeds == "all" or r.final)]
    designs = [(f"winner (trial {winner.number})", winner)] + [(r.seed_design, r) for r in seeds]
    print(f"{len(designs)} designs x {args.inits} inits at {CONFIRM_LONGER_BY}x the search's schedule, width x{fid.width:g}; "
          f"validation {len(data.val)}, test {len(test)} images", flush=True)
    rows = []
    for name, trial in designs:
        arch = Arch.from_dict(trial.arch)
        base = longer(Recipe.from_dict(trial.recipe), CONFIRM_LONGER_BY, len(data.train))
        for k in range(args.inits):
            recipe = dataclasses.replace(base, seed=base.seed + k)
            started = time.perf_counter()
            model = build_model(arch.scaled(fid.width), recipe.init, recipe.seed)
            result = train(model, recipe, data.train, data.val, torch.device("cpu"))
            test_acc = evaluate(model, test, torch.device("cpu"), stats=stats).acc
            rows.append({"design": name, "trial": trial.number, "arch": arch.describe(), "params": count_params(arch),
                         "init": recipe.seed, "val_acc": result.val_acc, "test_acc": test_acc,
                         "seconds": round(time.perf_counter() - started, 1)})
            print(f"{name:>28} init {recipe.seed}: val {result.val_acc:.2%}  test {test_acc:.2%}  "
                  f"({rows[-1]['seconds']:.0f} s)  {count_params(arch):,} params  {arch.describe()}", flush=True)

    summary = {}
    for name, _ in designs:
        mine = [r for r in rows if r["design"] == name]
        summary[name] = {key: (statistics.mean(r[key] for r in mine), statistics.pstdev(r[key] for r in mine))
                         for key in ("val_acc", "test_acc")}
    print("\nmean +- std over inits:")
    for name, s in summary.items():
        print(f"{name:>28}: val {s['val_acc'][0]:.2%} +- {s['val_acc'][1]:.2%}   test {s['test_acc'][0]:.2%} +- {s['test_acc'][1]:.2%}")
    best_seed = max((n for n, _ in designs[1:]), key=lambda n: summary[n]["test_acc"][0], default=None)
    if winner.seed_design:
        print(f"the winner is the seed design {winner.seed_design}: the search found nothing better")
    elif best_seed:
        first = designs[0][0]
        gap = summary[first]["test_acc"][0] - summary[best_seed]["test_acc"][0]
        print(f"winner - best seed design ({best_seed}) on test: {gap:+.2%}")
    out = ROOT / "results" / f"beat_seeds_{args.study}.json"
    out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
