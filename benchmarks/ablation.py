"""Each of airbench's tricks, turned off one at a time: its effect on test accuracy at a fixed epoch count.

The network is examples/airbench94.json, the recipe --protocol airbench at --epochs (fewer than its 10, so the
table fits a CPU afternoon: every run trains on the whole training split and is scored once on the test
split). Test-time augmentation needs no run of its own: every trained network is scored with none, flip,
and flip + translate TTA. One seed per row: differences of a few tenths of a point are within noise.

    python benchmarks/ablation.py --epochs 3 --data ../shared/data/cifar10-png.tar.gz --out results/ablation.json

Timings in the table are wall seconds on this machine: name the load beside them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nas import Arch, build_model
from nas.engine.augment import channel_stats
from nas.engine.data import load_split
from nas.engine.recipe import protocol
from nas.engine.train import evaluate, train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10-png.tar.gz"
OFF = {  # trick: the recipe overrides that turn it off
    "none (full recipe)": {},
    "whitening stem": {"whiten": False},
    "dirac init": {"init": "kaiming"},
    "frozen BN scales, 64x BN-bias lr": {"bn_weight_frozen": False, "bias_lr_scale": 1.0},
    "lookahead EMA": {"lookahead": False},
    "alternating flip": {"alternate_flip": False},
    "label smoothing 0.2": {"label_smoothing": 0.0},
    "BN momentum 0.4": {"bn_momentum": 0.1},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=Path, default=ROOT / "examples" / "airbench94.json")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="comma-separated row names to run (default: all)")
    ap.add_argument("--train-subset", type=int, default=0, help="train on this many images (a quick check; 0 = all)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", type=Path, default=Path("results/ablation.json"))
    args = ap.parse_args()
    arch = Arch.from_dict(json.loads(args.arch.read_text())["arch"])
    train_set, test_set = load_split(args.data, "train"), load_split(args.data, "test")
    stats, device = channel_stats(train_set), torch.device("cpu")
    rows = []
    for name, off in OFF.items():
        if args.only and name not in args.only.split(","):
            continue
        r = protocol("airbench").updated({"epochs": args.epochs, "seed": args.seed, "train_subset": args.train_subset,
                                          **off})
        model = build_model(arch, r.init, r.seed)
        started = time.perf_counter()
        result = train(model, r, train_set, None, device)
        seconds = time.perf_counter() - started
        accs = {level: evaluate(model, test_set, device, tta=level, stats=stats).acc for level in (0, 1, 2)}
        rows.append({"off": name, "overrides": off, "test_acc_no_tta": accs[0], "test_acc_flip_tta": accs[1],
                     "test_acc_flip_translate_tta": accs[2], "train_seconds": round(seconds, 1),
                     "images_per_s": round(result.images_per_s, 1), "precision": result.precision})
        print(json.dumps(rows[-1]), flush=True)
    full = next((r for r in rows if not r["overrides"]), None)
    print(f"\n{'turned off':36s} {'no TTA':>8s} {'flip':>8s} {'flip+tr':>8s} {'delta':>7s}  (epochs {args.epochs})")
    for r in rows:
        delta = "" if full is None else f"{100 * (r['test_acc_flip_translate_tta'] - full['test_acc_flip_translate_tta']):+.2f}"
        print(f"{r['off']:36s} {r['test_acc_no_tta']:8.2%} {r['test_acc_flip_tta']:8.2%} "
              f"{r['test_acc_flip_translate_tta']:8.2%} {delta:>7s}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"arch": arch.to_dict(), "epochs": args.epochs, "seed": args.seed,
                                    "data": args.data, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
