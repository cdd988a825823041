"""Exact analytic parameter and MAC counts, pure Python, no torch.

Parameters are what `sum(p.numel() for p in model.parameters())` sees (BatchNorm weight and
bias, not running statistics). MACs are the multiply-accumulates of convolutions and linear
layers in one forward pass of one image, which is what torch's FlopCounterMode counts
(FLOPs / 2); BN, ReLU, pooling and additions are not counted.

The cost functions take plain ints, or NumPy integer arrays of the same shape for any of the
per-layer knobs, so `nas space` can count millions of candidates with the very same formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from nas.arch import BOTTLENECK_DIVISOR, Arch

Int = Any  # int, or a NumPy integer array broadcast over candidates


def _conv(c_in: Int, c_out: Int, k: Int, groups: int = 1) -> Int:
    return c_out * (c_in // groups) * k * k


def _se(c: Int, ratio: int) -> tuple[Int, Int]:
    """Squeeze-excitation: Linear(c -> c//r) + ReLU + Linear(c//r -> c), both with bias."""
    if not ratio:
        return 0, 0
    hidden = c // ratio
    return 2 * c * hidden + hidden + c, 2 * c * hidden


def block_cost(c_in: Int, c_out: Int, kernel: Int, skip: Int, s_in: int, s_out: int,
               projection: bool, block: str, se_ratio: int, groups: int) -> tuple[Int, Int]:
    """(params, macs) of one residual block; `projection` adds the conv(K)+BN shortcut."""
    se_p, se_m = _se(c_out, se_ratio)
    params, macs = se_p, se_m
    if block == "basic":
        convs = [(_conv(c_in, c_out, kernel, groups), s_out), (_conv(c_out, c_out, kernel, groups), s_out)]
        params = params + 4 * c_out  # two BNs
    else:  # bottleneck: 1x1 reduce at input resolution, KxK (strided, grouped), 1x1 expand
        mid = c_out // BOTTLENECK_DIVISOR
        convs = [(_conv(c_in, mid, 1), s_in), (_conv(mid, mid, kernel, groups), s_out), (_conv(mid, c_out, 1), s_out)]
        params = params + 4 * mid + 2 * c_out
    if projection:
        convs.append((_conv(c_in, c_out, skip), s_out))
        params = params + 2 * c_out
    for p, s in convs:  # not `+=`: NumPy grids of different shapes must broadcast, not update in place
        params = params + p
        macs = macs + p * s * s
    return params, macs


@dataclass(frozen=True)
class Row:
    """One line of the per-layer breakdown shown by `nas count`."""

    name: str
    params: int
    macs: int
    output: str  # e.g. "64x32x32"


def _rows(channels: Sequence[Int], blocks: Sequence[Int], kernels: Sequence[Int], skips: Sequence[Int],
          pool: Int, *, sizes: Sequence[int], block: str, se_ratio: int, groups: int,
          num_classes: int, in_channels: int) -> list[tuple[str, Int, Int]]:
    """The cost of every stage; the one place the network's structure is spelled out for counting."""
    stem = _conv(in_channels, channels[0], 3)
    rows = [("stem", stem + 2 * channels[0], stem * sizes[0] ** 2)]
    for i, (c_out, b, k, sk) in enumerate(zip(channels, blocks, kernels, skips)):
        c_in, s_in = (channels[i - 1], sizes[i - 1]) if i else (c_out, sizes[0])
        s = sizes[i]
        first = block_cost(c_in, c_out, k, sk, s_in, s, Arch.skip_used(i), block, se_ratio, groups)
        rest = block_cost(c_out, c_out, k, sk, s, s, False, block, se_ratio, groups)
        rows.append((f"layer{i + 1}", first[0] + (b - 1) * rest[0], first[1] + (b - 1) * rest[1]))
    features = channels[-1] * (sizes[-1] // pool) ** 2
    rows.append(("head", features * num_classes + num_classes, features * num_classes))
    return rows


def _arch_rows(arch: Arch) -> list[tuple[str, Int, Int]]:
    return _rows(arch.channels, arch.blocks, arch.kernels, arch.skip_kernels, arch.pool_size,
                 sizes=arch.feature_sizes, block=arch.block, se_ratio=arch.se_ratio, groups=arch.groups,
                 num_classes=arch.num_classes, in_channels=arch.in_channels)


def count_params(arch: Arch) -> int:
    """Trainable parameters of `build_model(arch)`, exactly, in microseconds."""
    return sum(r[1] for r in _arch_rows(arch))


def count_macs(arch: Arch) -> int:
    """Multiply-accumulates of one forward pass of one image (conv + linear)."""
    return sum(r[2] for r in _arch_rows(arch))


def breakdown(arch: Arch) -> list[Row]:
    """Per-stage parameters and MACs, for display; sums to count_params / count_macs."""
    shapes = [f"{arch.channels[0]}x{arch.input_size}x{arch.input_size}"]
    shapes += [f"{c}x{s}x{s}" for c, s in zip(arch.channels, arch.feature_sizes)]
    shapes.append(str(arch.num_classes))
    return [Row(n, int(p), int(m), o) for (n, p, m), o in zip(_arch_rows(arch), shapes)]


def count_many(channels: Sequence[Int], blocks: Sequence[Int], kernels: Sequence[Int], skips: Sequence[Int],
               pool: Int, *, sizes: Sequence[int], block: str, se_ratio: int, groups: int,
               num_classes: int, in_channels: int) -> tuple[Int, Int]:
    """(params, macs) for arrays of candidates sharing N and block options: the same formulas
    as count_params, vectorised by passing NumPy arrays as the per-layer knobs."""
    rows = _rows(channels, blocks, kernels, skips, pool, sizes=sizes, block=block, se_ratio=se_ratio,
                 groups=groups, num_classes=num_classes, in_channels=in_channels)
    return sum(r[1] for r in rows), sum(r[2] for r in rows)
