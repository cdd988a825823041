"""Analytic counting vs building the model and summing numel, side by side; and `nas space` speed.

Run: python benchmarks/bench_count.py
Goals (issue 2): count_params >= 1000x faster than build+numel; >= 100,000 candidates/s in `nas space`.
"""

from __future__ import annotations

import time
from pathlib import Path

from nas import Arch, build_model, count_params
from nas.arch.space import load_space
from nas.arch.survey import survey

ROOT = Path(__file__).resolve().parents[1]
ARCHS = {
    "resnet18": Arch(blocks=(2, 2, 2, 2), channels=(64, 128, 256, 512)),
    "resnet-[5,4,3]": Arch(blocks=(5, 4, 3), channels=(64, 128, 256)),
    "se-[4,4,3]": Arch(blocks=(4, 4, 3), channels=(64, 128, 256), se_ratio=16),
    "resnet12-narrow": Arch(blocks=(2, 2, 2), channels=(16, 32, 64)),
    "tiny-[1,1]x[8,16]": Arch(blocks=(1, 1), channels=(8, 16)),
}


def per_call(fn, min_seconds: float = 0.5) -> float:
    fn()  # warm-up
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        fn()
        n += 1
    return elapsed / n


def main() -> None:
    print(f"{'architecture':20s} {'params':>12s} {'count_params':>14s} {'build+numel':>14s} {'speed-up':>10s}")
    for name, arch in ARCHS.items():
        analytic = per_call(lambda: count_params(arch))
        torch_way = per_call(lambda: sum(p.numel() for p in build_model(arch).parameters()))
        print(f"{name:20s} {count_params(arch):12,d} {analytic * 1e6:11.1f} us {torch_way * 1e3:11.2f} ms {torch_way / analytic:9,.0f}x")
    for space_file, kwargs in (("tiny.yaml", {}), ("default.yaml", {"samples": 1_000_000})):
        s = survey(load_space(ROOT / "search_spaces" / space_file), **kwargs)
        print(f"nas space {space_file:13s}: {s.method:7s} {s.evaluated:>9,d} candidates in {s.seconds:.3f} s = {s.rate:,.0f}/s")


if __name__ == "__main__":
    main()
