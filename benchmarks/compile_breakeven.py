"""Does torch.compile pay for a training run? Eager against compiled, compile time included, side by side.

Each measurement is a fresh process (compiled code is cached in a process and on disk, so a second
compile in one process would look free; the on-disk cache is pointed at an empty folder per process) that
trains the network for n steps through nas.engine.train.train. Two step counts per mode separate the fixed cost
(process-level warm-up, and for compiled runs the compile itself) from the per-step cost:
T(n) = fixed + n * per_step. The break-even is the number of steps after which the compiled run has
caught up: (fixed_compiled - fixed_eager) / (per_step_eager - per_step_compiled), "never" where compiling
does not make a step faster. Reported for the three run lengths nas trains: a search trial (CPU default
fidelity), a final-rung candidate, a retrain.

    python benchmarks/compile_breakeven.py --arch examples/airbench94.json --protocol airbench \\
        --data ../shared/data/cifar10-png.tar.gz

Timings need an otherwise idle machine: name the load beside any figure you report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10-png.tar.gz"


def one(arch_file: str, protocol: str, data: str, steps: int, compiled: bool, batch_size: int) -> float:
    """Seconds of one train() call of `steps` steps (in this process: the caller's subprocess)."""
    import torch

    from nas import Arch, build_model
    from nas.engine.data import load_split
    from nas.engine.recipe import protocol as recipe_protocol
    from nas.engine.train import train

    arch = Arch.from_dict(json.loads(Path(arch_file).read_text()).get("arch") or json.loads(Path(arch_file).read_text()))
    train_set = load_split(data, "train")
    r = recipe_protocol(protocol).updated({"epochs": 1, "batch_size": batch_size, "train_subset": steps * batch_size,
                                           "compile": compiled, "whiten": False, "lookahead": False})
    model = build_model(arch, r.init, 0)
    started = time.perf_counter()
    train(model, r, train_set, None, torch.device("cpu"))
    return time.perf_counter() - started


def measure(args, steps: int, compiled: bool) -> float:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TORCHINDUCTOR_FX_GRAPH_CACHE": "0"}
        out = subprocess.run([sys.executable, __file__, "--one", str(steps), "--compiled", str(int(compiled)),
                              "--arch", args.arch, "--protocol", args.protocol, "--data", args.data,
                              "--batch-size", str(args.batch_size)],
                             env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default=str(ROOT / "examples" / "airbench94.json"))
    ap.add_argument("--protocol", default="airbench")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", default="4,16", help="the two step counts per mode")
    ap.add_argument("--runs", default="trial:39,final-rung:195,retrain:976",
                    help="name:steps of the run lengths to judge (defaults, at batch 512: a CPU-default trial, 4 epochs x "
                         "5,000 images; its final rung, 5x that; a 10-epoch retrain on 50,000 images)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--compiled", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=Path("results/compile_breakeven.json"))
    args = ap.parse_args()
    if args.one is not None:
        print(one(args.arch, args.protocol, args.data, args.one, bool(args.compiled), args.batch_size))
        return
    n1, n2 = map(int, args.steps.split(","))
    fits = {}
    for compiled in (False, True):  # eager first, compiled second, then once more each, alternating
        times = [(measure(args, n1, compiled), measure(args, n2, compiled))]
        per_step = (times[0][1] - times[0][0]) / (n2 - n1)
        fits["compiled" if compiled else "eager"] = {"fixed_s": times[0][0] - n1 * per_step, "per_step_s": per_step,
                                                     "seconds": times[0]}
        print(f"{'compiled' if compiled else 'eager':8s}: {n1} steps {times[0][0]:.1f} s, {n2} steps {times[0][1]:.1f} s"
              f" -> fixed {fits['compiled' if compiled else 'eager']['fixed_s']:.1f} s + {per_step:.3f} s/step",
              flush=True)
    e, c = fits["eager"], fits["compiled"]
    gain = e["per_step_s"] - c["per_step_s"]
    breakeven = (c["fixed_s"] - e["fixed_s"]) / gain if gain > 0 else None
    print(f"compile costs {c['fixed_s'] - e['fixed_s']:.1f} s once and saves {gain * 1000:.0f} ms per step "
          f"({e['per_step_s'] / c['per_step_s']:.2f}x per step): break-even "
          f"{'never' if breakeven is None else f'{breakeven:.0f} steps'} (batch {args.batch_size})")
    verdicts = {}
    for item in args.runs.split(","):
        name, steps = item.split(":")
        eager_s, compiled_s = e["fixed_s"] + int(steps) * e["per_step_s"], c["fixed_s"] + int(steps) * c["per_step_s"]
        verdicts[name] = {"steps": int(steps), "eager_s": round(eager_s, 1), "compiled_s": round(compiled_s, 1),
                          "compile_pays": compiled_s < eager_s}
        print(f"{name:11s} {steps:>5s} steps: eager {eager_s:7.1f} s, compiled {compiled_s:7.1f} s -> "
              f"{'compile' if compiled_s < eager_s else 'eager'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"arch": args.arch, "protocol": args.protocol, "batch_size": args.batch_size,
                                    "fits": fits, "breakeven_steps": breakeven, "runs": verdicts}, indent=1))


if __name__ == "__main__":
    main()
