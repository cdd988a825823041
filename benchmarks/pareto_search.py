"""Does searching the front find a better front? A multi-objective search against the post-hoc front of a
single-objective one, same trials, same fidelity, same seed, side by side in one run.

Both searches run through `nas.Study.search` without the final rung, so both fronts are of short-schedule
validation scores. The single-objective search prunes (its default); the multi-objective one cannot (Optuna
prunes no multi-objective study), so it trains every trial to the end: the wall seconds say what that costs.
Hypervolume: the share of the box [10%, 100%] accuracy x [0, bound] cost that a front dominates (nas.record).

Run: python benchmarks/pareto_search.py --data ../shared/data/cifar10-png.tar.gz [--trials 50]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import optuna

from nas import record
from nas.api import Study
from nas.bundled import default_space

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--budget", default="5e6")
    ap.add_argument("--objectives", default="accuracy,params", help="of the multi-objective search")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-subset", type=int, default=2000)
    ap.add_argument("--val-subset", type=int, default=1000)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "pareto")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    fidelity = {"epochs": args.epochs, "train_subset": args.train_subset, "val_subset": args.val_subset,
                "width": args.width}
    rows = []
    for name, objectives in (("single-objective (accuracy)", "accuracy"), (f"multi-objective ({args.objectives})",
                                                                          args.objectives)):
        study = Study(f"{'mo' if ',' in objectives else 'so'}-{args.trials}-s{args.seed}", args.out)
        start = time.perf_counter()
        result = study.search(args.budget, args.trials, space=default_space(), data=args.data, confirm=False,
                              fidelity=fidelity, objectives=objectives, seed=args.seed)
        seconds = time.perf_counter() - start
        rows.append(summary(name, result.study, seconds))
        print(json.dumps(rows[-1]), flush=True)
    table(rows, args)
    (args.out / f"pareto-{args.trials}-s{args.seed}.json").write_text(json.dumps(rows, indent=2))


def summary(name: str, study: optuna.Study, seconds: float) -> dict:
    rs = [r for r in record.records(study) if r.finished]
    return {"search": name, "trained": record.trained(study.get_trials(deepcopy=False)), "complete": len(rs),
            "seconds": round(seconds, 1), "budget": study.user_attrs[record.STUDY_BUDGET],
            "front": [(r.number, r.params, r.macs, round(r.short_acc, 4)) for r in record.front(rs)],
            "points": [(r.params, r.macs, r.short_acc) for r in rs]}


def table(rows: list[dict], args: argparse.Namespace) -> None:
    """One table; hypervolume against MACs uses one bound for both searches: the largest MACs either trained."""
    macs_bound = max(m for r in rows for _, m, _ in r["points"])
    print(f"\n{args.trials} trials each, fidelity {args.epochs} epochs x {args.train_subset:,} images, width "
          f"x{args.width:g}, {args.val_subset:,} validation images, seed {args.seed}; hypervolume over [10%, 100%] "
          f"accuracy x [0, budget] parameters (or [0, {macs_bound:,}] MACs)")
    print(f"{'search':<44} {'trained':>7} {'complete':>8} {'seconds':>8} {'front':>5} {'HV params':>9} {'HV MACs':>8}")
    for r in rows:
        r["hv_params"] = record.hypervolume(((p / r["budget"], a) for p, _, a in r["points"]), floor=0.1)
        r["hv_macs"] = record.hypervolume(((m / macs_bound, a) for _, m, a in r["points"]), floor=0.1)
        print(f"{r['search']:<44} {r['trained']:>7} {r['complete']:>8} {r['seconds']:>8.0f} {len(r['front']):>5} "
              f"{r['hv_params']:>9.4f} {r['hv_macs']:>8.4f}")


if __name__ == "__main__":
    main()
