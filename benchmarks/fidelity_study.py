"""How well does the default CPU search fidelity rank architectures? Kendall tau between the
short-schedule score and a training LONGER_BY times longer, on a panel of in-budget candidates.

Run: python benchmarks/fidelity_study.py [--panel 10] [--longer-by 5] [--data PATH] [--recipes search,fast]
Prints one line per architecture and the rank correlations (issue 4 asks tau >= 0.6). With two recipes,
each trains the same short and long schedules (same images, epochs, width, initial weights), and every
short score is ranked against every long one: does the fast protocol's short score predict better?
With --study NAME --top K, a search's K best join the panel: does their lead over the seed designs
at the search's fidelity hold at the longer training? (--panel 0 runs only them.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from nas import Arch, count_params
from nas.arch.model import build_model
from nas.artifacts import default_storage
from nas.engine.recipe import PROTOCOLS
from nas.engine.train import train
from nas.report.tables import leaderboard, rank_correlation, trials_frame
from nas.search import (
    CONFIRM_LONGER_BY,
    CPU_FIDELITY,
    SEARCH_RECIPE,
    SearchConfig,
    load_search_data,
    longer,
)

ROOT = Path(__file__).resolve().parents[1]


PANEL = [  # the reports' designs and variants they tried (seed-designs.md), all under 5M parameters
    Arch(blocks=(5, 4, 3), channels=(64, 128, 256)),
    Arch(blocks=(2, 1, 1, 1), channels=(64, 128, 256, 512)),
    Arch(blocks=(1, 1, 1, 1), channels=(64, 128, 256, 512)),
    Arch(blocks=(4, 4, 3), channels=(64, 128, 256), se_ratio=16),
    Arch(blocks=(2, 2, 2), channels=(16, 32, 64)),
    Arch(blocks=(2, 2, 2, 1), channels=(16, 32, 64, 512)),
    Arch(blocks=(2, 3, 3, 1, 1), channels=(16, 32, 64, 128, 512)),
    Arch(blocks=(3, 3, 3), channels=(32, 64, 128), kernels=5),
    Arch(blocks=(1, 1, 1), channels=(32, 64, 128)),
    Arch(blocks=(2, 2, 2, 2), channels=(32, 64, 128, 256), block="bottleneck"),
    Arch(blocks=(1, 1), channels=(16, 32)),
    Arch(blocks=(2, 2, 2), channels=(48, 96, 192), skip_kernels=3),
]


RECIPES = {"search": SEARCH_RECIPE, "fast": PROTOCOLS["fast"]}  # what trials train with today; the fast protocol


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--panel", type=int, default=len(PANEL))
    ap.add_argument("--longer-by", type=int, default=CONFIRM_LONGER_BY)
    ap.add_argument("--budget", type=float, default=5e6)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10-png.tar.gz"))
    ap.add_argument("--study", help="also train the K best trials of this study (results/STUDY/study.db)")
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--recipes", default="search", help=f"comma-separated, side by side: {', '.join(RECIPES)}")
    ap.add_argument("--out", default=str(ROOT / "results" / "fidelity_study.json"))
    args = ap.parse_args()
    names = args.recipes.split(",")
    if unknown := [n for n in names if n not in RECIPES]:
        ap.error(f"--recipes: {', '.join(unknown)} unknown; choose from {', '.join(RECIPES)}")
    panel = PANEL[:args.panel]
    if args.study:
        study = optuna.load_study(study_name=args.study, storage=default_storage(ROOT / "results", args.study))
        panel += [Arch.from_dict(a) for a in leaderboard(trials_frame(study), top=args.top)["arch_json"].map(json.loads)]
    fid = CPU_FIDELITY
    cfgs = {n: SearchConfig(budget=int(args.budget), trials=1, study="fidelity", storage="sqlite://", fidelity=fid,
                            recipe=RECIPES[n]) for n in names}
    data = load_search_data(args.data, cfgs[names[0]])
    schedules = {}  # (recipe, "short" | "long") -> the recipe trained: the same images and epochs for every recipe
    for n, cfg in cfgs.items():
        schedules[n, "short"] = short = cfg.trial_recipe({})
        schedules[n, "long"] = longer(short, args.longer_by, len(data.train))
    short, long = schedules[names[0], "short"], schedules[names[0], "long"]
    long_images = long.train_subset or len(data.train)
    print(f"short: {short.epochs} ep x {short.train_subset} img, width {fid.width}; long: {long.epochs} ep x "
          f"{long_images} img ({long.epochs * long_images / (short.epochs * short.train_subset):.1f}x); "
          f"val {len(data.val)} images; recipes {', '.join(names)}; threads {torch.get_num_threads()}", flush=True)
    rows = []
    for arch in panel:
        r = {"arch": arch.describe(), "params": count_params(arch)}
        for (n, length), recipe in schedules.items():
            t = time.perf_counter()
            model = build_model(arch.scaled(fid.width), recipe.init, recipe.seed)  # the weights a search trial starts from
            res = train(model, recipe, data.train, data.val, torch.device("cpu"))
            key = f"{n}_{length}"
            r[key], r[f"{key}_s"], r[f"{key}_loss_sum"] = res.val_acc, time.perf_counter() - t, res.train_loss_sum
        rows.append(r)
        print(f"{r['params']:>9,} " + "  ".join(f"{k} {r[k]:.3f} ({r[k + '_s']:.0f}s)" for k in map("_".join, schedules))
              + f"  {r['arch']}", flush=True)
    summary = {}
    for n in names:  # each recipe's short score against every recipe's long one: the diagonal is its own fidelity
        for target in names:
            summary[f"tau {n} short vs {target} long"] = rank_correlation([r[f"{n}_short"] for r in rows],
                                                                          [r[f"{target}_long"] for r in rows])[0]
        summary[f"mean {n} short s"] = float(np.mean([r[f"{n}_short_s"] for r in rows]))
    first = names[0]
    summary["tau params alone"] = rank_correlation([r["params"] for r in rows], [r[f"{first}_long"] for r in rows])[0]
    summary["tau summed training loss"] = rank_correlation([-r[f"{first}_short_loss_sum"] for r in rows],
                                                           [r[f"{first}_long"] for r in rows])[0]
    for key, value in summary.items():
        print(f"{key}: {value:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, **summary}, indent=2))


if __name__ == "__main__":
    main()
