"""Epochs and seconds to 90/92/93/94% test accuracy, for the airbench-class network and the seed designs, in
one table on the device it runs on.

Each network trains on the whole training split with its protocol (airbench94: --protocol airbench; the
seed designs: --protocol fast), scored on the test split after every epoch with the protocol's TTA. Those
per-epoch test scores exist for this table only: nothing is selected on them, and nas itself never reads
the test split before a run ends. Seconds are wall seconds since the run started, evaluations included.

    python benchmarks/time_to_accuracy.py --data ../shared/data/cifar10-png.tar.gz \\
        --networks airbench94:airbench,resnet10:fast --out results/time_to_accuracy.json

On a 2-core CPU the seed designs take hours each (600M-800M MACs per image): run them on a GPU
(--device cuda), or pass only airbench94 here. Name the device and the load beside any figure you report.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from nas import Arch, build_model, count_macs, count_params
from nas.engine.data import load_split
from nas.engine.recipe import protocol
from nas.engine.train import select_device, train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10-png.tar.gz"
THRESHOLDS = (0.90, 0.92, 0.93, 0.94)
NETWORKS = "airbench94:airbench,mini-project:fast,resnet10:fast,residual-network-design:fast,efficient-resnet-se:fast"


def first_reaching(history, threshold: float) -> tuple[float, float] | None:
    """(epochs, seconds) of the first evaluation at or above `threshold`, or None."""
    return next(((p.epoch, p.seconds) for p in history if p.val_acc >= threshold), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", default=NETWORKS, help="example:protocol pairs (examples/NAME.json)")
    ap.add_argument("--epochs", type=int, help="override every protocol's epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", type=Path, default=Path("results/time_to_accuracy.json"))
    args = ap.parse_args()
    device = select_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    train_set, test_set = load_split(args.data, "train"), load_split(args.data, "test")
    rows = []
    for item in args.networks.split(","):
        name, proto = item.split(":")
        arch = Arch.from_dict(json.loads((ROOT / "examples" / f"{name}.json").read_text())["arch"])
        r = protocol(proto).updated({"seed": args.seed, **({"epochs": args.epochs} if args.epochs else {})})
        result = train(build_model(arch, r.init, r.seed), r, train_set, test_set, device, progress=True)
        row = {"network": name, "protocol": proto, "params": count_params(arch), "macs": count_macs(arch),
               "epochs": r.epochs, "final_test_acc": result.val_acc, "images_per_s": round(result.images_per_s, 1),
               "seconds": round(result.seconds, 1), "precision": result.precision, "device": where,
               "curve": [[p.epoch, p.val_acc, round(p.seconds, 1)] for p in result.history]}
        for t in THRESHOLDS:
            hit = first_reaching(result.history, t)
            row[f"to_{round(t * 100)}"] = None if hit is None else {"epochs": hit[0], "seconds": round(hit[1], 1)}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
    print(f"\non {where} ({device}):")
    print(f"{'network':26s} {'params':>10s} {'img/s':>7s} {'final':>7s} " +
          " ".join(f"{'to ' + str(round(t * 100)) + '%':>14s}" for t in THRESHOLDS))
    for row in rows:
        hits = [row[f"to_{round(t * 100)}"] for t in THRESHOLDS]
        cells = ["-" if h is None else f"{h['epochs']:g} ep {h['seconds']:.0f} s" for h in hits]
        print(f"{row['network']:26s} {row['params']:>10,} {row['images_per_s']:>7,.0f} {row['final_test_acc']:>7.2%} " +
              " ".join(f"{c:>14s}" for c in cells))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": where, "data": args.data, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
