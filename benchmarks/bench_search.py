"""Where a search's wall time goes: training vs everything else (sampling, counting, storage,
logging), the over-budget share of proposals over time, and the extrapolated 200-trial time.

Run a search first, e.g. at CPU defaults:
    nas search --budget 5e6 --trials 20 --data ../shared/data/cifar10-png.tar.gz --study bench20
then: python benchmarks/bench_search.py --study bench20 [--results-dir results] [--target 200]
Issue 4 asks for non-training overhead under 5% of trial time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna

from nas.artifacts import default_storage
from nas.record import TRAINED, count_outcomes
from nas.search import over_budget_fraction


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", required=True)
    ap.add_argument("--results-dir", type=Path, default=Path("results"))
    ap.add_argument("--target", type=int, default=200)
    args = ap.parse_args()
    study = optuna.load_study(study_name=args.study, storage=default_storage(args.results_dir, args.study))
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    wall = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    in_trials = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    training = sum(t.user_attrs.get("seconds", 0.0) for t in trials)
    trained = [t for t in trials if t.user_attrs.get("outcome") in TRAINED]
    # studies from before pruned trials recorded "seconds": count their whole duration as training
    training += sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trained if "seconds" not in t.user_attrs)
    overhead = wall - training
    print(f"study {args.study}: {len(trials)} finished trials, outcomes {count_outcomes(trials)}")
    print(f"wall {wall:.1f} s (inside trials {in_trials:.1f} s); training+validation {training:.1f} s; "
          f"everything else {overhead:.1f} s = {100 * overhead / wall:.2f}% of wall time, "
          f"{overhead / max(len(trained), 1):.3f} s per trained trial")
    print(f"over-budget share per 20 proposals: {[round(x, 2) for x in over_budget_fraction(study, 20)]}")
    per_trained = wall / max(len(trained), 1)
    print(f"{wall / 60:.1f} min for {len(trained)} trained -> ~{per_trained * args.target / 60:.0f} min for {args.target} "
          f"(extrapolated linearly from this run)")


if __name__ == "__main__":
    main()
