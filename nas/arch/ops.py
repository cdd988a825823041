"""The vocabulary a network is written in: plain operations, blocks, stages, and the options every block reads.

nas/arch/counting.py sums these operations' parameters and MACs; nas/arch/model.py builds each one as a torch
module. So the counter and the builder share the structure and can only disagree on what one operation costs,
which the property tests check family by family. The per-layer knobs may be ints or NumPy integer arrays (one
entry per candidate, for `nas space`): nothing here branches on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

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



# -- the network-wide options ------------------------------------------------------------------------
ACTIVATIONS = ("relu", "gelu")
STEMS = ("conv", "patch")  # conv3x3-BN-act; airbench's 2x2 patch conv (bias, no padding) + act
POOLINGS = ("avg", "max")
SE_PLACEMENTS = ("blocks", "stem")  # SE after every block's branch, or one SE unit after the stem
PATCH = 2  # the patch stem's kernel: 2x2 patches, as airbench whitens


@dataclass(frozen=True)
class Options:
    """The network-wide options every block reads: what `nas space` holds fixed per group of
    candidates while the per-layer knobs vary (nas/arch/counting.count_many)."""

    block: str = "basic"
    se_ratio: int = 0
    groups: int = 1
    dropout: float = 0.0
    stem_channels: int | None = None
    width_per_group: int = 0
    scale: int = 0
    se_placement: str = "blocks"
    activation: str = "relu"
    stem: str = "conv"
    pooling: str = "avg"
    head_bias: bool = True
    head_scale: float = 1.0

    @property
    def se_in_blocks(self) -> bool:
        return bool(self.se_ratio) and self.se_placement == "blocks"
