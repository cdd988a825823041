"""bf16 against fp32 on one CPU: the same network and recipe, two seeds each, side by side in one run.

bf16 autocast is what `precision: auto` picks on CPUs with native bf16 kernels (nas/engine/precision.py); this
says whether it costs accuracy: the bf16 runs should end within the spread of the fp32 runs' seeds.
Every run trains on the whole training split and is scored once on the test split.

    python benchmarks/precision_parity.py --blocks 1,1,1,1 --channels 32,64,128,256 --epochs 4 \\
        --data ../shared/data/cifar10-png.tar.gz --out results/precision_parity.json

Runs alternate precisions (fp32 seed 0, bf16 seed 0, fp32 seed 1, ...) so background load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

from nas import Arch
from nas.api import train_architecture
from nas.engine.precision import cpu_flags, cpu_runs_bf16

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-png.tar.gz"


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        name = next(ln.partition(":")[2].strip() for ln in text.splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    bf16 = sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx"))
    return f"{name} ({' '.join(bf16) or 'no bf16 flags'})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", default="1,1,1,1")
    ap.add_argument("--channels", default="32,64,128,256")
    ap.add_argument("--arch", type=Path, help="an architecture file instead of --blocks/--channels")
    ap.add_argument("--protocol", default="fast")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", type=Path, default=Path("results/precision_parity.json"))
    args = ap.parse_args()
    if args.arch:
        arch = Arch.from_json(args.arch.read_text())
    else:
        arch = Arch(blocks=tuple(map(int, args.blocks.split(","))), channels=tuple(map(int, args.channels.split(","))))
    if not cpu_runs_bf16():
        print("note: this CPU has no native bf16 kernels (no amx_bf16 / avx512_bf16): bf16 runs emulated and slow")
    rows = []
    for seed in range(args.seeds):
        for precision in ("fp32", "bf16"):
            s = train_architecture(arch, args.data, val_size=0, test=True, device="cpu", protocol=args.protocol,
                                   epochs=args.epochs, seed=seed, precision=precision, progress=True)
            rows.append({"precision": s["precision"], "seed": seed, "test_acc": s.get("test_acc"),
                         "seconds": round(s["seconds"], 1), "images_per_s": round(s["images_per_s"], 1)})
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for precision in ("fp32", "bf16"):
        accs = [r["test_acc"] for r in rows if r["precision"] == precision and r["test_acc"] is not None]
        rates = [r["images_per_s"] for r in rows if r["precision"] == precision]
        summary[precision] = {"test_acc_mean": statistics.mean(accs), "test_acc_min": min(accs),
                              "test_acc_max": max(accs), "images_per_s_median": statistics.median(rates)}
        print(f"{precision}: test {statistics.mean(accs):.2%} (runs {min(accs):.2%}..{max(accs):.2%}), "
              f"{statistics.median(rates):,.0f} images/s")
    f32, b16 = summary["fp32"], summary["bf16"]
    overlap = b16["test_acc_min"] <= f32["test_acc_max"] and f32["test_acc_min"] <= b16["test_acc_max"]
    print(f"bf16 {'within' if overlap else 'OUTSIDE'} the fp32 seeds' spread; bf16 trains "
          f"{b16['images_per_s_median'] / f32['images_per_s_median']:.2f}x as fast ({cpu_name()})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"arch": arch.to_dict(), "protocol": args.protocol, "epochs": args.epochs,
                                    "data": args.data, "cpu": cpu_name(), "runs": rows, "summary": summary,
                                    "bf16_within_fp32_spread": overlap}, indent=1))


if __name__ == "__main__":
    main()
