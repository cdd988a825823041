"""The whole network as stages of operations: stem, one stage per layer (each block from its family's
record in nas/arch/families.py), head. nas/arch/counting.py sums it, nas/arch/model.py builds it.
"""

from __future__ import annotations

from typing import Sequence

from nas.arch.architecture import Arch
from nas.arch.families import FAMILIES, inner_width, layer_sizes, make_block
from nas.arch.ops import (
    PATCH,
    SE,
    Act,
    Block,
    Conv,
    Int,
    Linear,
    Norm,
    Op,
    Options,
    Pool,
    Site,
    Stage,
)


# -- the network ------------------------------------------------------------------------------------
def stages(channels: Sequence[Int], blocks: Sequence[Int], kernels: Sequence[Int], skips: Sequence[Int],
           pool: int | None, *, input_size: int, options: Options, num_classes: int, in_channels: int) -> list[Stage]:
    """Stem, one stage per layer, head: the whole network, for the counter and the builder. pool=None is global."""
    o, preact = options, FAMILIES[options.block].preact
    stem_side, sizes = layer_sizes(len(blocks), input_size, o)
    pool = sizes[-1] if pool is None else pool
    stem_w = channels[0] if o.stem_channels is None else o.stem_channels
    stem: tuple[Op, ...]
    if o.stem == "patch":  # airbench's whitening stem: no BN, so the whitened patches reach the first group
        stem = (Conv(in_channels, stem_w, PATCH, stem_side, bias=True, valid=True), Act(o.activation))
    else:
        stem = (Conv(in_channels, stem_w, 3, stem_side),)
        if not preact:  # pre-activation blocks normalise their input themselves
            stem += (Norm(stem_w), Act(o.activation))
    if o.se_ratio and o.se_placement == "stem":
        stem += (SE(stem_w, o.se_ratio),)
    rows = [Stage("stem", Block(stem), None, 1, (stem_w, stem_side))]
    c_in = stem_w
    for i, (c, b, k, sk) in enumerate(zip(channels, blocks, kernels, skips)):
        inner = inner_width(c, channels[0], o)
        first = make_block(Site(c_in, c, k, sk, sizes[i - 1] if i else stem_side, sizes[i], True, i > 0, inner), o)
        rest = make_block(Site(c, c, k, sk, sizes[i], sizes[i], False, False, inner), o)
        rows.append(Stage(f"layer{i + 1}", first, rest, b, (c, sizes[i])))
        c_in = c
    final = (Norm(c_in), Act(o.activation)) if preact else ()
    head = (*final, Pool(pool, o.pooling), Linear(c_in * (sizes[-1] // pool) ** 2, num_classes, o.head_bias, o.head_scale))
    rows.append(Stage("head", Block(head), None, 1, (num_classes, 1)))
    return rows


def arch_stages(arch: Arch) -> list[Stage]:
    return stages(arch.channels, arch.blocks, arch.kernels, arch.skip_kernels, arch.pool_size,
                  input_size=arch.input_size, options=arch.options, num_classes=arch.num_classes,
                  in_channels=arch.in_channels)
