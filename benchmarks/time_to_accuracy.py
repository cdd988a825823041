"""Test accuracy against wall seconds: the fast protocol against the reference recipe, same network, same
data, same wall budget, side by side in one run.

Each protocol keeps its own recipe but gets the epochs that fit the budget at the images/s measured on
this machine first (the reference's cosine schedule then spans those epochs, as a user who shortens it
would run it). Every run trains on the whole training split and is scored once on the test split.

    python benchmarks/time_to_accuracy.py --blocks 1,1,1 --channels 48,128,256 --budget-s 1800 \\
        --data ../shared/data/cifar10-png.tar.gz --out results/time_to_accuracy.json

Budgets are wall seconds on an idle machine: name the load beside any figure you report.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nas import Arch, build_model, count_params
from nas.api import train_architecture
from nas.data import load_split
from nas.recipe import protocol
from nas.train import train


def images_per_s(arch: Arch, data: str, recipe_name: str, steps: int = 8) -> float:
    """Training throughput of `arch` under a protocol's recipe, from a few steps after one warm-up epoch."""
    train_set = load_split(data, "train")
    r = protocol(recipe_name)
    probe = r.updated({"epochs": 1, "train_subset": r.batch_size * steps, "tta": False, "whiten": False})
    train(build_model(arch), probe, train_set, None, torch.device("cpu"))  # warm-up (allocator, kernels)
    return train(build_model(arch), probe, train_set, None, torch.device("cpu")).images_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", default="1,1,1")
    ap.add_argument("--channels", default="48,128,256")
    ap.add_argument("--budget-s", type=float, default=1800.0, help="wall seconds per protocol")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-png.tar.gz"))
    ap.add_argument("--protocols", default="fast,reference")
    ap.add_argument("--out", type=Path, default=Path("results/time_to_accuracy.json"))
    args = ap.parse_args()
    arch = Arch(blocks=tuple(map(int, args.blocks.split(","))), channels=tuple(map(int, args.channels.split(","))))
    n_train = len(load_split(args.data, "train"))
    rows = []
    for name in args.protocols.split(","):
        rate = images_per_s(arch, args.data, name)
        epochs = max(1, int(0.9 * args.budget_s * rate / n_train))  # 10% for evaluation and set-up
        started = time.perf_counter()
        s = train_architecture(arch, args.data, val_size=0, test=True, device="cpu", protocol=name, epochs=epochs,
                               progress=True)
        rows.append({"protocol": name, "epochs": epochs, "probe_images_per_s": round(rate, 1),
                     "test_acc": s.get("test_acc"), "seconds": round(time.perf_counter() - started, 1),
                     "train_images_per_s": round(s["images_per_s"], 1), "status": s["status"]})
        print(json.dumps(rows[-1]), flush=True)
    summary = {"arch": arch.describe(), "params": count_params(arch), "budget_s": args.budget_s,
               "data": args.data, "threads": torch.get_num_threads(), "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"\n{arch.describe()} ({count_params(arch):,} params), {args.budget_s:.0f} s of wall time each:")
    for r in rows:
        print(f"  {r['protocol']:>9}: {r['epochs']:3d} epochs, test acc {r['test_acc'] or 0:.2%} in {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
