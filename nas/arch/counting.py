"""Exact analytic parameter and MAC counts, pure Python, no torch.

Parameters are what `sum(p.numel() for p in model.parameters())` sees (BatchNorm weight and
bias, not running statistics). MACs are the multiply-accumulates of convolutions and linear
layers in one forward pass of one image, which is what torch's FlopCounterMode counts
(FLOPs / 2); BN, ReLU, pooling, additions and concatenations are not counted.

The network's structure comes from nas/arch/layout.py, which the builder reads too; this module only
knows what one operation costs. The per-layer knobs may be NumPy arrays of one shape (whole numbers;
nas.arch.survey passes float64, which cannot overflow), so `nas space` counts millions of candidates of
every block family with the very same formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from nas.arch import Arch
from nas.arch.layout import arch_stages, stages
from nas.arch.ops import SE, Block, Conv, Int, Linear, Norm, Op, Options, Res2, Stage


def _conv(c_in: Int, c_out: Int, k: Int, groups: Int) -> Int:
    return c_out * (c_in // groups) * k * k


def _conv_cost(op: Conv) -> tuple[Int, Int]:
    p = _conv(op.c_in, op.c_out, op.k, op.groups)
    return p + op.bias * op.c_out, p * op.size * op.size


def _se_cost(op: SE) -> tuple[Int, Int]:
    hidden = op.c // op.ratio
    return 2 * op.c * hidden + hidden + op.c, 2 * op.c * hidden


def _res2_cost(op: Res2) -> tuple[Int, Int]:
    p = _conv(op.width, op.width, op.k, op.groups)
    return (op.scale - 1) * (p + 2 * op.width), (op.scale - 1) * p * op.size * op.size


COSTS = {Conv: _conv_cost, Norm: lambda op: (2 * op.c, 0), SE: _se_cost, Res2: _res2_cost,
         Linear: lambda op: (op.c_in * op.c_out + op.bias * op.c_out, op.c_in * op.c_out)}  # the rest cost nothing


def _ops_cost(ops: tuple[Op, ...]) -> tuple[Int, Int]:
    params, macs = 0, 0
    for op in ops:
        cost = COSTS.get(type(op))
        if cost is not None:  # not `+=`: NumPy grids of different shapes must broadcast, not update in place
            p, m = cost(op)
            params, macs = params + p, macs + m
    return params, macs


@lru_cache(maxsize=16384)
def _cached_cost(block: Block) -> tuple[int, int]:
    return _block_cost(block)


def block_cost(block: Block) -> tuple[Int, Int]:
    """(params, macs) of one block; memoised like nas.arch.layout.make_block (NumPy arrays cannot be hashed)."""
    try:
        return _cached_cost(block)
    except TypeError:
        return _block_cost(block)


def _block_cost(block: Block) -> tuple[Int, Int]:
    """The projection counts where `project` is true (a 0/1 mask over candidates)."""
    params, macs = _ops_cost(block.pre + block.body + block.post)
    p, m = _ops_cost(block.shortcut)
    return params + block.project * p, macs + block.project * m


def stage_cost(stage: Stage) -> tuple[Int, Int]:
    params, macs = block_cost(stage.first)
    if stage.rest is not None:
        p, m = block_cost(stage.rest)
        params, macs = params + (stage.count - 1) * p, macs + (stage.count - 1) * m
    return params, macs


@dataclass(frozen=True)
class Row:
    """One line of the per-layer breakdown shown by `nas count`."""

    name: str
    params: int
    macs: int
    output: str  # e.g. "64x32x32"


def count_params(arch: Arch) -> int:
    """Trainable parameters of `build_model(arch)`, exactly, in microseconds."""
    return sum(stage_cost(s)[0] for s in arch_stages(arch))


def count_macs(arch: Arch) -> int:
    """Multiply-accumulates of one forward pass of one image (conv + linear)."""
    return sum(stage_cost(s)[1] for s in arch_stages(arch))


def breakdown(arch: Arch) -> list[Row]:
    """Per-stage parameters and MACs, for display; sums to count_params / count_macs."""
    rows = []
    for s in arch_stages(arch):
        params, macs = stage_cost(s)
        c, side = s.output
        rows.append(Row(s.name, int(params), int(macs), f"{c}x{side}x{side}" if s.name != "head" else str(c)))
    return rows


def count_many(channels: Sequence[Int], blocks: Sequence[Int], kernels: Sequence[Int], skips: Sequence[Int],
               pool: int | None, *, input_size: int, options: Options, num_classes: int,
               in_channels: int) -> tuple[Int, Int]:
    """(params, macs) for arrays of candidates sharing N and the network-wide options: the same
    layout and costs as count_params, vectorised by passing NumPy arrays as the per-layer knobs."""
    costs = [stage_cost(s) for s in stages(channels, blocks, kernels, skips, pool, input_size=input_size,
                                           options=options, num_classes=num_classes, in_channels=in_channels)]
    return sum(c[0] for c in costs), sum(c[1] for c in costs)
