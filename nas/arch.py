"""The frozen description of one ResNet: the single source both the counter and the builder read.

Layout (the reference reports'): stem conv3x3(in_channels -> C_1) + BN + ReLU; N residual layers,
layer i has B_i blocks with C_i output channels, the first block of every layer after the
first downsamples with stride 2; average pool of kernel P; Linear(features -> classes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any

from nas.errors import NasError, shown

BLOCK_TYPES = ("basic", "bottleneck")
BOTTLENECK_DIVISOR = 4  # bottleneck inner width = C_i // 4, as in torchvision's ResNet-50


def short_hash(obj: Any, length: int = 10) -> str:
    """A stable short id of JSON-able data (sorted keys), shared by architectures, recipes and protocols."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:length]


def _as_tuple(name: str, value: Any, n: int) -> tuple[int, ...]:
    """Broadcast a scalar to one value per layer; keep sequences as tuples."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * n
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise NasError(f"{name}={shown(value)} must be an integer or a list of integers, one per layer")


def _check_ints(name: str, values: tuple[Any, ...], rule: str, ok) -> None:
    for i, v in enumerate(values):
        if not isinstance(v, int) or isinstance(v, bool) or not ok(v):
            raise NasError(f"{name}[{i}]={shown(v)} is invalid: {rule}")


def channel_problem(c: int, block: str, se_ratio: int, groups: int, layer: int = 0) -> str | None:
    """Why `c` channels cannot make layer `layer`'s blocks with these options, or None: the one
    channel rule, which Arch enforces and the space survey uses to count valid candidates."""
    if se_ratio and c < se_ratio:
        return (f"se_ratio={se_ratio} exceeds channels[{layer}]={c}: SE would have 0 hidden units; "
                "lower se_ratio or widen the layer")
    if block == "bottleneck" and c < BOTTLENECK_DIVISOR:
        return (f"channels[{layer}]={c} is too narrow for a bottleneck block (inner width C//4 would be 0): "
                "use >= 4 channels or block='basic'")
    what, width = ("bottleneck width", c // BOTTLENECK_DIVISOR) if block == "bottleneck" else ("channels", c)
    if width % groups:
        return f"groups={groups} does not divide {what} {width} of layer {layer}: pick groups that divide it"
    return None


@dataclass(frozen=True)
class Arch:
    """One network. Scalars for kernels/skip_kernels apply to every layer; pool=None is global."""

    blocks: tuple[int, ...]
    channels: tuple[int, ...]
    kernels: tuple[int, ...] | int = 3
    skip_kernels: tuple[int, ...] | int = 1
    pool: int | None = None
    block: str = "basic"
    se_ratio: int = 0  # squeeze-and-excitation reduction ratio; 0 disables SE
    groups: int = 1  # grouped KxK convs (ResNeXt cardinality)
    dropout: float = 0.0  # between a block's convs (Wide ResNet)
    num_classes: int = 10
    input_size: int = 32
    in_channels: int = 3

    def __post_init__(self) -> None:
        blocks = _as_tuple("blocks", self.blocks, 1)
        n = len(blocks)
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("blocks", blocks)
        for name in ("channels", "kernels", "skip_kernels"):
            set_(name, _as_tuple(name, getattr(self, name), n))
        self._validate()

    def _validate(self) -> None:
        n = self.num_layers
        if n == 0:
            raise NasError("blocks=() is empty: give at least one residual layer, e.g. blocks=(2,2)")
        for name in ("channels", "kernels", "skip_kernels"):
            if len(getattr(self, name)) != n:
                raise NasError(
                    f"{name}={shown(list(getattr(self, name)))} has {len(getattr(self, name))} entries but "
                    f"blocks={shown(list(self.blocks))} has {n}: give one value per layer"
                )
        _check_ints("blocks", self.blocks, "every layer needs at least 1 block", lambda v: v >= 1)
        _check_ints("channels", self.channels, "channel counts must be >= 1", lambda v: v >= 1)
        odd = "kernel sizes must be odd and >= 1 (padding k//2 keeps 'same' size)"
        _check_ints("kernels", self.kernels, odd, lambda v: v >= 1 and v % 2 == 1)
        _check_ints("skip_kernels", self.skip_kernels, odd, lambda v: v >= 1 and v % 2 == 1)
        for name, low in (("num_classes", 1), ("input_size", 1), ("in_channels", 1), ("groups", 1), ("se_ratio", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise NasError(f"{name}={shown(v)} is invalid: must be an integer >= {low}")
        if self.block not in BLOCK_TYPES:
            raise NasError(f"block={shown(self.block)} is unknown: choose one of {', '.join(BLOCK_TYPES)}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise NasError(f"dropout={shown(self.dropout)} is invalid: must be in [0, 1)")
        final = self.feature_sizes[-1]
        if self.pool is not None:
            if not isinstance(self.pool, int) or isinstance(self.pool, bool) or not 1 <= self.pool <= final:
                raise NasError(
                    f"pool={shown(self.pool)} is invalid: the last feature map is {final}x{final}, "
                    f"so pool must be an integer from 1 to {final} (or None for global pooling)"
                )
        for i, c in enumerate(self.channels):
            problem = channel_problem(c, self.block, self.se_ratio, self.groups, i)
            if problem:
                raise NasError(problem)

    # -- derived facts ---------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @cached_property  # frozen dataclasses allow it: it writes the instance __dict__ directly
    def feature_sizes(self) -> tuple[int, ...]:
        """Spatial size after each layer: stride 2 with 'same' padding gives ceil(s / 2)."""
        sizes, s = [], self.input_size
        for i in range(self.num_layers):
            if i > 0:
                s = (s + 1) // 2
            sizes.append(s)
        return tuple(sizes)

    @cached_property
    def pool_size(self) -> int:
        return self.feature_sizes[-1] if self.pool is None else self.pool

    @staticmethod
    def skip_used(layer: int) -> bool:
        """Only layers after the first change shape (stride 2), so only they use K_i; the stem
        already outputs C_1, so layer 0 always has an identity shortcut."""
        return layer > 0

    def scaled(self, width: float) -> Arch:
        """The same network with channels times `width`, for cheap proxy training: widths are
        rounded up to a multiple of groups and the bottleneck divisor, and the SE ratio is lowered
        to the narrowest layer where needed. (Raising narrow layers to the SE ratio instead made
        every SE candidate up to 64 channels wide the same 16-channel proxy, with the same score.)"""
        if not 0 < width <= 1:
            raise NasError(f"width={width!r} must be in (0, 1]: it scales channels down for proxy training")
        if width == 1:
            return self
        step = self.groups * (BOTTLENECK_DIVISOR if self.block == "bottleneck" else 1)
        channels = tuple(max(step, -(-round(c * width) // step) * step) for c in self.channels)
        return dataclasses.replace(self, channels=channels, se_ratio=min(self.se_ratio, *channels))

    # -- identity and serialisation ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("blocks", "channels", "kernels", "skip_kernels"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arch:
        if not isinstance(data, dict):
            raise NasError(f"an architecture must be a mapping of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise NasError(f"unknown architecture field(s) {shown(unknown)}: valid fields are {', '.join(sorted(known))}")
        missing = [k for k in ("blocks", "channels") if k not in data]
        if missing:
            raise NasError(f"architecture is missing {missing}: 'blocks' and 'channels' are required")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise NasError(f"architecture JSON is malformed ({e}): expected an object like {{\"blocks\": [2,2], \"channels\": [64,128]}}") from None

    @property
    def id(self) -> str:
        """Short stable hash of the network actually built (skip kernels of unused shortcuts ignored)."""
        d = self.to_dict()
        d["skip_kernels"] = [k if self.skip_used(i) else 1 for i, k in enumerate(self.skip_kernels)]
        d["pool"] = self.pool_size
        d["dropout"] = float(self.dropout)
        return short_hash(d)

    def describe(self) -> str:
        """One line a human can read in a table: N=4 B=2-2-2-2 C=64-128-256-512 F=3 K=1 P=4 basic."""
        j = lambda xs: "-".join(map(str, xs))  # noqa: E731
        extras = [self.block]
        if self.se_ratio:
            extras.append(f"se{self.se_ratio}")
        if self.groups > 1:
            extras.append(f"g{self.groups}")
        if self.dropout:
            extras.append(f"drop{self.dropout:g}")
        return (
            f"N={self.num_layers} B={j(self.blocks)} C={j(self.channels)} F={j(self.kernels)} "
            f"K={j(self.skip_kernels)} P={self.pool_size} {' '.join(extras)}"
        )
