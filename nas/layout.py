"""The network as a list of plain operations: the one place each block family is spelled out.

nas/counting.py sums these operations' parameters and MACs; nas/model.py builds each one as a torch
module. So the counter and the builder share the structure and can only disagree on what one
operation costs, which the property tests check family by family. The per-layer knobs may be ints or
NumPy integer arrays (one entry per candidate, for `nas space`): nothing here branches on them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple, Sequence

from nas.arch import BOTTLENECK_DIVISOR, FAMILY_FIELDS, PATCH, Arch, Options, layer_sizes

Int = Any  # int, or a NumPy integer array broadcast over candidates


# -- operations (NamedTuples: a count builds hundreds, in microseconds) ---------------------------
class Conv(NamedTuple):
    """conv(k, 'same' padding, no bias); `size` is the output side, for MACs. The patch stem alone has a
    bias and no padding (`valid`)."""

    c_in: Int
    c_out: Int
    k: Int
    size: int
    stride: int = 1
    groups: Int = 1
    bias: bool = False
    valid: bool = False


class Norm(NamedTuple):
    """BatchNorm2d(c): weight and bias are parameters, running statistics are not."""

    c: Int


class Act(NamedTuple):
    """The activation: relu or gelu (Options.activation)."""

    kind: str = "relu"


class Drop(NamedTuple):
    """Dropout(p); p = 0 is kept as a placeholder (nn.Identity) where the module layout always had one."""

    p: float


class SE(NamedTuple):
    """Squeeze-excitation: Linear(c -> c // ratio) + ReLU + Linear(c // ratio -> c) + sigmoid gate."""

    c: Int
    ratio: int


class MaxPool(NamedTuple):
    """2x2 max-pool, stride 2: ceil mode (ceil(s / 2), as a stride-2 conv gives) for plain nets' downsampling,
    floor for convgroup's (nn.MaxPool2d(2), as airbench has it)."""

    ceil: bool = True


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
    act: str = "relu"


class Pool(NamedTuple):
    """Average (or max) pool of kernel k, then flatten: the head's input."""

    k: int
    kind: str = "avg"


class Linear(NamedTuple):
    """The head; `scale` multiplies its output (airbench's 1/9) and costs nothing."""

    c_in: Int
    c_out: Int
    bias: bool = True
    scale: float = 1.0


Op = Any  # one of the NamedTuples above


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
    preact, act = o.block == "preact", Act(o.activation)
    body = (Conv(b.c_in, b.c_out, b.k, b.size, 2 if b.down else 1, o.groups), Norm(b.c_out), act, Drop(o.dropout),
            Conv(b.c_out, b.c_out, b.k, b.size, 1, o.groups), *(() if preact else (Norm(b.c_out),)), *_se(b.c_out, o))
    if preact:
        return Block(body, pre=(Norm(b.c_in), act), residual=True, **_projection(b, norm=False))
    return Block(body, post=(act,), residual=True, **_projection(b, norm=True))


def _bottleneck(b: Site, o: Options) -> Block:
    """bottleneck, resnext and res2net: 1x1 reduce (at the input's side), the middle, 1x1 expand."""
    stride, act = 2 if b.down else 1, Act(o.activation)
    if o.block == "res2net":
        wide = o.scale * b.inner
        middle: tuple[Op, ...] = (Res2(b.inner, o.scale, b.k, b.size, stride, o.groups, b.first, o.activation),)
    else:
        wide = b.inner
        middle = (Conv(wide, wide, b.k, b.size, stride, o.groups), Norm(wide), act)
    body = (Conv(b.c_in, wide, 1, b.s_in), Norm(wide), act, *middle, Drop(o.dropout),
            Conv(wide, b.c_out, 1, b.size), Norm(b.c_out), *_se(b.c_out, o))
    return Block(body, post=(act,), residual=True, **_projection(b, norm=True))


def _plain(b: Site, o: Options) -> Block:
    """One conv-BN-ReLU unit (SimpleNet); a layer's first unit max-pools its input first."""
    drop = (Drop(o.dropout),) if o.dropout else ()
    body = (Conv(b.c_in, b.c_out, b.k, b.size, 1, o.groups), Norm(b.c_out), Act(o.activation), *drop,
            *_se(b.c_out, o))
    return Block(body, pre=(MaxPool(),) if b.down else ())


def _convgroup(b: Site, o: Options) -> Block:
    """airbench's ConvGroup unit: conv(F)-BN-act, the layer's first with a floor 2x2 max-pool between the conv
    (at the input's side) and the BN."""
    drop = (Drop(o.dropout),) if o.dropout else ()
    conv = Conv(b.c_in, b.c_out, b.k, b.s_in if b.first else b.size, 1, o.groups)
    pool = (MaxPool(ceil=False),) if b.first else ()
    return Block((conv, *pool, Norm(b.c_out), Act(o.activation), *drop, *_se(b.c_out, o)))


FAMILIES = {"basic": _two_convs, "preact": _two_convs, "bottleneck": _bottleneck, "resnext": _bottleneck,
            "res2net": _bottleneck, "plain": _plain, "convgroup": _convgroup}


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
           pool: int | None, *, input_size: int, options: Options, num_classes: int, in_channels: int) -> list[Stage]:
    """Stem, one stage per layer, head: the whole network, for the counter and the builder. pool=None is global."""
    o = options
    stem_side, sizes = layer_sizes(len(blocks), input_size, o)
    pool = sizes[-1] if pool is None else pool
    stem_w = channels[0] if o.stem_channels is None else o.stem_channels
    stem: tuple[Op, ...]
    if o.stem == "patch":  # airbench's whitening stem: no BN, so the whitened patches reach the first group
        stem = (Conv(in_channels, stem_w, PATCH, stem_side, bias=True, valid=True), Act(o.activation))
    else:
        stem = (Conv(in_channels, stem_w, 3, stem_side),)
        if o.block != "preact":  # pre-activation blocks normalise their input themselves
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
    final = (Norm(c_in), Act(o.activation)) if o.block == "preact" else ()
    head = (*final, Pool(pool, o.pooling), Linear(c_in * (sizes[-1] // pool) ** 2, num_classes, o.head_bias, o.head_scale))
    rows.append(Stage("head", Block(head), None, 1, (num_classes, 1)))
    return rows


def arch_stages(arch: Arch) -> list[Stage]:
    return stages(arch.channels, arch.blocks, arch.kernels, arch.skip_kernels, arch.pool_size,
                  input_size=arch.input_size, options=arch.options, num_classes=arch.num_classes,
                  in_channels=arch.in_channels)
