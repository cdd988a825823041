"""How well does the default CPU search fidelity rank architectures? Kendall tau between the
short-schedule score and a training LONGER_BY times longer, on a panel of in-budget candidates.

Run: python benchmarks/fidelity_study.py [--panel 10] [--longer-by 5] [--data PATH]
Prints one line per architecture and the rank correlations (issue 4 asks tau >= 0.6).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from nas import count_params
from nas.model import build_model
from nas.results import rank_correlation
from nas.search import CPU_FIDELITY, SEARCH_RECIPE, SearchConfig, load_search_data
from nas.space import load_space
from nas.train import train

ROOT = Path(__file__).resolve().parents[1]


def panel(n: int, budget: int, seed: int):
    """n distinct random candidates of the default space within the budget, spread over sizes."""
    space = load_space(ROOT / "search_spaces" / "default.yaml")
    rng = np.random.default_rng(seed)
    found = {}
    while len(found) < n:
        layers = int(rng.choice(space.layers))
        values = {"layers": layers, **{k.name: k.values[rng.integers(len(k.values))] for k in space.arch_knobs(layers)}}
        try:
            arch = space.arch(values)
        except Exception:
            continue
        if count_params(arch) <= budget:
            found[arch.id] = arch
    return list(found.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--panel", type=int, default=10)
    ap.add_argument("--longer-by", type=int, default=5)
    ap.add_argument("--budget", type=float, default=5e6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--out", default=str(ROOT / "results" / "fidelity_study.json"))
    args = ap.parse_args()
    fid = CPU_FIDELITY
    cfg = SearchConfig(budget=int(args.budget), trials=1, study="fidelity", storage="sqlite://", fidelity=fid,
                       recipe=SEARCH_RECIPE)
    data = load_search_data(args.data, cfg)
    short = cfg.trial_recipe({})
    long = dataclasses.replace(short, train_subset=min(len(data.train), fid.train_subset * args.longer_by))
    if long.train_subset < fid.train_subset * args.longer_by:
        long = dataclasses.replace(long, epochs=short.epochs * args.longer_by * fid.train_subset // long.train_subset)
    print(f"short: {short.epochs} ep x {short.train_subset} img, width {fid.width}; long: {long.epochs} ep x "
          f"{long.train_subset} img ({long.epochs * long.train_subset / (short.epochs * short.train_subset):.1f}x); "
          f"val {len(data.val)} images; threads {torch.get_num_threads()}", flush=True)
    rows = []
    for arch in panel(args.panel, int(args.budget), args.seed):
        r = {"arch": arch.describe(), "params": count_params(arch)}
        for name, recipe in (("short", short), ("long", long)):
            t = time.perf_counter()
            res = train(build_model(arch.scaled(fid.width)), recipe, data.train, data.val, torch.device("cpu"))
            r[name], r[f"{name}_s"], r[f"{name}_loss_sum"] = res.val_acc, time.perf_counter() - t, res.train_loss_sum
        rows.append(r)
        print(f"{r['params']:>9,} {r['short']:.3f} ({r['short_s']:.0f}s)  {r['long']:.3f} ({r['long_s']:.0f}s)  {r['arch']}", flush=True)
    tau, rho = rank_correlation([r["short"] for r in rows], [r["long"] for r in rows])
    tau_loss, _ = rank_correlation([-r["short_loss_sum"] for r in rows], [r["long"] for r in rows])
    tau_params, _ = rank_correlation([r["params"] for r in rows], [r["long"] for r in rows])
    print(f"Kendall tau short-vs-long val acc: {tau:.3f} (Spearman {rho:.3f}); summed training loss: {tau_loss:.3f}; "
          f"params alone: {tau_params:.3f}; mean short trial {np.mean([r['short_s'] for r in rows]):.1f}s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "tau": tau, "spearman": rho, "tau_loss": tau_loss,
                                         "tau_params": tau_params}, indent=2))


if __name__ == "__main__":
    main()
