"""The block families: one registered record each, and every rule about families derived from the records.

A family is its builder (where a block sits and the network's options -> one `Block` of nas.arch.ops
operations) plus the few facts the rest of the tool asks about it: whether it adds a shortcut (so skip kernels
matter), which family knobs it reads, whether its first conv is grouped over the block's input, the divisor of
its inner width, whether it is pre-activated, whether every layer pools. The counter, the builder, `Arch`'s
validation, the space files and the report all read these records, so adding a family is one
`register_family(Family(...))`, and tests/family_contract.py runs the shared behaviour tests on every entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from nas.arch.ops import (
    PATCH,
    SE,
    SE_PLACEMENTS,
    Act,
    Block,
    Conv,
    Drop,
    Int,
    MaxPool,
    Norm,
    Op,
    Options,
    Res2,
    Site,
)
from nas.errors import NasError, shown
from nas.registry import Registry

KNOBS: dict[str, tuple[int, str]] = {  # a family's own knob: (its least value where read, what it means)
    "width_per_group": (1, "the width of one group at layer 1, e.g. 64 in ResNeXt-29 8x64d"),
    "scale": (2, "the number of channel splits, 4 in the Res2Net paper"),
}


@dataclass(frozen=True)
class Family:
    """One block family, as data: its builder and the facts every other module derives its rules from."""

    name: str
    build: Callable[[Site, Options], Block]
    summary: str  # one line: where the design comes from, for --help and README
    residual: bool = True  # adds a shortcut, so K_i matters wherever a layer's first block changes shape
    reads: tuple[str, ...] = ()  # the KNOBS it reads; every other family has them at 0
    grouped_input: bool = True  # its first conv is grouped and reads the block's input: groups must divide it
    divisor: int = 1  # the grouped conv works on C_i // divisor channels (bottleneck: 4); width_per_group readers
    #                   size it from that knob instead
    preact: bool = False  # blocks normalise their own input: a bare-conv stem and a BN-act before the head
    pools_every_layer: bool = False  # every layer, the first too, halves with a floor 2x2 max-pool (airbench)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.reads) - set(KNOBS))
        if unknown or self.divisor < 1 or not self.name.isidentifier():
            raise NasError(f"family {self.name!r} is malformed: reads={list(self.reads)} (known: {', '.join(KNOBS)}), "
                           f"divisor={self.divisor} (>= 1), name an identifier")


FAMILIES: Registry[Family] = Registry("block family", "block")


def register_family(f: Family) -> Family:
    return FAMILIES.add(f.name, f)


def family(name: str) -> Family:
    return FAMILIES.named(name)


def readers(knob: str) -> tuple[str, ...]:
    """The families that read family knob `knob`."""
    return tuple(f.name for f in FAMILIES.values() if knob in f.reads)


# -- the builders ---------------------------------------------------------------------------------
def _se(c: Int, o: Options) -> tuple[Op, ...]:
    return (SE(c, o.se_ratio),) if o.se_in_blocks else ()


def _projection(b: Site, norm: bool) -> dict[str, Any]:
    """The shortcut conv(K_i, stride) (+ BN), present where the block changes width or side."""
    conv = Conv(b.c_in, b.c_out, b.skip, b.size, 2 if b.down else 1)
    return {"shortcut": (conv, Norm(b.c_out)) if norm else (conv,), "project": b.down | (b.c_in != b.c_out)}


def _two_convs(b: Site, o: Options, norm_last: bool) -> tuple[Op, ...]:
    return (Conv(b.c_in, b.c_out, b.k, b.size, 2 if b.down else 1, o.groups), Norm(b.c_out), Act(o.activation),
            Drop(o.dropout), Conv(b.c_out, b.c_out, b.k, b.size, 1, o.groups), *((Norm(b.c_out),) if norm_last else ()),
            *_se(b.c_out, o))


def basic(b: Site, o: Options) -> Block:
    """conv(F)-BN-ReLU-dropout-conv(F)-BN, add, ReLU."""
    return Block(_two_convs(b, o, True), post=(Act(o.activation),), residual=True, **_projection(b, norm=True))


def preact(b: Site, o: Options) -> Block:
    """Wide ResNet's block (xternalz/WideResNet-pytorch): BN-ReLU first, no BN after the second conv (the next
    block's pre-activation normalises it), no ReLU after the addition, a BN-free projection that reads the
    pre-activated input."""
    return Block(_two_convs(b, o, False), pre=(Norm(b.c_in), Act(o.activation)), residual=True,
                 **_projection(b, norm=False))


def _bottleneck_with(b: Site, o: Options, wide: Int, middle: tuple[Op, ...]) -> Block:
    """1x1 reduce to `wide` (at the input's side), the middle, 1x1 expand, BN after each."""
    act = Act(o.activation)
    body = (Conv(b.c_in, wide, 1, b.s_in), Norm(wide), act, *middle, Drop(o.dropout),
            Conv(wide, b.c_out, 1, b.size), Norm(b.c_out), *_se(b.c_out, o))
    return Block(body, post=(act,), residual=True, **_projection(b, norm=True))


def bottleneck(b: Site, o: Options) -> Block:
    """torchvision's ResNet-50 block; ResNeXt's too, its middle conv grouped over the inner width."""
    middle = (Conv(b.inner, b.inner, b.k, b.size, 2 if b.down else 1, o.groups), Norm(b.inner), Act(o.activation))
    return _bottleneck_with(b, o, b.inner, middle)


def res2net(b: Site, o: Options) -> Block:
    """The ResNeXt bottleneck with its middle conv replaced by Res2Net's hierarchy of `scale` splits."""
    middle = (Res2(b.inner, o.scale, b.k, b.size, 2 if b.down else 1, o.groups, b.first, o.activation),)
    return _bottleneck_with(b, o, o.scale * b.inner, middle)


def plain(b: Site, o: Options) -> Block:
    """One conv-BN-ReLU unit (SimpleNet); a layer's first unit max-pools its input first."""
    drop = (Drop(o.dropout),) if o.dropout else ()
    body = (Conv(b.c_in, b.c_out, b.k, b.size, 1, o.groups), Norm(b.c_out), Act(o.activation), *drop,
            *_se(b.c_out, o))
    return Block(body, pre=(MaxPool(),) if b.down else ())


def convgroup(b: Site, o: Options) -> Block:
    """airbench's ConvGroup unit: conv(F)-BN-act, the layer's first with a floor 2x2 max-pool between the conv
    (at the input's side) and the BN."""
    drop = (Drop(o.dropout),) if o.dropout else ()
    conv = Conv(b.c_in, b.c_out, b.k, b.s_in if b.first else b.size, 1, o.groups)
    pool = (MaxPool(ceil=False),) if b.first else ()
    return Block((conv, *pool, Norm(b.c_out), Act(o.activation), *drop, *_se(b.c_out, o)))


for _f in (
    Family("basic", basic, "the reference reports' ResNet block: two convs F, BN, shortcut"),
    Family("bottleneck", bottleneck, "torchvision's ResNet-50 block: 1x1 to C_i/4, conv F, 1x1 back",
           grouped_input=False, divisor=4),
    Family("preact", preact, "Wide ResNet's pre-activation block (BN-ReLU-conv twice), bare-conv stem",
           preact=True),
    Family("resnext", bottleneck, "ResNeXt-29's bottleneck: inner width groups x width_per_group x C_i / C_1",
           reads=("width_per_group",), grouped_input=False),
    Family("res2net", res2net, "Res2Net's bottleneck: the middle conv split into `scale` hierarchical parts",
           reads=("width_per_group", "scale"), grouped_input=False),
    Family("plain", plain, "SimpleNet: one conv-BN-ReLU unit per block, no shortcut, max-pool downsampling",
           residual=False),
    Family("convgroup", convgroup, "airbench's ConvGroup: conv-maxpool-BN-act then conv-BN-act, no shortcut",
           residual=False, pools_every_layer=True),
):
    register_family(_f)


@lru_cache(maxsize=16384)
def _cached_block(site: Site, o: Options) -> Block:
    return FAMILIES[o.block].build(site, o)


def make_block(site: Site, o: Options) -> Block:
    """The block at `site`: memoised for plain ints (searches and grids count the same blocks over and
    over), built afresh for NumPy arrays, which cannot be hashed."""
    try:
        return _cached_block(site, o)
    except TypeError:
        return FAMILIES[o.block].build(site, o)


# -- the rules every module asks about -----------------------------------------------------------
def inner_width(c: Int, c1: Int, o: Options) -> Int:
    """The width a block's grouped middle works on: C_i // divisor, or for width_per_group readers (per split
    for res2net) groups x int(width_per_group x C_i / C_1), at least 1 per group (prlz77's ResNeXt-29 would
    build a 0-wide conv there)."""
    if "width_per_group" not in FAMILIES[o.block].reads:
        return c // FAMILIES[o.block].divisor
    per_group = o.width_per_group * c // c1
    return o.groups * (per_group + (per_group < 1) * (1 - per_group))  # max(1, per_group), for arrays too


def layer_sizes(n: int, input_size: int, o: Options) -> tuple[int, tuple[int, ...]]:
    """(the stem's output side, the side after each of `n` layers). A patch stem has no padding (s - 1);
    layers after the first halve with stride 2 and 'same' padding, ceil(s / 2); in families that pool every
    layer, the first too, with floor(s / 2)."""
    stem = input_size - (PATCH - 1) if o.stem == "patch" else input_size
    every = FAMILIES[o.block].pools_every_layer
    sizes, s = [], stem
    for i in range(n):
        s = s // 2 if every else (s + 1) // 2 if i > 0 else s
        sizes.append(s)
    return stem, tuple(sizes)


def unused_fields(block: str, se_ratio: int) -> dict[str, Any]:
    """The options this block family does not read, at their off values: a space sets them so, whatever was
    sampled, and a candidate that differs only there is the same network."""
    off = {name: 0 for name in KNOBS if name not in FAMILIES[block].reads}
    return off if se_ratio else {**off, "se_placement": "blocks"}


def uses_skip(block: str, layer: int, stem_channels: int | None, c1: int) -> bool:
    """Whether layer `layer`'s first block projects its shortcut (so K_i matters): every layer after the
    first changes shape, and layer 1 does when the stem's width differs from C_1. Shortcut-free families
    have none."""
    return FAMILIES[block].residual and (layer > 0 or (stem_channels is not None and stem_channels != c1))


def channel_problem(c: int, o: Options, layer: int = 0) -> str | None:
    """Why `c` channels cannot make layer `layer`'s blocks with these options, or None: the one
    channel rule, which Arch enforces and the space survey uses to count valid candidates."""
    se_here = o.se_in_blocks or (o.se_ratio and o.se_placement == "stem" and layer == 0 and o.stem_channels is None)
    if se_here and c < o.se_ratio:
        where = "SE would have 0 hidden units" if o.se_in_blocks else "the stem (C_1 wide) holds the SE unit"
        return (f"se_ratio={o.se_ratio} exceeds channels[{layer}]={c}: {where}; "
                "lower se_ratio or widen the layer")
    f = FAMILIES[o.block]
    if "width_per_group" in f.reads:
        return None  # the inner width is groups x (a width >= 1): always a multiple of groups
    if c < f.divisor:
        return (f"channels[{layer}]={c} is too narrow for a {f.name} block (inner width C//{f.divisor} would be 0): "
                f"use >= {f.divisor} channels or block='basic'")
    what = f"{f.name} width" if f.divisor > 1 else "channels"
    if c // f.divisor % o.groups:
        return f"groups={o.groups} does not divide {what} {c // f.divisor} of layer {layer}: pick groups that divide it"
    return None


def stem_problem(o: Options) -> str | None:
    """Why the stem width stem_channels cannot feed these blocks, or None (C_1's own rules are channel_problem's)."""
    s = o.stem_channels
    if s is None:
        return None
    if FAMILIES[o.block].grouped_input and s % o.groups:
        return (f"groups={o.groups} does not divide stem_channels={s}: a {o.block} block's first conv is grouped "
                "and reads the stem; pick a stem width that groups divides")
    if o.se_ratio and o.se_placement == "stem" and s < o.se_ratio:
        return (f"se_ratio={o.se_ratio} exceeds stem_channels={s}: the stem's SE unit would have 0 hidden units; "
                "lower se_ratio or widen the stem")
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def family_problem(o: Options) -> str | None:
    """A family knob given to a family that does not read it, or missing where one needs it."""
    for name, (low, meaning) in KNOBS.items():
        v, users = getattr(o, name), readers(name)
        if not _is_int(v) or v < 0:
            return f"{name}={shown(v)} is invalid: must be an integer >= 0 ({meaning})"
        if o.block in users and v < low:
            return f"{name}={v} is invalid for block={o.block!r}: must be >= {low} ({meaning}); set {name}"
        if o.block not in users and v:
            return (f"{name}={v} is invalid for block={o.block!r}: only block {' or '.join(users)} reads it; "
                    f"set {name} to 0 (or leave it out), or choose block {users[0]}")
    if o.se_placement not in SE_PLACEMENTS:
        return f"se_placement={shown(o.se_placement)} is unknown: choose one of {', '.join(SE_PLACEMENTS)}"
    if o.se_placement == "stem" and not o.se_ratio:
        return ("se_placement='stem' is invalid with se_ratio=0: the stem's SE unit needs a reduction ratio; "
                "set se_ratio (e.g. 16; --se on the command line) or se_placement='blocks'")
    s = o.stem_channels
    if s is not None and (not _is_int(s) or s < 1):
        return f"stem_channels={shown(s)} is invalid: must be an integer >= 1, or None for C_1"
    return None
