"""The network as a list of plain operations: the one place each block family is spelled out.

nas/counting.py sums these operations' parameters and MACs; nas/model.py builds each one as a torch
module. So the counter and the builder share the structure and can only disagree on what one
operation costs, which the property tests check family by family. The per-layer knobs may be ints or
NumPy integer arrays (one entry per candidate, for `nas space`): nothing here branches on them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple, Sequence

from nas.arch import BOTTLENECK_DIVISOR, FAMILY_FIELDS, Arch, Options

Int = Any  # int, or a NumPy integer array broadcast over candidates


# -- operations (NamedTuples: a count builds hundreds, in microseconds) ---------------------------
class Conv(NamedTuple):
    """conv(k, 'same' padding, no bias); `size` is the output side, for MACs."""

    c_in: Int
    c_out: Int
    k: Int
    size: int
    stride: int = 1
    groups: Int = 1


class Norm(NamedTuple):
    """BatchNorm2d(c): weight and bias are parameters, running statistics are not."""

    c: Int


class Relu(NamedTuple):
    pass


class Drop(NamedTuple):
    """Dropout(p); p = 0 is kept as a placeholder (nn.Identity) where the module layout always had one."""

    p: float


class SE(NamedTuple):
    """Squeeze-excitation: Linear(c -> c // ratio) + ReLU + Linear(c // ratio -> c) + sigmoid gate."""

    c: Int
    ratio: int


class MaxPool(NamedTuple):
    """2x2 max-pool, stride 2, ceil mode (ceil(s / 2), as a stride-2 conv gives): plain nets' downsampling."""


class Res2(NamedTuple):
    """Res2Net's hierarchical split: `scale` splits of `width` channels; splits 1..scale-1 each get a
    conv(k, stride, groups)+BN+ReLU, split i after the first adding the previous conv's output
    (not in a `stage` block, the first of a layer); the last split passes through (avg-pooled 3x3,
    with the stride, in a stage block). The official code's order; the paper numbers splits the other way."""

    width: Int
    scale: int
    k: Int
    size: int
    stride: int
    groups: int
    stage: bool


class Pool(NamedTuple):
    """Average pool of kernel k, then flatten: the head's input."""

    k: int


class Linear(NamedTuple):
    c_in: Int
    c_out: Int


Op = Any  # one of the NamedTuples above
RELU = Relu()


class Block(NamedTuple):
    """pre (on the input), body (the residual branch), shortcut (a projection where `project`, which may be
    an array over candidates; identity otherwise), post (after the addition). `residual=False`: no addition
    at all. A projection reads the pre-activated input, an identity the raw one (Wide ResNet's reference)."""

    body: tuple[Op, ...]
    pre: tuple[Op, ...] = ()
    shortcut: tuple[Op, ...] = ()
    project: Int = False
    post: tuple[Op, ...] = ()
    residual: bool = False


class Stage(NamedTuple):
    """A row of the breakdown: `first`, then `count - 1` copies of `rest`, giving `output` (channels, side)."""

    name: str
    first: Block
    rest: Block | None
    count: Int
    output: tuple[Int, int]


class Site(NamedTuple):
    """Where a block sits: its input and output widths, kernels, sides, and whether it is a layer's first
    (`down`: it also halves the side)."""

    c_in: Int
    c_out: Int
    k: Int
    skip: Int
    s_in: int
    size: int
    first: bool
    down: bool
    inner: Int  # the inner width of bottleneck-type blocks (per split for res2net)


# -- the families ---------------------------------------------------------------------------------
def _se(c: Int, o: Options) -> tuple[Op, ...]:
    return (SE(c, o.se_ratio),) if o.se_in_blocks else ()


def _projection(b: Site, norm: bool) -> dict[str, Any]:
    """The shortcut conv(K_i, stride) (+ BN), present where the block changes width or side."""
    conv = Conv(b.c_in, b.c_out, b.skip, b.size, 2 if b.down else 1)
    return {"shortcut": (conv, Norm(b.c_out)) if norm else (conv,), "project": b.down | (b.c_in != b.c_out)}


def _two_convs(b: Site, o: Options) -> Block:
    """basic: conv(F)-BN-ReLU-dropout-conv(F)-BN, add, ReLU. preact, Wide ResNet's block
    (xternalz/WideResNet-pytorch): BN-ReLU first, no BN after the second conv (the next block's
    pre-activation normalises it), no ReLU after the addition, a BN-free projection."""
    preact = o.block == "preact"
    body = (Conv(b.c_in, b.c_out, b.k, b.size, 2 if b.down else 1, o.groups), Norm(b.c_out), RELU, Drop(o.dropout),
            Conv(b.c_out, b.c_out, b.k, b.size, 1, o.groups), *(() if preact else (Norm(b.c_out),)), *_se(b.c_out, o))
    if preact:
        return Block(body, pre=(Norm(b.c_in), RELU), residual=True, **_projection(b, norm=False))
    return Block(body, post=(RELU,), residual=True, **_projection(b, norm=True))


def _bottleneck(b: Site, o: Options) -> Block:
    """bottleneck, resnext and res2net: 1x1 reduce (at the input's side), the middle, 1x1 expand."""
    stride = 2 if b.down else 1
    if o.block == "res2net":
        wide = o.scale * b.inner
        middle: tuple[Op, ...] = (Res2(b.inner, o.scale, b.k, b.size, stride, o.groups, b.first),)
    else:
        wide = b.inner
        middle = (Conv(wide, wide, b.k, b.size, stride, o.groups), Norm(wide), RELU)
    body = (Conv(b.c_in, wide, 1, b.s_in), Norm(wide), RELU, *middle, Drop(o.dropout),
            Conv(wide, b.c_out, 1, b.size), Norm(b.c_out), *_se(b.c_out, o))
    return Block(body, post=(RELU,), residual=True, **_projection(b, norm=True))


def _plain(b: Site, o: Options) -> Block:
    """One conv-BN-ReLU unit (SimpleNet); a layer's first unit max-pools its input first."""
    drop = (Drop(o.dropout),) if o.dropout else ()
    body = (Conv(b.c_in, b.c_out, b.k, b.size, 1, o.groups), Norm(b.c_out), RELU, *drop, *_se(b.c_out, o))
    return Block(body, pre=(MaxPool(),) if b.down else ())


FAMILIES = {"basic": _two_convs, "preact": _two_convs, "bottleneck": _bottleneck, "resnext": _bottleneck,
            "res2net": _bottleneck, "plain": _plain}


@lru_cache(maxsize=16384)
def _cached_block(site: Site, o: Options) -> Block:
    return FAMILIES[o.block](site, o)


def make_block(site: Site, o: Options) -> Block:
    """The block at `site`: memoised for plain ints (searches and grids count the same blocks over and
    over), built afresh for NumPy arrays, which cannot be hashed."""
    try:
        return _cached_block(site, o)
    except TypeError:
        return FAMILIES[o.block](site, o)


def inner_width(c: Int, c1: Int, o: Options) -> Int:
    """Bottleneck: C_i / 4. ResNeXt and Res2Net (per split): groups x int(width_per_group x C_i / C_1),
    the per-group width at least 1 (the reference code would build a 0-wide conv there)."""
    if o.block == "bottleneck":
        return c // BOTTLENECK_DIVISOR
    if o.block not in FAMILY_FIELDS["width_per_group"]:
        return 0  # no inner width
    per_group = o.width_per_group * c // c1
    return o.groups * (per_group + (per_group < 1) * (1 - per_group))  # max(1, per_group), for arrays too


# -- the network ------------------------------------------------------------------------------------
def stages(channels: Sequence[Int], blocks: Sequence[Int], kernels: Sequence[Int], skips: Sequence[Int],
           pool: int, *, sizes: Sequence[int], options: Options, num_classes: int, in_channels: int) -> list[Stage]:
    """Stem, one stage per layer, head: the whole network, for the counter and the builder."""
    o = options
    stem_w = channels[0] if o.stem_channels is None else o.stem_channels
    stem: tuple[Op, ...] = (Conv(in_channels, stem_w, 3, sizes[0]),)
    if o.block != "preact":  # pre-activation blocks normalise their input themselves
        stem += (Norm(stem_w), RELU)
    if o.se_ratio and o.se_placement == "stem":
        stem += (SE(stem_w, o.se_ratio),)
    rows = [Stage("stem", Block(stem), None, 1, (stem_w, sizes[0]))]
    c_in = stem_w
    for i, (c, b, k, sk) in enumerate(zip(channels, blocks, kernels, skips)):
        inner = inner_width(c, channels[0], o)
        first = make_block(Site(c_in, c, k, sk, sizes[i - 1] if i else sizes[0], sizes[i], True, i > 0, inner), o)
        rest = make_block(Site(c, c, k, sk, sizes[i], sizes[i], False, False, inner), o)
        rows.append(Stage(f"layer{i + 1}", first, rest, b, (c, sizes[i])))
        c_in = c
    final = (Norm(c_in), RELU) if o.block == "preact" else ()
    head = (*final, Pool(pool), Linear(c_in * (sizes[-1] // pool) ** 2, num_classes))
    rows.append(Stage("head", Block(head), None, 1, (num_classes, 1)))
    return rows


def arch_stages(arch: Arch) -> list[Stage]:
    return stages(arch.channels, arch.blocks, arch.kernels, arch.skip_kernels, arch.pool_size,
                  sizes=arch.feature_sizes, options=arch.options, num_classes=arch.num_classes,
                  in_channels=arch.in_channels)
